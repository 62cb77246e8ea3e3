"""Why dockerd failed, against a real dockerd with TLS: what is (and is not) dockerd's error.

The agent is PID 1 of a private namespace with DOCKER_TLS_CERTDIR=/certs. Its
own readiness probe does a full TLS handshake with the client certificate, so
it leaves no "TLS handshake error" in dockerd's log; a client that fails its
handshake (a port probe, another CA) is counted per reason and is never
reported as dockerd's last error; a dockerd that is killed or stopped from
outside and comes back leaves no last error either.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ReliabilityTally
from tests.integration.sandbox import Sandbox, metric_value, poll
from tests.integration.test_tls import (
    TLS_ENV,
    docker_tls,
    make_ca,
    make_leaf,
    probe,
    probe_args,
    refused_because,
    wait_tls,
)

pytestmark = pytest.mark.integration

RESTARTS = 10
HANDSHAKE_METRIC = "dind_tls_client_handshake_failures_total"


def handshake_failures(box: Sandbox) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    code, body = box.http("/metrics")
    assert code == 200, body
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == HANDSHAKE_METRIC:
                found[sample.labels["reason"]] = sample.value
    return found


def test_restarts_of_a_healthy_tls_dockerd_leave_no_last_error_and_clients_are_counted_apart(
    sandboxes: Callable[..., Sandbox], tmp_path: Path, reliability_tally: ReliabilityTally,
) -> None:
    """A port probe (EOF) and a client with another CA's certificate are counted per reason,
    never dockerd's error; then 10 restarts of the healthy dockerd (kill -9 and TERM from
    outside): the agent's own probe adds no "TLS handshake error", /status shows no last
    error, and each restart's dockerd_failed event quotes no line."""
    box = sandboxes(env={**TLS_ENV, "DIND_SUPERVISOR_RESTART_HEALTHY_AFTER": "0s",
                         "DIND_SUPERVISOR_RESTART_MAX_CRASHES": "50",
                         "DIND_SUPERVISOR_LOG_FORMAT": "json"})
    wait_tls(box)
    assert box.pid1 is not None
    # A bare TCP connect to the TLS port (a CI service's health check): an EOF handshake.
    connect = ("import socket; socket.create_connection(('127.0.0.1', 2376), timeout=5)"
               ".close()")
    subprocess.run(["nsenter", "-t", str(box.pid1), "-n", "--", sys.executable, "-c", connect],
                   check=True, timeout=30)
    refused_because(box, "EOF")
    # A client whose certificate another CA signed.
    now = dt.datetime.now(dt.UTC)
    other_ca, other_key = make_ca(now)
    foreign = tmp_path / "foreign"
    make_leaf(foreign, "client", other_ca, other_key,
              not_before=now - dt.timedelta(minutes=5), not_after=now + dt.timedelta(days=1))
    shutil.copy(box.certs / "client" / "ca.pem", foreign / "ca.pem")
    assert docker_tls(box, "version", cert_path=foreign).returncode != 0
    refused_because(box, "certificate signed by unknown authority")
    poll(lambda: handshake_failures(box).get("client_cert_rejected"), timeout=10,
         what="the foreign client counted")
    counted = handshake_failures(box)
    assert counted["client_cert_rejected"] >= 1  # the CLI tries more than once
    assert counted["eof"] == 1
    clients = {reason: int(value) for reason, value in counted.items() if value}
    assert box.status()["dockerd"]["client_handshake_failures"] == clients
    # A bad input of the reliability line (tests/integration/test_bad_inputs.py): the
    # foreign client is refused, told apart and counted.
    reliability_tally.bad_inputs += 1
    reliability_tally.clear_errors += 1

    for number in range(1, RESTARTS + 1):
        pid = box.dockerd_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL if number % 2 else signal.SIGTERM)
        poll(lambda pid=pid: box.dockerd_pid() not in (None, pid)  # type: ignore[misc]
             and box.http("/readyz")[0] == 200, timeout=60,
             what=f"dockerd back after restart {number}")
    status = box.status()["dockerd"]
    assert sum(status["restarts"].values()) == RESTARTS
    assert status["last_error"] is None, status["last_failure"]
    assert status["last_failure"] is None
    # The only handshake errors dockerd ever logged are the two clients' above.
    handshakes = [line for line in box.iter_dockerd_lines() if "TLS handshake error" in line]
    assert len(handshakes) == sum(clients.values()), handshakes
    assert handshake_failures(box)["eof"] == 1
    failed = box.events_named("dockerd_failed")
    assert len(failed) == RESTARTS
    assert {event["line"] for event in failed} == {None}
    assert {event["was_ready"] for event in failed} == {True}
    assert probe(box, probe_args(box.certs)) == "ok"
    assert metric_value(box.http("/metrics")[1], "dind_dockerd_up") == 1.0
