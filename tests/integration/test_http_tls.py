"""The agent's endpoint over HTTPS with client-certificate auth against the agent's CA."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from tests.integration.sandbox import PYTHON, Sandbox, poll

pytestmark = pytest.mark.integration


def curl(box: Sandbox, *args: str) -> tuple[int, str]:
    result = box.nsenter("curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", *args)
    return int(result.stdout or 0), result.stderr


def test_https_endpoint_requires_a_client_certificate_from_the_agents_ca(
    sandboxes: Callable[..., Sandbox],
) -> None:
    """With http.tls: no client cert is refused, the client folder's cert gets 200."""
    box = sandboxes(
        env={"DOCKER_TLS_CERTDIR": "/certs", "DIND_SUPERVISOR_HTTP_TLS": "true"},
    )
    client = "/certs/client"
    with_cert = ("--cacert", f"{client}/ca.pem", "--cert", f"{client}/cert.pem",
                 "--key", f"{client}/key.pem")  # fmt: skip

    poll(lambda: curl(box, *with_cert, "https://127.0.0.1:9324/readyz")[0] == 200,
         timeout=30, what="HTTPS /readyz with the client certificate")  # fmt: skip
    assert curl(box, *with_cert, "https://127.0.0.1:9324/metrics")[0] == 200
    code, _ = curl(box, "--cacert", f"{client}/ca.pem", "https://127.0.0.1:9324/status")
    assert code == 0  # the TLS handshake itself is refused
    assert curl(box, "http://127.0.0.1:9324/healthz")[0] != 200

    env = {**os.environ, "DOCKER_TLS_CERTDIR": "/certs", "DIND_SUPERVISOR_HTTP_TLS": "true"}
    wait = box.nsenter(PYTHON, "-m", "supervisor", "wait", "--timeout", "5", env=env)
    assert wait.returncode == 0, wait.stderr
    status = box.nsenter(PYTHON, "-m", "supervisor", "status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    assert '"state": "running"' in status.stdout
    assert wait.returncode == 0, wait.stderr
