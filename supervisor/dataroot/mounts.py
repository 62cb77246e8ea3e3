"""Which mount a path lives on, read from /proc/<pid>/mountinfo.

Owns: parsing mountinfo (proc(5)) and the longest-prefix lookup. Does not own
any judgement about the mount (``preflight`` does that). mountinfo is used
rather than statfs alone because it also gives the mount point (is the data
root a volume?), the source and the mount options, and a fake tree can hold it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True, slots=True, kw_only=True)
class MountEntry:
    """One line of mountinfo, with escapes (\\040 for a space, ...) decoded."""

    mount_id: int
    parent_id: int
    device: str  # major:minor
    root: str  # the folder of the source filesystem mounted here (a bind's origin)
    mount_point: str
    options: frozenset[str]  # per-mount options: rw/ro, nosuid, ...
    fstype: str
    source: str

    @property
    def read_only(self) -> bool:
        return "ro" in self.options


class MountinfoError(ValueError):
    """A mountinfo line that does not have the documented shape."""


def _unescape(field: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Parse the whole file; blank lines are skipped, malformed ones raise MountinfoError."""
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            # Optional fields (shared:N, master:N, ...) come before a lone "-".
            dash = fields.index("-", 6)
            entries.append(
                MountEntry(
                    mount_id=int(fields[0]),
                    parent_id=int(fields[1]),
                    device=fields[2],
                    root=_unescape(fields[3]),
                    mount_point=_unescape(fields[4]),
                    options=frozenset(fields[5].split(",")),
                    fstype=fields[dash + 1],
                    source=_unescape(fields[dash + 2]) if len(fields) > dash + 2 else "",
                )
            )
        except (ValueError, IndexError) as exc:
            raise MountinfoError(f"mountinfo line {number} is malformed: {line!r}") from exc
    return entries


def read_mountinfo(proc_root: Path = Path("/proc")) -> list[MountEntry]:
    """The mounts of this process's mount namespace."""
    return parse_mountinfo((proc_root / "self" / "mountinfo").read_text(encoding="utf-8"))


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
