"""Tests for the agent's signal table (supervisor.signals.signal_action), called directly."""

from __future__ import annotations

import signal

import pytest

from supervisor.init import FORWARDED
from supervisor.signals import SIGNAL_ACTIONS, SignalAction, signal_action

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("signum", "action"),
    [
        (signal.SIGTERM, SignalAction.STOP),
        (signal.SIGINT, SignalAction.STOP),
        (signal.SIGQUIT, SignalAction.STOP),
        (signal.SIGHUP, SignalAction.FORWARD),
        (signal.SIGUSR1, SignalAction.FORWARD),
        (signal.SIGUSR2, SignalAction.LOG_STATUS),
    ],
)
def test_handled_signals(signum: int, action: SignalAction) -> None:
    """TERM/INT/QUIT stop, HUP/USR1 go on to dockerd, USR2 logs the status."""
    assert signal_action(signum) is action
    assert signal_action(int(signum)) is action


@pytest.mark.parametrize(
    "signum",
    [
        signal.SIGCHLD,
        signal.SIGPIPE,
        signal.SIGWINCH,
        signal.SIGALRM,
        signal.SIGCONT,
        signal.SIGKILL,
        signal.SIGRTMIN,
    ],
)
def test_other_signals_have_no_action(signum: int) -> None:
    """Signals outside the table map to None."""
    assert signal_action(signum) is None


@pytest.mark.parametrize("signum", [0, -1, 999])
def test_invalid_numbers_have_no_action(signum: int) -> None:
    """Numbers that are no signal map to None instead of raising."""
    assert signal_action(signum) is None


def test_every_signal_init_forwards_has_an_action() -> None:
    """PID 1 forwards exactly the signals the agent's table handles."""
    assert set(FORWARDED) == set(SIGNAL_ACTIONS)
