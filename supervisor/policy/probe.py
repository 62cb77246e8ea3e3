"""Reading the facts the policy depends on from a /proc tree.

Owns parsing /proc/<pid>/limits, /proc/<pid>/oom_score_adj, /proc/<pid>/status
(CapEff, CapBnd), /proc/sys/fs/nr_open and /proc/<pid>/task/*/children. Every
function takes the /proc root so tests point it at a fake tree. Decides nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from supervisor.policy.limits import parse_proc_limits
from supervisor.policy.plan import Facts

CAP_SYS_RESOURCE = 24
DEFAULT_NR_OPEN = 1048576  # the kernel's default, used when /proc/sys is not readable


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    effective: int
    bounding: int

    def effective_has(self, cap: int) -> bool:
        return bool(self.effective >> cap & 1)

    def bounding_has(self, cap: int) -> bool:
        return bool(self.bounding >> cap & 1)


def _pid_dir(proc_root: str | Path, pid: int | str) -> Path:
    return Path(proc_root) / str(pid)


def read_limits(proc_root: str | Path, pid: int | str) -> dict[int, tuple[int, int]]:
    """``{rlimit type: (soft, hard)}`` from /proc/<pid>/limits."""
    return parse_proc_limits((_pid_dir(proc_root, pid) / "limits").read_text())


def read_oom_score_adj(proc_root: str | Path, pid: int | str) -> int:
    return int((_pid_dir(proc_root, pid) / "oom_score_adj").read_text().strip())


def read_nr_open(proc_root: str | Path) -> int:
    try:
        return int((Path(proc_root) / "sys/fs/nr_open").read_text().strip())
    except (OSError, ValueError):
        return DEFAULT_NR_OPEN


def read_euid(proc_root: str | Path, pid: int | str) -> int:
    """The effective uid (second figure of the ``Uid:`` line of /proc/<pid>/status)."""
    for line in (_pid_dir(proc_root, pid) / "status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[2])
    return 0


def in_initial_user_namespace(proc_root: str | Path, pid: int | str) -> bool:
    """Whether the process's capabilities count for rlimits: setrlimit asks for
    CAP_SYS_RESOURCE in the initial user namespace, so a full CapEff inside a user
    namespace (rootless, userns-remap) raises nothing. No uid_map readable: assume so."""
    try:
        rows = (_pid_dir(proc_root, pid) / "uid_map").read_text().split()
    except OSError:
        return True
    return rows == ["0", "0", "4294967295"]


def read_capabilities(proc_root: str | Path, pid: int | str) -> Capabilities:
    fields: dict[str, int] = {}
    for line in (_pid_dir(proc_root, pid) / "status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("CapEff", "CapBnd"):
            fields[name] = int(value.strip(), 16)
    return Capabilities(effective=fields.get("CapEff", 0), bounding=fields.get("CapBnd", 0))


def read_facts(
    proc_root: str | Path = "/proc", pid: int | str = "self", *, init_pid: int | None = None
) -> Facts:
    """The Facts for planning, seen from process ``pid`` (the agent).

    ``init_pid`` is PID 1's number when PID 1 is our own init, whose
    oom_score_adj the policy then also sets.
    """
    return Facts(
        limits=read_limits(proc_root, pid),
        nr_open=read_nr_open(proc_root),
        cap_sys_resource=read_capabilities(proc_root, pid).effective_has(CAP_SYS_RESOURCE),
        oom_score_adj=read_oom_score_adj(proc_root, pid),
        init_oom_score_adj=None if init_pid is None else read_oom_score_adj(proc_root, init_pid),
        unprivileged=read_euid(proc_root, pid) != 0,
    )


def find_children(proc_root: str | Path, pid: int, *, comm: str | None = None) -> list[int]:
    """Direct children of ``pid`` (e.g. dockerd's containerd), optionally by command name.

    Reads /proc/<pid>/task/*/children (Linux 4.2+ with CONFIG_PROC_CHILDREN);
    returns [] when the process is gone.
    """
    children: list[int] = []
    try:
        tasks = sorted((_pid_dir(proc_root, pid) / "task").iterdir())
    except OSError:
        return []
    for task in tasks:
        try:
            children.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    if comm is None:
        return children
    matching = []
    for child in children:
        try:
            name = (_pid_dir(proc_root, child) / "comm").read_text().strip()
        except OSError:
            continue
        if name == comm:
            matching.append(child)
    return matching
