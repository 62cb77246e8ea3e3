"""Fixtures for tests against a real dockerd with the agent as PID 1 of private namespaces."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.sandbox import Sandbox, busybox_rootfs_tar, sandbox_pool


@pytest.fixture
def sandboxes(tmp_path: Path) -> Iterator[Callable[..., Sandbox]]:
    """Start sandboxes; every one is killed at teardown, whatever the test did."""
    with sandbox_pool(tmp_path) as make:
        yield make


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return busybox_rootfs_tar(tmp_path_factory.mktemp("images"))


def import_busybox(box: Sandbox, tar: Path, tag: str = "busybox:test") -> str:
    box.docker("import", str(tar), tag)
    return tag
