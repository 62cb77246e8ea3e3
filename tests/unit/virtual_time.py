"""An asyncio event loop whose clock jumps ahead whenever nothing else can happen.

trio's MockClock with ``autojump_threshold=0``, for asyncio: when no
callback is ready and nothing arrives on a file descriptor within a few
real milliseconds, time moves straight to the next timer. A 60 s backoff
or a 15 s hang then takes milliseconds of a test, while real I/O (pipes,
sockets, worker threads) still gets real time to answer.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")
_REAL_GRACE = 0.003  # real seconds I/O gets before time jumps


class _AutoJumpSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        events: list[tuple[Any, int]] = super().select(0)
        if events or timeout == 0:
            return events
        events = super().select(_REAL_GRACE)
        if events or timeout is None or self.loop is None:
            return events
        self.loop.advance(timeout)
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        selector = _AutoJumpSelector()
        super().__init__(selector)
        selector.loop = self
        self._now = 0.0

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += max(0.0, seconds)


def run_virtual(fn: Callable[[], Awaitable[T]]) -> T:
    """anyio.run on a VirtualTimeLoop."""
    return anyio.run(fn, backend="asyncio", backend_options={"loop_factory": VirtualTimeLoop})
