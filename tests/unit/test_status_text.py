"""Tests for supervisor.status_text: what `status` prints of a failure and of runc's refusals."""

from __future__ import annotations

import pytest

from supervisor.status_text import render

pytestmark = pytest.mark.unit


def test_last_error_is_quoted_with_its_cause_and_remedy() -> None:
    """The line as dockerd printed it (two lines joined), then cause and remedy, indented."""
    text = render({"dockerd": {
        "state": "backoff", "last_error": "iptables failed\n (exit status 4)",
        "last_failure": {"cause": "dockerd cannot create the iptables chain DOCKER",
                         "remedy": "run it with --privileged"},
        "client_handshake_failures": {"eof": 3, "unknown_ca": 1},
    }})
    lines = text.splitlines()
    assert "           last error: iptables failed  (exit status 4)" in lines
    assert "             cause: dockerd cannot create the iptables chain DOCKER" in lines
    assert "             remedy: run it with --privileged" in lines
    assert ("           client TLS handshakes failed (the clients' problem): eof 3,"
            " unknown_ca 1") in lines


def test_no_error_no_lines_and_old_agents_still_render() -> None:
    """A healthy agent shows no error line; a document without the new keys still renders."""
    text = render({"dockerd": {"state": "running", "last_error": None, "last_failure": None,
                               "client_handshake_failures": {}}})
    assert "last error" not in text
    assert "handshake" not in text
    assert "last error: boom" in render({"dockerd": {"last_error": "boom"}})


def test_policy_shows_the_last_runtime_explanation() -> None:
    """`status` shows the count and the last decoded refusal with its remedy, not just a count."""
    text = render({"policy": {
        "mode": "best-effort", "oom_score_adj": {}, "runtime_errors": 2,
        "last_runtime_error": {"container_id": "cada1ec72d00aabbccdd",
                               "message": "runc could not set RLIMIT_NOFILE (30000:30000)",
                               "remedy": "run the container with --ulimit nofile=20000"},
    }})
    assert "rlimit errors seen in dockerd's output: 2" in text
    assert ("  last (container cada1ec72d00): runc could not set RLIMIT_NOFILE (30000:30000)"
            in text)
    assert "  remedy: run the container with --ulimit nofile=20000" in text
