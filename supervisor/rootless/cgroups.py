"""Can a rootless dockerd limit its containers? Only with cgroup v2 delegated to the user.

A rootless dockerd cannot create cgroups in a hierarchy owned by root: on
cgroup v1 (or hybrid) it runs with the "none" cgroup driver, and
``docker run --memory``/``--pids-limit``/``--cpus`` are accepted but not
enforced (dockerd warns "Running in rootless-mode without cgroups"). On
cgroup v2 it needs its own cgroup delegated to the user (writable
``cgroup.procs`` and ``cgroup.subtree_control``) with the controllers
enabled; Docker documents the systemd driver (a user systemd instance) as
the supported way. This module predicts the answer before dockerd starts
(``detect``, for ``check`` and /status); once dockerd is ready its own
``CgroupDriver`` (``none`` or not) is the fact, which ``view.py`` records.
Reads through ``proc_root`` and ``cgroup_root``, so tests use a fake tree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from supervisor.findings import Finding, Severity
from supervisor.mountinfo import MountinfoError, read_mountinfo
from supervisor.prepare.cgroups import CgroupMode, detect_mode, own_v2_path

LIMIT_CONTROLLERS = ("memory", "pids", "cpu")
_FLAGS = "docker run --memory, --pids-limit and --cpus"


@dataclass(frozen=True, slots=True, kw_only=True)
class Delegation:
    limits_apply: bool
    mode: str  # v1, hybrid, v2, none (prepare.cgroups.CgroupMode)
    cgroup: str | None  # the agent's cgroup v2 path
    controllers: tuple[str, ...]  # enabled for it (v2)
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"limits_apply": self.limits_apply, "mode": self.mode, "cgroup": self.cgroup,
                "controllers": list(self.controllers), "reason": self.reason}

    def finding(self) -> Finding:
        if self.limits_apply:
            return Finding(topic="rootless", severity=Severity.OK,
                           message=f"cgroup v2 delegated ({', '.join(self.controllers)}):"
                           f" {_FLAGS} apply to nested containers")
        return Finding(
            topic="rootless", severity=Severity.WARNING,
            message=f"nested {_FLAGS} do not apply: {self.reason}",
            remedy="boot the host with cgroup v2 only (systemd.unified_cgroup_hierarchy=1) and"
            " delegate the container's cgroup to the user (Docker documents a user systemd"
            " instance with Delegate=yes), or limit the whole dind container from outside",
            data=self.as_dict(),
        )


def detect(proc_root: str = "/proc", cgroup_root: str = "/sys/fs/cgroup") -> Delegation:
    """Whether cgroup limits of nested containers can be enforced by a rootless dockerd."""
    try:
        entries = read_mountinfo(Path(proc_root), strict=False)
    except (OSError, MountinfoError):
        entries = ()
    mode = detect_mode(entries, cgroup_root)
    if mode is not CgroupMode.V2:
        return Delegation(
            limits_apply=False, mode=str(mode), cgroup=None, controllers=(),
            reason=f"the cgroup hierarchy is {mode}, and a rootless dockerd uses cgroups on v2"
            " only (it runs with the 'none' cgroup driver)",
        )
    try:
        own = own_v2_path((Path(proc_root) / "self" / "cgroup").read_text())
    except OSError:
        own = None
    folder = Path(cgroup_root) / (own or "/").lstrip("/")
    try:
        controllers = tuple((folder / "cgroup.controllers").read_text().split())
    except OSError:
        controllers = ()
    writable = all(os.access(folder / name, os.W_OK)
                   for name in ("cgroup.procs", "cgroup.subtree_control"))
    missing = [c for c in LIMIT_CONTROLLERS if c not in controllers]
    if not writable:
        reason = (f"cgroup {own} is not delegated to uid {os.geteuid()} (its cgroup.procs and"
                  " cgroup.subtree_control are not writable)")
    elif missing:
        reason = f"cgroup {own} lacks the controllers {', '.join(missing)}"
    else:
        reason = f"cgroup {own} is delegated with {', '.join(controllers)}"
    return Delegation(limits_apply=writable and not missing, mode=str(mode), cgroup=own,
                      controllers=controllers, reason=reason)
