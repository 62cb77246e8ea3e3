"""MTU detection against a real dockerd: the default route's MTU reaches dockerd's bridge.

Pod networks run below 1500 (1450 on VXLAN); a bridge left at 1500 stalls
nested containers on large packets. The sandbox's network namespace gets a
veth pair with MTU 1400 carrying the default route.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.integration.conftest import import_busybox
from tests.integration.sandbox import Sandbox

pytestmark = pytest.mark.integration

VETH_DEFAULT_ROUTE = (
    "ip link add v0 mtu {mtu} type veth peer name v1 mtu {mtu}"
    " && ip addr add 10.200.0.2/24 dev v0 && ip link set v0 up && ip link set v1 up"
    " && ip route add default via 10.200.0.1"
)


def test_default_route_mtu_reaches_the_bridge_network(
    sandboxes: Callable[..., Sandbox], busybox_tar: object
) -> None:
    """With [dockerd] mtu = 0, a 1400 default route gives the bridge and its containers 1400."""
    box = sandboxes(dockerd_args=(), setup=VETH_DEFAULT_ROUTE.format(mtu=1400))
    box.wait_ready(timeout=60)
    argv = box.events_named("dockerd_started")[0]["argv"]
    assert "--mtu=1400" in argv, argv
    network = json.loads(box.docker("network", "inspect", "bridge").stdout)[0]
    assert network["Options"]["com.docker.network.driver.mtu"] == "1400", network["Options"]
    import_busybox(box, busybox_tar)  # type: ignore[arg-type]
    eth0 = box.docker("run", "--rm", "busybox:test", "cat", "/sys/class/net/eth0/mtu")
    assert eth0.stdout.strip() == "1400"


def test_an_explicit_mtu_wins_over_detection(sandboxes: Callable[..., Sandbox]) -> None:
    """--dockerd-mtu 1300 is passed as it is even though the default route says 1400."""
    box = sandboxes(
        dockerd_args=(), agent_args=["--dockerd-mtu", "1300"],
        setup=VETH_DEFAULT_ROUTE.format(mtu=1400),
    )
    box.wait_ready(timeout=60)
    argv = box.events_named("dockerd_started")[0]["argv"]
    assert "--mtu=1300" in argv, argv
    assert "--mtu=1400" not in argv
    network = json.loads(box.docker("network", "inspect", "bridge").stdout)[0]
    assert network["Options"]["com.docker.network.driver.mtu"] == "1300"


def test_no_default_route_passes_no_mtu(sandboxes: Callable[..., Sandbox]) -> None:
    """Without a default route (only lo), dockerd gets no --mtu and keeps its own default."""
    box = sandboxes()
    box.wait_ready(timeout=60)
    argv = box.events_named("dockerd_started")[0]["argv"]
    assert not [a for a in argv if a.startswith("--mtu")], argv
