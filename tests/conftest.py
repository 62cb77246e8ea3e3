"""Markers by folder (tests/unit is `unit`, tests/integration `integration`, and so on),
and the session's reliability tally, printed as one summary line at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

_FOLDER_MARKS = {
    "unit": "unit", "integration": "integration", "e2e": "e2e", "chaos": "chaos", "vm": "vm",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.parts
        for folder, mark in _FOLDER_MARKS.items():
            if folder in parts and not any(m.name == mark for m in item.iter_markers()):
                item.add_marker(getattr(pytest.mark, mark))


# Reliability figures ---------------------------------------------------------
# The chaos suite (tests/chaos) and the bad-input suite
# (tests/integration/test_bad_inputs.py) count what they tried through the
# `reliability_tally` fixture; the session ends by printing one line combining
# both, which docs/reliability.md and the README quote.


@dataclass
class ReliabilityTally:
    """Counts kept across one pytest session."""

    faults: int = 0
    survived: int = 0
    data_lost: int = 0
    bad_inputs: int = 0
    clear_errors: int = 0
    # The chaos suite's TLS client (a call every 100 ms throughout): calls made, calls that
    # failed, and calls cut in flight by a kill -9 of dockerd (counted apart, see
    # tests/integration/clientloop.py).
    client_calls: int = 0
    client_failed: int = 0
    client_cut_by_kill: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def touched(self) -> bool:
        return bool(self.faults or self.bad_inputs or self.notes)

    def line(self) -> str:
        line = (
            f"faults {self.faults}, survived {self.survived}, data lost {self.data_lost},"
            f" bad inputs {self.bad_inputs}, clear errors {self.clear_errors}"
        )
        if self.client_calls:
            line += (
                f", client calls failed {self.client_failed} (of {self.client_calls};"
                f" {self.client_cut_by_kill} more cut in flight by a kill -9)"
            )
        return line


_TALLY = pytest.StashKey[ReliabilityTally]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_TALLY] = ReliabilityTally()


@pytest.fixture(scope="session")
def reliability_tally(pytestconfig: pytest.Config) -> ReliabilityTally:
    """The session's reliability counters (chaos faults, bad inputs)."""
    return pytestconfig.stash[_TALLY]


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    tally = config.stash.get(_TALLY, None)
    if tally is None or not tally.touched:
        return
    terminalreporter.write_sep("=", "reliability")
    for note in tally.notes:
        terminalreporter.write_line(note)
    terminalreporter.write_line(tally.line())
