"""A due rotation waits until dockerd's TCP clients have been quiet for tls.rotation_idle, and at
tls.rotation_max_wait restarts anyway, counting the connections it cuts.

A client inside the sandbox's network namespace keeps one TLS connection to
2376 busy (GET /_ping every 100 ms on a keep-alive connection) until a stop
file appears; the agent watches the server side of it through sock_diag.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.sandbox import PYTHON, Sandbox, poll
from tests.integration.test_tls import TLS_ENV, wait_tls

pytestmark = pytest.mark.integration

BUSY_CLIENT = r"""
import json, os, socket, ssl, sys, time
args = json.loads(sys.argv[1])
ctx = ssl.create_default_context(cafile=args["ca"])
ctx.check_hostname = False
ctx.load_cert_chain(args["cert"], args["key"])
conn = ctx.wrap_socket(socket.create_connection(("127.0.0.1", 2376), timeout=5))
calls = failures = 0
while not os.path.exists(args["stop"]):
    calls += 1
    try:
        conn.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
        data = b""
        while b"OK" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                raise ConnectionError("closed by dockerd")
            data += chunk
    except (OSError, ConnectionError) as exc:
        failures += 1
        print(json.dumps({"cut": str(exc), "calls": calls}), flush=True)
        break
    time.sleep(0.1)
print(json.dumps({"calls": calls, "failures": failures}), flush=True)
"""


@contextmanager
def busy_client(box: Sandbox) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    stop = box.root / "stop-client"
    client = box.certs / "client"
    args = {"ca": str(client / "ca.pem"), "cert": str(client / "cert.pem"),
            "key": str(client / "key.pem"), "stop": str(stop)}
    process = subprocess.Popen(
        ["nsenter", "-t", str(box.pid1), "-n", "--", PYTHON, "-c", BUSY_CLIENT, json.dumps(args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield stop, process
    finally:
        stop.touch()
        process.kill()
        process.wait(timeout=10)


def _rotations(box: Sandbox) -> float:
    return box.metric("dind_tls_rotations_total", {"cert": "server"}) or 0.0


def test_a_due_rotation_waits_for_a_busy_client_then_restarts_once_it_is_quiet(
    sandboxes: Callable[..., Sandbox],
) -> None:
    # Renewed halfway through 40 s: the wait may last half of the 20 s left, 10 s.
    box = sandboxes(env=TLS_ENV, agent_args=["--tls-server-lifetime", "40s",
                                             "--tls-renew-fraction", "0.5",
                                             "--tls-rotation-idle", "2s",
                                             "--tls-rotation-max-wait", "5m"])
    wait_tls(box)
    with busy_client(box) as (stop, client):
        poll(lambda: box.metric("dind_tls_rotation_pending") == 1, timeout=40, interval=0.2,
             what="a due rotation waiting for quiet")
        dockerd = box.dockerd_pid()
        # For 4 s of the client's work, nothing is renewed and dockerd is not restarted
        # (sampled through the window: an invariant, not a wait for an event).
        window_ends = time.monotonic() + 4
        while time.monotonic() < window_ends:
            assert client.poll() is None, client.communicate()
            assert box.dockerd_pid() == dockerd, box.log_tail()
            assert _rotations(box) == 0, box.log_tail()
            time.sleep(0.25)
        stop.touch()
        out, _err = client.communicate(timeout=10)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["failures"] == 0, out  # the busy client was never cut
    assert result["calls"] > 20, out
    poll(lambda: _rotations(box) >= 1, timeout=20, interval=0.2, what="the rotation once quiet")
    wait_tls(box)
    assert (box.metric("dind_tls_rotation_wait_seconds_sum") or 0) > 4.0
    assert (box.metric("dind_tls_rotation_cut_connections_total") or 0) == 0
    assert not box.events_named("certificate_rotation_not_quiet")


def test_a_client_busy_past_the_deadline_is_cut_and_counted(
    sandboxes: Callable[..., Sandbox],
) -> None:
    box = sandboxes(env=TLS_ENV, agent_args=["--tls-server-lifetime", "30s",
                                             "--tls-rotation-idle", "2s",
                                             "--tls-rotation-max-wait", "3s"])
    wait_tls(box)
    with busy_client(box) as (_stop, client):
        poll(lambda: _rotations(box) >= 1, timeout=60, interval=0.2,
             what="the rotation at its deadline")
        out, _err = client.communicate(timeout=20)
    assert '"cut"' in out, out  # the restart cut the busy connection
    [late] = box.events_named("certificate_rotation_not_quiet")
    assert late["busy_connections"] == 1, late
    assert box.metric("dind_tls_rotation_cut_connections_total") == 1
    wait_tls(box)
