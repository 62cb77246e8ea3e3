"""Tests for supervisor.parts: parts start in order, stop in reverse order one at a time, a core
failure ends the agent after an ordered stop, an auxiliary failure is counted and restarted."""

from __future__ import annotations

import itertools
from typing import Any

import anyio
import pytest
from anyio.abc import TaskStatus

from supervisor.metrics import Metrics
from supervisor.parts import Parts
from tests.unit.virtual_time import run_virtual

pytestmark = pytest.mark.unit


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []

    def part(self, name: str, *, fail_after: float | None = None, slow_stop: float = 0.0) -> Any:
        async def run(*, task_status: TaskStatus[str] = anyio.TASK_STATUS_IGNORED) -> None:
            self.events.append(f"start {name}")
            task_status.started(f"view of {name}")
            try:
                if fail_after is not None:
                    await anyio.sleep(fail_after)
                    raise RuntimeError(f"{name} broke")
                await anyio.sleep_forever()
            finally:
                with anyio.CancelScope(shield=True):
                    await anyio.sleep(slow_stop)  # a clean-up that takes time
                self.events.append(f"stop {name}")

        return run


def test_parts_start_in_order_and_stop_in_reverse_one_at_a_time() -> None:
    """Each part's view comes back from start(); on the way out the last started stops first,
    and the next one only once the previous finished its clean-up (even a slow one)."""
    rec = Recorder()

    async def main() -> list[str]:
        async with Parts() as parts:
            views = [await parts.start(n, rec.part(n, slow_stop=5.0)) for n in ("a", "b", "c")]
        return views

    assert run_virtual(main) == ["view of a", "view of b", "view of c"]
    assert rec.events == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]


def test_a_core_failure_stops_the_others_in_order_then_raises() -> None:
    """A core part that fails after start: the failure is kept, every part is stopped in reverse
    order (the failed one ran its own clean-up), and the failure is raised from the block."""
    rec = Recorder()

    async def main() -> None:
        async with Parts() as parts:
            await parts.start("lock", rec.part("lock"))
            await parts.start("dockerd", rec.part("dockerd", fail_after=1.0))
            await parts.start("tls", rec.part("tls"))
            await parts.failed.wait()

    with pytest.raises(RuntimeError, match="dockerd broke"):
        run_virtual(main)
    assert rec.events == [
        "start lock", "start dockerd", "start tls", "stop dockerd", "stop tls", "stop lock",
    ]


def test_a_part_may_stop_its_own_way_before_it_is_cancelled() -> None:
    """A part's own stop (dockerd's graceful stop) runs first, in order, before the cancel."""
    rec = Recorder()

    async def main() -> None:
        async with Parts() as parts:
            await parts.start("lock", rec.part("lock"))

            async def graceful() -> None:
                rec.events.append("graceful stop of dockerd")

            await parts.start("dockerd", rec.part("dockerd"), stop=graceful)

    run_virtual(main)
    assert rec.events == ["start lock", "start dockerd", "graceful stop of dockerd",
                          "stop dockerd", "stop lock"]


def test_an_auxiliary_failure_is_counted_and_restarted_with_backoff() -> None:
    """An auxiliary part that keeps failing never ends the agent: each failure is counted in
    dind_agent_part_failures_total{part} and the part restarted after 1, 2, 4 ... seconds."""
    rec = Recorder()
    metrics = Metrics()
    starts: list[float] = []

    async def flaky(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        starts.append(anyio.current_time())
        task_status.started()
        raise RuntimeError("the endpoint broke")

    async def main() -> None:
        async with Parts(metrics) as parts:
            await parts.start("dockerd", rec.part("dockerd"))
            await parts.auxiliary("http", flaky)
            await anyio.sleep(7.5)
            assert not parts.failed.is_set()

    run_virtual(main)
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(starts)]
    assert gaps == [1.0, 2.0, 4.0]
    assert metrics.registry.get_sample_value(
        "dind_agent_part_failures_total", {"part": "http"}
    ) == 4
    assert rec.events == ["start dockerd", "stop dockerd"]


def test_a_part_that_recovered_starts_its_backoff_again() -> None:
    """Failures an hour apart are not a streak: each one waits the first step (1 s) again,
    while failures in a row still back off."""
    starts: list[float] = []
    lifetimes = iter([0.0, 0.0, 0.0, 3600.0, 0.0])

    async def fails_then_lasts(
        *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        starts.append(anyio.current_time())
        task_status.started()
        await anyio.sleep(next(lifetimes, 10_000.0))
        raise RuntimeError("watcher broke")

    async def main() -> None:
        async with Parts(Metrics()) as parts:
            await parts.auxiliary("containers", fails_then_lasts)
            await anyio.sleep(3700)

    run_virtual(main)
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(starts)]
    # 1, 2, 4 after quick failures; after an hour of work 1 s again (not 8), then 2.
    assert gaps == [1.0, 2.0, 4.0, 3601.0, 2.0]


@pytest.mark.parametrize("failing", ["signals", "dataroot", "policy", "listeners", "dockerd",
                                     "tls"])
def test_whichever_core_part_fails_the_others_stop_in_reverse_order(failing: str) -> None:
    """The agent's core parts in their real order: a failure of any one, at any time after
    the last started, stops every part in reverse order, dockerd before the data-root lock."""
    rec = Recorder()
    names = ["signals", "dataroot", "policy", "listeners", "dockerd", "tls"]

    async def main() -> None:
        async with Parts() as parts:
            for name in names:
                await parts.start(name, rec.part(name, fail_after=1.0 if name == failing
                                                 else None, slow_stop=0.5))
            await parts.auxiliary("http", rec.part("http"))
            await parts.failed.wait()

    with pytest.raises(RuntimeError, match=f"{failing} broke"):
        run_virtual(main)
    stops = [event.removeprefix("stop ") for event in rec.events if event.startswith("stop")]
    # The failed part ran its own clean-up first; the rest stop last-started first.
    assert stops == [failing, "http", *[n for n in reversed(names) if n != failing]]
