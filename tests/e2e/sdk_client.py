"""Python clients of a dind daemon, run by the e2e suite in the outer dockerd's network namespace.

``python -m tests.e2e.sdk_client docker|testcontainers`` uses the Docker
SDK for Python (``docker.from_env()``) or testcontainers-python exactly as a
CI job does: DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH come from
the environment, and the one image is the locally loaded ``busybox:test``.
It prints one JSON object with what it saw; the test asserts on it
(tests/e2e/test_clients.py). It runs under ``nsenter`` because the dind
container's address is only reachable inside the outer dockerd's network
namespace.

Owns nothing else: no container outlives it (each is removed in a finally).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from typing import Any

IMAGE = "busybox:test"


def docker_sdk() -> dict[str, Any]:
    """ping, containers.run (detached), wait, logs, and the container's events."""
    import docker

    client = docker.from_env()
    name = f"sdk-{os.getpid()}"
    since = int(time.time()) - 1
    container = client.containers.run(
        IMAGE, ["sh", "-c", "echo hello-from-sdk; echo to-stderr >&2"],
        name=name, network_mode="none", detach=True,
    )
    try:
        status = container.wait(timeout=60)["StatusCode"]
        logs = container.logs(stdout=True, stderr=True).decode()
    finally:
        container.remove(force=True)
    # `until` bounds the stream: it ends once the daemon's clock passes it.
    events = client.events(
        since=since, until=int(time.time()) + 1, decode=True, filters={"container": name}
    )
    return {
        "ping": client.ping(),
        "server_version": client.version()["Version"],
        "api_version": client.api.api_version,
        "exit_code": status,
        "logs": logs,
        "actions": [event.get("Action") or event.get("status") for event in events],
    }


def testcontainers() -> dict[str, Any]:
    """A DockerContainer with an exposed port, waited on over HTTP, as a test suite would."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import HttpWaitStrategy

    serve = (
        "mkdir -p /www && echo hello-from-testcontainers > /www/index.html "
        "&& exec httpd -f -p 8080 -h /www"
    )
    container = (
        DockerContainer(IMAGE)
        .with_command(["sh", "-c", serve])
        .with_exposed_ports(8080)
        .waiting_for(
            HttpWaitStrategy(8080, "/index.html").for_status_code(200).with_startup_timeout(60)
        )
    )
    with container:
        host, port = container.get_container_host_ip(), container.get_exposed_port(8080)
        url = f"http://{host}:{port}/index.html"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read().decode()
        exec_result = container.exec(["cat", "/www/index.html"])
        container_id = container.get_wrapped_container().id
    return {
        "host": host,
        "body": body,
        "exec_exit_code": exec_result.exit_code,
        "exec_output": exec_result.output.decode(),
        "container_id": container_id,
    }


def main(argv: list[str]) -> int:
    probes = {"docker": docker_sdk, "testcontainers": testcontainers}
    if len(argv) != 1 or argv[0] not in probes:
        print(f"usage: python -m tests.e2e.sdk_client {'|'.join(probes)}", file=sys.stderr)
        return 2
    print(json.dumps(probes[argv[0]]()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
