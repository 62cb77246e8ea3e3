"""Points where the agent stops and waits, or crashes, once: a test reaches a phase of the
lifecycle by an observable milestone, not by timing.

HARNESS_DIR is a folder both the test and the agent see. With HARNESS_PAUSE=point
the agent, the first time it reaches ``point`` (in any agent process: the marker
``done-POINT`` is created once), writes ``paused-POINT`` and waits until the test
creates ``release-POINT``. With HARNESS_CRASH=point it raises there instead, once,
as a bug would. HARNESS_CRASH_ON_SIGNAL=USR2 makes the agent's own handling of
that signal raise, once, in whatever phase the test sends it.

Points: ``launch`` (the agent before it handles signals), ``certificates`` (issuing
the certificate set), ``starting`` (dockerd spawned, its readiness not yet seen),
``stopping`` (the final stop under way, dockerd still running).
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

POINTS: dict[str, tuple[str, str, str | None]] = {
    "launch": ("supervisor.launch", "launch", None),
    "certificates": ("supervisor.tls.worker", "run_forked", None),
    "starting": ("supervisor.dockerd.daemon", "wait_ready", None),
    "stopping": ("supervisor.docker_api", "DockerApi", "stop_containers_within"),
}
_LIMIT_SECONDS = 120.0  # a test that forgot to release does not hang the suite


class InjectedCrash(RuntimeError):
    pass


def _first_time(folder: Path, point: str) -> bool:
    try:
        os.close(os.open(folder / f"done-{point}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _announce(folder: Path, point: str) -> Path:
    (folder / f"paused-{point}").write_text(str(os.getpid()))
    return folder / f"release-{point}"


def install(folder: Path, *, pause: str | None, crash: str | None,
            crash_on_signal: str | None) -> None:
    for point, mode in ((pause, "pause"), (crash, "crash")):
        if point is None:
            continue
        if point not in POINTS:
            raise SystemExit(f"unknown harness point {point!r}; known: {sorted(POINTS)}")
        module_name, name, method = POINTS[point]
        module = importlib.import_module(module_name)
        owner: Any = getattr(module, name) if method else module
        attribute = method or name
        original = getattr(owner, attribute)
        wrap = _async_wrapper if _is_async(original) else _sync_wrapper
        setattr(owner, attribute, wrap(original, folder, point, mode))
    if crash_on_signal:
        _crash_on_signal(folder, signal.Signals[f"SIG{crash_on_signal}"])


def _is_async(fn: Callable[..., Any]) -> bool:
    import inspect

    return inspect.iscoroutinefunction(fn)


def _sync_wrapper(original: Callable[..., Any], folder: Path, point: str,
                  mode: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _first_time(folder, point):
            if mode == "crash":
                raise InjectedCrash(f"crash injected at {point}")
            release = _announce(folder, point)
            deadline = time.monotonic() + _LIMIT_SECONDS
            while not release.exists() and time.monotonic() < deadline:
                time.sleep(0.005)
        return original(*args, **kwargs)

    return wrapper


def _async_wrapper(original: Callable[..., Any], folder: Path, point: str,
                   mode: str) -> Callable[..., Any]:
    @functools.wraps(original)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _first_time(folder, point):
            if mode == "crash":
                raise InjectedCrash(f"crash injected at {point}")
            release = _announce(folder, point)
            deadline = anyio.current_time() + _LIMIT_SECONDS
            # The release is a file the test creates: there is nothing else to wait on.
            while not release.exists() and anyio.current_time() < deadline:  # noqa: ASYNC110
                await anyio.sleep(0.005)
        return await original(*args, **kwargs)

    return wrapper


def _crash_on_signal(folder: Path, trigger: signal.Signals) -> None:
    from supervisor import app

    original = app.Agent._on_signal

    def on_signal(self: Any, signum: int) -> None:
        if signum == trigger and _first_time(folder, f"signal-{trigger.name}"):
            raise InjectedCrash(f"crash injected on {trigger.name}")
        original(self, signum)

    app.Agent._on_signal = on_signal  # type: ignore[method-assign]
