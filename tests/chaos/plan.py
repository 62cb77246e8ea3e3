"""The chaos plan: fault kinds, the seeded sequence, and what each fault should do.

Pure and deterministic: the same seed gives the same sequence, so a failing
run is replayed with ``CHAOS_SEED=<seed>``. Each kind states the dockerd
restarts it must cause (by reason, as counted in
``dind_dockerd_restarts_total{reason}``) and the time dockerd may take to be
ready again. The injection itself lives in test_chaos.py.
"""

from __future__ import annotations

import enum
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field


class Fault(enum.StrEnum):
    KILL_DOCKERD = "kill_dockerd"  # SIGKILL of a ready dockerd
    KILL_DOCKERD_STARTING = "kill_dockerd_starting"  # SIGKILL, then SIGKILL of the new one at once
    KILL_DOCKERD_ROTATING = "kill_dockerd_rotating"  # SIGKILL while a TLS rotation restarts it
    STOP_DOCKERD = "stop_dockerd"  # SIGSTOP: hung, found by liveness pings
    KILL_CONTAINERD = "kill_containerd"  # SIGKILL of containerd (the agent's, by default)
    SIGNAL_BURST = "signal_burst"  # HUP/USR1/USR2 to PID 1, back to back
    FILL_DATA_ROOT = "fill_data_root"  # data root filled to ENOSPC, then freed
    CERTDIR_READONLY = "certdir_readonly"  # /certs remounted read-only; dockerd restarted meanwhile
    DELETE_CLIENT_CERTS = "delete_client_certs"  # client/{ca,cert,key}.pem removed, reissued


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultSpec:
    weight: int
    restarts: Mapping[str, int] = field(default_factory=dict)  # reason -> restarts it causes
    budget: float = 10.0  # seconds from injection to dockerd ready again
    # Seconds during which a certificate rotation would change what the fault
    # tests (a renewal while the certdir is read-only fails; a rotation restart
    # requested while dockerd is down is rightly merged): no fault starts that
    # close to a due renewal.
    span: float = 4.0


# Budgets are generous for a loaded 2-core machine; the figures actually
# measured are printed at the end of the run.
SPECS: Mapping[Fault, FaultSpec] = {
    Fault.KILL_DOCKERD: FaultSpec(weight=8, restarts={"exit": 1}, span=3.0),
    # The second death is a failed start: it backs off restart.backoff_initial.
    Fault.KILL_DOCKERD_STARTING: FaultSpec(weight=5, restarts={"exit": 2}, budget=15.0, span=5.0),
    # The process killed is the one the rotation is already replacing: its
    # death adds no restart. The rotation's own `tls_rotation` restart is
    # counted with every other renewal of the server certificate.
    Fault.KILL_DOCKERD_ROTATING: FaultSpec(weight=3, span=0.0),
    Fault.STOP_DOCKERD: FaultSpec(weight=6, restarts={"unhealthy": 1}, budget=15.0, span=6.0),
    # The agent restarts containerd at once (dockerd's own health checks would
    # take about 10 s); it must not restart dockerd for it. dockerd stays up
    # meanwhile, so a rotation restart may overlap it.
    Fault.KILL_CONTAINERD: FaultSpec(weight=2, span=2.0),
    Fault.SIGNAL_BURST: FaultSpec(weight=8, budget=5.0, span=2.0),
    Fault.FILL_DATA_ROOT: FaultSpec(weight=4, budget=5.0, span=5.0),
    Fault.CERTDIR_READONLY: FaultSpec(weight=4, restarts={"exit": 1}, span=8.0),
    Fault.DELETE_CLIENT_CERTS: FaultSpec(weight=4, budget=5.0, span=1.0),
}


def plan(seed: int, count: int) -> list[Fault]:
    """``count`` faults: every kind at least once, the rest drawn by weight, shuffled."""
    if count < len(Fault):
        raise ValueError(f"need at least {len(Fault)} faults to cover every kind, got {count}")
    rng = random.Random(seed)
    kinds = list(Fault)
    faults = kinds + rng.choices(
        kinds, weights=[SPECS[k].weight for k in kinds], k=count - len(kinds)
    )
    rng.shuffle(faults)
    return faults


def expected_restarts(faults: list[Fault], rotations: int = 0) -> Counter[str]:
    """Restarts by reason that ``faults`` plus ``rotations`` server-certificate renewals cause."""
    total: Counter[str] = Counter()
    for fault in faults:
        total.update(SPECS[fault].restarts)
    if rotations:
        total["tls_rotation"] += rotations
    return +total


def describe(faults: list[Fault]) -> str:
    counts = Counter(faults)
    return ", ".join(f"{kind.value} {counts[kind]}" for kind in Fault if counts[kind])
