"""kill -9 containerd → ``docker exec`` works again: the agent's containerd against dockerd's own.

Two sandboxes side by side, each with a running ``sleep`` container: one
with the default (the agent runs containerd and restarts it), one with
``--no-dockerd-manage-containerd`` (dockerd starts its own containerd, as
docker:dind, systemd's docker.service without containerd.service, and the
agent before this change do). The kills alternate between them. Each kill
waits until that containerd has run ``HEALTHY_AFTER`` seconds (the agent
restarts a containerd at once after a long run, and backs off after quick
deaths in a row) and times from the SIGKILL to the first ``docker exec keep
true`` that succeeds (a new CLI process every 20 ms at most; each takes
tens of milliseconds, the same for both). The running container must keep
its pid. Every wait is bounded.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from dataclasses import dataclass, field

from bench.probes import Workspace, wait_ping
from tests.integration.sandbox import Sandbox, busybox_rootfs_tar, poll

HEALTHY_AFTER = 10.0  # restart.healthy_after's default
START_TIMEOUT = 90.0
VARIANTS = {"ours": [], "dockerd": ["--no-dockerd-manage-containerd"]}


@dataclass(slots=True, kw_only=True)
class ContainerdRecovery:
    exec_back: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in VARIANTS})
    container_kept: list[bool] = field(default_factory=list)


def _containerd(box: Sandbox, other_than: int | None = None) -> int:
    def found() -> int | None:
        pids = [p for p in box.host_pids("containerd") if p != other_than]
        return pids[0] if len(pids) == 1 else None

    return int(poll(found, timeout=60, interval=0.01, what="containerd"))


def _exec_works(box: Sandbox) -> bool:
    return box.docker("exec", "keep", "true", timeout=20, check=False).returncode == 0


def _container_pid(box: Sandbox) -> str:
    return box.docker("inspect", "-f", "{{.State.Pid}}", "keep").stdout.strip()


def containerd_recovery(space: Workspace, kills: int) -> ContainerdRecovery:
    result = ContainerdRecovery()
    boxes = {name: space.sandbox(f"containerd-{name}", agent_args=args)
             for name, args in VARIANTS.items()}
    started: dict[str, float] = {}
    try:
        for name, box in boxes.items():
            box.start()
            wait_ping(box.socket, timeout=START_TIMEOUT)
            box.docker("import", str(busybox_rootfs_tar(box.root)), "busybox:test")
            box.docker("run", "-d", "--name", "keep", "--network", "none", "busybox:test",
                       "sleep", "1000000")
            started[name] = time.monotonic()
        for _ in range(kills):
            for name, box in boxes.items():
                # Deliberate: a containerd that dies sooner is a quick death, backed off.
                time.sleep(max(0.0, started[name] + HEALTHY_AFTER + 0.5 - time.monotonic()))
                before = _container_pid(box)
                old = _containerd(box)
                killed = time.monotonic()
                os.kill(old, signal.SIGKILL)
                poll(functools.partial(_exec_works, box), timeout=60, interval=0.02,
                     what=f"docker exec after kill -9 containerd ({name})")
                result.exec_back[name].append(time.monotonic() - killed)
                _containerd(box, other_than=old)
                started[name] = time.monotonic()
                result.container_kept.append(_container_pid(box) == before)
    finally:
        for box in boxes.values():
            space.close(box)
    return result
