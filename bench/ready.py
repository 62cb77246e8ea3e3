"""Time to ready: ours against bare dockerd started with the same flags, in interleaved rounds.

Owns the time from starting the sandbox (``unshare``) to the first ``GET
/_ping`` answered on the unix socket, for: ours with TLS on an empty certdir
(certificates issued), ours restarted on that data root and certdir, ours
without TLS, and bare dockerd as PID 1 with exactly the flags our dockerd got
(the held sockets' addresses instead of ``fd://``; certificates made
beforehand), first start and restart on its previous data root. Rounds
alternate which goes first so that load from other users falls on both alike.
Also where our start spends its time: the agent's milestones from its log,
and the sandbox's own start-up. Every wait is bounded.
"""

from __future__ import annotations

import datetime as dt
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.clients import same_flags
from bench.probes import Workspace, wait_ping
from tests.integration.sandbox import Sandbox

TLS_ENV = {"DOCKER_TLS_CERTDIR": "/certs"}
START_TIMEOUT = 90.0
# Milestones of the agent's start, by the log event that marks them.
MILESTONES = {"agent_started": "agent", "certificates_ready": "certs",
              "containerd_started": "containerd", "dockerd_started": "dockerd_spawned",
              "dockerd_ready": "dockerd_ready"}


@dataclass(slots=True, kw_only=True)
class ReadyTimes:
    """Seconds from `unshare` to the first answered /_ping, per variant and run."""

    runs: dict[str, list[float]] = field(default_factory=dict)
    # Per variant of ours: offsets of the agent's milestones, and "answered".
    phases: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    bare_argv: list[str] = field(default_factory=list)
    sandbox_start: list[float] = field(default_factory=list)  # unshare + mounts + exec true

    def add(self, variant: str, seconds: float) -> None:
        self.runs.setdefault(variant, []).append(seconds)


def _start_timed(box: Sandbox) -> tuple[float, float]:
    """Start ``box``; return (seconds to the first /_ping answered, wall-clock start)."""
    wall = time.time()
    started = time.monotonic()
    box.start()
    answered = wait_ping(box.socket, timeout=START_TIMEOUT)
    return answered - started, wall


def _phases(box: Sandbox, wall_start: float, answered: float) -> dict[str, float]:
    """Offsets of the agent's milestones from the start, from its JSON log lines."""
    found: dict[str, float] = {"answered": answered}
    for event in box.events():
        name = MILESTONES.get(str(event.get("event")))
        if name and name not in found and "timestamp" in event:
            stamp = dt.datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00"))
            found[name] = stamp.timestamp() - wall_start
    return found


def _ours(space: Workspace, result: ReadyTimes, variant: str, **kwargs: object) -> Sandbox:
    box = space.ours(variant, **kwargs)  # type: ignore[arg-type]
    seconds, wall = _start_timed(box)
    result.add(variant, seconds)
    box.wait_ready(timeout=60)  # the agent logs dockerd_ready once it has confirmed it
    result.phases.setdefault(variant, []).append(_phases(box, wall, seconds))
    if not result.bare_argv:
        started = box.events_named("dockerd_started")[0]
        result.bare_argv = same_flags(started["argv"], started["serves"])
    space.stop(box)
    return box


def _bare(space: Workspace, result: ReadyTimes, variant: str, **kwargs: object) -> Sandbox:
    box = space.sandbox(variant, command=result.bare_argv, **kwargs)
    result.add(variant, _start_timed(box)[0])
    space.stop(box)
    return box


def sandbox_start(space: Workspace, runs: int = 5) -> list[float]:
    """What every variant pays before its first instruction: the sandbox's `unshare`, its
    three bind mounts and `ip link set lo up`, then `exec true` (Sandbox.start's script)."""
    root = space.root("empty")
    for name in ("lib", "run", "certs"):
        (root / name).mkdir()
    script = " && ".join([
        f"mount --bind {root / 'lib'} /var/lib/docker", f"mount --bind {root / 'run'} /run",
        f"mount --bind {root / 'certs'} /certs", "ip link set lo up", "exec true"])
    times = []
    for _ in range(runs):
        started = time.monotonic()
        subprocess.run(["unshare", "--pid", "--fork", "--mount", "--net", "--mount-proc",
                        "--propagation", "private", "--", "/bin/sh", "-c", script],
                       check=True, timeout=30)
        times.append(time.monotonic() - started)
    return times


def time_to_ready(space: Workspace, rounds: int, bare_certs: Path) -> ReadyTimes:
    """``rounds`` interleaved rounds; ours goes first in the first (its argv is bare's)."""
    result = ReadyTimes(sandbox_start=sandbox_start(space))
    for index in range(rounds):
        order: Sequence[str] = ("ours", "bare") if index % 2 == 0 else ("bare", "ours")
        for kind in order:
            if kind == "ours":
                first = _ours(space, result, "ours_tls_first", env=TLS_ENV)
                _ours(space, result, "ours_tls_restart", env=TLS_ENV,
                      data_root=first.data_root, certs=first.certs)
            else:
                first = _bare(space, result, "bare_first", certs=bare_certs)
                _bare(space, result, "bare_restart", certs=bare_certs,
                      data_root=first.data_root)
        _ours(space, result, "ours_notls_first")
    return result


def median_phase(times: ReadyTimes, variant: str, key: str) -> float | None:
    values = [p[key] for p in times.phases.get(variant, []) if key in p]
    return statistics.median(values) if values else None
