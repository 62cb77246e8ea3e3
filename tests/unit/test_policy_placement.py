"""Tests for supervisor.policy.placement: where the agent runs, from signs a test can fake."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.policy.placement import Placement, detect

pytestmark = pytest.mark.unit


def test_signs_of_each_place(tmp_path: Path) -> None:
    """A pod beats a container; a unit's INVOCATION_ID is systemd; nothing is a shell."""
    assert detect({}, tmp_path) is Placement.SHELL
    assert detect({"INVOCATION_ID": "abc"}, tmp_path) is Placement.SYSTEMD
    assert detect({"container": "podman"}, tmp_path) is Placement.CONTAINER
    (tmp_path / ".dockerenv").touch()
    assert detect({}, tmp_path) is Placement.CONTAINER
    assert detect({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, tmp_path) is Placement.KUBERNETES
    (tmp_path / "var/run/secrets/kubernetes.io/serviceaccount").mkdir(parents=True)
    assert detect({}, tmp_path) is Placement.KUBERNETES
