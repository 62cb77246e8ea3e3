"""A `docker stop` at any moment of the start-up is honoured: TERM sent at 10 ms steps through
the first second after PID 1 took charge of its signals.

Each run is a fresh sandbox (the agent as PID 1, a real dockerd, TLS with an
empty certdir, so that the first second holds the certificate issuance and
dockerd's spawn). The clock starts when /proc/1/status shows TERM blocked or
caught: before that the kernel drops a signal sent to a namespace's PID 1 with
the default disposition (the interpreter's own start-up, measured by
bench/signal_window.py and stated in docs/reliability.md). Every run must
exit 0 with a ``signal_received`` line, spawn at most one dockerd, and leave
the certdir empty or complete, never half-written.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ReliabilityTally
from tests.integration.sandbox import Sandbox, poll
from tests.integration.test_signal_matrix import certdir_complete

pytestmark = pytest.mark.integration

STEP_MS = 10
STEPS = 100
_TERM_BIT = 1 << (signal.SIGTERM - 1)


def _term_handled(pid: int) -> bool:
    """TERM blocked or caught, or PID 1 asleep in sigtimedwait (the kernel shows the signals
    it waits for as unblocked meanwhile)."""
    fields = dict(line.split(":\t", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)
    if not fields["Name"].startswith("python"):
        return False  # still the sandbox's shell (or unshare's child) before the exec
    if any(int(fields[key], 16) & _TERM_BIT for key in ("SigBlk", "SigCgt")):
        return True
    return Path(f"/proc/{pid}/wchan").read_text().startswith("do_sigtimedwait")


@pytest.mark.timeout(900)
def test_term_at_every_10_ms_of_the_first_second_stops_cleanly(
    sandboxes: Callable[..., Sandbox], tmp_path: Path, reliability_tally: ReliabilityTally,
    record_property: Callable[[str, object], None],
) -> None:
    problems: list[str] = []
    phases: dict[str, int] = {}
    for step in range(STEPS):
        delay = step * STEP_MS / 1000
        box = sandboxes(root=tmp_path / f"run{step}", env={"DOCKER_TLS_CERTDIR": "/certs"})
        assert box.pid1 is not None
        poll(lambda pid1=box.pid1: _term_handled(pid1), timeout=10,  # type: ignore[misc]
             interval=0.0005, what="PID 1 blocking TERM")
        time.sleep(delay)  # the input of this test: when the TERM arrives
        box.signal(signal.SIGTERM)
        reliability_tally.faults += 1
        try:
            code = box.wait(60)
        except Exception as exc:
            problems.append(f"{step * STEP_MS} ms: no exit within 60 s ({exc})")
            continue
        events = box.events()
        received = [e for e in events if e.get("event") == "signal_received"
                    and e.get("signal") == "SIGTERM"]
        spawned = sum(1 for e in events if e.get("event") == "dockerd_started")
        phase = "dockerd started" if spawned else "before dockerd"
        phases[phase] = phases.get(phase, 0) + 1
        wrong = []
        if code != 0:
            wrong.append(f"exit {code}")
        if not received:
            wrong.append("no signal_received line")
        if spawned > 1:
            wrong.append(f"{spawned} dockerd spawned")
        if spawned and any(e.get("event") == "dockerd_not_started" for e in events):
            wrong.append("dockerd spawned after the launch said it would not be")
        try:
            certdir_complete(box.certs)
        except AssertionError as exc:
            wrong.append(f"certdir half-written: {exc}")
        if wrong:
            problems.append(f"{step * STEP_MS} ms: {', '.join(wrong)}\n{box.log_tail(15)}")
        else:
            reliability_tally.survived += 1
    for phase, count in phases.items():
        record_property(f"early_term_{phase.replace(' ', '_')}", count)
    # Both sides of dockerd's spawn were reached: the sweep covers the launch and beyond.
    assert set(phases) == {"before dockerd", "dockerd started"}, phases
    assert not problems, "\n".join(problems)
