"""``dind-supervisor wait``: poll the agent's /readyz until dockerd is ready.

For CI jobs and container healthchecks: exit 0 as soon as /readyz answers
200, exit 1 when the timeout passes first. An agent that is not up yet
(connection refused) is simply polled again.
"""

from __future__ import annotations

import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable

_POLL_INTERVAL = 0.1


def ready_once(base_url: str, timeout: float, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(  # noqa: S310 - our own endpoint, http or https
            f"{base_url}/readyz", timeout=timeout, context=context
        ) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until_ready(
    base_url: str,
    *,
    timeout: float,
    probe: Callable[[str, float], bool] = ready_once,
    clock: Callable[[], float] = time.monotonic,
    pause: Callable[[float], None] = time.sleep,
) -> int:
    deadline = clock() + timeout
    while True:
        remaining = deadline - clock()
        if probe(base_url, max(0.05, min(1.0, remaining))):
            return 0
        remaining = deadline - clock()
        if remaining <= 0:
            print(
                f"dind-supervisor: dockerd not ready after {timeout:g} s ({base_url}/readyz)",
                file=sys.stderr,
            )
            return 1
        pause(min(_POLL_INTERVAL, remaining))
