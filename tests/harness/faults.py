"""Crashes injected into the agent's auxiliary parts, for tests of what must survive them.

INJECT_FAULTS names parts (``http``, ``containers``, ``gc``); each one's first run
in an agent process does its real work for INJECT_FAULT_AFTER seconds (default
1) and then raises, as a bug would. Later runs are the real part, untouched.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import anyio

TARGETS = {
    "http": ("supervisor.http", "HttpEndpoint", "run"),
    "containers": ("supervisor.containers", "ContainerWatcher", "run"),
    "gc": ("supervisor.dataroot.service", "DataRootService", "run_gc_loop"),
}


class InjectedFault(RuntimeError):
    pass


def install(parts: Collection[str], *, after: float) -> None:
    import importlib

    unknown = set(parts) - set(TARGETS)
    if unknown:
        raise SystemExit(f"INJECT_FAULTS: unknown parts {sorted(unknown)};"
                         f" known: {sorted(TARGETS)}")
    for part in parts:
        module_name, class_name, method = TARGETS[part]
        owner = getattr(importlib.import_module(module_name), class_name)
        setattr(owner, method, _crashing_once(part, getattr(owner, method), after))


def _crashing_once(
    part: str, original: Callable[..., Awaitable[Any]], after: float
) -> Callable[..., Awaitable[Any]]:
    fired = False

    @functools.wraps(original)
    async def run(*args: Any, **kwargs: Any) -> Any:
        nonlocal fired
        if fired:
            return await original(*args, **kwargs)
        fired = True
        with anyio.move_on_after(after):
            await original(*args, **kwargs)
        raise InjectedFault(f"fault injected into the {part} part after {after} s")

    return run
