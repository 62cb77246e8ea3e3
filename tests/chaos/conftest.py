"""Fixtures of the chaos suite: a sandbox that is always destroyed, the busybox image tar."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.sandbox import Sandbox, busybox_rootfs_tar, sandbox_pool


@pytest.fixture
def chaos_sandbox(tmp_path: Path) -> Iterator[Callable[..., Sandbox]]:
    """Start one sandbox; it is killed and its namespace checked empty at teardown."""
    with sandbox_pool(tmp_path) as make:
        yield make


@pytest.fixture(scope="session")
def chaos_busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return busybox_rootfs_tar(tmp_path_factory.mktemp("chaos-images"))
