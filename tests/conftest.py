"""Markers by folder: tests/unit is `unit`, tests/integration `integration`, and so on."""

from __future__ import annotations

import pytest

_FOLDER_MARKS = {"unit": "unit", "integration": "integration", "e2e": "e2e", "chaos": "chaos"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.parts
        for folder, mark in _FOLDER_MARKS.items():
            if folder in parts and not any(m.name == mark for m in item.iter_markers()):
                item.add_marker(getattr(pytest.mark, mark))
