"""Unit tests for disk figures, the GC trigger and the GC executor (with a fake PruneApi)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest

from supervisor.dataroot import (
    DiskFigures,
    GcStep,
    check_thresholds,
    disk_figures,
    figures_from_statvfs,
    gc_decision,
    run_gc,
)

pytestmark = pytest.mark.unit

SIZE = 1000


def figures(used: int, size: int = SIZE) -> DiskFigures:
    return DiskFigures(
        size_bytes=size,
        free_bytes=size - used,
        inodes=100,
        free_inodes=50,
        used_fraction=used / size,
    )


@dataclass
class FakeDocker:
    """A disk whose use drops by what each prune frees; records the calls in order."""

    used: int
    build_cache: int = 0
    dangling: int = 0
    unused: int = 0
    in_use: int = 0  # images a container uses: never pruned
    calls: list[str] = field(default_factory=list)
    fail_on: str | None = None

    def figures(self) -> DiskFigures:
        return figures(self.used)

    async def prune_build_cache(self) -> int:
        return self._free("build_cache")

    async def prune_images(self, *, dangling_only: bool) -> int:
        return self._free("dangling" if dangling_only else "unused")

    def _free(self, attr: str) -> int:
        self.calls.append(attr)
        if self.fail_on == attr:
            raise ConnectionError("dockerd went away")
        freed = getattr(self, attr)
        if attr == "unused":
            freed += self.dangling  # dangling=false also removes what is still dangling
            self.dangling = 0
        setattr(self, attr, 0)
        self.used -= freed
        return freed


def test_statvfs_conversion_uses_frsize_and_bavail() -> None:
    """Sizes are blocks x f_frsize; free is f_bavail (df's Avail), used fraction from those."""
    st = os.statvfs_result((4096, 1024, 1000, 300, 200, 50, 20, 10, 0, 255))
    fig = figures_from_statvfs(st)
    assert fig.size_bytes == 1024 * 1000
    assert fig.free_bytes == 1024 * 200
    assert fig.used_fraction == pytest.approx(0.8)
    assert fig.inodes == 50
    assert fig.free_inodes == 10
    assert fig.used_inodes_fraction == pytest.approx(0.8)


def test_statvfs_conversion_of_empty_filesystem_does_not_divide_by_zero() -> None:
    """A size-0 filesystem (some pseudo filesystems, btrfs inodes) reports 0 used, 0 inodes."""
    st = os.statvfs_result((4096, 4096, 0, 0, 0, 0, 0, 0, 0, 255))
    fig = figures_from_statvfs(st)
    assert fig.used_fraction == 0.0
    assert fig.used_inodes_fraction == 0.0


def test_disk_figures_reads_a_real_directory(tmp_path: Path) -> None:
    """disk_figures works on a real path and gives a coherent picture."""
    fig = disk_figures(tmp_path)
    assert fig.size_bytes > 0
    assert 0 <= fig.free_bytes <= fig.size_bytes
    assert 0.0 <= fig.used_fraction <= 1.0


def test_gc_decision_triggers_at_high_mark() -> None:
    """GC starts at or above the high mark, not below it."""
    assert not gc_decision(figures(849), 0.85, 0.80)
    assert gc_decision(figures(850), 0.85, 0.80)
    assert gc_decision(figures(990))


@pytest.mark.parametrize(("high", "low"), [(0.8, 0.85), (0.8, 0.8), (1.2, 0.5), (0.9, 0.0)])
def test_bad_thresholds_are_refused(high: float, low: float) -> None:
    """low must be below high, both fractions; the reason names the values."""
    reason = check_thresholds(high, low)
    assert reason is not None
    with pytest.raises(ValueError, match="gc_"):
        gc_decision(figures(500), high, low)


def test_gc_below_high_mark_does_nothing() -> None:
    """Under the high mark no prune is called and no run is counted."""
    docker = FakeDocker(used=700, build_cache=100)
    result = anyio.run(run_gc, docker, docker.figures, 0.85, 0.80)
    assert docker.calls == []
    assert result.runs == 0
    assert result.reclaimed_bytes == 0


def test_gc_stops_after_build_cache_when_that_is_enough() -> None:
    """Build cache goes first; images are not touched once use is below the low mark."""
    docker = FakeDocker(used=900, build_cache=150, dangling=50, unused=200)
    result = anyio.run(run_gc, docker, docker.figures, 0.85, 0.80)
    assert docker.calls == ["build_cache"]
    assert result.runs == 1
    assert result.reclaimed_bytes == 150
    assert result.reached_low(0.80)
    assert docker.unused == 200


def test_gc_goes_build_cache_then_dangling_then_unused() -> None:
    """Order is build cache, dangling images, all unused images; it ends below the low mark."""
    docker = FakeDocker(used=950, build_cache=50, dangling=30, unused=200, in_use=300)
    result = anyio.run(run_gc, docker, docker.figures, 0.85, 0.80)
    assert docker.calls == ["build_cache", "dangling", "unused"]
    assert [s.step for s in result.steps] == [
        GcStep.BUILD_CACHE, GcStep.DANGLING_IMAGES, GcStep.UNUSED_IMAGES
    ]
    assert result.reclaimed_bytes == 280
    assert result.after.used_fraction == pytest.approx(0.67)
    assert result.as_log()["reclaimed_bytes"] == 280


def test_gc_that_cannot_reach_low_mark_reports_it() -> None:
    """When everything prunable is gone and use is still high, the result says so."""
    docker = FakeDocker(used=950, build_cache=10, dangling=10, unused=10)
    result = anyio.run(run_gc, docker, docker.figures, 0.85, 0.80)
    assert len(result.steps) == 3
    assert not result.reached_low(0.80)
    assert result.error is None


def test_gc_step_failure_ends_the_pass_and_is_reported() -> None:
    """A Docker error stops GC at that step; earlier reclaim is kept and the error named."""
    docker = FakeDocker(used=950, build_cache=50, dangling=30, fail_on="dangling")
    result = anyio.run(run_gc, docker, docker.figures, 0.85, 0.80)
    assert docker.calls == ["build_cache", "dangling"]
    assert result.runs == 1
    assert result.reclaimed_bytes == 50
    assert result.error is not None
    assert "dangling_images" in result.error
    assert "dockerd went away" in result.error


def test_gc_measures_progress_with_statvfs_not_dockers_figure() -> None:
    """Docker's reclaimed figure may overstate (shared layers); the stop uses real figures."""

    class Liar(FakeDocker):
        async def prune_build_cache(self) -> int:
            self.calls.append("build_cache")
            return 10_000  # claims a lot, frees nothing

    docker = Liar(used=900, dangling=200)
    result = anyio.run(run_gc, docker, docker.figures, 0.85, 0.80)
    assert docker.calls == ["build_cache", "dangling"]
    assert result.after.used_fraction == pytest.approx(0.7)


# A (nearly) full data root -----------------------------------------------------------------


def space(free: int, free_inodes: int, size: int = 10 * 2**30, inodes: int = 10**6
            ) -> DiskFigures:
    return DiskFigures(size_bytes=size, free_bytes=free, inodes=inodes, free_inodes=free_inodes,
                       used_fraction=1 - free / size if size else 0.0)


def test_low_space_names_bytes_and_inodes_against_their_thresholds() -> None:
    """Below either threshold is a shortage, each told with its figure and the need."""
    from supervisor.dataroot.disk import low_space

    assert low_space(space(2**30, 5000), min_free=2**28, min_free_inodes=1000) is None
    text = low_space(space(3 * 2**20, 12), min_free=2**28, min_free_inodes=1000)
    assert text is not None
    assert "3.0 MiB free of 10.0 GiB" in text
    assert "below the 256.0 MiB needed" in text
    assert "12 free inodes of 1000000, below the 1000 needed" in text
    # btrfs has no inode table (0 inodes): never short of them.
    assert low_space(space(2**30, 0, inodes=0), min_free=2**28, min_free_inodes=10) is None


def test_refusal_is_exit_2_with_path_figures_threshold_and_remedies() -> None:
    """DataRootFullError carries the figures; its remedy names the settings that change it."""
    from supervisor.dataroot.disk import refuse_low_space
    from supervisor.errors import DataRootFullError

    with pytest.raises(DataRootFullError) as raised:
        refuse_low_space(Path("/var/lib/docker"), space(0, 5000), min_free=2**28,
                         min_free_inodes=1000)
    error = raised.value
    assert error.exit_code == 2
    assert (error.free_bytes, error.min_free) == (0, 2**28)
    assert "data root /var/lib/docker is (nearly) full: 0 B free" in error.message
    assert error.remedy is not None
    for setting in ("min_free", "low_space", "gc_enabled", "docker system prune"):
        assert setting in error.remedy


def test_full_figures_only_when_writes_would_fail() -> None:
    """A few MiB left is full (ENOSPC is near); a GiB is not, whatever the threshold."""
    from supervisor.dataroot.disk import full_figures

    assert full_figures(space(2**30, 5000), Path("/d")) is None
    text = full_figures(space(2**20, 5000), Path("/d"))
    assert text is not None
    assert text.startswith("/d: 1.0 MiB and 5000 inodes free")
    assert full_figures(space(2**30, 3), Path("/d")) is not None


def test_existing_ancestor_finds_the_filesystem_of_a_new_data_root(tmp_path: Path) -> None:
    """A data root not made yet is judged by the folder it will be made in."""
    from supervisor.dataroot.disk import existing_ancestor

    assert existing_ancestor(tmp_path / "a" / "b") == tmp_path
    assert existing_ancestor(tmp_path) == tmp_path
