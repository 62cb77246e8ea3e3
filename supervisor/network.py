"""Network facts dockerd needs from its surroundings: the MTU of the default route.

Pod networks often run with an MTU below 1500 (1450 on VXLAN overlays);
dockerd's bridge defaults to 1500, so nested containers then stall on large
packets. When no MTU is configured, the agent passes dockerd the MTU of the
interface carrying the default route. Paths and the MTU lookup are injectable
for tests. Does not own dockerd's argv (dockerd/process.py adds --mtu).

The MTU is asked of the kernel with SIOCGIFMTU on a socket, which answers for
this process's network namespace. /sys/class/net is only a fallback: sysfs
shows the devices of the namespace that mounted it, which is not ours after
`unshare --net` without a fresh sysfs mount.
"""

from __future__ import annotations

import fcntl
import socket
import struct
from collections.abc import Callable
from pathlib import Path

_DEFAULT_DESTINATION = "00000000"
_SIOCGIFMTU = 0x8921
_IFNAMSIZ = 16
# struct ifreq: the name, then a 24-byte union whose first int is ifr_mtu.
_IFREQ = struct.Struct("16si20x")


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
    """The MTU sysfs shows (the sysfs mounter's namespace, see the module docstring)."""
    try:
        return int((sys_root / "class" / "net" / interface / "mtu").read_text().strip())
    except (OSError, ValueError):
        return None


def ioctl_mtu(interface: str) -> int | None:
    """The MTU of ``interface`` in this process's network namespace, or None if unknown."""
    name = interface.encode()
    if not name or len(name) >= _IFNAMSIZ:
        return None
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            answer = fcntl.ioctl(sock.fileno(), _SIOCGIFMTU, _IFREQ.pack(name, 0))
    except OSError:
        return None
    mtu: int = _IFREQ.unpack(answer)[1]
    return mtu if mtu > 0 else None


def kernel_then_sysfs_mtu(interface: str) -> int | None:
    return ioctl_mtu(interface) or interface_mtu(interface)


def detect_mtu(
    proc_root: Path = Path("/proc"),
    *,
    mtu_of: Callable[[str], int | None] = kernel_then_sysfs_mtu,
) -> int | None:
    """The default route's MTU, or None when there is no default route."""
    interface = default_route_interface(proc_root)
    return mtu_of(interface) if interface else None


def bind_listener(
    host: str, port: int, *, backlog: int = 128, listen: bool = True
) -> socket.socket:
    """A TCP socket bound now, so a bad or busy address fails before dockerd starts.

    ``listen=False`` leaves it bound but refusing connections (asyncio's
    server calls listen() when it starts serving): CI runners take any open
    port of a service container for "up", so nothing may accept before the
    client certificates exist. Raises OSError (socket.gaierror for a name
    that does not resolve).
    """
    family, kind, proto, _name, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        if listen:
            sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
