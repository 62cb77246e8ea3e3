"""Preflight of the data root: where it lives, whether overlay2 can work there, room left.

Owns: the judgement (pure ``assess``) and the probes it needs (mountinfo,
statvfs, a d_type test). Does not own the storage driver choice (dockerd
makes it; ``driver_findings`` explains it afterwards) nor metric objects.

What goes wrong in practice and is explained here: /var/lib/docker left on
the container's own overlay layer (state lost with the container, and overlay
on overlay makes dockerd fall back to vfs: slow, every layer a full copy,
docker-library/docker#343); xfs formatted with ftype=0 (no d_type, overlay2
refuses); filesystems overlay2 does not support as its backing (moby's list:
aufs, ecryptfs, nfs, overlay, zfs); a read-only or nearly full filesystem.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Protocol

from supervisor.dataroot.disk import DiskFigures, figures_from_statvfs
from supervisor.dataroot.mounts import MountEntry, mount_for, read_mountinfo
from supervisor.findings import Finding, Severity

TOPIC = "dataroot"
VOLUME_REMEDY = (
    "mount a volume on the data root, e.g. docker run -v dind-data:/var/lib/docker ..."
    " (Kubernetes: an emptyDir or a PersistentVolume mounted at /var/lib/docker)"
)
NOT_PERSISTENT_FSTYPES = frozenset({"tmpfs", "ramfs", "overlay"})
OVERLAY2_UNSUPPORTED = frozenset({"aufs", "ecryptfs", "nfs", "nfs4", "overlay", "zfs"})
LOW_FREE_BYTES = 2 * 1024**3
HIGH_USED_FRACTION = 0.95
LOW_FREE_INODES_FRACTION = 0.05


class FsProbe(Protocol):
    """The two filesystem questions preflight asks; tests answer them with a fake."""

    def statvfs(self, path: Path) -> os.statvfs_result: ...

    def supports_d_type(self, path: Path) -> bool | None:
        """True/False when known; None when it could not be tested (read-only, no permission)."""
        ...


class RealFsProbe:
    """Asks the kernel: statvfs, and readdir's d_type on a file created for the test."""

    def statvfs(self, path: Path) -> os.statvfs_result:
        return os.statvfs(path)

    def supports_d_type(self, path: Path) -> bool | None:
        # Python's scandir hides d_type (it falls back to lstat), so ask libc's
        # readdir. "." and ".." are not trusted: xfs reports them as DT_DIR even
        # with ftype=0, so a regular file is made and its entry examined.
        try:
            scratch = tempfile.mkdtemp(prefix=".dind-dtype-", dir=path)
        except OSError:
            return None
        try:
            Path(scratch, "probe").touch()
            return _readdir_types(scratch).get("probe") != _DT_UNKNOWN
        except OSError:
            return None
        finally:
            with contextlib.suppress(OSError):
                Path(scratch, "probe").unlink()
            with contextlib.suppress(OSError):
                os.rmdir(scratch)


_DT_UNKNOWN = 0


class _Dirent(ctypes.Structure):
    # struct dirent of glibc and musl on 64-bit Linux (the only targets).
    _fields_ = (
        ("d_ino", ctypes.c_uint64),
        ("d_off", ctypes.c_int64),
        ("d_reclen", ctypes.c_ushort),
        ("d_type", ctypes.c_ubyte),
        ("d_name", ctypes.c_char * 256),
    )


def _readdir_types(directory: str) -> dict[str, int]:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.opendir.restype = ctypes.c_void_p
    libc.opendir.argtypes = (ctypes.c_char_p,)
    libc.readdir.restype = ctypes.POINTER(_Dirent)
    libc.readdir.argtypes = (ctypes.c_void_p,)
    libc.closedir.argtypes = (ctypes.c_void_p,)
    handle = libc.opendir(os.fsencode(directory))
    if not handle:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno), directory)
    types: dict[str, int] = {}
    try:
        while entry := libc.readdir(handle):
            types[os.fsdecode(entry.contents.d_name)] = entry.contents.d_type
    finally:
        libc.closedir(handle)
    return types


@dataclass(frozen=True, slots=True, kw_only=True)
class DataRootReport:
    """What preflight found; ``findings`` explain every problem with its remedy."""

    path: str  # the data root with symlinks resolved
    exists: bool
    mount_point: str
    is_mount_point: bool  # a volume or bind mounted exactly on the data root
    fstype: str
    source: str
    on_container_layer: bool  # on an overlay mounted at "/": the container's writable layer
    persistent: bool  # survives the container: not tmpfs/ramfs, not an overlay layer
    overlay2_supported: bool | None  # None: d_type could not be tested
    d_type: bool | None
    figures: DiskFigures | None
    findings: tuple[Finding, ...]

    @property
    def worst(self) -> Severity:
        return max((f.severity for f in self.findings), default=Severity.OK)

    def info_labels(self, storage_driver: str) -> dict[str, str]:
        """Labels of ``dind_data_root_info`` once dockerd reported its storage driver."""
        return {
            "fstype": self.fstype,
            "storage_driver": storage_driver,
            "persistent": "true" if self.persistent else "false",
        }


def _nearest_existing(path: Path) -> Path:
    # dockerd creates the data root; until then its parent's filesystem is where it will be.
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def preflight(
    data_root: Path, proc_root: Path = Path("/proc"), *, probe: FsProbe | None = None
) -> DataRootReport:
    """Inspect the data root (creates nothing but a short-lived d_type test folder)."""
    probe = probe or RealFsProbe()
    resolved = Path(os.path.realpath(data_root))
    existing = _nearest_existing(resolved)
    mount = mount_for(resolved, read_mountinfo(proc_root))
    figures: DiskFigures | None
    try:
        figures = figures_from_statvfs(probe.statvfs(existing))
    except OSError:
        figures = None
    is_dir = existing.is_dir()
    d_type = probe.supports_d_type(existing) if is_dir else None
    return assess(
        resolved,
        mount,
        exists=resolved == existing,
        is_dir=is_dir,
        figures=figures,
        d_type=d_type,
    )


def assess(
    path: PurePath,
    mount: MountEntry,
    *,
    exists: bool,
    is_dir: bool,
    figures: DiskFigures | None,
    d_type: bool | None,
) -> DataRootReport:
    """Judge the facts preflight gathered; pure, so every case is a unit test."""
    where = str(path)
    on_layer = mount.mount_point == "/" and mount.fstype == "overlay"
    persistent = mount.fstype not in NOT_PERSISTENT_FSTYPES
    fs_ok = mount.fstype not in OVERLAY2_UNSUPPORTED
    overlay2 = False if not fs_ok or d_type is False else (None if d_type is None else True)
    facts = {"path": where, "fstype": mount.fstype, "mount_point": mount.mount_point}
    findings: list[Finding] = []

    def add(severity: Severity, message: str, remedy: str | None = None) -> None:
        findings.append(
            Finding(topic=TOPIC, severity=severity, message=message, remedy=remedy, data=facts)
        )

    if exists and not is_dir:
        add(
            Severity.ERROR,
            f"data root {where} exists but is not a directory",
            "remove it or point --data-root at a directory",
        )
    if mount.read_only:
        add(
            Severity.ERROR,
            f"data root {where} is on a read-only mount ({mount.mount_point})",
            "mount the volume read-write",
        )
    if on_layer:
        add(
            Severity.WARNING,
            f"data root {where} is on the container's own overlay layer: images, containers"
            " and volumes are lost with the container, and overlay on overlay makes dockerd"
            " fall back to the vfs storage driver (slow, every layer a full copy)",
            VOLUME_REMEDY,
        )
    elif mount.fstype == "overlay":
        add(
            Severity.WARNING,
            f"data root {where} is on an overlay mount ({mount.mount_point}): overlay2 cannot"
            " use overlay as its backing filesystem, dockerd will fall back to vfs, and the"
            " upper layer's lifetime is unknown",
            VOLUME_REMEDY,
        )
    elif not fs_ok:
        add(
            Severity.WARNING,
            f"data root {where} is on {mount.fstype}, which overlay2 does not support as its"
            " backing filesystem; dockerd will pick another storage driver",
            "use a local ext4 or xfs (ftype=1) volume for the data root",
        )
    elif mount.fstype in {"tmpfs", "ramfs"}:
        add(
            Severity.INFO,
            f"data root {where} is on {mount.fstype}: fast, but in memory and lost at stop",
            f"fine for throwaway CI; for state that survives, {VOLUME_REMEDY}",
        )
    if fs_ok and d_type is False:
        xfs = " (xfs formatted with ftype=0)" if mount.fstype == "xfs" else ""
        add(
            Severity.WARNING,
            f"the filesystem of data root {where}{xfs} does not report d_type:"
            " overlay2 refuses it and dockerd falls back to vfs",
            "reformat with d_type support (mkfs.xfs -n ftype=1) or use an ext4 volume",
        )
    if figures is not None:
        _space_findings(where, figures, add)
    else:
        add(Severity.WARNING, f"cannot read free space of data root {where} (statvfs failed)")
    if not findings:
        kind = "a volume" if mount.mount_point == where else f"on the mount {mount.mount_point}"
        add(Severity.OK, f"data root {where} is {kind} ({mount.fstype}, {mount.source})")
    return DataRootReport(
        path=where,
        exists=exists,
        mount_point=mount.mount_point,
        is_mount_point=mount.mount_point == where,
        fstype=mount.fstype,
        source=mount.source,
        on_container_layer=on_layer,
        persistent=persistent,
        overlay2_supported=overlay2,
        d_type=d_type,
        figures=figures,
        findings=tuple(findings),
    )


class _Add(Protocol):
    def __call__(self, severity: Severity, message: str, remedy: str | None = None) -> None: ...


def _space_findings(where: str, figures: DiskFigures, add: _Add) -> None:
    gib = figures.free_bytes / 1024**3
    if figures.size_bytes and (
        figures.free_bytes < LOW_FREE_BYTES or figures.used_fraction >= HIGH_USED_FRACTION
    ):
        add(
            Severity.WARNING,
            f"data root {where} has {gib:.2f} GiB free ({figures.used_fraction:.0%} used)",
            "free space (docker system prune) or give the volume more room;"
            " [dataroot] gc_enabled prunes automatically",
        )
    if figures.inodes and figures.used_inodes_fraction >= 1 - LOW_FREE_INODES_FRACTION:
        add(
            Severity.WARNING,
            f"data root {where} has {figures.free_inodes} free inodes of {figures.inodes}",
            "prune unused images and build cache, or use a filesystem with more inodes",
        )


def driver_findings(report: DataRootReport, storage_driver: str) -> list[Finding]:
    """Explain the storage driver dockerd chose (from its info), once it is up."""
    if storage_driver != "vfs":
        return []
    if report.overlay2_supported is False:
        why = f"overlay2 cannot work on the data root's {report.fstype} filesystem"
        if report.d_type is False:
            why += " (no d_type)"
        remedy = VOLUME_REMEDY
    else:
        why = "it was asked to (--storage-driver vfs?) or overlay2 failed; see dockerd's log"
        remedy = "drop --storage-driver vfs unless it is needed"
    return [
        Finding(
            topic=TOPIC,
            severity=Severity.WARNING,
            message=f"dockerd uses the vfs storage driver because {why}: every layer is a"
            " full copy, slow and large",
            remedy=remedy,
            data={"path": report.path, "fstype": report.fstype, "storage_driver": "vfs"},
        )
    ]
