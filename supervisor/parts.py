"""The agent's parts: started in order, stopped in reverse order, each alone.

Every part has one shape (anyio's ``TaskGroup.start`` convention): ``async
def run(*, task_status)`` does its own start-up, calls
``task_status.started(view)`` once the next part may go, and cleans up in
its own ``finally``. ``Parts`` starts them one after another and, on the way
out, stops them one at a time in reverse order, waiting for each: a flat
task group would cancel everything at once and could, for one, release the
data root's lock while dockerd is still stopping. A part may bring its own
way to stop (dockerd's is a graceful stop, not a cancellation).

Core parts end the agent when they fail: the failure is kept, the parts are
stopped in order, and it is raised. Auxiliary parts (the HTTP endpoint, the
container watcher, GC) must never take dockerd down: a failure is logged,
counted in ``dind_agent_part_failures_total{part}`` and the part restarted
after a backoff.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from supervisor.errors import describe
from supervisor.logs import get_logger
from supervisor.metrics import Metrics

PartFn = Callable[..., Awaitable[None]]
_BACKOFF_INITIAL = 1.0
_BACKOFF_MAX = 30.0


@dataclass(slots=True)
class _Running:
    name: str
    scope: anyio.CancelScope
    done: anyio.Event = field(default_factory=anyio.Event)
    stop: Callable[[], Awaitable[None]] | None = None


class Parts:
    """``async with Parts(...) as parts: view = await parts.start("name", part.run)``."""

    def __init__(
        self, metrics: Metrics | None = None, *,
        on_crash: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._metrics = metrics
        self._on_crash = on_crash
        self._log = get_logger(component="agent")
        self._running: list[_Running] = []
        self._tg: TaskGroup = anyio.create_task_group()
        self.failure: BaseException | None = None
        self.failed = anyio.Event()

    async def __aenter__(self) -> Parts:
        await self._tg.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> bool | None:
        with anyio.CancelScope(shield=True):
            await self.stop_all()
        result = await self._tg.__aexit__(*exc_info)  # type: ignore[arg-type]
        if self.failure is not None and exc_info[0] is None:
            raise self.failure
        return result

    async def start(
        self,
        name: str,
        fn: PartFn,
        *args: Any,
        stop: Callable[[], Awaitable[None]] | None = None,
    ) -> Any:
        """Start a core part and wait for its ``started()``; a failure ends the agent."""
        running = _Running(name=name, scope=anyio.CancelScope(), stop=stop)
        self._running.append(running)
        return await self._tg.start(self._core, running, fn, args, name=name)

    async def _core(
        self, running: _Running, fn: PartFn, args: tuple[Any, ...],
        *, task_status: TaskStatus[Any] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        started = False

        def report(value: Any = None) -> None:
            nonlocal started
            started = True
            task_status.started(value)

        try:
            with running.scope:
                await fn(*args, task_status=_Status(report))
        except Exception as exc:
            if self._on_crash is not None:
                self._on_crash(exc)  # may not return: see crash.py
            if self.failure is None:
                self.failure = exc
            self.failed.set()
            if not started:
                raise
        finally:
            running.done.set()

    async def auxiliary(self, name: str, fn: PartFn, *args: Any) -> None:
        """Start a part that is restarted (with backoff) rather than ending the agent."""
        running = _Running(name=name, scope=anyio.CancelScope())
        self._running.append(running)
        first = anyio.Event()
        self._tg.start_soon(self._auxiliary, running, fn, args, first, name=name)
        await first.wait()

    async def _auxiliary(
        self, running: _Running, fn: PartFn, args: tuple[Any, ...], first: anyio.Event
    ) -> None:
        delay = _BACKOFF_INITIAL
        try:
            with running.scope:
                while True:
                    started = anyio.current_time()
                    try:
                        await fn(*args, task_status=_Status(lambda _value=None: first.set()))
                        return
                    except Exception as exc:
                        if anyio.current_time() - started > _BACKOFF_MAX * 2:
                            # It had recovered: a new failure, not a streak.
                            delay = _BACKOFF_INITIAL
                        first.set()
                        if self._metrics is not None:
                            self._metrics.part_failures.labels(part=running.name).inc()
                        self._log.error(
                            "part_failed", part=running.name, error=describe(exc),
                            restart_in_seconds=delay,
                            remedy="the agent goes on and restarts this part; report the error",
                            exc_info=True,
                        )
                    else:
                        return  # a part that finishes by itself is done
                    await anyio.sleep(delay)
                    delay = min(delay * 2, _BACKOFF_MAX)
        finally:
            first.set()
            running.done.set()

    async def wait_until(self, done: anyio.Event) -> None:
        """Until ``done`` is set or a core part failed, whichever comes first."""
        async with anyio.create_task_group() as tg:

            async def on_failure() -> None:
                await self.failed.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(on_failure)
            await done.wait()
            tg.cancel_scope.cancel()

    async def stop_all(self) -> None:
        """Reverse order, one at a time: each part is stopped and its end awaited."""
        while self._running:
            running = self._running.pop()
            if running.stop is not None and not running.done.is_set():
                await running.stop()
            running.scope.cancel()
            await running.done.wait()


class _Status:
    """A TaskStatus that reports to a callback (the parts' own started())."""

    def __init__(self, report: Callable[..., None]) -> None:
        self._report = report

    def started(self, value: Any = None) -> None:
        self._report(value)
