"""MTU detection: the default route's interface from /proc/net/route, its MTU from the kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.network import default_route_interface, detect_mtu, interface_mtu, ioctl_mtu

pytestmark = pytest.mark.unit

HEADER = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"


def _route_table(tmp_path: Path, rows: list[tuple[str, str, int]]) -> Path:
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    lines = [f"{iface}\t{dest}\t0100C80A\t0003\t0\t0\t{metric}\t00000000\t0\t0\t0\n"
             for iface, dest, metric in rows]
    (proc / "net" / "route").write_text(HEADER + "".join(lines))
    return proc


def test_the_default_route_with_the_lowest_metric_wins(tmp_path: Path) -> None:
    """Two default routes: the one with the lower metric carries the traffic."""
    proc = _route_table(tmp_path, [("eth1", "00000000", 200), ("eth0", "00000000", 100),
                                   ("eth2", "0000C80A", 0)])
    assert default_route_interface(proc) == "eth0"


def test_no_default_route_detects_nothing(tmp_path: Path) -> None:
    """Only non-default routes (or no table at all): no MTU is passed to dockerd."""
    proc = _route_table(tmp_path, [("eth2", "0000C80A", 0)])
    assert detect_mtu(proc, mtu_of=lambda _name: 1450) is None
    assert detect_mtu(tmp_path / "missing", mtu_of=lambda _name: 1450) is None


def test_detect_asks_the_lookup_for_the_default_interface(tmp_path: Path) -> None:
    """The MTU comes from the injected lookup for the default route's interface."""
    proc = _route_table(tmp_path, [("ens4", "00000000", 0)])
    asked: list[str] = []

    def lookup(name: str) -> int:
        asked.append(name)
        return 1450

    assert detect_mtu(proc, mtu_of=lookup) == 1450
    assert asked == ["ens4"]


def test_sysfs_fallback_reads_a_fake_tree(tmp_path: Path) -> None:
    """interface_mtu reads /sys/class/net/<if>/mtu and gives None for garbage or absence."""
    (tmp_path / "class/net/eth0").mkdir(parents=True)
    (tmp_path / "class/net/eth0/mtu").write_text("1450\n")
    (tmp_path / "class/net/bad").mkdir(parents=True)
    (tmp_path / "class/net/bad/mtu").write_text("n/a\n")
    assert interface_mtu("eth0", tmp_path) == 1450
    assert interface_mtu("bad", tmp_path) is None
    assert interface_mtu("none", tmp_path) is None


def test_the_kernel_answers_for_loopback_and_not_for_bad_names() -> None:
    """SIOCGIFMTU: lo has its 65536; unknown or over-long names give None, not an error."""
    assert ioctl_mtu("lo") == 65536
    assert ioctl_mtu("no-such-if0") is None
    assert ioctl_mtu("x" * 16) is None
    assert ioctl_mtu("") is None
