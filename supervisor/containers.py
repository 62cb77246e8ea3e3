"""Container figures kept from Docker's events stream, so a scrape reads only memory.

Owns: the pure reducer (`ContainerTable`: containers by state, OOM kills, events
by action), the async consumer (`ContainerWatcher`), the narrow aiodocker
adapter it reads through (`AiodockerContainerSource`) and the Prometheus
collector (`ContainerCollector`). Does not own: when watching starts and stops
(the agent starts `ContainerWatcher.run` at each dockerd ready and cancels it
when dockerd stops), the registry, the HTTP endpoint.

What Docker guarantees, and how we rely on it (moby daemon/events/events.go):

- dockerd keeps its last 256 events of every type in memory; it starts empty
  at each dockerd start. `GET /events?since=T` first replays the buffered
  events stamped `timeNano >= T`, then streams live ones. Replay and live
  subscription are taken under one lock, so nothing falls between them.
- An event enters the buffer before it is published, so one published while
  we subscribe can come twice (replayed and live). Stamps are taken before the
  lock, so the buffer is only roughly in time order. A subscriber that does
  not take an event within 100 ms loses it.

So each session lists all containers (the list holds the effect of every event
before it), then subscribes with `since=0`: dockerd replays its whole buffer,
then goes live. An event's identity is (timeNano, container id, raw action);
the table remembers the last 1024 identities and skips any it has seen. That
memory is enough: whatever dockerd replays is among its last 256 events, so
any of it we already counted is among the last 256 we counted. Counters
therefore count each event once, across reconnects and dockerd restarts, and
never go backwards. Events stamped before the list (less one second of slack)
only count; the list already holds their effect on states. Later events also
move states; re-applying one the list already reflects is harmless, because
an event sets a state and events arrive in order. Both stamps come from the
same kernel clock (dockerd is our child), so comparing them is sound.

Limits: if more than 256 events of any type happen while no subscription is
open (a dockerd boot that starts many restart-policy containers), the older
ones are not counted; states stay right because of the list. Docker reports
`restarting`, `removing` and `dead` only through the list: `die` reads as
`exited` until the next list or `start`.
"""

from __future__ import annotations

import contextlib
import enum
import json
import math
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

import anyio
import structlog
from anyio.abc import TaskStatus
from prometheus_client.core import Metric

from supervisor.errors import SupervisorError
from supervisor.metrics import CONTAINER_EVENTS, CONTAINER_OOM_KILLS, CONTAINERS, family

if TYPE_CHECKING:  # aiohttp and aiodocker cost ~0.3 s to import: not before dockerd runs
    import aiodocker

KNOWN_STATES: Final = ("created", "running", "paused", "restarting", "exited", "removing", "dead")

# The state an action leaves a container in; actions absent here leave it alone.
_STATE_AFTER: Final[Mapping[str, str]] = {
    "create": "created",
    "start": "running",
    "restart": "running",
    "unpause": "running",
    "pause": "paused",
    "die": "exited",
    "stop": "exited",
}
_DESTROY: Final = "destroy"
_OOM: Final = "oom"

_OTHER_ACTION: Final = "other"
_MAX_ACTION_LENGTH: Final = 32
REPLAY_ALL: Final = 0
"""`since` for every subscription: dockerd replays its whole buffer, the table dedupes."""

log = structlog.get_logger(component="containers")


class ContainerSourceError(SupervisorError):
    """dockerd's container list or events stream could not be read."""


def normalize_action(action: str) -> str:
    """Bound an action to its first word: "exec_start: sh -c ls" -> "exec_start"."""
    word = action.split(":", 1)[0].strip().lower()
    if not word or len(word) > _MAX_ACTION_LENGTH:
        return "unknown"
    return word


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerEvent:
    """One container event from dockerd, as much of it as the figures need."""

    container_id: str
    action: str
    """As Docker sent it, e.g. "health_status: healthy"."""
    time_nano: int

    @property
    def kind(self) -> str:
        return normalize_action(self.action)

    @property
    def identity(self) -> tuple[int, str, str]:
        return (self.time_nano, self.container_id, self.action)


def parse_event(raw: Mapping[str, Any]) -> ContainerEvent | None:
    """Read one decoded /events message; None for non-container or malformed ones."""
    if raw.get("Type", "container") != "container":
        return None
    action = raw.get("Action") or raw.get("status")
    if not isinstance(action, str) or not action:
        return None
    actor = raw.get("Actor")
    container_id = actor.get("ID") if isinstance(actor, Mapping) else raw.get("id")
    if not isinstance(container_id, str):
        container_id = ""
    time_nano = raw.get("timeNano")
    if not isinstance(time_nano, int):
        seconds = raw.get("time")
        # aiodocker's own subscriber turns "time" into a datetime; timeNano stays an int.
        if not isinstance(seconds, int | float) or not math.isfinite(seconds):
            return None
        time_nano = int(seconds * 1_000_000_000)
    return ContainerEvent(container_id=container_id, action=action, time_nano=time_nano)


class Outcome(enum.Enum):
    """What `ContainerTable.apply` did with an event."""

    APPLIED = "applied"
    """Counted, and the container's state moved."""
    COUNTED = "counted"
    """Counted only: the action moves no state, or the list already holds its effect."""
    DUPLICATE = "duplicate"
    """Seen before (a replay): ignored."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerFigures:
    """A consistent copy of the table's figures, taken for one scrape."""

    by_state: Mapping[str, int]
    """Every known state (0 when none), plus any other state Docker reported."""
    oom_kills: int
    events_by_action: Mapping[str, int]
    listed: bool
    """False until the first container list: `by_state` means nothing yet."""


class ContainerTable:
    """The pure reducer: container id -> state, with counts kept incrementally.

    Thread-safe: `snapshot` may run in a scrape thread while the event loop
    applies events.
    """

    def __init__(
        self,
        *,
        memory: int = 1024,
        list_slack_ns: int = 1_000_000_000,
        max_actions: int = 64,
    ) -> None:
        if memory < 256:
            raise ValueError(f"memory={memory}: must be >= 256, dockerd replays up to 256 events")
        self._memory = memory
        self._list_slack_ns = list_slack_ns
        self._max_actions = max_actions
        self._lock = threading.Lock()
        self._states: dict[str, str] = {}
        self._counts: dict[str, int] = dict.fromkeys(KNOWN_STATES, 0)
        self._oom_kills = 0
        self._events: dict[str, int] = {}
        # Insertion-ordered: the oldest identity is dropped first.
        self._seen: dict[tuple[int, str, str], None] = {}
        self._listed_at_ns: int | None = None

    def reset_from_list(
        self, containers: Iterable[Mapping[str, Any]], *, listed_at_ns: int
    ) -> None:
        """Replace every state with one `containers list all=True`, asked at `listed_at_ns`.

        Counters and the memory of seen events are kept: they span sessions.
        """
        states: dict[str, str] = {}
        for container in containers:
            container_id = container.get("Id") or container.get("ID") or container.get("id")
            if not isinstance(container_id, str) or not container_id:
                continue
            state = container.get("State")
            states[container_id] = state.lower() if isinstance(state, str) and state else "unknown"
        counts = dict.fromkeys(KNOWN_STATES, 0)
        for state in states.values():
            counts[state] = counts.get(state, 0) + 1
        with self._lock:
            self._states = states
            self._counts = counts
            self._listed_at_ns = listed_at_ns

    def apply(self, event: ContainerEvent) -> Outcome:
        """Count one event once, and move its container's state when that is news."""
        identity = event.identity
        with self._lock:
            if identity in self._seen:
                return Outcome.DUPLICATE
            self._seen[identity] = None
            if len(self._seen) > self._memory:
                del self._seen[next(iter(self._seen))]

            kind = event.kind
            label = kind
            if label not in self._events and len(self._events) >= self._max_actions:
                label = _OTHER_ACTION
            self._events[label] = self._events.get(label, 0) + 1
            if kind == _OOM:
                self._oom_kills += 1

            listed_at = self._listed_at_ns
            if listed_at is not None and event.time_nano < listed_at - self._list_slack_ns:
                return Outcome.COUNTED
            if not event.container_id:
                return Outcome.COUNTED
            if kind == _DESTROY:
                return Outcome.APPLIED if self._remove(event.container_id) else Outcome.COUNTED
            state = _STATE_AFTER.get(kind)
            if state is None:
                return Outcome.COUNTED
            self._set_state(event.container_id, state)
            return Outcome.APPLIED

    def _set_state(self, container_id: str, state: str) -> None:
        old = self._states.get(container_id)
        if old == state:
            return
        if old is not None:
            self._counts[old] -= 1
        self._states[container_id] = state
        self._counts[state] = self._counts.get(state, 0) + 1

    def _remove(self, container_id: str) -> bool:
        old = self._states.pop(container_id, None)
        if old is None:
            return False
        self._counts[old] -= 1
        return True

    def state_of(self, container_id: str) -> str | None:
        with self._lock:
            return self._states.get(container_id)

    def __len__(self) -> int:
        return len(self._states)

    def snapshot(self) -> ContainerFigures:
        """The figures for one scrape; O(states + actions), not O(containers)."""
        with self._lock:
            by_state = {
                state: count
                for state, count in self._counts.items()
                if count or state in KNOWN_STATES
            }
            return ContainerFigures(
                by_state=by_state,
                oom_kills=self._oom_kills,
                events_by_action=dict(self._events),
                listed=self._listed_at_ns is not None,
            )


class ContainerSource(Protocol):
    """What the watcher needs from dockerd; `AiodockerContainerSource` is the real one.

    Both methods raise `ContainerSourceError` when dockerd cannot be reached.
    """

    async def list_containers(self) -> Sequence[Mapping[str, Any]]:
        """`GET /containers/json?all=1`: dicts with at least "Id" and "State"."""
        ...

    def events(self, *, since_ns: int) -> AsyncGenerator[Mapping[str, Any], None]:
        """`GET /events` for containers since `since_ns`; ends when dockerd closes it."""
        ...


class ContainerWatcher:
    """Feeds a `ContainerTable` from a `ContainerSource`, resubscribing after each break."""

    def __init__(
        self,
        table: ContainerTable,
        *,
        clock: Callable[[], int] = time.time_ns,
        retry_delay: float = 1.0,
    ) -> None:
        self.table = table
        self._clock = clock
        self._retry_delay = retry_delay

    async def run(
        self,
        source: ContainerSource,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """List, then follow events; on a break wait `retry_delay` and start over.

        Reports started after the first list (or its failure), so a caller's
        `TaskGroup.start` never waits on a dockerd that went away. Runs until
        cancelled; the agent cancels it when dockerd stops.
        """
        started = False

        def report_started() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        while True:
            try:
                await self._session(source, report_started)
                log.info("container_events_ended")
            except ContainerSourceError as exc:
                log.warning("container_events_interrupted", error=exc.message, remedy=exc.remedy)
            report_started()
            await anyio.sleep(self._retry_delay)

    async def _session(self, source: ContainerSource, listed: Callable[[], None]) -> None:
        listed_at = self._clock()
        containers = await source.list_containers()
        self.table.reset_from_list(containers, listed_at_ns=listed_at)
        log.debug("containers_listed", containers=len(containers))
        listed()
        async with contextlib.aclosing(source.events(since_ns=REPLAY_ALL)) as events:
            async for raw in events:
                event = parse_event(raw)
                if event is not None:
                    self.table.apply(event)


def format_since(since_ns: int) -> str:
    """Docker's `since` syntax: seconds[.nanoseconds]."""
    seconds, nanos = divmod(since_ns, 1_000_000_000)
    return f"{seconds}.{nanos:09d}"


class AiodockerContainerSource:
    """`ContainerSource` over an aiodocker client (the agent's own, kept across restarts).

    `endpoint` names dockerd in error messages: aiodocker rewrites a unix
    socket's address to "unix://localhost".
    """

    def __init__(
        self,
        docker: aiodocker.Docker,
        *,
        endpoint: str | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        self._docker = docker
        self._endpoint = endpoint or docker.docker_host
        self._connect_timeout = connect_timeout

    def _error(self, what: str, exc: BaseException) -> ContainerSourceError:
        return ContainerSourceError(
            f"cannot read dockerd's {what} at {self._endpoint}: "
            f"{type(exc).__name__}: {exc}",
            remedy="the agent lists and resubscribes on its own once dockerd answers again; "
            "if this repeats while dockerd is ready, look at dockerd's log",
        )

    async def list_containers(self) -> list[dict[str, Any]]:
        try:
            containers = await self._docker.containers.list(all=True)
        except _docker_errors(OSError) as exc:
            raise self._error("container list", exc) from exc
        # DockerContainer offers [] and `in` but no get().
        return [
            {"Id": container.id, "State": container["State"] if "State" in container else None}  # noqa: SIM401
            for container in containers
        ]

    async def events(self, *, since_ns: int) -> AsyncGenerator[Mapping[str, Any], None]:
        # aiodocker's DockerEvents runs the stream in an unsupervised task and
        # a shared channel; reading /events here keeps it cancellable and ours.
        params = {"since": format_since(since_ns), "filters": json.dumps({"type": ["container"]})}
        import aiohttp

        timeout = aiohttp.ClientTimeout(
            total=None, sock_read=None, sock_connect=self._connect_timeout
        )
        try:
            async with self._docker._query("events", params=params, timeout=timeout) as response:
                try:
                    while line := await response.content.readline():
                        if line.strip():
                            yield json.loads(line)
                finally:
                    response.close()
        except _docker_errors(OSError, ValueError) as exc:
            raise self._error("events stream", exc) from exc


class ContainerCollector:
    """A prometheus_client collector reading a `ContainerTable`; a scrape never calls Docker."""

    def __init__(self, table: ContainerTable) -> None:
        self._table = table

    def describe(self) -> Iterable[Metric]:
        yield family(CONTAINERS)
        yield family(CONTAINER_OOM_KILLS)
        yield family(CONTAINER_EVENTS)

    def collect(self) -> Iterable[Metric]:
        figures = self._table.snapshot()
        containers = family(CONTAINERS)
        if figures.listed:
            for state, count in figures.by_state.items():
                containers.add_metric([state], count)
        yield containers
        yield family(CONTAINER_OOM_KILLS, figures.oom_kills)
        events = family(CONTAINER_EVENTS)
        for action, count in sorted(figures.events_by_action.items()):
            events.add_metric([action], count)
        yield events


def _docker_errors(*more: type[Exception]) -> tuple[type[Exception], ...]:
    import aiodocker
    import aiohttp

    return (aiodocker.DockerError, aiohttp.ClientError, *more)
