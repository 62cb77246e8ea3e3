"""`status`, `wait` and `check` from the host, through the agent's unix socket (the quick start).

The agent runs as PID 1 of private namespaces (tests/integration/sandbox.py),
as scripts/run-local.sh runs it: its network is private, so TCP cannot reach
it from here, but /run is a folder of the test, so its socket is visible at
``<sandbox>/run/dind-supervisor/agent.sock``. The commands run with a shell
environment that has no DOCKER_TLS_CERTDIR, while the agent serves TLS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.sandbox import REPO, Sandbox

pytestmark = pytest.mark.integration


def _command(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """`dind-supervisor ARGS` from the host, with a shell that knows nothing of the agent."""
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        capture_output=True, text=True, timeout=timeout, check=False, env=env, cwd=REPO,
    )


def _socket(box: Sandbox) -> Path:
    return box.run_dir / "dind-supervisor" / "agent.sock"


def test_wait_status_and_check_from_the_host(sandboxes: Callable[..., Sandbox]) -> None:
    """From the host: `wait` exits 0 once ready, `status` shows dockerd, and `check` judges
    the agent's own TLS and data root inside its namespaces; after the agent is gone, `wait`
    says it cannot reach it rather than 'not ready'."""
    box = sandboxes(env={"DOCKER_TLS_CERTDIR": "/certs"})
    sock = str(_socket(box))
    # Started with the agent: the socket may not exist yet, and wait polls on.
    waited = _command("wait", "--socket", sock, "--timeout", "60")
    assert waited.returncode == 0, waited.stderr + box.log_tail()

    status = _command("status", "--socket", sock)
    assert status.returncode == 0, status.stderr
    pid = box.status()["dockerd"]["pid"]
    assert f"dockerd    running (pid {pid}), ready" in status.stdout
    assert "tls        /certs" in status.stdout

    checked = _command("check", "--json", "--socket", sock)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "runs in another mount namespace" in checked.stderr
    findings = json.loads(checked.stdout)
    settings = [f for f in findings if f["topic"] == "settings"]
    assert len(settings) == 1
    assert "TLS on (/certs)" in settings[0]["message"]
    tls = [f["message"] for f in findings if f["topic"] == "tls"]
    assert tls == ["/certs: the agent can write and renew certificates there"]
    assert not any("TLS is off" in f["message"] for f in findings)
    # The data root seen from inside: the sandbox's bind mount, not this machine's.
    assert any(f["topic"] == "dataroot" and f["severity"] == "ok" for f in findings)

    box.destroy()
    gone = _command("wait", "--socket", sock, "--timeout", "1")
    assert gone.returncode == 1
    assert f"cannot reach the agent at unix:{sock}: connection refused" in gone.stderr
    assert "not ready" not in gone.stderr


def test_check_inside_the_namespace_uses_the_agents_settings(
    sandboxes: Callable[..., Sandbox],
) -> None:
    """`check` run inside the agent's namespaces (as `docker exec` would) without
    DOCKER_TLS_CERTDIR in its environment still reports the agent's TLS."""
    box = sandboxes(env={"DOCKER_TLS_CERTDIR": "/certs"})
    box.wait_ready(timeout=60)
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    result = box.nsenter(sys.executable, "-m", "supervisor", "check", cwd=REPO, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(
        "[info   ] settings: from the running agent (pid "
    ), lines[0]
    assert "at unix:/run/dind-supervisor/agent.sock: TLS on (/certs)" in lines[0]
    assert "[ok     ] tls: /certs: the agent can write and renew certificates there" in lines
    assert "runs in another mount namespace" not in result.stderr
