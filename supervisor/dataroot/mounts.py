"""Which mount a path lives on, read from /proc/<pid>/mountinfo.

Owns: the longest-prefix lookup of the mount holding a path; the parser is
``supervisor.mountinfo``, re-exported here. Does not own any judgement about
the mount (``preflight`` does that). mountinfo is used rather than statfs
alone because it also gives the mount point (is the data root a volume?), the
source and the mount options, and a fake tree can hold it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePath, PurePosixPath

from supervisor.mountinfo import MountEntry, MountinfoError, parse_mountinfo, read_mountinfo

__all__ = ["MountEntry", "MountinfoError", "mount_for", "parse_mountinfo", "read_mountinfo"]


def _contains(mount_point: str, path: PurePosixPath) -> bool:
    mount = PurePosixPath(mount_point)
    return path == mount or mount in path.parents


def mount_for(path: str | PurePath, mounts: Sequence[MountEntry]) -> MountEntry:
    """The mount that holds ``path`` (absolute, symlinks already resolved).

    The longest mount point that is a prefix (by path component, so /var/lib
    does not hold /var/library) wins; of several mounts on the same point the
    one listed last is on top, since the kernel lists mounts in mount order.
    """
    target = PurePosixPath(path)
    if not target.is_absolute():
        raise ValueError(f"mount_for needs an absolute path, got {str(path)!r}")
    best: MountEntry | None = None
    for entry in mounts:
        if not _contains(entry.mount_point, target):
            continue
        if best is None or len(PurePosixPath(entry.mount_point).parts) >= len(
            PurePosixPath(best.mount_point).parts
        ):
            best = entry
    if best is None:
        raise MountinfoError(f"no mount in mountinfo holds {str(path)!r} (no '/' entry?)")
    return best
