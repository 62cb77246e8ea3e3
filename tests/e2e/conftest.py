"""Fixtures for real nested Docker-in-Docker: one outer dockerd, one image per Debian suite.

Every scenario that uses ``image`` (directly, through ``dinds`` or through
``tls_daemon``) runs once per suite of ``tests/e2e/image.py`` (test ids end
in ``[bookworm]`` or ``[trixie]``: dockerd 20.10 and 26.1). pytest groups the
tests by suite, so each image is built once per session.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.image import SUITES, Suite, build_image
from tests.e2e.outer import Outer, Pool, TlsDaemon
from tests.integration.sandbox import busybox_rootfs_tar


@pytest.fixture(scope="session")
def outer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outer]:
    """A dockerd with networking (docker0 inside its private netns) for the session."""
    started = time.monotonic()
    root = tmp_path_factory.mktemp("outer")
    daemon = Outer(root)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
        _record(root.parent, "outer_session_seconds", time.monotonic() - started)


@pytest.fixture(scope="session", params=list(SUITES), ids=str)
def suite(request: pytest.FixtureRequest) -> Suite:
    """The Debian suite of the image under test (its dockerd, CLI and Compose)."""
    return SUITES[request.param]


@pytest.fixture(scope="session")
def image(outer: Outer, suite: Suite, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The image under test for ``suite``, built in the outer dockerd."""
    work = tmp_path_factory.mktemp(f"image-{suite.name}")
    timings = build_image(outer.docker, work, suite=suite)
    _record(work.parent, f"image_build_{suite.name}", repr(timings))
    return timings.image


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return busybox_rootfs_tar(tmp_path_factory.mktemp("busybox"))


@pytest.fixture
def dinds(outer: Outer, image: str) -> Iterator[Pool]:
    """Start dind containers of the image; all are removed at teardown, with their volumes."""
    pool = Pool(outer, image)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="session")
def tls_daemon(outer: Outer, image: str, busybox_tar: Path) -> Iterator[TlsDaemon]:
    """One dind container per suite started as docker:dind's documentation does, for clients.

    ``busybox:test`` is loaded in it. The scenarios sharing it name their
    images, containers and projects uniquely: none depends on what another
    left behind.
    """
    pool = Pool(outer, image)
    try:
        network = pool.network("e2e-tls")
        ca, client = pool.volume("certs-ca"), pool.volume("certs-client")
        dind = pool(options=[
            "--network", network, "--network-alias", "docker",
            "-e", "DOCKER_TLS_CERTDIR=/certs",
            "-v", f"{ca}:/certs/ca", "-v", f"{client}:/certs/client",
        ])
        dind.wait_ready()
        dind.load_busybox(busybox_tar)
        address = dind.inspect()["NetworkSettings"]["Networks"][network]["IPAddress"]
        yield TlsDaemon(dind=dind, network=network, ca_volume=ca, client_volume=client,
                        address=address, pool=pool)
    finally:
        pool.close()


def _record(where: Path, key: str, value: object) -> None:
    """Append a timing line that a developer (and the report) can read after a run."""
    with (where / "e2e-timings.jsonl").open("a") as handle:
        handle.write(json.dumps({key: value}) + "\n")
