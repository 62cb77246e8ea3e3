"""Fixtures for real nested Docker-in-Docker: one outer dockerd and one image per session."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.image import IMAGE, build_image
from tests.e2e.outer import Dind, Outer
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


@pytest.fixture(scope="session")
def image(outer: Outer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The image under test, built in the outer dockerd."""
    work = tmp_path_factory.mktemp("image")
    timings = build_image(outer.docker, work)
    _record(work.parent, "image_build", timings.__repr__())
    return IMAGE


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return busybox_rootfs_tar(tmp_path_factory.mktemp("busybox"))


@pytest.fixture
def dinds(outer: Outer, image: str) -> Iterator[Callable[..., Dind]]:
    """Start dind containers of the image; all are removed at teardown, with their volumes."""
    names: list[str] = []
    volumes: list[str] = []
    counter = itertools.count()

    def make(*, name: str | None = None, **kwargs: Any) -> Dind:
        name = name or f"dind{next(counter)}-{int(time.monotonic() * 1000) % 100000}"
        names.append(name)
        return Dind.run(outer, name, image, **kwargs)

    make.volumes = volumes  # type: ignore[attr-defined]
    yield make
    for name in names:
        outer.docker("rm", "-f", "-v", name, check=False, timeout=120)
    for volume in volumes:
        outer.docker("volume", "rm", "-f", volume, check=False)


def _record(where: Path, key: str, value: object) -> None:
    """Append a timing line that a developer (and the report) can read after a run."""
    with (where / "e2e-timings.jsonl").open("a") as handle:
        handle.write(json.dumps({key: value}) + "\n")
