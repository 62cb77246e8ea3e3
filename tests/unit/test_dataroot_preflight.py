"""Unit tests for mountinfo parsing and the data-root preflight, on fake /proc trees."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from supervisor.dataroot import (
    DataRootReport,
    assess,
    driver_findings,
    figures_from_statvfs,
    mount_for,
    parse_mountinfo,
)
from supervisor.dataroot.mounts import MountinfoError
from supervisor.dataroot.preflight import preflight
from supervisor.findings import Severity

pytestmark = pytest.mark.unit

OVERLAY_ROOT = (
    "1234 1100 0:123 / / rw,relatime master:1 - overlay overlay rw,"
    "lowerdir=/var/lib/docker/overlay2/l/ABC:/var/lib/docker/overlay2/l/DEF,"
    "upperdir=/var/lib/docker/overlay2/xyz/diff,workdir=/var/lib/docker/overlay2/xyz/work\n"
    "1235 1234 0:125 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw\n"
    "1240 1234 254:1 /var/lib/docker/containers/abc/resolv.conf /etc/resolv.conf"
    " rw,relatime - ext4 /dev/vda1 rw\n"
)
EXT4_VOLUME = (
    "1250 1234 254:1 /var/lib/docker/volumes/dind-data/_data /var/lib/docker"
    " rw,relatime - ext4 /dev/vda1 rw\n"
)
TMPFS_VOLUME = "1251 1234 0:130 / /var/lib/docker rw,nosuid,nodev,relatime - tmpfs tmpfs rw\n"
XFS_VOLUME = "1252 1234 8:17 / /var/lib/docker rw,relatime - xfs /dev/sdb1 rw,attr2,inode64\n"
GIB = 1024**3


def statvfs(
    *, size: int, free: int, inodes: int = 1000, free_inodes: int = 900
) -> os.statvfs_result:
    frsize = 4096
    return os.statvfs_result(
        (frsize, frsize, size // frsize, free // frsize, free // frsize, inodes, free_inodes,
         free_inodes, 0, 255)
    )


@dataclass
class FakeProbe:
    st: os.statvfs_result
    d_type: bool | None = True
    asked: list[Path] | None = None

    def statvfs(self, path: Path) -> os.statvfs_result:
        return self.st

    def supports_d_type(self, path: Path) -> bool | None:
        if self.asked is not None:
            self.asked.append(path)
        return self.d_type


def judge(mountinfo: str, *, d_type: bool | None = True, size: int = 100 * GIB,
          free: int = 50 * GIB, path: str = "/var/lib/docker") -> DataRootReport:
    mount = mount_for(path, parse_mountinfo(mountinfo))
    figures = figures_from_statvfs(statvfs(size=size, free=free))
    return assess(PurePosixPath(path), mount, exists=True, is_dir=True, figures=figures,
                  d_type=d_type)


def test_data_root_on_container_overlay_layer_is_warned_with_volume_remedy() -> None:
    """Data root on the container's overlay root: not persistent, no overlay2, remedy given."""
    report = judge(OVERLAY_ROOT)
    assert report.on_container_layer
    assert not report.persistent
    assert not report.is_mount_point
    assert report.overlay2_supported is False
    assert report.fstype == "overlay"
    assert report.worst is Severity.WARNING
    [warning] = [f for f in report.findings if f.severity is Severity.WARNING]
    assert "vfs" in warning.message
    assert warning.remedy is not None
    assert "-v dind-data:/var/lib/docker" in warning.remedy
    assert report.info_labels("vfs") == {
        "fstype": "overlay", "storage_driver": "vfs", "persistent": "false"
    }


def test_ext4_volume_is_persistent_mount_point_and_ok() -> None:
    """A named volume (ext4 bind) on the data root: persistent, overlay2 fine, only OK."""
    report = judge(OVERLAY_ROOT + EXT4_VOLUME)
    assert report.is_mount_point
    assert report.persistent
    assert not report.on_container_layer
    assert report.overlay2_supported is True
    assert report.source == "/dev/vda1"
    assert [f.severity for f in report.findings] == [Severity.OK]
    assert report.info_labels("overlay2")["persistent"] == "true"


def test_tmpfs_is_not_persistent_but_supports_overlay2() -> None:
    """tmpfs: overlay2 works, state is lost; said as information, not as a problem."""
    report = judge(OVERLAY_ROOT + TMPFS_VOLUME)
    assert not report.persistent
    assert report.overlay2_supported is True
    assert report.worst is Severity.INFO
    assert "lost at stop" in report.findings[0].message


def test_xfs_without_d_type_is_explained_with_ftype() -> None:
    """xfs with ftype=0: overlay2 refuses it; the finding names ftype and the reformat remedy."""
    report = judge(OVERLAY_ROOT + XFS_VOLUME, d_type=False)
    assert report.persistent
    assert report.overlay2_supported is False
    [warning] = report.findings
    assert "ftype=0" in warning.message
    assert warning.remedy is not None
    assert "ftype=1" in warning.remedy


def test_xfs_with_d_type_is_fine() -> None:
    """xfs with ftype=1 is a supported overlay2 backing filesystem."""
    report = judge(OVERLAY_ROOT + XFS_VOLUME, d_type=True)
    assert report.overlay2_supported is True
    assert report.worst is Severity.OK


def test_unknown_d_type_leaves_overlay2_undecided() -> None:
    """When d_type could not be tested, overlay2 support is unknown, not claimed."""
    assert judge(OVERLAY_ROOT + EXT4_VOLUME, d_type=None).overlay2_supported is None


@pytest.mark.parametrize("fstype", ["nfs4", "zfs", "aufs", "ecryptfs"])
def test_filesystems_overlay2_rejects_are_warned(fstype: str) -> None:
    """moby's overlay2 refuses these backing filesystems; preflight says so before dockerd does."""
    line = f"1260 1234 0:140 / /var/lib/docker rw,relatime - {fstype} srv:/export rw\n"
    report = judge(OVERLAY_ROOT + line)
    assert report.overlay2_supported is False
    assert report.persistent
    assert fstype in report.findings[0].message


def test_overlay_mount_not_at_root_is_not_persistent() -> None:
    """An overlay mounted on the data root itself is still overlay: warned, persistent false."""
    line = "1261 1234 0:141 / /var/lib/docker rw,relatime - overlay overlay rw,lowerdir=/a\n"
    report = judge(OVERLAY_ROOT + line)
    assert not report.on_container_layer
    assert not report.persistent
    assert report.worst is Severity.WARNING
    assert "overlay mount" in report.findings[0].message


def test_read_only_mount_is_an_error() -> None:
    """A read-only volume cannot hold dockerd's state: error with remedy."""
    line = "1262 1234 254:1 / /var/lib/docker ro,relatime - ext4 /dev/vda1 ro\n"
    report = judge(OVERLAY_ROOT + line)
    assert report.worst is Severity.ERROR
    assert "read-only" in report.findings[0].message


def test_low_space_is_warned() -> None:
    """Under 2 GiB free, or 95 % used, is a warning that mentions GC."""
    report = judge(OVERLAY_ROOT + EXT4_VOLUME, size=10 * GIB, free=GIB)
    [warning] = report.findings
    assert "1.00 GiB free" in warning.message
    assert warning.remedy is not None
    assert "gc_enabled" in warning.remedy


def test_longest_prefix_is_by_component_and_last_overmount_wins() -> None:
    """/var/lib/dockerx is not under /var/lib/docker; of two mounts on one point the later wins."""
    mounts = parse_mountinfo(OVERLAY_ROOT + EXT4_VOLUME + TMPFS_VOLUME)
    assert mount_for("/var/lib/docker/overlay2", mounts).fstype == "tmpfs"
    assert mount_for("/var/lib/dockerx", mounts).mount_point == "/"


def test_mountinfo_escapes_and_optional_fields() -> None:
    """Octal escapes in paths are decoded and optional fields before '-' are skipped."""
    line = r"40 1 8:1 /my\040dir /mnt/my\040data rw shared:5 master:2 - ext4 /dev/sda1 rw" + "\n"
    [entry] = parse_mountinfo(line)
    assert entry.mount_point == "/mnt/my data"
    assert entry.root == "/my dir"
    assert entry.fstype == "ext4"
    assert mount_for("/mnt/my data/docker", [entry]) is entry


def test_malformed_mountinfo_names_the_line() -> None:
    """A line without the '-' separator raises with its line number."""
    with pytest.raises(MountinfoError, match="line 2"):
        parse_mountinfo(OVERLAY_ROOT.splitlines()[0] + "\n40 1 8:1 / /x rw ext4\n")


def test_preflight_reads_mountinfo_from_proc_root_and_probes_existing_parent(
    tmp_path: Path,
) -> None:
    """preflight uses <proc_root>/self/mountinfo; a missing data root is probed at its parent."""
    parent = tmp_path / "vol"
    parent.mkdir()
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mountinfo").write_text(
        "1 0 0:1 / / rw - overlay overlay rw\n"
        f"2 1 0:2 / {parent} rw - tmpfs tmpfs rw\n"
    )
    asked: list[Path] = []
    probe = FakeProbe(statvfs(size=GIB * 10, free=GIB * 9), d_type=True, asked=asked)
    report = preflight(parent / "docker", proc_root=proc, probe=probe)
    assert not report.exists
    assert report.fstype == "tmpfs"
    assert not report.is_mount_point
    assert asked == [parent]
    assert report.figures is not None
    assert report.figures.free_bytes == 9 * GIB


def test_driver_findings_explain_vfs() -> None:
    """When dockerd chose vfs on an overlay data root, the reason and the remedy are given."""
    report = judge(OVERLAY_ROOT)
    [finding] = driver_findings(report, "vfs")
    assert "vfs" in finding.message
    assert "overlay" in finding.message
    assert driver_findings(judge(OVERLAY_ROOT + EXT4_VOLUME), "overlay2") == []
