"""Fixtures for the TLS unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.tls.model import CertSpec


@pytest.fixture
def spec() -> CertSpec:
    return CertSpec()


@pytest.fixture
def certdir(tmp_path: Path) -> Path:
    return tmp_path / "certs"
