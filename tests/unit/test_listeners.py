"""Tests for supervisor.dockerd.listeners: which sockets the agent holds for dockerd, binding them
safely (bound now, listening later), adopting inherited ones, and dockerd's argv with fd://."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from supervisor.config import load
from supervisor.dockerd import listeners
from supervisor.dockerd.process import build_argv
from supervisor.errors import ConfigError
from supervisor.tls.files import TlsFiles

pytestmark = pytest.mark.unit


def addresses(plan: listeners.Plan) -> list[str]:
    return [e.address for e in plan.endpoints]


def test_tls_holds_the_socket_and_2376() -> None:
    """TLS on: the unix socket and the TLS port; dockerd gets one --host=fd:// and no -H."""
    cfg = load(env={"DOCKER_TLS_CERTDIR": "/certs"}, dockerd_args=("--debug",))
    plan = listeners.plan(cfg, tls=True)
    assert addresses(plan) == ["unix:///var/run/docker.sock", "tcp://0.0.0.0:2376"]
    argv = build_argv(cfg, tls=TlsFiles.of("/certs", "server"), held=plan)
    assert [a for a in argv if "host" in a] == ["--host=fd://"]
    assert argv[-1] == "--debug"


def test_tls_off_holds_docker_dinds_2375() -> None:
    """TLS off: the socket and the unauthenticated 2375 (unless plain_tcp is off)."""
    assert addresses(listeners.plan(load(env={}), tls=False)) == [
        "unix:///var/run/docker.sock", "tcp://0.0.0.0:2375",
    ]
    off = load(env={"DIND_SUPERVISOR_DOCKERD_PLAIN_TCP": "false"})
    assert addresses(listeners.plan(off, tls=False)) == ["unix:///var/run/docker.sock"]


def test_user_hosts_are_held_too_and_removed_from_the_args() -> None:
    """The user's -H tcp:// and unix:// are held (they replace ours, our socket stays)."""
    cfg = load(env={}, dockerd_args=("-H", "tcp://127.0.0.1:4243", "--host=unix:///run/x.sock",
                                     "--debug"))
    plan = listeners.plan(cfg, tls=False)
    assert addresses(plan) == ["unix:///var/run/docker.sock", "tcp://127.0.0.1:4243",
                               "unix:///run/x.sock"]
    assert plan.user_args == ("--debug",)


@pytest.mark.parametrize(
    ("args", "exact", "env", "why"),
    [
        (("-H", "fd://"), False, {}, "fd://"),
        (("-H", "ssh://x"), False, {}, "ssh://x"),
        (("--debug",), True, {}, "exactly the given arguments"),
        ((), False, {"DIND_SUPERVISOR_DOCKERD_SOCKET_ACTIVATION": "false"}, "socket_activation"),
    ],
)
def test_nothing_held_says_why(
    args: tuple[str, ...], exact: bool, env: dict[str, str], why: str
) -> None:
    """When dockerd must bind its own sockets, the plan is empty and names the reason."""
    plan = listeners.plan(load(env=env, dockerd_args=args, exact_args=exact), tls=False)
    assert not plan.active
    assert why in (plan.why_not or "")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _plan_for(tmp_path: Path, *extra: str) -> tuple[listeners.Plan, object]:
    socket_path = tmp_path / "run" / "docker.sock"
    tcp = f"tcp://127.0.0.1:{_free_port()}"
    cfg = load(env={"DIND_SUPERVISOR_DOCKERD_HOST": f"unix://{socket_path}"},
               dockerd_args=("-H", f"unix://{socket_path}", "-H", tcp, *extra))
    return listeners.plan(cfg, tls=False), cfg


def test_sockets_are_bound_but_accept_only_after_listen(tmp_path: Path) -> None:
    """Bound now (a busy address fails early), refusing until listen(): a CI runner's health
    check must not see an open port before the client certificates exist. The unix socket is
    0660, like dockerd's own."""
    plan, cfg = _plan_for(tmp_path)
    held = listeners.open_listeners(plan, cfg)  # type: ignore[arg-type]
    try:
        _unix, tcp = held.items
        port = tcp.sock.getsockname()[1]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        assert stat.S_IMODE(os.stat(tmp_path / "run" / "docker.sock").st_mode) == 0o660
        held.listen()
        socket.create_connection(("127.0.0.1", port), timeout=1).close()  # waits in the backlog
    finally:
        held.close()
    assert not (tmp_path / "run" / "docker.sock").exists()


def test_a_stale_socket_file_is_replaced_but_a_live_one_refused(tmp_path: Path) -> None:
    """A socket file left by a dead daemon is taken over; one another process serves is a
    configuration error naming it (one daemon per socket); a regular file is never removed."""
    plan, cfg = _plan_for(tmp_path)
    path = tmp_path / "run" / "docker.sock"
    path.parent.mkdir()
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens
    listeners.open_listeners(plan, cfg).close()  # type: ignore[arg-type]
    live = socket.socket(socket.AF_UNIX)
    live.bind(str(path))
    live.listen()
    try:
        with pytest.raises(ConfigError, match="served by another process"):
            listeners.open_listeners(plan, cfg)  # type: ignore[arg-type]
    finally:
        live.close()
    path.unlink()
    path.write_text("not a socket")
    with pytest.raises(ConfigError, match="is not a socket"):
        listeners.open_listeners(plan, cfg)  # type: ignore[arg-type]
    assert path.read_text() == "not a socket"


def test_inherited_sockets_are_adopted_not_bound_again(tmp_path: Path) -> None:
    """A new agent gets the sockets back from PID 1: matching ones are adopted as they are
    (still listening, queue intact), others closed."""
    plan, cfg = _plan_for(tmp_path)
    first = listeners.open_listeners(plan, cfg)  # type: ignore[arg-type]
    first.listen()
    stray = socket.socket()
    copies = [s.sock.dup() for s in first.items] + [stray]
    again = listeners.open_listeners(plan, cfg, copies)  # type: ignore[arg-type]
    try:
        assert [item.adopted for item in again.items] == [True, True]
        assert all(item.listening for item in again.items)
        assert stray.fileno() == -1
    finally:
        again.close()
        for item in first.items:
            item.sock.close()
