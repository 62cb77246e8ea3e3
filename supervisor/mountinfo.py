"""/proc/<pid>/mountinfo (proc(5)) parsed once for the whole agent.

The data-root preflight and the container preparation both read the mount
table; this module owns the one parser and the value type they share, not
any decision about what a mount means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


class MountinfoError(ValueError):
    """A mountinfo line that does not have the documented shape."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MountEntry:
    """One line of mountinfo, with escapes (\\040 for a space, ...) decoded."""

    mount_id: int
    parent_id: int
    device: str = ""  # major:minor
    root: str  # the folder of the source filesystem mounted here (a bind's origin)
    mount_point: str
    options: tuple[str, ...]  # per-mount options: rw/ro, nosuid, ...
    tags: tuple[str, ...] = ()  # optional fields: shared:N, master:N, unbindable
    fstype: str
    source: str
    super_options: tuple[str, ...] = ()

    @property
    def read_only(self) -> bool:
        return "ro" in self.options

    @property
    def shared(self) -> bool:
        return any(tag.startswith("shared:") for tag in self.tags)


def _unescape(field: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_line(line: str) -> MountEntry:
    """One line; raises ValueError or IndexError when it has not the documented shape."""
    fields = line.split()
    # Optional fields (shared:N, master:N, ...) come before a lone "-".
    dash = fields.index("-", 6)
    return MountEntry(
        mount_id=int(fields[0]),
        parent_id=int(fields[1]),
        device=fields[2],
        root=_unescape(fields[3]),
        mount_point=_unescape(fields[4]),
        options=tuple(fields[5].split(",")),
        tags=tuple(fields[6:dash]),
        fstype=fields[dash + 1],
        source=_unescape(fields[dash + 2]) if len(fields) > dash + 2 else "",
        super_options=tuple(fields[dash + 3].split(",")) if len(fields) > dash + 3 else (),
    )


def parse_mountinfo(text: str, *, strict: bool = True) -> tuple[MountEntry, ...]:
    """Every mount; blank lines are skipped, a malformed line raises (or is skipped)."""
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append(parse_line(line))
        except (ValueError, IndexError) as exc:
            if strict:
                raise MountinfoError(f"mountinfo line {number} is malformed: {line!r}") from exc
    return tuple(entries)


def read_mountinfo(proc_root: Path = Path("/proc"), *, strict: bool = True) -> tuple[
    MountEntry, ...
]:
    """The mounts of this process's mount namespace."""
    text = (proc_root / "self" / "mountinfo").read_text(encoding="utf-8")
    return parse_mountinfo(text, strict=strict)
