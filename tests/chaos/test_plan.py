"""The chaos plan is reproducible, covers every fault kind and counts restarts per reason."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.chaos.plan import SPECS, Fault, expected_restarts, plan

pytestmark = pytest.mark.chaos


def test_same_seed_same_sequence_and_every_kind_present() -> None:
    """A seed replays exactly; every kind appears at least once, whatever the seed."""
    assert plan(1234, 50) == plan(1234, 50)
    assert plan(1234, 50) != plan(1235, 50)
    for seed in range(200):
        faults = plan(seed, 50)
        assert len(faults) == 50
        assert set(faults) == set(Fault)


def test_too_few_faults_to_cover_every_kind_is_refused() -> None:
    """Fewer faults than kinds cannot cover them all: refused instead of silently skipped."""
    with pytest.raises(ValueError, match="at least"):
        plan(1, len(Fault) - 1)


def test_expected_restarts_by_reason() -> None:
    """Kills restart with `exit`, a hang with `unhealthy`, renewals with `tls_rotation`."""
    faults = [Fault.KILL_DOCKERD, Fault.KILL_DOCKERD_STARTING, Fault.STOP_DOCKERD,
              Fault.KILL_CONTAINERD, Fault.SIGNAL_BURST, Fault.KILL_DOCKERD_ROTATING]
    assert expected_restarts(faults, rotations=3) == Counter(
        {"exit": 3, "unhealthy": 1, "tls_rotation": 3}
    )
    assert expected_restarts([Fault.FILL_DATA_ROOT, Fault.DELETE_CLIENT_CERTS]) == Counter()
    assert all(spec.budget > 0 and spec.span >= 0 for spec in SPECS.values())
