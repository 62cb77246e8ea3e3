"""cgroup nesting: detect v1 / hybrid / v2 and, on v2, make the container's root group nestable.

Owns: the detection (pure, from parsed mountinfo and /proc/self/cgroup), and on
v2 the move of every process out of the root group into ``init`` followed by
enabling every available controller in the root's ``cgroup.subtree_control``
(what moby's hack/dind does in shell), through a small ``CgroupFS`` object.
Does not own mounting cgroupfs, dockerd's cgroup driver, or resource limits.

Why a loop: cgroup v2's "no internal processes" rule makes subtree_control
return EBUSY while any process sits in the (namespace-)root group, and
``docker exec`` into the container starts new processes there at any moment
(docker-library/docker#308, #495). So: move everything, try to enable, and
when the kernel says EBUSY, move the newcomers and try again, a bounded number
of times. A pid that exits between listing and moving gives ESRCH and is
simply gone.

The agent itself (and PID 1) are moved like every other process, so dockerd,
which the agent spawns afterwards, inherits ``/init`` and the root group stays
empty: dockerd can then create its container groups next to ``init``.

Once nesting is done, everything started later by ``docker exec`` (``check``
among them) is put into ``/init`` too (the root group may hold no process any
more), so "am I in my own namespace?" is judged from the namespace's tree, not
from the caller's own group alone: ``/`` before nesting, ``/init`` after it.
"""

from __future__ import annotations

import enum
import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from supervisor.errors import PreparationError
from supervisor.findings import Severity
from supervisor.mountinfo import MountEntry
from supervisor.prepare.mounts import visible_mount
from supervisor.prepare.report import Outcome, StepReport, reported

DEFAULT_ROOT = "/sys/fs/cgroup"
DEFAULT_INIT_GROUP = "init"  # the name docker:dind uses
DEFAULT_MAX_ROUNDS = 50
_TOPIC = "prepare.cgroup"


class CgroupMode(enum.StrEnum):
    V1 = "v1"  # only v1 hierarchies
    HYBRID = "hybrid"  # v1 hierarchies plus a cgroup2 mount (systemd's "unified")
    V2 = "v2"  # cgroup2 mounted on the cgroup root
    NONE = "none"  # nothing mounted there


def detect_mode(entries: Sequence[MountEntry], root: str = DEFAULT_ROOT) -> CgroupMode:
    """Which cgroup layout is mounted at ``root``."""
    top = visible_mount(entries, root)
    if top is not None and top.fstype == "cgroup2":
        return CgroupMode.V2
    if top is not None and top.fstype == "cgroup":
        return CgroupMode.V1
    below = [e for e in entries if e.mount_point.startswith(root.rstrip("/") + "/")]
    has_v1 = any(e.fstype == "cgroup" for e in below)
    has_v2 = any(e.fstype == "cgroup2" for e in below)
    if has_v1 and has_v2:
        return CgroupMode.HYBRID
    if has_v1:
        return CgroupMode.V1
    if has_v2:
        return CgroupMode.HYBRID
    return CgroupMode.NONE


def own_v2_path(proc_self_cgroup: str) -> str | None:
    """Our cgroup v2 path from /proc/self/cgroup (the ``0::`` line), relative to our namespace."""
    for line in proc_self_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:].strip()
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class NestingPlan:
    """Whether the agent may (and must) reorganise the root group, and why."""

    mode: CgroupMode
    act: bool
    reason: str
    read_only: bool = False


def plan_nesting(
    entries: Sequence[MountEntry],
    proc_self_cgroup: str,
    root: str = DEFAULT_ROOT,
    *,
    init_group: str = DEFAULT_INIT_GROUP,
    init_group_exists: bool = False,
) -> NestingPlan:
    """Pure: act only on v2 when the mount is the namespace root and we are in it.

    "In it" means our own cgroup is the root (``/``: nothing nested yet) or
    the ``init_group`` this step makes there (``/init``: nested already, and we
    are a process started afterwards, e.g. by ``docker exec``, or an agent
    restarted in the same container). With ``--cgroupns=host`` (or ``unshare
    --cgroup`` without a remount) the groups seen are the host's, with its
    processes in them, and moving those would be a disaster: our path there is
    the container's own group (``/system.slice/docker-<id>.scope``,
    ``/docker/<id>``), never one of these two.
    """
    mode = detect_mode(entries, root)
    if mode is not CgroupMode.V2:
        return NestingPlan(
            mode=mode, act=False, reason=f"cgroup {mode}: dockerd nests without help"
        )
    mount = visible_mount(entries, root)
    assert mount is not None  # noqa: S101 - detect_mode returned V2 from this mount
    own = own_v2_path(proc_self_cgroup)
    nested = f"/{init_group}"
    if mount.root == "/" and own == "/":
        return NestingPlan(
            mode=mode,
            act=True,
            read_only=mount.read_only,
            reason="cgroup v2 and the agent is at the root of its cgroup namespace",
        )
    if mount.root == "/" and own == nested and init_group_exists:
        return NestingPlan(
            mode=mode,
            act=True,
            read_only=mount.read_only,
            reason=f"cgroup v2 and the agent is in {root}{nested}, the group nesting makes at"
            " the root of its cgroup namespace (nested already)",
        )
    return NestingPlan(
        mode=mode,
        act=False,
        reason=f"the agent is in cgroup {own!r} and {root} shows {mount.root!r}: this is not"
        " the container's own cgroup namespace (--cgroupns=host?), so the agent moves"
        " nothing; dockerd will make its containers' groups outside this container's"
        " group, where the container's --memory, --cpus and --pids-limit do not bound them",
    )


class CgroupFS(Protocol):
    """cgroupfs access; tests pass a fake tree with the kernel's semantics."""

    def read_text(self, path: str) -> str: ...

    def write_text(self, path: str, text: str) -> None:
        """Exactly one write(2) of ``text``; raise OSError with the kernel's errno."""

    def make_dir(self, path: str) -> None:
        """mkdir, tolerating an existing directory."""


class OsCgroupFS:
    """The real cgroupfs."""

    def read_text(self, path: str) -> str:
        with open(path, encoding="ascii") as f:
            return f.read()

    def write_text(self, path: str, text: str) -> None:
        # cgroupfs takes one value per write(2); buffered text I/O could merge
        # or split writes, so go straight to the file descriptor.
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, text.encode("ascii"))
        finally:
            os.close(fd)

    def make_dir(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class NestingResult:
    moved: int  # pids written to init's cgroup.procs successfully
    vanished: int  # pids that exited before they could be moved (ESRCH)
    rounds: int
    enabled: tuple[str, ...]  # controllers this run enabled
    already_enabled: tuple[str, ...]
    unmovable: dict[int, str] = field(default_factory=dict)  # pid -> errno name


def _exists(fs: CgroupFS, path: str) -> bool:
    try:
        fs.read_text(path)
    except OSError:
        return False
    return True


def _pids(text: str) -> list[int]:
    return [int(tok) for tok in text.split() if tok.isdigit()]


def _errname(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def enable_nesting(
    fs: CgroupFS,
    root: str = DEFAULT_ROOT,
    *,
    init_group: str = DEFAULT_INIT_GROUP,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
) -> NestingResult:
    """Empty the root group into ``init_group``, then enable every available controller.

    Raises PreparationError naming the controller that cannot be enabled.
    """
    procs = f"{root}/cgroup.procs"
    target = f"{root}/{init_group}/cgroup.procs"
    subtree = f"{root}/cgroup.subtree_control"
    available = fs.read_text(f"{root}/cgroup.controllers").split()
    try:
        fs.make_dir(f"{root}/{init_group}")
    except OSError as exc:
        raise PreparationError(
            f"cannot create cgroup {root}/{init_group}: {_errname(exc)} ({exc.strerror})",
            step="cgroup",
            remedy=_write_remedy(exc),
        ) from exc
    already = tuple(c for c in available if c in fs.read_text(subtree).split())
    moved = vanished = 0
    unmovable: dict[int, str] = {}
    enabled: list[str] = []
    failures: dict[str, OSError] = {}
    rounds = 0
    for rounds in range(1, max(1, max_rounds) + 1):  # noqa: B007 - reported after the loop
        for pid in _pids(fs.read_text(procs)):
            try:
                fs.write_text(target, str(pid))
                moved += 1
                unmovable.pop(pid, None)
            except OSError as exc:
                if exc.errno == errno.ESRCH:
                    vanished += 1
                else:  # kernel threads (EINVAL) and the like stay; EBUSY below names them
                    unmovable[pid] = _errname(exc)
        current = fs.read_text(subtree).split()
        failures = {}
        busy = False
        for name in available:
            if name in current or name in enabled:
                continue
            try:
                fs.write_text(subtree, f"+{name}")
                enabled.append(name)
            except OSError as exc:
                failures[name] = exc
                if exc.errno == errno.EBUSY:
                    busy = True  # a newcomer in the root group: move it, try again
                    break
        if not busy:
            break
    if failures:
        left = _pids(fs.read_text(procs))
        raise _controller_error(
            failures, root=root, rounds=rounds, left=left, unmovable=unmovable
        )
    return NestingResult(
        moved=moved,
        vanished=vanished,
        rounds=rounds,
        enabled=tuple(enabled),
        already_enabled=already,
        unmovable=unmovable,
    )


def _write_remedy(exc: OSError) -> str:
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (
            "/sys/fs/cgroup is read-only or not writable here: run the container with"
            " --privileged (Docker-in-Docker needs it), or turn this step off with"
            " [prepare] cgroup = false"
        )
    return "check the container's privileges and cgroup namespace (--cgroupns=private)"


def _controller_error(
    failures: dict[str, OSError],
    *,
    root: str,
    rounds: int,
    left: list[int],
    unmovable: dict[int, str],
) -> PreparationError:
    name, exc = next(iter(failures.items()))
    code = _errname(exc)
    others = [n for n in failures if n != name]
    also = f" (also failing: {', '.join(others)})" if others else ""
    where = f"{root}/cgroup.subtree_control"
    if exc.errno == errno.EBUSY:
        stuck = ", ".join(f"{p} ({unmovable[p]})" if p in unmovable else str(p) for p in left)
        return PreparationError(
            f"cannot enable cgroup controller {name!r} in {where}: EBUSY after {rounds}"
            f" rounds, processes are still in the root group: {stuck or 'none listed'}{also}",
            step="cgroup",
            remedy="something keeps starting processes in the container's root cgroup while"
            " the agent starts (a docker exec loop?), or a process cannot be moved; stop it"
            " and restart the container",
        )
    if exc.errno == errno.EOPNOTSUPP and left:
        # Seen on kernel 6.12: threaded controllers (cpuset, cpu, pids) may be enabled in a
        # group that still holds processes, which makes it a "thread root"; domain
        # controllers (io, memory) are then refused with EOPNOTSUPP, not EBUSY.
        stuck = ", ".join(f"{p} ({unmovable[p]})" if p in unmovable else str(p) for p in left)
        return PreparationError(
            f"cannot enable cgroup controller {name!r} in {where}: {code} ({exc.strerror}):"
            f" processes are still in the root group ({stuck}), so the kernel refuses"
            f" domain controllers there{also}",
            step="cgroup",
            remedy="every process must leave the container's root cgroup before nesting:"
            " find what could not be moved (the pids above) and restart the container",
        )
    if exc.errno in (errno.ENOENT, errno.EINVAL, errno.EOPNOTSUPP):
        return PreparationError(
            f"cannot enable cgroup controller {name!r} in {where}: {code} ({exc.strerror}):"
            f" the outer runtime did not delegate it to this container{also}",
            step="cgroup",
            remedy=f"run the container with --cgroupns=private under a parent group that"
            f" delegates {name!r} (systemd: Delegate=yes), or turn this step off with"
            " [prepare] cgroup = false",
        )
    return PreparationError(
        f"cannot enable cgroup controller {name!r} in {where}: {code} ({exc.strerror}){also}",
        step="cgroup",
        remedy=_write_remedy(exc),
    )


def prepare_cgroups(
    fs: CgroupFS,
    entries: Sequence[MountEntry],
    proc_self_cgroup: str,
    *,
    root: str = DEFAULT_ROOT,
    init_group: str = DEFAULT_INIT_GROUP,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
    dry_run: bool = False,
) -> StepReport:
    """Detect the cgroup layout and, on v2 at the namespace root, enable nesting."""
    plan = plan_nesting(
        entries,
        proc_self_cgroup,
        root,
        init_group=init_group,
        init_group_exists=_exists(fs, f"{root}/{init_group}/cgroup.procs"),
    )
    data: dict[str, object] = {"mode": str(plan.mode), "root": root, "reason": plan.reason}
    if not plan.act:
        severity = Severity.WARNING if plan.mode is CgroupMode.V2 else Severity.OK
        if plan.mode is CgroupMode.NONE:
            severity = Severity.WARNING
        message = plan.reason if plan.mode is not CgroupMode.NONE else (
            f"no cgroup filesystem is mounted on {root}")
        remedy = "run the container with --cgroupns=private" if severity is Severity.WARNING \
            else None
        return reported("cgroup", Outcome.NOT_NEEDED, severity, message, remedy=remedy,
                        evidence={"mode": str(plan.mode)}, data=data)
    if plan.read_only:
        raise PreparationError(
            f"cgroup v2 is mounted read-only on {root}: dockerd cannot create container groups",
            step="cgroup",
            remedy="run the container with --privileged (Docker-in-Docker needs it), or turn"
            " this step off with [prepare] cgroup = false",
        )
    if dry_run:
        waiting = _pids(fs.read_text(f"{root}/cgroup.procs"))
        available = fs.read_text(f"{root}/cgroup.controllers").split()
        enabled = fs.read_text(f"{root}/cgroup.subtree_control").split()
        if not waiting and set(available) <= set(enabled):
            return reported("cgroup", Outcome.ALREADY, Severity.OK,
                            f"cgroup v2 nesting is in place: no process in {root},"
                            f" controllers enabled: {' '.join(enabled) or 'none'}",
                            data={**data, "root_processes": 0, "already_enabled": enabled})
        return reported("cgroup", Outcome.PLANNED, Severity.INFO,
                        f"would move {len(waiting)} process(es) from {root} into"
                        f" {root}/{init_group} and enable its controllers",
                        data={**data, "root_processes": len(waiting)})
    result = enable_nesting(fs, root, init_group=init_group, max_rounds=max_rounds)
    data.update(
        init_group=f"{root}/{init_group}",
        moved=result.moved,
        vanished=result.vanished,
        rounds=result.rounds,
        enabled=list(result.enabled),
        already_enabled=list(result.already_enabled),
    )
    outcome = Outcome.DONE if result.moved or result.enabled else Outcome.ALREADY
    return reported(
        "cgroup", outcome, Severity.INFO,
        f"cgroup v2: moved {result.moved} process(es) into {root}/{init_group}"
        f" ({result.vanished} exited meanwhile) in {result.rounds} round(s); controllers"
        f" enabled: {' '.join(result.enabled + result.already_enabled) or 'none'};"
        " dockerd inherits the agent's group",
        evidence={"moved": result.moved, "rounds": result.rounds}, data=data,
    )
