"""``dind-supervisor wait``: poll the agent's /readyz until dockerd is ready.

For CI jobs and container healthchecks: exit 0 as soon as /readyz answers
200, exit 1 when the timeout passes first. An agent that is not up yet
(connection refused, no socket yet) is simply polled again, since `wait`
usually starts together with the container. The two ways to time out are
told apart in the message, because they need different fixes: the agent
answered but dockerd never became ready ("dockerd not ready after N s"), or
no agent ever answered where we asked ("cannot reach the agent at ...").
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from supervisor.agent_client import REMEDY, Endpoint, Unreachable, ask

_POLL_INTERVAL = 0.1


@dataclass(frozen=True, slots=True)
class Outcome:
    """One probe: ``ready``, or why not; ``reached`` tells an answer from no answer."""

    ready: bool
    reached: bool
    detail: str


def ready_once(candidates: Sequence[Endpoint], timeout: float) -> Outcome:
    """Ask /readyz once, of the first endpoint that answers."""
    try:
        answer = ask(candidates, "/readyz", timeout=timeout)
    except Unreachable as exc:
        return Outcome(ready=False, reached=False, detail=exc.describe())
    if answer.status == 200:
        return Outcome(ready=True, reached=True, detail=f"{answer.endpoint}/readyz: 200")
    said = answer.body.decode("utf-8", "replace").strip()[:200]
    return Outcome(
        ready=False,
        reached=True,
        detail=f"{answer.endpoint}/readyz: {answer.status}{f' {said}' if said else ''}",
    )


def wait_until_ready(
    probe: Callable[[float], Outcome],
    *,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    pause: Callable[[float], None] = time.sleep,
) -> int:
    """Probe until ready (0) or ``timeout`` seconds passed (1, with the last outcome said)."""
    deadline = clock() + timeout
    while True:
        remaining = deadline - clock()
        outcome = probe(max(0.05, min(1.0, remaining)))
        if outcome.ready:
            return 0
        remaining = deadline - clock()
        if remaining <= 0:
            if outcome.reached:
                print(f"dind-supervisor: dockerd not ready after {timeout:g} s ({outcome.detail})",
                      file=sys.stderr)
            else:
                print(f"dind-supervisor: {outcome.detail} (tried for {timeout:g} s)",
                      file=sys.stderr)
                print(f"dind-supervisor: remedy: {REMEDY}", file=sys.stderr)
            return 1
        pause(min(_POLL_INTERVAL, remaining))
