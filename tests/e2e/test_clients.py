"""What CI jobs do with a dind service, over TLS: build images, run Compose, use Python clients.

Every scenario talks to the suite's shared ``tls_daemon`` (the dind
container as docker:dind's documentation starts it, ``docker`` on a
user-defined network, TLS on 2376) from a second container on that network
with the client certificates from the shared volume, or, for the Python
clients, from this checkout's venv in the outer dockerd's network namespace.
Each runs once per suite: the client tools are the suite's own (docker CLI
20.10 or 26.1, Compose v1 or v2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.image import REPO, Suite
from tests.e2e.outer import Outer, TlsDaemon, unique

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

MARK = "=====CUT====="

DOCKERFILE = """\
FROM busybox:test AS build
RUN echo "built by {builder} {nonce}" > /artifact && wc -c /artifact
FROM busybox:test
COPY --from=build /artifact /artifact
CMD ["cat", "/artifact"]
"""


def _build_twice(tls_daemon: TlsDaemon, tmp_path: Path, builder: str) -> list[str]:
    """Build a two-stage Dockerfile twice and run the result: the three outputs."""
    buildkit = builder == "buildkit"
    context = tmp_path / "context"
    context.mkdir()
    # A fresh nonce: the first build cannot hit a cache left by anything else.
    tag = unique(f"e2e-{builder}")
    (context / "Dockerfile").write_text(DOCKERFILE.format(builder=builder, nonce=tag))
    build = (f"DOCKER_BUILDKIT={int(buildkit)} docker build "
             f"{'--progress=plain ' if buildkit else ''}-t {tag} /context")
    code, output = tls_daemon.client(
        f"exec 2>&1; set -e; {build}; echo {MARK}; {build}; echo {MARK}; "
        f"docker run --rm --network none {tag}",
        "-v", f"{context}:/context:ro",
    )
    assert code == 0, output
    parts = output.split(MARK)
    assert len(parts) == 3, output
    assert parts[2].strip() == f"built by {builder} {tag}", output
    return parts


def test_docker_build_with_buildkit_hits_its_cache_the_second_time(
    tls_daemon: TlsDaemon, tmp_path: Path
) -> None:
    """DOCKER_BUILDKIT=1: a two-stage build from a local image; the rebuild is all CACHED."""
    first, second, _ = _build_twice(tls_daemon, tmp_path, "buildkit")
    # BuildKit's plain progress: numbered steps, stages named by their alias.
    assert "[build 2/2] RUN echo" in first, first
    assert "CACHED" not in first, first
    assert "[build 2/2] RUN echo" in second, second
    assert second.count("CACHED") >= 2, second  # the RUN and the COPY --from


def test_docker_build_with_the_classic_builder_hits_its_cache_the_second_time(
    tls_daemon: TlsDaemon, suite: Suite, tmp_path: Path
) -> None:
    """DOCKER_BUILDKIT=0: the same build with the legacy builder; the rebuild uses its cache."""
    first, second, _ = _build_twice(tls_daemon, tmp_path, "classic")
    assert "Step 2/5 : RUN echo" in first, first
    assert "Using cache" not in first, first
    assert second.count("Using cache") >= 3, second  # RUN, COPY --from, CMD
    # Since CLI 23 the legacy builder still works but says it is deprecated.
    deprecated = "DEPRECATED: The legacy builder is deprecated"
    assert (deprecated in first) == (suite.major >= 23), first


COMPOSE_FILE = """\
services:
  web:
    image: busybox:test
    command: ["sh", "-c", "mkdir -p /www && echo hello-from-compose > /www/index.html
      && exec httpd -f -p 8080 -h /www"]
  client:
    image: busybox:test
    depends_on: [web]
    # web may not listen yet: ask again, 100 times at most.
    command: ["sh", "-c", "i=0; until wget -qO- http://web:8080/index.html;
      do i=$$((i+1)); [ $$i -lt 100 ] || exit 1; sleep 0.2; done"]
"""


def test_compose_services_talk_over_their_network(
    tls_daemon: TlsDaemon, suite: Suite, tmp_path: Path
) -> None:
    """The suite's Compose (v1 or v2), over TLS: a client service fetches from a web service."""
    (tmp_path / "compose.yaml").write_text(COMPOSE_FILE)
    compose = " ".join(suite.compose)
    project = unique("e2e").replace("-", "")
    code, output = tls_daemon.client(
        f"exec 2>&1; cd /project && {compose} version --short && echo {MARK} && "
        f"{compose} -p {project} up --exit-code-from client; code=$?; "
        f"{compose} -p {project} down; exit $code",
        "-v", f"{tmp_path}:/project:ro",
    )
    assert code == 0, output
    version, _, run = output.partition(MARK)
    assert version.strip().splitlines()[-1].startswith(suite.compose_version), output
    assert "hello-from-compose" in run, output
    # Each service ran on the project's network, not on the default bridge.
    assert f"{project}_default" in run or f"{project}-default" in run, output


def _python_client(outer: Outer, tls_daemon: TlsDaemon, probe: str) -> dict[str, Any]:
    """Run ``tests/e2e/sdk_client.py PROBE`` from this venv, inside the outer dockerd's netns.

    The machine's REQUESTS_CA_BUNDLE (and CURL_CA_BUNDLE) would make requests,
    hence docker-py and testcontainers, verify the daemon against the system
    CAs instead of DOCKER_CERT_PATH's ca.pem: CERTIFICATE_VERIFY_FAILED.
    """
    env = {
        key: value for key, value in os.environ.items()
        if key not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE") and not key.startswith("DOCKER_")
    }
    env.update({
        "DOCKER_HOST": f"tcp://{tls_daemon.address}:2376",
        "DOCKER_TLS_VERIFY": "1",
        # The volume's folder, as the outer dockerd's mount namespace sees it.
        "DOCKER_CERT_PATH": tls_daemon.client_certs(),
        "DOCKER_CONFIG": str(outer.root / "docker-config"),
        "TESTCONTAINERS_RYUK_DISABLED": "true",
    })
    assert outer.box.pid1 is not None
    result = subprocess.run(
        ["nsenter", "-t", str(outer.box.pid1), "-n", "-m", f"--wd={REPO}", "--",
         sys.executable, "-m", "tests.e2e.sdk_client", probe],
        capture_output=True, text=True, timeout=240, check=False, env=env, cwd=REPO,
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_the_docker_sdk_for_python_pings_runs_and_sees_events(
    outer: Outer, tls_daemon: TlsDaemon, suite: Suite
) -> None:
    """docker.from_env() over TLS: ping, containers.run, logs and the container's events."""
    seen = _python_client(outer, tls_daemon, "docker")
    assert seen["ping"] is True, seen
    assert seen["server_version"].startswith(suite.dockerd), seen
    # docker-py 7 negotiates: the daemon's newest API version.
    assert seen["api_version"] == suite.api_version, seen
    assert seen["exit_code"] == 0, seen
    assert "hello-from-sdk" in seen["logs"], seen
    assert "to-stderr" in seen["logs"], seen
    actions = [a for a in seen["actions"] if a in ("create", "start", "die", "destroy")]
    assert actions == ["create", "start", "die", "destroy"], seen


def test_testcontainers_runs_a_local_image_without_ryuk(
    outer: Outer, tls_daemon: TlsDaemon
) -> None:
    """testcontainers-python, Ryuk disabled: a published port answers and exec works."""
    seen = _python_client(outer, tls_daemon, "testcontainers")
    assert seen["host"] == tls_daemon.address, seen
    assert seen["body"].strip() == "hello-from-testcontainers", seen
    assert seen["exec_exit_code"] == 0, seen
    assert seen["exec_output"].strip() == "hello-from-testcontainers", seen
    # Without Ryuk, nothing else ran; the container is gone once the block ends.
    names = tls_daemon.dind.docker("ps", "-a", "--format", "{{.ID}} {{.Image}}").stdout
    assert "ryuk" not in names, names
    assert seen["container_id"][:12] not in names, names
