"""Two detectors of a blocked event loop, for tests.

- blockbuster (PyPI) makes the standard library's blocking calls (time.sleep,
  os.read/write on blocking descriptors, file reads, blocking sockets, statvfs,
  listdir, contended locks, ...) raise when they run on the loop's thread with
  one of the agent's frames on the stack. Each such call is recorded here as it
  is raised, whatever the agent then does with the exception.
- A lag probe times every callback the loop runs (``asyncio.Handle._run``) in
  the thread's CPU time: work that keeps the loop from answering for longer
  than the threshold (key generation, a large JSON, an import) whichever call
  it is made of. CPU time, not wall time: on a busy 2-core machine preemption
  alone would stretch a callback's wall time.

Records are JSON lines appended through a non-blocking descriptor, so that
writing them is not itself a blocking call.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import traceback
from typing import Any

THRESHOLD_SECONDS = 0.020


def install(out_path: str, *, package: str, threshold: float = THRESHOLD_SECONDS) -> None:
    """Watch the loop on behalf of ``package`` (a module name)."""
    import importlib

    import blockbuster.blockbuster as bb

    package_path = importlib.import_module(package).__path__[0]

    fd = os.open(out_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC,
                 0o644)

    def record(kind: str, **fields: Any) -> None:
        line = json.dumps({"kind": kind, "pid": os.getpid(), **fields}) + "\n"
        os.write(fd, line.encode())

    class RecordedBlockingError(bb.BlockingError):
        def __init__(self, func: str) -> None:
            super().__init__(func)
            stack = [line for line in traceback.format_stack(limit=16)[:-2]
                     if package_path in line or "site-packages" in line]
            record("blocking_call", call=func, stack=stack[-8:])

    bb.BlockingError = RecordedBlockingError  # type: ignore[misc]
    bb.BlockBuster(scanned_modules=[package]).activate()

    original_run = asyncio.events.Handle._run
    step = _Step()

    def timed_run(handle: asyncio.events.Handle) -> None:
        if step.watcher_pid != os.getpid():  # threads do not survive PID 1's fork
            step.watcher_pid = os.getpid()
            threading.Thread(target=step.watch, args=(threshold,), daemon=True,
                             name="loopcheck").start()
        cpu = time.thread_time()
        step.begin(threading.get_ident())
        try:
            original_run(handle)
        finally:
            wall, stack = step.end()
            cpu_spent = time.thread_time() - cpu
            if cpu_spent > threshold:
                record("slow_callback", cpu_seconds=round(cpu_spent, 4),
                       wall_seconds=round(wall, 4), callback=_describe(handle),
                       stack=stack[-24:])

    asyncio.events.Handle._run = timed_run  # type: ignore[method-assign,assignment]
    record("installed", threshold=threshold)


class _Step:
    """The callback running now; a thread takes its stack once it has run too long,
    so that a slow step names the code that was slow, not where it stopped next.

    No lock: a contended lock on the loop's thread is what blockbuster reports. Each
    step has a number, and a stack taken for another step is not kept."""

    def __init__(self) -> None:
        self.watcher_pid = 0
        self.number = 0
        self.started: float | None = None
        self.thread = 0
        self.stack: tuple[int, list[str]] = (0, [])

    def begin(self, thread: int) -> None:
        self.thread = thread
        self.number += 1
        self.started = time.perf_counter()

    def end(self) -> tuple[float, list[str]]:
        wall = time.perf_counter() - (self.started or time.perf_counter())
        self.started = None
        number, stack = self.stack
        return wall, stack if number == self.number else []

    def watch(self, threshold: float) -> None:
        while True:
            time.sleep(threshold / 4)
            number, started = self.number, self.started
            if started is None or self.stack[0] == number:
                continue
            if time.perf_counter() - started < threshold:
                continue
            frame = sys._current_frames().get(self.thread)
            if frame is not None and self.number == number:
                self.stack = (number, traceback.format_stack(frame))


def _describe(handle: asyncio.events.Handle) -> str:
    """The task a step belongs to (its stack, taken meanwhile, says what was slow)."""
    owner = getattr(getattr(handle, "_callback", None), "__self__", None)
    if isinstance(owner, asyncio.Task):
        name = getattr(owner.get_coro(), "__qualname__", "?")
        return f"task {owner.get_name()} ({name})"
    return repr(handle)[:400]


def read_records(path: str) -> list[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return []
