"""Mounts docker:dind's ``dind`` script makes: securityfs, a shared /, a tmpfs on /tmp.

Owns parsing /proc/self/mountinfo, the pure decisions (is securityfs mounted,
is / recursively shared, is /tmp a mount point) and applying them through a
small ``MountSystem`` object. Does not own cgroup mounts (``cgroups``), nor
deciding whether a failure is fatal: every failure here is a warning, since
dockerd starts without them (AppArmor detection, mount propagation into
containers and where /tmp lives degrade, nothing refuses to run).

Mounting uses mount(2) through ctypes rather than util-linux ``mount``: no
dependency on the image's userland, and the errno comes back unparsed.

securityfs and AppArmor: mounting securityfs is what makes dockerd see the
host kernel's AppArmor (``/sys/kernel/security/apparmor``). dockerd before 23
then insists on its docker-default profile and, with no apparmor_parser in
the image, fails every ``docker run`` ("AppArmor enabled on system but the
docker-default profile could not be loaded"); with apparmor_parser, a
privileged container loads that profile into the host kernel's one global
policy, replacing the host's own profile of that name. So securityfs is left
unmounted when the kernel has AppArmor on and the image has no parser
(nested containers then run without a profile, as dockerd 23 and later
decide by themselves), and mounting it with a parser present comes with a
warning about the host's policy.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import errno
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Protocol

from supervisor import mountinfo
from supervisor.findings import Finding, Severity
from supervisor.mountinfo import MountEntry
from supervisor.prepare.report import Outcome, StepReport, reported

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_RELATIME = 0x200000
MS_REC = 0x4000
MS_SHARED = 1 << 20

SECURITYFS_TARGET = "/sys/kernel/security"
SYS_TARGET = "/sys"
# Per-mount flags a remount must repeat, or the kernel clears them (and refuses
# to clear locked ones inside a user namespace).
_KEPT_FLAGS = {
    "nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME,
}
APPARMOR_PARSER = "apparmor_parser"
TMP_TARGET = "/tmp"  # noqa: S108 - the path docker:dind mounts a tmpfs on, not a temp file

def parse_mountinfo(text: str) -> tuple[MountEntry, ...]:
    """Parse mountinfo text; malformed lines are ignored rather than guessed at."""
    return mountinfo.parse_mountinfo(text, strict=False)


def visible_mount(entries: Sequence[MountEntry], mount_point: str) -> MountEntry | None:
    """The mount a path lookup sees at ``mount_point``: the top of any stack there."""
    here = [e for e in entries if e.mount_point == mount_point]
    covered = {e.parent_id for e in here}
    top = [e for e in here if e.mount_id not in covered]
    return top[-1] if top else None


# --- decisions (pure) ---------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class MountDecision:
    """Whether a step must mount, and if not, which outcome and why."""

    needed: bool
    outcome: Outcome  # the outcome when nothing is to be done
    reason: str
    severity: Severity = Severity.OK  # of the finding when nothing is done
    remedy: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AppArmorFacts:
    """What decides whether securityfs is safe to mount for dockerd."""

    kernel_enabled: bool  # /sys/module/apparmor/parameters/enabled says Y
    parser: str | None  # apparmor_parser on dockerd's PATH, if any


NO_APPARMOR = AppArmorFacts(kernel_enabled=False, parser=None)


def read_apparmor_facts(*, sys_root: str = "/sys", search_path: str | None = None) -> AppArmorFacts:
    """The kernel's AppArmor switch (readable in any container) and the image's parser."""
    try:
        with open(f"{sys_root}/module/apparmor/parameters/enabled", encoding="ascii") as f:
            enabled = f.read().strip().upper().startswith("Y")
    except OSError:  # no AppArmor built in, or /sys not mounted
        enabled = False
    return AppArmorFacts(
        kernel_enabled=enabled, parser=shutil.which(APPARMOR_PARSER, path=search_path)
    )


_NO_PARSER_EFFECT = (
    "dockerd before 23 then tries to load its docker-default AppArmor profile for every"
    " container and `docker run` fails with \"AppArmor enabled on system but the"
    " docker-default profile could not be loaded\""
)


def decide_securityfs(
    entries: Sequence[MountEntry],
    *,
    dir_exists: bool,
    apparmor: AppArmorFacts = NO_APPARMOR,
    target: str = SECURITYFS_TARGET,
) -> MountDecision:
    if not dir_exists:
        return MountDecision(
            needed=False, outcome=Outcome.NOT_NEEDED, reason=f"{target} does not exist"
        )
    unsafe = apparmor.kernel_enabled and apparmor.parser is None
    top = visible_mount(entries, target)
    if top is not None and top.fstype == "securityfs":
        if unsafe:
            return MountDecision(
                needed=False,
                outcome=Outcome.ALREADY,
                reason=f"securityfs is mounted on {target}, the kernel has AppArmor on and"
                f" this image has no {APPARMOR_PARSER}: {_NO_PARSER_EFFECT}",
                severity=Severity.WARNING,
                remedy=f"do not mount securityfs into the container (the agent does not,"
                f" when {APPARMOR_PARSER} is missing), or use dockerd 23 or later, which"
                " runs containers without AppArmor when it cannot load profiles",
            )
        return MountDecision(
            needed=False, outcome=Outcome.ALREADY, reason=f"securityfs is mounted on {target}"
        )
    if top is not None:
        # hack/dind only checks "is a mount point"; a different fs there was put
        # by the outer runtime on purpose (masking), so leave it.
        return MountDecision(
            needed=False,
            outcome=Outcome.ALREADY,
            reason=f"{top.fstype} is mounted on {target} by the outer runtime; left alone",
        )
    if unsafe:
        return MountDecision(
            needed=False,
            outcome=Outcome.NOT_NEEDED,
            reason=f"securityfs left unmounted on {target}: the kernel has AppArmor on and this"
            f" image has no {APPARMOR_PARSER} to load profiles with; mounted, {_NO_PARSER_EFFECT}."
            " Nested containers run without an AppArmor profile instead, as dockerd 23 and"
            " later decide by themselves without the parser",
            severity=Severity.INFO,
        )
    return MountDecision(
        needed=True, outcome=Outcome.DONE, reason=f"securityfs is not mounted on {target}"
    )


def decide_tmp(
    entries: Sequence[MountEntry],
    *,
    target: str = TMP_TARGET,
    keep_visible: Sequence[str] = (),
) -> MountDecision:
    """Mount a tmpfs on ``target`` unless it is a mount point already, or a tmpfs there
    would hide one of ``keep_visible`` (the agent's own interpreter and code)."""
    top = visible_mount(entries, target)
    if top is not None:
        return MountDecision(
            needed=False,
            outcome=Outcome.ALREADY,
            reason=f"{target} is already a mount point ({top.fstype})",
        )
    hidden = [p for p in keep_visible if PurePosixPath(p).is_relative_to(target)]
    if hidden:
        return MountDecision(
            needed=False,
            outcome=Outcome.SKIPPED,
            reason=f"a tmpfs on {target} would hide the agent's own files ({hidden[0]})",
            severity=Severity.WARNING,
            remedy=f"install the agent outside {target}, or turn the step off"
            " (--no-prepare-tmp) to silence this",
        )
    return MountDecision(
        needed=True, outcome=Outcome.DONE, reason=f"{target} is not a mount point"
    )


def decide_sys_rw(entries: Sequence[MountEntry], *, target: str = SYS_TARGET) -> MountDecision:
    """DOCKER_REMOUNT_SYS_RW: Kata Containers give /sys read-only even to privileged
    containers, and dockerd cannot nest cgroups or set sysctls there."""
    top = visible_mount(entries, target)
    if top is None:
        return MountDecision(
            needed=False, outcome=Outcome.NOT_NEEDED, reason=f"nothing is mounted on {target}"
        )
    if not top.read_only:
        return MountDecision(
            needed=False, outcome=Outcome.ALREADY, reason=f"{target} is mounted read-write"
        )
    return MountDecision(needed=True, outcome=Outcome.DONE, reason=f"{target} is read-only")


def remount_rw_flags(entries: Sequence[MountEntry], target: str = SYS_TARGET) -> int:
    top = visible_mount(entries, target)
    kept = 0
    for option in top.options if top is not None else ():
        kept |= _KEPT_FLAGS.get(option, 0)
    return MS_REMOUNT | kept


def unshared_mounts(entries: Sequence[MountEntry]) -> tuple[str, ...]:
    return tuple(e.mount_point for e in entries if not e.shared)


def decide_rshared(entries: Sequence[MountEntry]) -> MountDecision:
    private = unshared_mounts(entries)
    if not private and visible_mount(entries, "/") is not None:
        return MountDecision(
            needed=False, outcome=Outcome.ALREADY, reason="/ and every mount below are shared"
        )
    return MountDecision(
        needed=True,
        outcome=Outcome.DONE,
        reason=f"{len(private)} mount(s) are not shared (e.g. {', '.join(private[:3])})",
    )


# --- effects ------------------------------------------------------------------


class MountSystem(Protocol):
    """The mount side of the system: tests replace it with an in-memory table."""

    def read_mountinfo(self) -> str: ...

    def is_dir(self, path: str) -> bool: ...

    def mount(
        self, source: str | None, target: str, fstype: str | None, flags: int, data: str | None
    ) -> None:
        """Call mount(2); raise OSError with the kernel's errno on failure."""


class LinuxMountSystem:
    """mount(2) through libc, mountinfo from ``proc_root``."""

    def __init__(self, *, proc_root: str = "/proc") -> None:
        self._proc_root = proc_root
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._mount = libc.mount
        self._mount.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_char_p,
        ]
        self._mount.restype = ctypes.c_int

    def read_mountinfo(self) -> str:
        with open(f"{self._proc_root}/self/mountinfo", encoding="utf-8") as f:
            return f.read()

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def mount(
        self, source: str | None, target: str, fstype: str | None, flags: int, data: str | None
    ) -> None:
        def enc(s: str | None) -> bytes | None:
            return None if s is None else os.fsencode(s)

        if self._mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), target)


_IMPACT = {
    "sys_rw": "/sys stays read-only: cgroup nesting and sysctls inside may fail",
    "securityfs": "AppArmor detection, and --privileged containers inside, may break",
    "tmp": f"{TMP_TARGET} stays on the container's writable layer instead of a tmpfs",
    "rshared": "mounts with shared/slave propagation (e.g. bind-propagation=rshared volumes)"
    " made inside nested containers will not propagate",
}


def _remedy(err: OSError) -> str:
    if err.errno in (errno.EPERM, errno.EACCES):
        return (
            "the container lacks CAP_SYS_ADMIN or a security profile forbids mount(2):"
            " run it with --privileged (Docker-in-Docker needs it anyway)"
        )
    if err.errno == errno.ENODEV:
        return "the kernel does not offer this filesystem type; nothing to do in the container"
    if err.errno == errno.EROFS:
        return "the mount point is on a read-only filesystem: remount /sys rw (--privileged)"
    return "check the container's privileges; or turn this step off in [prepare]"


def apply_mount_step(
    step: str,
    system: MountSystem,
    decide: _Decide,
    *,
    source: str | None,
    target: str,
    fstype: str | None,
    flags: int,
    data: str | None = None,
    dry_run: bool = False,
) -> StepReport:
    """Decide from mountinfo, mount if needed, then confirm by reading mountinfo again."""
    try:
        before = parse_mountinfo(system.read_mountinfo())
    except OSError as exc:
        return reported(step, Outcome.FAILED, Severity.WARNING,
                        f"cannot read mountinfo to prepare {target}: {exc}",
                        remedy="mount /proc in the container")
    decision = decide(before, system)
    info = {"target": target, "reason": decision.reason}
    if not decision.needed:
        return reported(step, decision.outcome, decision.severity, decision.reason,
                        remedy=decision.remedy, data=info)
    if dry_run:
        return reported(step, Outcome.PLANNED, Severity.INFO,
                        f"would mount {fstype or 'propagation'} on {target}: {decision.reason}",
                        data=info)
    try:
        system.mount(source, target, fstype, flags, data)
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        return reported(step, Outcome.FAILED, Severity.WARNING,
                        f"{step}: mount on {target} failed with {name} ({exc.strerror});"
                        f" {_IMPACT[step]}",
                        remedy=_remedy(exc), evidence={"errno": name},
                        data={**info, "errno": name})
    after = decide(parse_mountinfo(system.read_mountinfo()), system)
    if after.needed:
        return reported(step, Outcome.FAILED, Severity.WARNING,
                        f"{step}: mount(2) on {target} returned success but mountinfo"
                        f" still says: {after.reason}; {_IMPACT[step]}", data=info)
    return reported(step, Outcome.DONE, Severity.INFO,
                    f"{step}: {decision.reason}: mounted {fstype or 'shared propagation'}"
                    f" on {target}, confirmed in mountinfo", data=info)


class _Decide(Protocol):
    def __call__(self, entries: Sequence[MountEntry], system: MountSystem, /) -> MountDecision: ...


def prepare_sys_rw(system: MountSystem, *, dry_run: bool = False) -> StepReport:
    try:
        flags = remount_rw_flags(parse_mountinfo(system.read_mountinfo()))
    except OSError:
        flags = MS_REMOUNT  # apply_mount_step reports the unreadable mountinfo
    return apply_mount_step(
        "sys_rw",
        system,
        lambda entries, _sys: decide_sys_rw(entries),
        source=None,
        target=SYS_TARGET,
        fstype=None,
        flags=flags,
        dry_run=dry_run,
    )


def prepare_securityfs(
    system: MountSystem, *, dry_run: bool = False, apparmor: AppArmorFacts = NO_APPARMOR
) -> StepReport:
    report = apply_mount_step(
        "securityfs",
        system,
        lambda entries, sys_: decide_securityfs(
            entries, dir_exists=sys_.is_dir(SECURITYFS_TARGET), apparmor=apparmor
        ),
        source="none",
        target=SECURITYFS_TARGET,
        fstype="securityfs",
        flags=0,
        dry_run=dry_run,
    )
    shared_policy = apparmor.kernel_enabled and apparmor.parser is not None
    if not shared_policy or report.outcome not in (Outcome.DONE, Outcome.ALREADY, Outcome.PLANNED):
        return report
    # A --privileged container is unconfined in the host's policy namespace:
    # whatever its dockerd loads with apparmor_parser -r lands in the host's policy.
    hazard = Finding(
        topic="prepare.securityfs",
        severity=Severity.WARNING,
        message=f"this image has {apparmor.parser} and securityfs is mounted: dockerd loads its"
        " docker-default AppArmor profile into the host kernel's single, global policy,"
        " replacing the host's own profile of that name for every container on the host",
        remedy=f"leave {APPARMOR_PARSER} (the apparmor package) out of the image, or turn"
        " this step off with [prepare] securityfs = false",
        data={"parser": apparmor.parser},
    )
    return dataclasses.replace(report, findings=(*report.findings, hazard))


def prepare_tmp(
    system: MountSystem, *, dry_run: bool = False, keep_visible: Sequence[str] = ()
) -> StepReport:
    return apply_mount_step(
        "tmp",
        system,
        lambda entries, _sys: decide_tmp(entries, keep_visible=keep_visible),
        source="none",
        target=TMP_TARGET,
        fstype="tmpfs",
        flags=0,
        dry_run=dry_run,
    )


def prepare_rshared(system: MountSystem, *, dry_run: bool = False) -> StepReport:
    return apply_mount_step(
        "rshared",
        system,
        lambda entries, _sys: decide_rshared(entries),
        source=None,
        target="/",
        fstype=None,
        flags=MS_REC | MS_SHARED,
        dry_run=dry_run,
    )
