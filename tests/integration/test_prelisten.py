"""A restarted container listens before its agent runs: PID 1 opens what the previous run
recorded, under the record's conditions, and the agent hands back what it no longer needs.

The agent is paused at its launch (``tests.harness``), so "before the agent" is a state the
test holds, not a race it hopes to win.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from supervisor.prelisten import RECORD_NAME
from tests.integration.sandbox import PYTHON, Sandbox, poll

HARNESS_INSIDE = "/run/harness"
TLS_ENV = {"DOCKER_TLS_CERTDIR": "/certs"}
_CONNECT = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=3).close()\n"
    "except ConnectionRefusedError:\n"
    "    print('refused'); sys.exit(1)\n"
    "print('connected')\n"
)


def _first_run(sandboxes: Callable[..., Sandbox], root: Path) -> Sandbox:
    box = sandboxes(root=root / "first", env=TLS_ENV)
    box.wait_ready(timeout=60)
    box.signal(15)
    assert box.wait(60) == 0
    return box


def _paused_restart(sandboxes: Callable[..., Sandbox], root: Path, first: Sandbox,
                    env: dict[str, str]) -> tuple[Sandbox, Path]:
    box = sandboxes(
        root=root / "again", data_root=first.data_root, certs=first.certs,
        env={**env, "HARNESS_DIR": HARNESS_INSIDE, "HARNESS_PAUSE": "launch"},
        command=[PYTHON, "-m", "tests.harness", "run", "--log-level", "debug", "--",
                 "--bridge=none"],
    )
    harness = box.run_dir / "harness"
    harness.mkdir(parents=True, exist_ok=True)
    poll((harness / "paused-launch").exists, timeout=40, interval=0.01,
         what="the agent paused before its launch")
    return box, harness


def _connects(box: Sandbox, port: int) -> bool:
    return box.nsenter(PYTHON, "-c", _CONNECT, str(port), timeout=10).returncode == 0


def _tls_client(box: Sandbox) -> subprocess.Popen[str]:
    """One `docker version` over TLS, no retry: what a CI job's first command does."""
    assert box.pid1 is not None
    return subprocess.Popen(
        ["nsenter", "-t", str(box.pid1), "-n", "-m", "-p", "--", "docker",
         "-H", "tcp://127.0.0.1:2376", "--tlsverify", "--tlscacert", "/certs/client/ca.pem",
         "--tlscert", "/certs/client/cert.pem", "--tlskey", "/certs/client/key.pem",
         "version", "--format", "{{.Server.Version}}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_a_client_of_a_restarted_container_is_answered_without_retrying(
    sandboxes: Callable[..., Sandbox], tmp_path: Path
) -> None:
    first = _first_run(sandboxes, tmp_path)
    record = (first.data_root / RECORD_NAME).read_text()
    assert "tcp 0.0.0.0 2376 /certs/client" in record, record
    assert "unix /var/run/docker.sock 660" in record, record
    box, harness = _paused_restart(sandboxes, tmp_path, first, TLS_ENV)
    client = _tls_client(box)  # connects while the agent has not even started its launch
    try:
        assert _connects(box, 2376)
        (harness / "release-launch").touch()
        out, err = client.communicate(timeout=90)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 0, err
    assert out.strip(), err
    box.wait_ready(timeout=60)
    assert box.events_named("sockets_not_kept") == []


def test_the_tls_port_stays_closed_until_the_client_certificates_exist(
    sandboxes: Callable[..., Sandbox], tmp_path: Path
) -> None:
    """GitLab's runner starts the job once a service port accepts; the job reads
    /certs/client: with a client file missing, PID 1 must not open 2376 early."""
    first = _first_run(sandboxes, tmp_path)
    (first.certs / "client" / "key.pem").unlink()
    box, harness = _paused_restart(sandboxes, tmp_path, first, TLS_ENV)
    assert not _connects(box, 2376)
    (harness / "release-launch").touch()
    box.wait_ready(timeout=60)
    assert (first.certs / "client" / "key.pem").exists()  # issued again by the agent
    assert _connects(box, 2376)


def test_a_recorded_port_the_configuration_dropped_is_closed_for_good(
    sandboxes: Callable[..., Sandbox], tmp_path: Path
) -> None:
    """TLS turned off between runs: PID 1 opened 2376 from the record; the agent serves 2375
    and hands 2376 back, so no client waits for good on a port nobody accepts on."""
    first = _first_run(sandboxes, tmp_path)
    box, harness = _paused_restart(sandboxes, tmp_path, first, {"DOCKER_TLS_CERTDIR": ""})
    assert _connects(box, 2376)  # opened early, from the record
    (harness / "release-launch").touch()
    box.wait_ready(timeout=60)
    assert box.events_named("sockets_not_kept"), box.log_tail()
    assert _connects(box, 2375)
    assert not _connects(box, 2376)
    assert "2376" not in (first.data_root / RECORD_NAME).read_text()
