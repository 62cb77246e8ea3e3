"""Tests for the client loop's accounting: failed calls, calls cut in flight by a kill -9, gaps."""

from __future__ import annotations

import socket
import ssl

import pytest

from tests.integration.clientloop import Call, one_call, tally

pytestmark = pytest.mark.unit


def call(start: float, end: float, ok: bool = True, error: str = "") -> Call:
    return Call(start=start, end=end, ok=ok, error=error)


def test_a_failed_call_spanning_a_kill_is_counted_apart() -> None:
    """Begun before the kill and ended after it: the killed dockerd had accepted it."""
    calls = [call(0.0, 0.01), call(0.1, 0.3, ok=False, error="reset"), call(0.3, 0.9)]
    result = tally(calls, kills=[0.2])
    assert result.failed == []
    assert [c.start for c in result.cut_by_kill] == [0.1]
    assert result.calls == 3


def test_a_call_begun_after_the_kill_that_fails_is_a_failure() -> None:
    """A call made after the kill should wait in the backlog: its failure counts."""
    calls = [call(0.25, 0.26, ok=False, error="refused"), call(0.35, 0.9)]
    result = tally(calls, kills=[0.2])
    assert [c.error for c in result.failed] == ["refused"]
    assert result.cut_by_kill == []


def test_a_failure_before_any_kill_counts() -> None:
    """No kill in the call's span: it failed on its own."""
    result = tally([call(0.0, 0.1, ok=False, error="timeout")], kills=[0.5])
    assert len(result.failed) == 1


def test_window_and_longest_gap() -> None:
    """Only calls begun in the window are counted; the gap runs between answered calls."""
    calls = [call(0.0, 0.01), call(0.1, 0.11), call(0.2, 1.5), call(1.6, 1.61), call(9.0, 9.1)]
    result = tally(calls, window=(0.05, 2.0))
    assert result.calls == 3
    assert result.longest_gap == pytest.approx(1.5 - 0.11)
    assert "0 failed of 3" in result.describe()


def test_one_call_against_a_closed_port_is_refused() -> None:
    """Nothing listening: the call fails as refused, without raising."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = ssl.create_default_context()
    result = one_call(f"127.0.0.1:{port}", context, timeout=2.0)
    assert not result.ok
    assert result.error == "refused"
    assert result.end >= result.start
