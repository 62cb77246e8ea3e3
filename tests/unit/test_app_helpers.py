"""Small decisions of the agent's wiring (app.py) that need no dockerd."""

from __future__ import annotations

import sys
from pathlib import Path

import supervisor
from supervisor.app import own_files_under


def test_own_files_found_below_their_folder() -> None:
    """The agent's package folder is reported when it lies below the folder asked about."""
    package = Path(supervisor.__file__).parent
    found = own_files_under(package.parent)
    assert found is not None
    assert Path(found).resolve().is_relative_to(package.parent.resolve())


def test_own_files_not_found_elsewhere(tmp_path: Path) -> None:
    """A folder holding none of the agent's files (interpreter, packages, code) gives None."""
    if Path(sys.prefix).resolve().is_relative_to(tmp_path.resolve()):
        raise AssertionError("the test's temp folder must not hold the interpreter")
    assert own_files_under(tmp_path) is None
