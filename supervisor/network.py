"""Network facts dockerd needs from its surroundings: the MTU of the default route.

Pod networks often run with an MTU below 1500 (1450 on VXLAN overlays);
dockerd's bridge defaults to 1500, so nested containers then stall on large
packets. When no MTU is configured, the agent passes dockerd the MTU of the
interface carrying the default route. Paths are injectable for tests.
"""

from __future__ import annotations

from pathlib import Path

_DEFAULT_DESTINATION = "00000000"


def default_route_interface(proc_root: Path = Path("/proc")) -> str | None:
    """The interface of the IPv4 default route with the lowest metric, if any."""
    try:
        lines = (proc_root / "net" / "route").read_text().splitlines()[1:]
    except OSError:
        return None
    best: tuple[int, str] | None = None
    for line in lines:
        fields = line.split()
        if len(fields) < 7 or fields[1] != _DEFAULT_DESTINATION:
            continue
        try:
            metric = int(fields[6])
        except ValueError:
            continue
        if best is None or metric < best[0]:
            best = (metric, fields[0])
    return best[1] if best else None


def interface_mtu(interface: str, sys_root: Path = Path("/sys")) -> int | None:
    try:
        return int((sys_root / "class" / "net" / interface / "mtu").read_text().strip())
    except (OSError, ValueError):
        return None


def detect_mtu(proc_root: Path = Path("/proc"), sys_root: Path = Path("/sys")) -> int | None:
    """The default route's MTU, or None when there is no default route."""
    interface = default_route_interface(proc_root)
    return interface_mtu(interface, sys_root) if interface else None
