"""containerd: who runs it, its configuration, the restart delay, the socket probe, and the part
against a stand-in containerd (a small program that serves the socket like containerd's gRPC)."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import stat
import sys
import threading
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from supervisor.config import Config, load
from supervisor.containerd import plan as cplan
from supervisor.containerd import probe, service
from supervisor.containerd.process import ContainerdProcess, Runner, start
from supervisor.fdstore import Depositor
from supervisor.metrics import Metrics


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _config(*args: str, exact: bool = False, **changes: Any) -> Config:
    cfg = load(env={}, dockerd_args=args, exact_args=exact)
    return dataclasses.replace(cfg, **changes)


# Who runs it ---------------------------------------------------------------------------------


def test_agent_runs_containerd_by_default_at_dockerds_own_paths() -> None:
    """Default: the agent, with the socket, state, pid file and data dockerd would use."""
    setup = cplan.decide(_config())
    assert setup.managed_by is cplan.ManagedBy.AGENT
    assert setup.address == Path("/var/run/docker/containerd/containerd.sock")
    assert setup.pidfile == Path("/var/run/docker/containerd/containerd.pid")
    assert setup.root == Path("/var/lib/docker/containerd/daemon")
    assert setup.config_file == Path("/var/run/docker/containerd/containerd.toml")
    assert setup.dockerd_flags() == ["--containerd=/var/run/docker/containerd/containerd.sock"]


def test_paths_follow_dockerds_exec_root_and_data_root() -> None:
    """dockerd's own --exec-root/--data-root after `--` move containerd's paths with them."""
    setup = cplan.decide(_config("--exec-root=/x/exec", "--data-root", "/x/data"))
    assert setup.address == Path("/x/exec/containerd/containerd.sock")
    assert setup.pidfile == Path("/x/exec/containerd/containerd.pid")
    assert setup.root == Path("/x/data/containerd/daemon")


@pytest.mark.parametrize(("args", "document", "exact", "expected"), [
    (("--containerd=/run/containerd/containerd.sock",), None, False, "external"),
    (("--containerd", "unix:///run/c.sock"), None, True, "external"),
    ((), {"containerd": "/run/containerd/containerd.sock"}, False, "external"),
    ((), {"containerd": ""}, False, "agent"),
    (("--debug",), None, True, "dockerd"),
    ((), {"storage-driver": "vfs"}, False, "agent"),
])
def test_who_manages_containerd(args: tuple[str, ...], document: dict[str, str] | None,
                                exact: bool, expected: str) -> None:
    """The user's containerd (flag or daemon.json) is theirs; exact mode leaves it to dockerd."""
    setup = cplan.decide(_config(*args, exact=exact), document)
    assert setup.managed_by.value == expected
    if expected == "external":
        assert setup.pidfile is None
        assert setup.dockerd_flags() == []  # the user's flag or key stays as given
        assert str(setup.address).startswith("/run/")


def test_rootless_and_the_setting_leave_containerd_to_dockerd() -> None:
    """Rootless mode (rootlesskit's namespaces) and manage_containerd=false: dockerd's own."""
    cfg = _config()
    rootless = dataclasses.replace(cfg, rootless=dataclasses.replace(cfg.rootless,
                                                                     enabled="true"))
    assert cplan.decide(rootless).managed_by is cplan.ManagedBy.DOCKERD
    off = dataclasses.replace(cfg, dockerd=dataclasses.replace(cfg.dockerd,
                                                               manage_containerd=False))
    setup = cplan.decide(off)
    assert (setup.managed_by, setup.dockerd_flags()) == (cplan.ManagedBy.DOCKERD, [])
    assert "manage_containerd" in setup.reason


def test_configuration_is_the_one_dockerd_writes() -> None:
    """Valid TOML with dockerd's paths, CRI off, oom_score 0 (the wrapper sets it), and the v1
    runtime's state under the data root as dockerd 20.10 sets it."""
    setup = cplan.decide(_config())
    text = cplan.config_text(setup, data_root=Path("/var/lib/docker"), args=[])
    doc = tomllib.loads(text)
    assert doc["version"] == 2
    assert (doc["root"], doc["state"]) == ("/var/lib/docker/containerd/daemon",
                                           "/var/run/docker/containerd/daemon")
    assert doc["grpc"]["address"] == "/var/run/docker/containerd/containerd.sock"
    assert doc["debug"] == {"address": "/var/run/docker/containerd/containerd-debug.sock",
                            "level": "info"}
    assert doc["disabled_plugins"] == ["io.containerd.grpc.v1.cri"]
    assert doc["oom_score"] == 0
    assert doc["plugins"]["io.containerd.runtime.v1.linux"]["runtime_root"] == (
        "/var/lib/docker/runc")
    with_cri = tomllib.loads(cplan.config_text(setup, data_root=Path("/d"),
                                               args=["--cri-containerd", "-D"]))
    assert with_cri["disabled_plugins"] == []
    assert with_cri["debug"]["level"] == "debug"


@pytest.mark.parametrize(("args", "level"), [
    ((), "info"), (("--log-level=warn",), "warn"), (("-l", "error"), "error"),
    (("--debug",), "debug"), (("--debug=false",), "info"),
])
def test_log_level_as_dockerd_passes_it(args: tuple[str, ...], level: str) -> None:
    """containerd logs at dockerd's level, as when dockerd starts it."""
    assert cplan.log_level(list(args)) == level


def test_backoff_answers_the_first_death_at_once_then_grows() -> None:
    """First death: at once; short runs in a row: 1, 2, 4 ... up to 30 s; a long run resets."""
    backoff = cplan.Backoff(initial=1.0, factor=2.0, maximum=30.0, healthy_after=10.0)
    streak, delays = 0, []
    for _ in range(8):
        delay, streak = backoff.after(ran_for=0.5, streak=streak)
        delays.append(delay)
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff.after(ran_for=60.0, streak=streak) == (0.0, 0)


# The probe -----------------------------------------------------------------------------------

SETTINGS = b"\x00\x00\x06\x04\x00\x00\x00\x00\x00" + b"\x00\x05\x00\x00\x40\x00"


def test_settings_frame_recognised() -> None:
    """Only a SETTINGS frame on stream 0 counts as containerd's answer."""
    assert probe.is_settings_frame(SETTINGS[:9])
    assert not probe.is_settings_frame(b"\x00\x00\x00\x01\x04\x00\x00\x00\x01")  # HEADERS
    assert not probe.is_settings_frame(b"HTTP/1.1 ")
    assert not probe.is_settings_frame(b"\x00\x00")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[[bytes | None], Path]]:
    """A unix socket that answers each connection with ``reply`` (None: says nothing)."""
    sockets: list[socket.socket] = []

    def make(reply: bytes | None) -> Path:
        path = tmp_path / f"s{len(sockets)}.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(8)
        sockets.append(listener)

        def serve() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                sockets.append(conn)
                if reply is not None:
                    conn.recv(len(probe.PREFACE))
                    conn.sendall(reply)

        threading.Thread(target=serve, daemon=True).start()
        return path

    yield make
    for sock in sockets:
        sock.close()


def test_probe_tells_answering_from_silent_and_absent(
    server: Callable[[bytes | None], Path], tmp_path: Path
) -> None:
    """SETTINGS: answers; accepted but silent (a stopped containerd): no, within the timeout;
    no socket, or something that is not HTTP/2: no."""
    answering, silent, other = server(SETTINGS), server(None), server(b"HTTP/1.1 400 Bad\r\n\r\n")
    assert probe.answers_sync(answering)
    assert not probe.answers_sync(silent, timeout=0.2)
    assert not probe.answers_sync(other)
    assert not probe.answers_sync(tmp_path / "none.sock")
    assert anyio.run(probe.answers, answering)
    assert not anyio.run(probe.answers, silent, 0.2)
    assert not anyio.run(probe.answers, tmp_path / "none.sock")


# A stand-in containerd -------------------------------------------------------------------------

FAKE = """\
import os, signal, socket, sys, threading, tomllib
config = tomllib.load(open(sys.argv[sys.argv.index("--config") + 1], "rb"))
path = config["grpc"]["address"]
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(path)
listener.listen(16)
signal.signal(signal.SIGTERM, lambda *a: (print("level=info msg=stopping", flush=True),
                                          os._exit(0)))
print('time="now" level=info msg="serving..." address=' + path, flush=True)
while True:
    conn, _ = listener.accept()
    conn.recv(64)
    conn.sendall(bytes.fromhex("000000040000000000"))
    conn.close()
"""


@pytest.fixture
def setup(tmp_path: Path) -> cplan.Setup:
    state = tmp_path / "exec" / "containerd"
    return cplan.Setup(managed_by=cplan.ManagedBy.AGENT, reason="test",
                       address=state / "containerd.sock", pidfile=state / "containerd.pid",
                       state_dir=state, root=tmp_path / "data" / "containerd" / "daemon")


class Recorder(Depositor):
    """A Depositor that records instead of talking to PID 1."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, object]] = []

    def store(self, name: str, fd: int) -> bool:
        self.calls.append(("store", name))
        return True

    def remove(self, name: str) -> bool:
        self.calls.append(("remove", name))
        return True

    def set(self, **values: object) -> bool:
        self.calls.extend(("set", f"{k}={v}") for k, v in values.items())
        return True


@pytest.fixture
def runner(tmp_path: Path, setup: cplan.Setup) -> Runner:
    binary = tmp_path / "containerd"
    binary.write_text(f"#!{sys.executable}\n{FAKE}")
    binary.chmod(0o755)
    return Runner(setup, config_text=cplan.config_text(setup, data_root=tmp_path / "data",
                                                         args=[]),
                  env=lambda: dict(os.environ), depositor=Recorder(), binary=str(binary))


class EarlyLog:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))

    warning = error = info


def test_start_writes_config_and_pid_file_deposits_and_waits_until_it_answers(
    runner: Runner, setup: cplan.Setup
) -> None:
    """The launch's start: private configuration, the pid file, pidfd/output/pid deposited,
    and containerd answering before it returns; release undoes the deposits and the pid file."""
    log = EarlyLog()
    process = start(runner, [], may_spawn=True, timeout=10, log=log)
    assert process is not None
    try:
        assert probe.answers_sync(setup.address)
        assert [e for e, _ in log.events] == ["containerd_started"]
        assert stat.S_IMODE(setup.config_file.stat().st_mode) == 0o600
        assert setup.pidfile is not None
        assert setup.pidfile.read_text() == str(process.pid)
        calls = runner._depositor.calls  # type: ignore[attr-defined]
        assert calls == [("set", f"containerd_pid={process.pid}"), ("store", "containerd"),
                         ("store", "containerd-output")]
    finally:
        process.send_signal(signal.SIGKILL)
        anyio.run(process.wait)
        runner.release(process)
    assert not setup.pidfile.exists()
    assert calls[-3:] == [("remove", "containerd"), ("remove", "containerd-output"),
                          ("set", "containerd_pid=0")]


def test_start_adopts_a_deposited_containerd_instead_of_starting_one(
    runner: Runner, setup: cplan.Setup
) -> None:
    """After an agent's death: the inherited pidfd names a live containerd; none is started."""
    first = runner.spawn()
    try:
        log = EarlyLog()
        fd = os.pidfd_open(first.pid)
        adopted = start(runner, [("containerd", fd)], may_spawn=True, timeout=5, log=log)
        assert adopted is not None
        assert (adopted.pid, adopted.own_child) == (first.pid, False)
        assert [e for e, _ in log.events] == ["containerd_taken_over"]
        assert start(runner, [], may_spawn=False, timeout=5, log=log) is None  # a stop agent
        adopted.close()
    finally:
        first.send_signal(signal.SIGKILL)
        anyio.run(first.wait)


async def _until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - polling a plain object, with a deadline
            await anyio.sleep(0.01)


@pytest.mark.anyio
async def test_part_restarts_a_killed_containerd_at_once_and_stops_it_last(
    runner: Runner, setup: cplan.Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9: one containerd_exited (pid, 137, SIGKILL), up goes false, a new one is started
    and counted, up again; cancelling the part TERMs it (exit 0) and removes its pid file."""
    monkeypatch.setattr(service, "PROBE_INTERVAL", 0.05)
    metrics = Metrics()
    initial = runner.spawn()
    part = service.ContainerdService(_config(), metrics, setup, initial=initial, runner=runner)
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            await tg.start(part.run)
            await _until(lambda: part.up)
            os.kill(initial.pid, signal.SIGKILL)
            await _until(lambda: part.up is False)
            assert not part.available
            await _until(lambda: part.up and part.pid not in (None, initial.pid))
            assert (part.restarts, part.last_exit_code, part.last_signal) == (1, 137, "SIGKILL")
            assert metrics.registry.get_sample_value("dind_containerd_restarts_total") == 1
            assert metrics.registry.get_sample_value("dind_containerd_up") == 1
            second = part.pid
            tg.cancel_scope.cancel()
    exits = [e for e in logs if e["event"] == "containerd_exited"]
    assert [(e["pid"], e["exit_code"], e["signal"]) for e in exits] == [
        (initial.pid, 137, "SIGKILL"), (second, 0, None)]
    assert exits[0]["restart_in_seconds"] == 0.0
    assert "containerd_terminating" in [e["event"] for e in logs]
    assert any(e.get("source") == "containerd" for e in logs)  # its own lines, as its own
    assert setup.pidfile is not None
    assert not setup.pidfile.exists()


@pytest.mark.anyio
async def test_part_replaces_a_containerd_that_stops_answering(
    runner: Runner, setup: cplan.Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGSTOP (alive, silent): down after two missed probes, replaced after
    liveness.failures of them (TERM, KILL after kill_grace)."""
    monkeypatch.setattr(service, "PROBE_INTERVAL", 0.05)
    monkeypatch.setattr(service, "PROBE_TIMEOUT", 0.05)
    cfg = _config()
    cfg = dataclasses.replace(cfg, liveness=dataclasses.replace(cfg.liveness, failures=3,
                                                                kill_grace=0.2))
    initial = runner.spawn()
    part = service.ContainerdService(cfg, Metrics(), setup, initial=initial, runner=runner)
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            await tg.start(part.run)
            await _until(lambda: part.up)
            os.kill(initial.pid, signal.SIGSTOP)
            await _until(lambda: part.up and part.pid not in (None, initial.pid))
            tg.cancel_scope.cancel()
    events = [e["event"] for e in logs if e.get("component", "containerd") == "containerd"
              and e.get("source") != "containerd"]
    assert events.index("containerd_not_answering") < events.index("containerd_unhealthy")
    assert events.index("containerd_unhealthy") < events.index("containerd_exited")


@pytest.mark.anyio
async def test_part_counts_dockerds_own_restart_of_containerd(
    runner: Runner, setup: cplan.Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """managed by dockerd: the exit is seen on a pidfd (exit code unknown: dockerd reaps it),
    and the next containerd under the same dockerd counts as a restart."""
    monkeypatch.setattr(service, "PROBE_INTERVAL", 0.05)
    dockerd_setup = dataclasses.replace(setup, managed_by=cplan.ManagedBy.DOCKERD)
    current: list[ContainerdProcess] = [runner.spawn()]
    part = service.ContainerdService(_config(), Metrics(), dockerd_setup,
                                     find_pid=lambda: current[-1].pid, dockerd_pid=lambda: 42)
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            await tg.start(part.run)
            await _until(lambda: part.up)
            first = current[-1]
            first.send_signal(signal.SIGKILL)
            await _until(lambda: part.up is False)
            await first.wait()  # "dockerd" reaps it
            current.append(await anyio.to_thread.run_sync(runner.spawn))
            await _until(lambda: part.up and part.pid == current[-1].pid)
            assert part.restarts == 1
            tg.cancel_scope.cancel()
    current[-1].send_signal(signal.SIGKILL)
    await current[-1].wait()
    [exited] = [e for e in logs if e["event"] == "containerd_exited"]
    assert (exited["pid"], exited["exit_code"], exited["managed_by"]) == (first.pid, None,
                                                                          "dockerd")


@pytest.mark.anyio
async def test_a_stop_only_agent_starts_no_containerd(runner: Runner, setup: cplan.Setup) -> None:
    """The agent PID 1 starts only to stop what runs: with no containerd left, none is started."""
    part = service.ContainerdService(_config(), Metrics(), setup, runner=runner, may_spawn=False)
    with anyio.fail_after(5):
        await part.run()
    assert (part.pid, part.restarts) == (None, 0)
    assert not setup.address.exists()
