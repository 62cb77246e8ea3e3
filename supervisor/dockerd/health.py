"""Is dockerd ready, is it alive: readiness after a spawn and liveness pings.

Readiness: dockerd sends READY=1 on its NOTIFY_SOCKET once its API listeners
serve; we confirm with GET /_ping. Should READY=1 never come (a dockerd built
without sd_notify), /_ping is polled instead. Liveness: a ping every
interval, bounded by a timeout; the results go to the lifecycle, which
decides what a run of misses means.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio

from supervisor.docker_api import DockerApiError

Ping = Callable[[], Awaitable[None]]

_RETRY_AFTER_READY = 0.01
_RETRY_AFTER_MISS = 1.0


async def wait_ready(ping: Ping, notified: anyio.Event, *, poll_interval: float = 0.25) -> None:
    """Return once dockerd answers /_ping; wakes at once on READY=1."""
    while True:
        with anyio.move_on_after(poll_interval):
            await notified.wait()
        try:
            await ping()
        except DockerApiError:
            if notified.is_set():
                # READY=1 came yet the socket did not answer: retry soon.
                await anyio.sleep(_RETRY_AFTER_READY)
            continue
        return


async def watch_liveness(
    ping: Ping,
    *,
    interval: float,
    timeout: float,
    on_result: Callable[[bool, float], None],
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Ping every ``interval`` seconds until cancelled; report (ok, seconds) each time.

    After a miss the next ping follows within a second: a run of misses is
    then confirmed in about ``failures x timeout`` instead of ``failures x
    (interval + timeout)``, while a healthy daemon is still pinged rarely.
    """
    pause = interval
    while True:
        await anyio.sleep(pause)
        started = clock()
        ok = False
        with anyio.move_on_after(timeout):
            try:
                await ping()
                ok = True
            except DockerApiError:
                ok = False
        on_result(ok, clock() - started)
        pause = interval if ok else min(interval, _RETRY_AFTER_MISS)
