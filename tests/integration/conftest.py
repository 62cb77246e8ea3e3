"""Fixtures for tests against a real dockerd with the agent as PID 1 of private namespaces."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sandbox import Sandbox, busybox_rootfs_tar, poll


@pytest.fixture
def sandboxes(tmp_path: Path) -> Iterator[Callable[..., Sandbox]]:
    """Start sandboxes; every one is killed at teardown, whatever the test did."""
    started: list[Sandbox] = []
    counter = iter(range(1000))

    def make(**kwargs: Any) -> Sandbox:
        root = kwargs.pop("root", None) or tmp_path / f"sandbox{next(counter)}"
        root.mkdir(parents=True, exist_ok=True)
        box = Sandbox(root, **kwargs)
        started.append(box)
        return box.start()

    yield make
    for box in started:
        box.destroy()
    for box in started:
        # The kernel tears a dead namespace down asynchronously.
        poll(lambda box=box: not box.ns_processes(), timeout=20,  # type: ignore[misc]
             what=f"an empty namespace, left: {box.ns_processes()}")


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return busybox_rootfs_tar(tmp_path_factory.mktemp("images"))


def import_busybox(box: Sandbox, tar: Path, tag: str = "busybox:test") -> str:
    box.docker("import", str(tar), tag)
    return tag
