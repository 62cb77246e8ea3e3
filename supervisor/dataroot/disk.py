"""Disk figures of the data root and disk-pressure garbage collection.

Owns: reading statvfs into ``DiskFigures`` (cheap enough for every scrape: one
syscall, no Docker API), the judgement of a full or nearly full filesystem
(``low_space``, refused before dockerd starts; ``full_figures``, to name a
full disk in an explanation), the pure GC trigger, and the GC executor that
calls a small ``PruneApi``. Does not own the Docker client (the agent implements
``PruneApi`` with aiodocker), the schedule, or metric objects.

GC follows kubelet's image GC: "used" is capacity minus what an unprivileged
writer can still get (statvfs f_bavail, what ``df`` shows as Avail); above
the high mark, free things in order of least value until below the low mark.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

DEFAULT_GC_HIGH = 0.85
DEFAULT_GC_LOW = 0.80


@dataclass(frozen=True, slots=True, kw_only=True)
class DiskFigures:
    """The data root's filesystem, in bytes and inodes.

    ``size_bytes`` is the filesystem's size (``dind_data_root_size_bytes`` per
    the contract), not the size of /var/lib/docker's content: that would need
    a walk or the Docker API, neither of which belongs in a scrape.
    """

    size_bytes: int
    free_bytes: int  # available to non-root writers (f_bavail), like df's Avail
    inodes: int  # 0 on filesystems without a fixed inode table (btrfs)
    free_inodes: int
    used_fraction: float  # 1 - free/size, 0.0 for an empty (size 0) filesystem

    @property
    def used_inodes_fraction(self) -> float:
        return 1.0 - self.free_inodes / self.inodes if self.inodes else 0.0


def figures_from_statvfs(st: os.statvfs_result) -> DiskFigures:
    """Convert a statvfs result (block counts are in f_frsize units)."""
    size = st.f_blocks * st.f_frsize
    free = min(st.f_bavail * st.f_frsize, size)
    return DiskFigures(
        size_bytes=size,
        free_bytes=free,
        inodes=st.f_files,
        free_inodes=st.f_favail if st.f_files else 0,
        used_fraction=1.0 - free / size if size else 0.0,
    )


def disk_figures(data_root: Path) -> DiskFigures:
    """statvfs of the data root; raises OSError when it cannot be read (let the scrape say so)."""
    return figures_from_statvfs(os.statvfs(data_root))


def existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest existing parent: the filesystem a new data root will be on."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def format_bytes(value: float) -> str:
    """1.5 GiB, 300.0 MiB, 12 B: what df -h would round to, in binary units."""
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(amount) < 1024 or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def low_space(figures: DiskFigures, *, min_free: int, min_free_inodes: int) -> str | None:
    """Why the filesystem has too little room to start dockerd on, or None.

    Inodes count only where the filesystem has a fixed table (not btrfs).
    """
    short = []
    if figures.size_bytes and figures.free_bytes < min_free:
        short.append(
            f"{format_bytes(figures.free_bytes)} free of {format_bytes(figures.size_bytes)}"
            f" ({figures.used_fraction:.1%} used), below the {format_bytes(min_free)} needed"
        )
    if figures.inodes and figures.free_inodes < min_free_inodes:
        short.append(
            f"{figures.free_inodes} free inodes of {figures.inodes}, below the"
            f" {min_free_inodes} needed"
        )
    return "; ".join(short) or None


def refuse_low_space(
    path: Path, figures: DiskFigures, *, min_free: int, min_free_inodes: int
) -> None:
    """Raise DataRootFullError when ``low_space`` finds too little room (exit 2)."""
    from supervisor.errors import DataRootFullError

    shortage = low_space(figures, min_free=min_free, min_free_inodes=min_free_inodes)
    if shortage is None:
        return
    raise DataRootFullError(
        path=str(path), free_bytes=figures.free_bytes, free_inodes=figures.free_inodes,
        min_free=min_free, min_free_inodes=min_free_inodes, shortage=shortage,
        remedy=f"free space on the filesystem of {path} (remove unused images, containers and"
        " volumes, e.g. `docker system prune` from a container sharing the volume, or delete"
        " files) or give the volume more room; or lower the threshold ([dataroot] min_free,"
        " min_free_inodes: --dataroot-min-free), start anyway with [dataroot] low_space ="
        ' "warn", or let the agent prune once dockerd runs with [dataroot] gc_enabled = true',
    )


# Below these, writes fail with ENOSPC: whatever failed there, the full disk explains it.
FULL_FREE_BYTES = 16 * 1024 * 1024
FULL_FREE_INODES = 64


def full_figures(figures: DiskFigures, path: Path) -> str | None:
    """A sentence naming a full filesystem (path and figures), or None when it has room."""
    bytes_full = figures.size_bytes and figures.free_bytes < FULL_FREE_BYTES
    inodes_full = figures.inodes and figures.free_inodes < FULL_FREE_INODES
    if not (bytes_full or inodes_full):
        return None
    return (
        f"{path}: {format_bytes(figures.free_bytes)} and {figures.free_inodes} inodes free of"
        f" {format_bytes(figures.size_bytes)} and {figures.inodes}"
    )


def check_thresholds(high: float, low: float) -> str | None:
    """Why a (high, low) pair is unusable, or None when it is fine (for config validation)."""
    if not 0.0 < high <= 1.0:
        return f"gc_high must be a fraction in (0, 1], got {high!r}"
    if not 0.0 < low < high:
        return f"gc_low must be a fraction above 0 and below gc_high ({high!r}), got {low!r}"
    return None


def gc_decision(
    figures: DiskFigures, high: float = DEFAULT_GC_HIGH, low: float = DEFAULT_GC_LOW
) -> bool:
    """Whether garbage collection should start now: used space at or above the high mark."""
    reason = check_thresholds(high, low)
    if reason:
        raise ValueError(reason)
    return figures.used_fraction >= high


class PruneApi(Protocol):
    """What GC needs from Docker; each call returns the bytes Docker says it reclaimed."""

    async def prune_build_cache(self) -> int:
        """POST /build/prune (all unused build cache)."""
        ...

    async def prune_images(self, *, dangling_only: bool) -> int:
        """POST /images/prune with filters dangling=true, or dangling=false for every unused image.

        Docker never removes an image a container (running or stopped) uses.
        """
        ...


class GcStep(enum.Enum):
    BUILD_CACHE = "build_cache"
    DANGLING_IMAGES = "dangling_images"
    UNUSED_IMAGES = "unused_images"


@dataclass(frozen=True, slots=True, kw_only=True)
class GcStepResult:
    step: GcStep
    reclaimed_bytes: int
    used_fraction_after: float


@dataclass(frozen=True, slots=True, kw_only=True)
class GcResult:
    """One GC pass: ``runs`` (0 or 1) feeds dind_gc_runs_total, ``reclaimed_bytes`` the other."""

    triggered: bool
    before: DiskFigures
    after: DiskFigures
    steps: tuple[GcStepResult, ...] = ()
    error: str | None = None  # the step that failed and why; GC stops there

    @property
    def runs(self) -> int:
        return 1 if self.triggered else 0

    @property
    def reclaimed_bytes(self) -> int:
        return sum(step.reclaimed_bytes for step in self.steps)

    def reached_low(self, low: float) -> bool:
        return self.after.used_fraction < low

    def as_log(self) -> dict[str, object]:
        """Key/value context for a ``gc_finished`` log event."""
        return {
            "triggered": self.triggered,
            "used_before": round(self.before.used_fraction, 4),
            "used_after": round(self.after.used_fraction, 4),
            "reclaimed_bytes": self.reclaimed_bytes,
            "steps": [
                {"step": s.step.value, "reclaimed_bytes": s.reclaimed_bytes} for s in self.steps
            ],
            "error": self.error,
        }


async def run_gc(
    api: PruneApi,
    figures_fn: Callable[[], DiskFigures],
    high: float = DEFAULT_GC_HIGH,
    low: float = DEFAULT_GC_LOW,
) -> GcResult:
    """Prune build cache, then dangling images, then all unused images, until below ``low``.

    Progress is measured with statvfs after each step rather than trusting
    Docker's reclaimed figure, which counts shared layers and misses space
    freed by other processes. A failing step ends the pass and is reported in
    ``error``; cancellation passes through.
    """
    import anyio  # here: the launch reads DiskFigures before the event loop's imports

    # statvfs: a call into the filesystem (a stalled NFS or FUSE data root hangs it).
    before = await anyio.to_thread.run_sync(figures_fn)
    if not gc_decision(before, high, low):
        return GcResult(triggered=False, before=before, after=before)

    calls: tuple[tuple[GcStep, Callable[[], Awaitable[int]]], ...] = (
        (GcStep.BUILD_CACHE, api.prune_build_cache),
        (GcStep.DANGLING_IMAGES, lambda: api.prune_images(dangling_only=True)),
        (GcStep.UNUSED_IMAGES, lambda: api.prune_images(dangling_only=False)),
    )
    steps: list[GcStepResult] = []
    current = before
    error = None
    for step, call in calls:
        try:
            reclaimed = await call()
        except Exception as exc:  # any Docker/transport failure ends this pass, not the agent
            error = f"{step.value}: {type(exc).__name__}: {exc}"
            break
        current = await anyio.to_thread.run_sync(figures_fn)
        steps.append(
            GcStepResult(
                step=step,
                reclaimed_bytes=max(int(reclaimed), 0),
                used_fraction_after=current.used_fraction,
            )
        )
        if current.used_fraction < low:
            break
    return GcResult(triggered=True, before=before, after=current, steps=tuple(steps), error=error)
