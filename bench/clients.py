"""What a client of dockerd sees: calls across restarts, the first call, a build across a rotation.

Owns three scenarios, each ours beside its comparison in the same run:

- ``faults``: a TLS client calling every 100 ms (``tests.integration.clientloop``,
  inside the sandbox's network namespace) throughout certificate rotations,
  kill -9 recoveries of dockerd and a hang restart; against bare dockerd
  restarted the same way by a small launcher (``bench/launcher.py``), which
  has no held socket and so refuses calls while dockerd is down. Failed calls
  are counted by the phase they began in; those in flight at a kill -9 are
  counted apart (see ``clientloop.tally``).
- ``first_call``: a client started with the container (in its namespaces, by
  the shell that then execs PID 1) makes calls with the docker CLI until one is
  answered: how many were refused before, and when the first answer came.
- ``build_across_rotation``: a `docker build` over TLS that keeps its
  connection busy while the server certificate's renewal falls due; the
  renewal waits for quiet (``tls.rotation_idle``) and the build completes.
  Beside it, the same with ``tls.rotation_max_wait`` 0 (no waiting).

Every wait is bounded; traffic stays on loopback inside each sandbox's own
network namespace. Does not own the sandbox harness or the report.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.probes import Workspace, ping, wait_ping
from tests.integration.clientloop import Call, ClientLoop, Tally, tally
from tests.integration.sandbox import PYTHON, Sandbox, busybox_rootfs_tar, poll

HERE = Path(__file__).resolve().parent
TLS_ENV = {"DOCKER_TLS_CERTDIR": "/certs"}
START_TIMEOUT = 90.0
SETTLE_CALLS = 5  # answered calls after a recovery before the next fault
# Shortened so that one scenario takes about a minute: renewals every ~13 s, a
# dockerd ready for 1 s counts as healthy (restarted at once when it dies), and
# a hang is found in about 2 s (ping every 1 s, 0.5 s timeout, 2 misses, 1 s grace).
SERVER_LIFETIME = 20.0
FAULT_ARGS = [
    "--tls-server-lifetime", f"{SERVER_LIFETIME:g}s", "--restart-healthy-after", "1",
    "--liveness-interval", "1", "--liveness-timeout", "0.5", "--liveness-failures", "2",
    "--liveness-kill-grace", "1",
]
HEALTHY_AFTER = 1.0


# Shared ------------------------------------------------------------------------------


def same_flags(argv: Sequence[str], serves: Sequence[str]) -> list[str]:
    """Our dockerd's argv for a bare dockerd: the held sockets' addresses instead of fd://,
    and no ``--containerd`` (the containerd the agent runs): bare dockerd starts its own,
    as docker:dind's does."""
    hosts = [f"--host={address}" for address in serves]
    kept = (a for a in argv[1:] if a != "--host=fd://" and not a.startswith("--containerd="))
    return [argv[0], *hosts, *kept]


def make_certs(dest: Path) -> Path:
    """A CA, server and client set in docker:dind's layout, for bare dockerd and its clients."""
    from supervisor.tls import certs
    from supervisor.tls.model import CertSpec
    from supervisor.tls.san import default_sans

    sans = default_sans(hostnames=["docker"], proc_root=Path("/proc"))
    certs.ensure(dest, CertSpec(), sans, dt.datetime.now(dt.UTC))
    return dest


def _new_dockerd(box: Sandbox, old: int | None) -> bool:
    pid = box.dockerd_pid()
    return pid is not None and pid != old and ping(box.socket)


def _settle(loop: ClientLoop, after: float, count: int = SETTLE_CALLS) -> None:
    """Until ``count`` calls that began after ``after`` were answered (bounded)."""
    def answered() -> bool:
        return sum(1 for c in loop.calls() if c.ok and c.start >= after) >= count

    poll(answered, timeout=60, interval=0.05, what=f"{count} answered client calls")


# Calls across faults -------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Side:
    """One side's calls: the whole run and each kind of fault."""

    total: Tally = field(default_factory=Tally)
    by_kind: dict[str, Tally] = field(default_factory=dict)
    hang_seconds: float = 0.0  # SIGSTOP until the hung dockerd was gone


@dataclass(slots=True, kw_only=True)
class Faults:
    rotations: int
    kills: int
    hangs: int
    ours: Side
    bare: Side


class _Run:
    """One side's run: the loop, the phases and the kill instants."""

    def __init__(self, box: Sandbox, certs: Path, out: Path) -> None:
        self.box = box
        self.loop = ClientLoop(box.pid1 or 0, certs / "client", out)
        self.phases: list[tuple[str, float, float]] = []
        self.kills: list[float] = []

    def phase(self, kind: str, act: Callable[[], None]) -> None:
        begun = time.monotonic()
        act()
        _settle(self.loop, time.monotonic())
        self.phases.append((kind, begun, time.monotonic()))

    def kill9(self) -> None:
        old = self.box.dockerd_pid()
        assert old is not None, self.box.log_tail()
        self.kills.append(time.monotonic())
        os.kill(old, signal.SIGKILL)
        poll(functools.partial(_new_dockerd, self.box, old), timeout=60, interval=0.005,
             what="a new dockerd after kill -9")

    def play(self, *, rotations: int, kills: int, hangs: int, rotation: Callable[[], None],
             kill: Callable[[], None], hang: Callable[[], None]) -> None:
        """The sequence both sides go through: rotation, kill -9 (in turns), then the hangs."""
        for index in range(max(rotations, kills)):
            if index < rotations:
                self.phase("rotation", rotation)
            if index < kills:
                self.phase("kill -9", kill)
        for _ in range(hangs):
            self.phase("hang", hang)

    def side(self) -> Side:
        calls: list[Call] = self.loop.stop()
        result = Side(total=tally(calls, self.kills))
        for kind, begun, ended in self.phases:
            part = tally(calls, self.kills, window=(begun, ended))
            mine = result.by_kind.setdefault(kind, Tally())
            mine.calls += part.calls
            mine.failed += part.failed
            mine.cut_by_kill += part.cut_by_kill
            mine.longest_gap = max(mine.longest_gap, part.longest_gap)
        return result


def _ours_faults(space: Workspace, rotations: int, kills: int,
                 hangs: int) -> tuple[Side, dict[str, Any]]:
    box = space.ours("calls-ours", env=TLS_ENV, agent_args=FAULT_ARGS)
    try:
        box.start()
        wait_ping(box.socket, timeout=START_TIMEOUT)
        box.wait_ready(timeout=60)
        started = box.events_named("dockerd_started")[0]
        run = _Run(box, box.certs, box.root / "calls.jsonl")
        run.loop.start()
        _settle(run.loop, time.monotonic())

        def rotation() -> None:
            seen = len(box.events_named("certificates_rotated"))
            old = box.dockerd_pid()
            poll(lambda: len(box.events_named("certificates_rotated")) > seen,
                 timeout=SERVER_LIFETIME * 2 + 30, interval=0.1, what="the agent's renewal")
            poll(functools.partial(_new_dockerd, box, old), timeout=60, interval=0.01,
                 what="dockerd restarted on the renewed certificate")

        def kill() -> None:
            time.sleep(HEALTHY_AFTER)  # deliberate: sooner is a failed start, backed off
            run.kill9()

        hang_seconds: list[float] = []

        def hang() -> None:
            time.sleep(HEALTHY_AFTER)
            old = box.dockerd_pid()
            assert old is not None
            stopped = time.monotonic()
            run.kills.append(stopped)  # the agent ends it with KILL: calls in flight are cut
            os.kill(old, signal.SIGSTOP)
            poll(lambda: box.dockerd_pid() != old, timeout=120, interval=0.01,
                 what="the hung dockerd replaced")
            hang_seconds.append(time.monotonic() - stopped)
            poll(functools.partial(_new_dockerd, box, old), timeout=60, interval=0.01,
                 what="a new dockerd after the hang")

        run.play(rotations=rotations, kills=kills, hangs=hangs, rotation=rotation, kill=kill,
                 hang=hang)
        side = run.side()
        side.hang_seconds = max(hang_seconds, default=0.0)
        return side, started
    finally:
        space.close(box)


def _bare_faults(space: Workspace, argv: list[str], certs: Path, *, rotations: int, kills: int,
                 hangs: int, hang_seconds: float) -> Side:
    command = [PYTHON, str(HERE / "launcher.py"), "--", *argv]
    box = space.sandbox("calls-bare", command=command, certs=certs)
    try:
        box.start()
        wait_ping(box.socket, timeout=START_TIMEOUT)
        run = _Run(box, certs, box.root / "calls.jsonl")
        run.loop.start()
        _settle(run.loop, time.monotonic())

        def restart() -> None:  # what a rotation means without held sockets: TERM, start again
            time.sleep(HEALTHY_AFTER)
            old = box.dockerd_pid()
            assert old is not None
            os.kill(old, signal.SIGTERM)
            poll(functools.partial(_new_dockerd, box, old), timeout=60, interval=0.005,
                 what="bare dockerd started again")

        def kill() -> None:
            time.sleep(HEALTHY_AFTER)
            run.kill9()

        def hang() -> None:  # found as late as ours found it, then KILLed and started again
            time.sleep(HEALTHY_AFTER)
            old = box.dockerd_pid()
            assert old is not None
            run.kills.append(time.monotonic())
            os.kill(old, signal.SIGSTOP)
            time.sleep(hang_seconds)  # deliberate: the same hang as ours
            os.kill(old, signal.SIGKILL)
            poll(functools.partial(_new_dockerd, box, old), timeout=60, interval=0.005,
                 what="bare dockerd after the hang")

        run.play(rotations=rotations, kills=kills, hangs=hangs, rotation=restart, kill=kill,
                 hang=hang)
        return run.side()
    finally:
        space.close(box)


def faults(space: Workspace, *, rotations: int, kills: int, hangs: int, certs: Path) -> Faults:
    """Ours first (its dockerd's flags and its hang's length are the comparison's), then bare
    on ``certs`` (a set made beforehand, as bare dockerd cannot issue one)."""
    ours, started = _ours_faults(space, rotations, kills, hangs)
    argv = same_flags(started["argv"], started["serves"])
    bare = _bare_faults(space, argv, certs, rotations=rotations, kills=kills, hangs=hangs,
                        hang_seconds=ours.hang_seconds or 3.0)
    return Faults(rotations=rotations, kills=kills, hangs=hangs, ours=ours, bare=bare)


# The first call -----------------------------------------------------------------------

# Started by the sandbox's shell just before it execs PID 1: the docker CLI, as a CI
# job's first command, calling again 10 ms after each refusal (at most 1000 times), so the
# time of the last refusal measures how long nobody listened.
FIRST_CALL_ATTEMPTS = 1000
_FIRST_CALL = (
    "{{ (i=0; last=0; until DOCKER_CONFIG=/run/bench-docker docker {target} version"
    " --format '{{{{.Server.Version}}}}' >/dev/null 2>/run/bench-first-call.err;"
    f" do last=$(date +%s.%N); i=$((i+1)); [ $i -ge {FIRST_CALL_ATTEMPTS} ] && break;"
    " sleep 0.01; done;"
    " echo \"$i $(date +%s.%N) $last\" > /run/bench-first-call) & }}"
)
TLS_TARGET = ("-H tcp://127.0.0.1:2376 --tlsverify --tlscacert /certs/client/ca.pem"
              " --tlscert /certs/client/cert.pem --tlskey /certs/client/key.pem")
UNIX_TARGET = "-H unix:///var/run/docker.sock"


@dataclass(slots=True, kw_only=True)
class FirstCall:
    """Per variant: seconds from the start to the first answer, calls refused before it, and
    seconds from the start to the last refusal (0 when none: nobody-listening window)."""

    seconds: dict[str, list[float]] = field(default_factory=dict)
    refused: dict[str, list[int]] = field(default_factory=dict)
    refused_until: dict[str, list[float]] = field(default_factory=dict)

    def add(self, variant: str, seconds: float, refused: int, refused_until: float) -> None:
        self.seconds.setdefault(variant, []).append(seconds)
        self.refused.setdefault(variant, []).append(refused)
        self.refused_until.setdefault(variant, []).append(refused_until)


def _first_call_once(box: Sandbox) -> tuple[float, int, float]:
    wall = time.time()
    box.start()
    done = box.run_dir / "bench-first-call"
    text = poll(lambda: done.exists() and done.read_text().strip(), timeout=60, interval=0.01,
                what="the first answered call")
    refused, finished, last = text.split()
    if int(refused) >= FIRST_CALL_ATTEMPTS:
        error = (box.run_dir / "bench-first-call.err").read_text()
        raise RuntimeError(f"no call answered: {error}")
    until = float(last) - wall if int(refused) else 0.0
    return float(finished) - wall, int(refused), until


def first_call(space: Workspace, rounds: int, bare_argv: list[str], certs: Path) -> FirstCall:
    """Restart over TLS (certificates exist) and first start on the unix socket, interleaved."""
    result = FirstCall()
    seed = space.ours("first-seed", env=TLS_ENV)
    seed.start()
    wait_ping(seed.socket, timeout=START_TIMEOUT)
    seed.wait_ready(timeout=60)
    space.stop(seed)
    bare_seed = space.sandbox("first-bare-seed", command=bare_argv, certs=certs)
    bare_seed.start()
    wait_ping(bare_seed.socket, timeout=START_TIMEOUT)
    space.stop(bare_seed)
    tls, unix = _FIRST_CALL.format(target=TLS_TARGET), _FIRST_CALL.format(target=UNIX_TARGET)
    for index in range(rounds):
        order = ("ours", "bare") if index % 2 == 0 else ("bare", "ours")
        for kind in order:
            if kind == "ours":
                boxes = {"ours_tls_restart": space.ours("first-ours", env=TLS_ENV, setup=tls,
                                                        data_root=seed.data_root,
                                                        certs=seed.certs),
                         "ours_unix_first": space.ours("first-ours-unix", env=TLS_ENV,
                                                       setup=unix)}
            else:
                boxes = {"bare_tls_restart": space.sandbox("first-bare", command=bare_argv,
                                                           setup=tls, certs=certs,
                                                           data_root=bare_seed.data_root),
                         "bare_unix_first": space.sandbox("first-bare-unix", command=bare_argv,
                                                          setup=unix, certs=certs)}
            for variant, box in boxes.items():
                try:
                    result.add(variant, *_first_call_once(box))
                finally:
                    space.stop(box)
    return result


# A build across a rotation ---------------------------------------------------------------

BUILD_LIFETIME = 60.0  # renewal at ~40 s; half the 20 s left (10 s) is the longest wait
BUILD_IDLE = 2.0
BUILD_STEPS = 16  # the RUN step prints a line every 0.5 s: 8 s of build traffic
BUILD_LEAD = 2.0  # the build starts this long before the renewal falls due
DOCKERFILE = (
    "FROM busybox:test\n"
    f"RUN for i in $(seq {BUILD_STEPS}); do echo step $i; sleep 0.5; done\n"
)


@dataclass(slots=True, kw_only=True)
class BuildResult:
    completed: bool
    seconds: float  # the build's own duration
    rotated_after_build: bool  # the renewal's restart came after the build ended
    waited: float  # the renewal's wait for quiet, from the agent's log (s)
    error: str = ""


@dataclass(slots=True, kw_only=True)
class Builds:
    waits: BuildResult  # tls.rotation_idle set, the renewal waits for quiet
    no_wait: BuildResult  # tls.rotation_max_wait 0: the renewal restarts dockerd at once


def _docker_tls(box: Sandbox, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    client = box.certs / "client"
    assert box.pid1 is not None
    return subprocess.run(
        ["nsenter", "-t", str(box.pid1), "-n", "--", "docker", "-H", "tcp://127.0.0.1:2376",
         "--tlsverify", f"--tlscacert={client / 'ca.pem'}", f"--tlscert={client / 'cert.pem'}",
         f"--tlskey={client / 'key.pem'}", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, "DOCKER_CONFIG": str(box.root / "docker-config"),
             "DOCKER_BUILDKIT": "0"},
    )


def _build_once(box: Sandbox, context: Path) -> BuildResult:
    wait_ping(box.socket, timeout=START_TIMEOUT)
    box.wait_ready(timeout=60)
    box.docker("import", str(busybox_rootfs_tar(box.root)), "busybox:test")
    due = dt.datetime.fromisoformat(box.status()["tls"]["next_rotation"])
    lead = (due - dt.datetime.now(dt.UTC)).total_seconds() - BUILD_LEAD
    time.sleep(max(0.0, lead))  # deliberate: the build must span the moment it falls due
    seen = len(box.events_named("certificates_rotated"))
    began = time.time()
    out = _docker_tls(box, "build", "--no-cache", "-t", "bench:build", str(context),
                      timeout=BUILD_LIFETIME)
    ended = time.time()
    poll(lambda: len(box.events_named("certificates_rotated")) > seen, timeout=BUILD_LIFETIME,
         interval=0.1, what="the renewal")
    restarts = [_stamp(e) for e in box.events_named("dockerd_terminating") if _stamp(e) >= began]
    waited = box.metric("dind_tls_rotation_wait_seconds_sum")
    return BuildResult(
        completed=out.returncode == 0, seconds=ended - began,
        rotated_after_build=bool(restarts) and restarts[0] >= ended,
        waited=float("nan") if waited is None else waited,
        error="" if out.returncode == 0 else (out.stderr.strip().splitlines() or ["?"])[-1],
    )


def _stamp(event: dict[str, object]) -> float:
    return dt.datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


def build_across_rotation(space: Workspace) -> Builds:
    """Both sandboxes at once: each build starts shortly before its own renewal is due."""
    context = space.root("build-context")
    (context / "Dockerfile").write_text(DOCKERFILE)
    lifetime = ["--tls-server-lifetime", f"{BUILD_LIFETIME:g}s"]
    boxes = {
        "waits": space.ours("build-waits", env=TLS_ENV,
                            agent_args=[*lifetime, "--tls-rotation-idle", f"{BUILD_IDLE:g}s"]),
        "no_wait": space.ours("build-no-wait", env=TLS_ENV,
                              agent_args=[*lifetime, "--tls-rotation-max-wait", "0s"]),
    }
    results: dict[str, BuildResult] = {}
    errors: list[BaseException] = []

    def run(name: str, box: Sandbox) -> None:
        try:
            results[name] = _build_once(box, context)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    try:
        for box in boxes.values():
            box.start()
        threads = [threading.Thread(target=run, args=item, daemon=True) for item in boxes.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=BUILD_LIFETIME * 3 + 60)
    finally:
        for box in boxes.values():
            space.close(box)
        shutil.rmtree(context, ignore_errors=True)
    if errors:
        raise errors[0]
    return Builds(waits=results["waits"], no_wait=results["no_wait"])


if __name__ == "__main__":  # one scenario alone, for development: python -m bench.clients faults
    from bench.probes import workspace

    with workspace() as ws:
        what = sys.argv[1] if len(sys.argv) > 1 else "faults"
        if what == "faults":
            print(faults(ws, rotations=1, kills=1, hangs=1,
                         certs=make_certs(ws.root("bare-certs") / "certs")))
        elif what == "build":
            print(build_across_rotation(ws))
