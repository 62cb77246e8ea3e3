"""Fixtures of the chaos suite: a sandbox that is always destroyed, the busybox image tar."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sandbox import Sandbox, busybox_rootfs_tar, poll


@pytest.fixture
def chaos_sandbox(tmp_path: Path) -> Iterator[Callable[..., Sandbox]]:
    """Start one sandbox; it is killed and its namespace checked empty at teardown."""
    started: list[Sandbox] = []

    def make(**kwargs: Any) -> Sandbox:
        box = Sandbox(tmp_path / f"box{len(started)}", **kwargs)
        started.append(box)
        return box.start()

    yield make
    for box in started:
        box.destroy()
    for box in started:
        poll(lambda box=box: not box.ns_processes(), timeout=30,  # type: ignore[misc]
             what=f"an empty namespace, left: {box.ns_processes()}")


@pytest.fixture(scope="session")
def chaos_busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return busybox_rootfs_tar(tmp_path_factory.mktemp("chaos-images"))
