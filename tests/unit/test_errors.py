"""Tests for supervisor.errors: the real cause of a failure, named."""

from __future__ import annotations

from supervisor.errors import describe, unwrap


def test_describe_names_the_cause_inside_task_group_wrappers() -> None:
    """A part's failure arrives wrapped by anyio's task groups: the log names the cause."""
    inner = ExceptionGroup("unhandled errors in a TaskGroup", [
        ExceptionGroup("unhandled errors in a TaskGroup", [ValueError("bad event")])])
    assert describe(inner) == "ValueError: bad event"
    several = ExceptionGroup("two", [OSError("disk"), KeyError("id")])
    assert describe(several) == "OSError: disk; KeyError: 'id'"
    assert unwrap(inner).args == ("bad event",)
