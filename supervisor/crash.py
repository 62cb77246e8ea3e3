"""What the agent does with its own bug: one line naming what it was doing, the exit code.

Under our PID 1 a bug does not get an orderly teardown: the agent dies at once
(exit 70, as a kill -9 would, but with its line), leaving dockerd, its
descriptors, the held sockets and the data-root lock where they are, in PID
1's keeping. PID 1 starts a new agent, which takes them over. An orderly
teardown would be the workload's end: the dockerd part's stop is the final
stop (containers first under live-restore), and a release of the lock or of
dockerd's descriptors would undo what PID 1 holds for the next agent.
Elsewhere (systemd, a shell) nobody would take dockerd over, and the parts
stop in order, dockerd gracefully.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Awaitable, Callable
from typing import NoReturn

from supervisor.errors import SupervisorError, describe, unwrap
from supervisor.init import EXIT_CRASHED
from supervisor.logs import get_logger


def report_failure(exc: BaseException, doing: str) -> int:
    """One structured line (the traceback at debug level); returns the exit code."""
    exc = unwrap(exc)
    log = get_logger(component="agent")
    if isinstance(exc, SupervisorError):
        log.error("agent_failed", error=exc.message, remedy=exc.remedy, exit_code=exc.exit_code)
        return exc.exit_code
    log.error(
        "agent_crashed", error=describe(exc), while_doing=doing,
        exit_code=EXIT_CRASHED,
        remedy="PID 1 starts a new agent, which takes over dockerd; please report this",
    )
    log.debug("agent_crash_traceback", exc_info=exc)
    return EXIT_CRASHED


def is_bug(exc: BaseException) -> bool:
    return not isinstance(unwrap(exc), SupervisorError)


def die(exc: BaseException, doing: str) -> NoReturn:
    """Report and exit now, running no clean-up (see the module's docstring)."""
    code = report_failure(exc, doing)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def crash_handler(*, successor_takes_over: bool) -> Callable[[BaseException], None]:
    """What a core part's bug does: die at once when a successor takes over, else nothing
    (the parts then stop in order)."""

    def on_crash(exc: BaseException) -> None:
        if successor_takes_over and is_bug(exc):
            die(exc, "running")

    return on_crash


async def guarded(work: Callable[[], Awaitable[None]],
                  on_crash: Callable[[BaseException], None]) -> None:
    """``work`` outside the parts (the final stop): its bug is handled as a part's."""
    try:
        await work()
    except Exception as exc:
        on_crash(exc)
        raise
