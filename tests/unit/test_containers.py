"""Tests for supervisor.containers: reducer, watcher, aiodocker adapter and collector."""

from __future__ import annotations

import json
import socket
import subprocess
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Any

import aiodocker
import aiohttp
import anyio
import pytest
import structlog
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from supervisor.containers import (
    KNOWN_STATES,
    REPLAY_ALL,
    AiodockerContainerSource,
    ContainerCollector,
    ContainerEvent,
    ContainerSourceError,
    ContainerTable,
    ContainerWatcher,
    Outcome,
    format_since,
    normalize_action,
    parse_event,
)

pytestmark = pytest.mark.unit

SECOND = 1_000_000_000
T0 = 1_800_000_000 * SECOND


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def ev(container_id: str, action: str, at: int) -> ContainerEvent:
    return ContainerEvent(container_id=container_id, action=action, time_nano=at)


def raw(container_id: str, action: str, at: int) -> dict[str, Any]:
    """A message as dockerd 20.10 writes it on /events."""
    return {
        "status": action,
        "id": container_id,
        "from": "busybox",
        "Type": "container",
        "Action": action,
        "Actor": {"ID": container_id, "Attributes": {"image": "busybox", "name": "c"}},
        "scope": "local",
        "time": at // SECOND,
        "timeNano": at,
    }


def listing(**states: str) -> list[dict[str, Any]]:
    return [{"Id": cid, "State": state, "Status": "whatever"} for cid, state in states.items()]


def by_state(table: ContainerTable) -> dict[str, int]:
    return {k: v for k, v in table.snapshot().by_state.items() if v}


# --- parsing and labels ---------------------------------------------------------


def test_parse_event_reads_docker_message() -> None:
    """A full /events message yields the container id, the raw action and timeNano."""
    event = parse_event(raw("abc", "health_status: healthy", T0 + 5))
    assert event == ev("abc", "health_status: healthy", T0 + 5)


def test_parse_event_old_style_and_float_time() -> None:
    """Without Actor or timeNano, the legacy status/id/time fields are used."""
    event = parse_event({"status": "start", "id": "abc", "time": 1_800_000_000.5})
    assert event == ev("abc", "start", T0 + SECOND // 2)


@pytest.mark.parametrize(
    "message",
    [
        {"Type": "image", "Action": "pull", "Actor": {"ID": "busybox"}, "timeNano": T0},
        {"Type": "container", "Actor": {"ID": "abc"}, "timeNano": T0},
        {"Type": "container", "Action": "start", "Actor": {"ID": "abc"}},
        {"Type": "container", "Action": "start", "time": "yesterday"},
    ],
)
def test_parse_event_rejects_other_types_and_malformed(message: dict[str, Any]) -> None:
    """Image events, and messages without an action or a time, are not container events."""
    assert parse_event(message) is None


@pytest.mark.parametrize(
    ("action", "label"),
    [
        ("start", "start"),
        ("exec_start: sh -c 'echo a: b'", "exec_start"),
        ("exec_create: /bin/sh", "exec_create"),
        ("health_status: unhealthy", "health_status"),
        ("Kill", "kill"),
        ("  ", "unknown"),
        ("x" * 40, "unknown"),
    ],
)
def test_normalize_action(action: str, label: str) -> None:
    """Labels keep the first word only, so exec commands and health states never become labels."""
    assert normalize_action(action) == label


# --- the reducer ----------------------------------------------------------------


def test_list_then_events() -> None:
    """States start from the list and then follow create/start/pause/die/destroy."""
    table = ContainerTable()
    table.reset_from_list(
        listing(a="running", b="exited", c="paused", d="restarting"), listed_at_ns=T0
    )
    assert by_state(table) == {"running": 1, "exited": 1, "paused": 1, "restarting": 1}

    assert table.apply(ev("e", "create", T0 + 1)) is Outcome.APPLIED
    assert table.apply(ev("e", "start", T0 + 2)) is Outcome.APPLIED
    assert table.apply(ev("c", "unpause", T0 + 3)) is Outcome.APPLIED
    assert table.apply(ev("a", "pause", T0 + 4)) is Outcome.APPLIED
    assert table.apply(ev("d", "start", T0 + 5)) is Outcome.APPLIED
    assert table.apply(ev("d", "kill", T0 + 6)) is Outcome.COUNTED
    assert table.apply(ev("d", "die", T0 + 7)) is Outcome.APPLIED
    assert table.apply(ev("b", "destroy", T0 + 8)) is Outcome.APPLIED
    assert by_state(table) == {"running": 2, "paused": 1, "exited": 1}
    assert table.state_of("b") is None
    assert table.state_of("e") == "running"
    assert len(table) == 4
    assert table.snapshot().events_by_action == {
        "create": 1, "start": 2, "unpause": 1, "pause": 1, "kill": 1, "die": 1, "destroy": 1,
    }


def test_every_state_is_reported_even_when_zero() -> None:
    """All seven Docker states appear in the snapshot, 0 when no container is in them."""
    table = ContainerTable()
    table.reset_from_list([], listed_at_ns=T0)
    assert table.snapshot().by_state == dict.fromkeys(KNOWN_STATES, 0)


def test_unknown_state_from_list_is_kept_and_counted() -> None:
    """A state this code does not know (a newer Docker) is still counted, not dropped."""
    table = ContainerTable()
    table.reset_from_list([{"Id": "a", "State": "Hibernating"}, {"Id": "b"}], listed_at_ns=T0)
    assert by_state(table) == {"hibernating": 1, "unknown": 1}


def test_replayed_event_is_not_counted_twice() -> None:
    """The same event delivered again (replay after resubscribing) changes nothing."""
    table = ContainerTable()
    table.reset_from_list([], listed_at_ns=T0)
    for event in (ev("a", "create", T0 + 1), ev("a", "oom", T0 + 2), ev("a", "die", T0 + 3)):
        assert table.apply(event) is not Outcome.DUPLICATE
    before = table.snapshot()
    for event in (ev("a", "create", T0 + 1), ev("a", "oom", T0 + 2), ev("a", "die", T0 + 3)):
        assert table.apply(event) is Outcome.DUPLICATE
    assert table.snapshot() == before
    assert before.oom_kills == 1
    assert before.events_by_action == {"create": 1, "oom": 1, "die": 1}


def test_same_action_at_another_time_is_a_new_event() -> None:
    """Two kills of one container at different instants are two events."""
    table = ContainerTable()
    assert table.apply(ev("a", "kill", T0 + 1)) is Outcome.COUNTED
    assert table.apply(ev("a", "kill", T0 + 2)) is Outcome.COUNTED
    assert table.snapshot().events_by_action == {"kill": 2}


def test_memory_covers_a_full_dockerd_replay() -> None:
    """After many events, dockerd's largest replay (its last 256) is still recognised."""
    table = ContainerTable(memory=256)
    events = [ev(f"c{i}", "start", T0 + i) for i in range(1000)]
    for event in events:
        table.apply(event)
    assert all(table.apply(event) is Outcome.DUPLICATE for event in events[-256:])
    assert table.snapshot().events_by_action == {"start": 1000}


def test_memory_smaller_than_dockerd_buffer_is_refused() -> None:
    """A dedupe memory below dockerd's 256-event replay could double count: refused."""
    with pytest.raises(ValueError, match="256"):
        ContainerTable(memory=100)


def test_events_before_the_list_count_but_do_not_move_states() -> None:
    """Replayed events older than the list are counted; the list already holds their effect."""
    table = ContainerTable()
    table.reset_from_list(listing(a="running"), listed_at_ns=T0 + 10 * SECOND)
    assert table.apply(ev("a", "create", T0)) is Outcome.COUNTED
    assert table.apply(ev("b", "create", T0 + SECOND)) is Outcome.COUNTED
    assert table.apply(ev("b", "destroy", T0 + 2 * SECOND)) is Outcome.COUNTED
    assert by_state(table) == {"running": 1}
    assert table.state_of("b") is None
    assert table.snapshot().events_by_action == {"create": 2, "destroy": 1}


def test_events_just_before_the_list_are_reapplied() -> None:
    """Within the slack before the list an event moves states again, converging in order."""
    table = ContainerTable(list_slack_ns=SECOND)
    table.reset_from_list(listing(a="exited"), listed_at_ns=T0 + SECOND)
    assert table.apply(ev("a", "start", T0 + SECOND // 2)) is Outcome.APPLIED
    assert table.apply(ev("a", "die", T0 + SECOND - 1)) is Outcome.APPLIED
    assert by_state(table) == {"exited": 1}


def test_events_around_a_dockerd_restart() -> None:
    """Counters carry over a restart; the new list replaces states; the new replay counts once."""
    table = ContainerTable()
    table.reset_from_list(listing(a="running", b="running"), listed_at_ns=T0)
    table.apply(ev("b", "oom", T0 + SECOND))
    table.apply(ev("b", "die", T0 + SECOND + 1))
    # dockerd restarts: its buffer starts empty; on boot it starts a (restart=always).
    restart_list_at = T0 + 60 * SECOND
    table.reset_from_list(listing(a="running", b="exited"), listed_at_ns=restart_list_at)
    boot = [ev("a", "start", T0 + 50 * SECOND)]
    for event in boot:
        assert table.apply(event) is Outcome.COUNTED
    assert table.apply(ev("a", "die", restart_list_at + SECOND)) is Outcome.APPLIED
    # The stream breaks and is opened again on the same dockerd: everything is replayed.
    for event in [*boot, ev("a", "die", restart_list_at + SECOND)]:
        assert table.apply(event) is Outcome.DUPLICATE
    figures = table.snapshot()
    assert figures.oom_kills == 1
    assert figures.events_by_action == {"oom": 1, "die": 2, "start": 1}
    assert by_state(table) == {"exited": 2}


def test_unknown_and_stateless_actions_are_counted_only() -> None:
    """rename, exec_*, health_status, prune and unheard-of actions count but move no state."""
    table = ContainerTable()
    table.reset_from_list(listing(a="running"), listed_at_ns=T0)
    actions = ["rename", "exec_start: sh", "health_status: healthy", "frobnicate", "attach"]
    for i, action in enumerate(actions):
        assert table.apply(ev("a", action, T0 + i)) is Outcome.COUNTED
    assert table.apply(ev("", "prune", T0 + 10)) is Outcome.COUNTED
    assert table.apply(ev("zzz", "rename", T0 + 11)) is Outcome.COUNTED
    assert by_state(table) == {"running": 1}
    assert table.state_of("zzz") is None
    assert table.snapshot().events_by_action == {
        "rename": 2, "exec_start": 1, "health_status": 1, "frobnicate": 1, "attach": 1, "prune": 1,
    }


def test_destroy_of_unknown_container_is_harmless() -> None:
    """A destroy for a container the table never knew leaves every count non-negative."""
    table = ContainerTable()
    table.reset_from_list([], listed_at_ns=T0)
    assert table.apply(ev("ghost", "destroy", T0 + 1)) is Outcome.COUNTED
    assert all(n >= 0 for n in table.snapshot().by_state.values())


def test_action_labels_are_capped() -> None:
    """Past max_actions distinct actions, new ones are counted under "other"."""
    table = ContainerTable(max_actions=2)
    for i, action in enumerate(["start", "die", "weird1", "weird2", "start"]):
        table.apply(ev("a", action, T0 + i))
    assert table.snapshot().events_by_action == {"start": 2, "die": 1, "other": 2}


containers_st = st.dictionaries(
    st.sampled_from([f"c{i}" for i in range(6)]), st.sampled_from(KNOWN_STATES), max_size=6
)
step_st = st.one_of(
    st.tuples(st.just("list"), containers_st, st.integers(0, 50)),
    st.tuples(
        st.just("event"),
        st.sampled_from([f"c{i}" for i in range(8)]),
        st.sampled_from(
            ["create", "start", "restart", "die", "stop", "kill", "oom", "pause", "unpause",
             "destroy", "rename", "exec_start: sh", "health_status: healthy", "weird"]
        ),
        st.integers(0, 50),
    ),
    st.tuples(st.just("replay"), st.integers(0, 20)),
)


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(step_st, max_size=60))
def test_counts_always_match_the_table(steps: list[tuple[Any, ...]]) -> None:
    """Whatever the order of lists, events and replays: counts equal the table, never negative,
    and counters never go backwards nor move on a replay."""
    table = ContainerTable()
    applied: list[ContainerEvent] = []
    previous = table.snapshot()
    for step in steps:
        if step[0] == "list":
            table.reset_from_list(
                [{"Id": cid, "State": state} for cid, state in step[1].items()],
                listed_at_ns=T0 + step[2] * SECOND,
            )
        elif step[0] == "event":
            event = ev(step[1], step[2], T0 + step[3] * SECOND)
            if table.apply(event) is not Outcome.DUPLICATE:
                applied.append(event)
        elif applied:
            before = table.snapshot()
            assert table.apply(applied[-1 - step[1] % len(applied)]) is Outcome.DUPLICATE
            assert table.snapshot() == before
        figures = table.snapshot()
        expected = Counter(
            state for cid in (f"c{i}" for i in range(8)) if (state := table.state_of(cid))
        )
        assert {k: v for k, v in figures.by_state.items() if v} == dict(expected)
        assert all(count >= 0 for count in figures.by_state.values())
        assert sum(figures.by_state.values()) == len(table)
        assert figures.oom_kills >= previous.oom_kills
        assert all(
            figures.events_by_action.get(action, 0) >= count
            for action, count in previous.events_by_action.items()
        )
        assert sum(figures.events_by_action.values()) == len(applied)
        previous = figures


# --- the collector --------------------------------------------------------------


def expose(table: ContainerTable) -> bytes:
    registry = CollectorRegistry()
    registry.register(ContainerCollector(table))
    return generate_latest(registry)


def test_collector_output_parses_back() -> None:
    """The exposition parses with prometheus_client's parser, with HELP, types and values."""
    table = ContainerTable()
    table.reset_from_list(listing(a="running", b="running", c="exited"), listed_at_ns=T0)
    table.apply(ev("a", "oom", T0 + 1))
    table.apply(ev("a", "exec_start: sh -c true", T0 + 2))
    families = {f.name: f for f in text_string_to_metric_families(expose(table).decode())}

    assert set(families) == {"dind_containers", "dind_container_oom_kills", "dind_container_events"}
    assert all(f.documentation for f in families.values())
    containers = {s.labels["state"]: s.value for s in families["dind_containers"].samples}
    assert containers == {**dict.fromkeys(KNOWN_STATES, 0.0), "running": 2.0, "exited": 1.0}
    assert families["dind_container_oom_kills"].type == "counter"
    assert [(s.name, s.value) for s in families["dind_container_oom_kills"].samples] == [
        ("dind_container_oom_kills_total", 1.0)
    ]
    events = {s.labels["action"]: s.value for s in families["dind_container_events"].samples}
    assert events == {"oom": 1.0, "exec_start": 1.0}


def test_collector_before_first_list_has_no_container_counts() -> None:
    """Until dockerd was listed once, dind_containers has no samples rather than false zeros."""
    families = {
        f.name: f for f in text_string_to_metric_families(expose(ContainerTable()).decode())
    }
    assert families["dind_containers"].samples == []
    assert families["dind_container_oom_kills"].samples[0].value == 0


def test_collector_registers_without_reading_the_table() -> None:
    """describe() names the three families, so registering costs no snapshot."""
    names = [m.name for m in ContainerCollector(ContainerTable()).describe()]
    assert names == ["dind_containers", "dind_container_oom_kills", "dind_container_events"]


def test_promtool_accepts_the_exposition() -> None:
    """`promtool check metrics` finds nothing to complain about in these families."""
    table = ContainerTable()
    table.reset_from_list(listing(a="running"), listed_at_ns=T0)
    table.apply(ev("a", "die", T0 + 1))
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        input=expose(table),
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the watcher ----------------------------------------------------------------


class FakeSource:
    """Scripted dockerd: one (list, events, then end|block|fail) script per session."""

    def __init__(self, sessions: Sequence[dict[str, Any]]) -> None:
        self.sessions = list(sessions)
        self.lists = 0
        self.subscriptions: list[int] = []
        self.closed = 0
        self.drained = anyio.Event()
        self._current: dict[str, Any] = {}

    async def list_containers(self) -> Sequence[Mapping[str, Any]]:
        self.lists += 1
        self._current = self.sessions.pop(0)
        if isinstance(self._current["list"], Exception):
            raise self._current["list"]
        result: list[Mapping[str, Any]] = self._current["list"]
        return result

    async def events(self, *, since_ns: int) -> AsyncGenerator[Mapping[str, Any], None]:
        self.subscriptions.append(since_ns)
        try:
            for message in self._current["events"]:
                yield message
            then = self._current.get("then", "end")
            if isinstance(then, Exception):
                raise then
            if then == "block":
                self.drained.set()
                await anyio.sleep_forever()
        finally:
            self.closed += 1


def broken(what: str) -> ContainerSourceError:
    return ContainerSourceError(f"cannot read dockerd's {what}: connection refused", remedy="wait")


def clock_from(*times: int) -> Any:
    values = iter(times)
    return lambda: next(values)


@pytest.mark.anyio
async def test_watcher_resubscribes_after_a_dockerd_restart() -> None:
    """After the stream ends, the watcher lists again and resubscribes; nothing counts twice."""
    first = [raw("b", "create", T0 + 1), raw("b", "start", T0 + 2), raw("a", "oom", T0 + 3)]
    source = FakeSource([
        {"list": listing(a="running"), "events": first},
        {
            # The restarted dockerd ran a and b again, and c briefly, before we listed.
            "list": listing(a="running", b="running", c="exited"),
            "events": [
                raw("c", "create", T0 + 50 * SECOND),
                raw("c", "start", T0 + 51 * SECOND),
                raw("c", "die", T0 + 52 * SECOND),
                raw("a", "die", T0 + 70 * SECOND),
                raw("a", "die", T0 + 70 * SECOND),  # published while we subscribed: twice
            ],
            "then": "block",
        },
    ])
    table = ContainerTable()
    watcher = ContainerWatcher(table, clock=clock_from(T0, T0 + 60 * SECOND), retry_delay=0)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(watcher.run, source)
            await source.drained.wait()
            tg.cancel_scope.cancel()

    assert source.lists == 2
    assert source.subscriptions == [REPLAY_ALL, REPLAY_ALL]
    assert source.closed == 2
    assert by_state(table) == {"running": 1, "exited": 2}
    figures = table.snapshot()
    assert figures.oom_kills == 1
    assert figures.events_by_action == {"create": 2, "start": 2, "oom": 1, "die": 2}


@pytest.mark.anyio
async def test_watcher_reconnect_to_same_dockerd_skips_the_replay() -> None:
    """A broken stream on a live dockerd replays its buffer: seen events are not counted again."""
    seen = [raw("a", "start", T0 + 1), raw("a", "die", T0 + 2)]
    source = FakeSource([
        {"list": listing(a="exited"), "events": seen, "then": broken("events stream")},
        {"list": listing(a="running"), "events": [*seen, raw("a", "start", T0 + 9)],
         "then": "block"},
    ])
    table = ContainerTable()
    watcher = ContainerWatcher(table, clock=clock_from(T0, T0 + 5), retry_delay=0)
    with structlog.testing.capture_logs() as logs, anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(watcher.run, source)
            await source.drained.wait()
            tg.cancel_scope.cancel()

    assert table.snapshot().events_by_action == {"start": 2, "die": 1}
    assert table.state_of("a") == "running"
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
        "container_events_interrupted"
    ]


@pytest.mark.anyio
async def test_watcher_reports_started_even_when_dockerd_is_gone() -> None:
    """A failed first list still releases TaskGroup.start, then the watcher retries."""
    source = FakeSource([
        {"list": broken("container list"), "events": []},
        {"list": listing(a="paused"), "events": [], "then": "block"},
    ])
    table = ContainerTable()
    watcher = ContainerWatcher(table, clock=clock_from(T0, T0 + 1), retry_delay=0)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(watcher.run, source)
            assert source.lists >= 1
            await source.drained.wait()
            tg.cancel_scope.cancel()
    assert source.lists == 2
    assert by_state(table) == {"paused": 1}


@pytest.mark.anyio
async def test_watcher_started_means_listed() -> None:
    """When TaskGroup.start returns after a good list, the table already holds it."""
    source = FakeSource([{"list": listing(a="running", b="created"), "events": [],
                          "then": "block"}])
    table = ContainerTable()
    watcher = ContainerWatcher(table, clock=clock_from(T0), retry_delay=0)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(watcher.run, source)
            assert by_state(table) == {"running": 1, "created": 1}
            tg.cancel_scope.cancel()
    assert source.closed == 1


@pytest.mark.anyio
async def test_watcher_does_not_swallow_bugs() -> None:
    """Only ContainerSourceError is retried; any other error ends run() loudly."""
    source = FakeSource([{"list": RuntimeError("bug"), "events": []}])
    watcher = ContainerWatcher(ContainerTable(), clock=clock_from(T0), retry_delay=0)
    with pytest.raises(RuntimeError, match="bug"), anyio.fail_after(5):
        await watcher.run(source)


# --- the aiodocker adapter, against a fake dockerd on loopback ------------------


class FakeDockerd:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.hold_open = False
        self.fail_list = False
        self.queries: list[Mapping[str, str]] = []
        self.disconnected = anyio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/version", self.version)
        app.router.add_get("/v1.41/containers/json", self.containers)
        app.router.add_get("/v1.41/events", self.stream)
        return app

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"ApiVersion": "1.41"})

    async def containers(self, request: web.Request) -> web.Response:
        self.queries.append(dict(request.query))
        if self.fail_list:
            return web.json_response({"message": "daemon is shutting down"}, status=500)
        return web.json_response([
            {"Id": "a" * 64, "State": "running", "Status": "Up 1 second", "Names": ["/a"]},
            {"Id": "b" * 64, "State": "exited", "Status": "Exited (0)", "Names": ["/b"]},
        ])

    async def stream(self, request: web.Request) -> web.StreamResponse:
        self.queries.append(dict(request.query))
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        for message in self.events:
            await response.write(json.dumps(message).encode() + b"\n")
        try:
            if self.hold_open:
                await anyio.sleep_forever()
        finally:
            self.disconnected.set()
        return response


@pytest.fixture
async def fake_dockerd() -> AsyncIterator[tuple[FakeDockerd, aiodocker.Docker]]:
    fake = FakeDockerd()
    # handler_cancellation lets the handler see a client that hangs up.
    runner = web.AppRunner(fake.app(), handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    docker = aiodocker.Docker(url=f"http://{host}:{port}")
    try:
        yield fake, docker
    finally:
        await docker.close()
        await runner.cleanup()


@pytest.mark.anyio
async def test_adapter_lists_all_containers(fake_dockerd: tuple[FakeDockerd, Any]) -> None:
    """list_containers asks for all containers and returns Id and State of each."""
    fake, docker = fake_dockerd
    listed = await AiodockerContainerSource(docker).list_containers()
    assert listed == [{"Id": "a" * 64, "State": "running"}, {"Id": "b" * 64, "State": "exited"}]
    assert fake.queries == [{"all": "1"}]


@pytest.mark.anyio
async def test_adapter_streams_container_events(fake_dockerd: tuple[FakeDockerd, Any]) -> None:
    """events() sends since and a type=container filter, and yields each decoded line."""
    fake, docker = fake_dockerd
    fake.events = [raw("a", "start", T0 + 1), raw("a", "exec_start: sh", T0 + 2)]
    source = AiodockerContainerSource(docker)
    with anyio.fail_after(5):
        received = [m async for m in source.events(since_ns=T0 + 7)]
    assert [parse_event(m) for m in received] == [
        ev("a", "start", T0 + 1), ev("a", "exec_start: sh", T0 + 2)
    ]
    assert fake.queries == [
        {"since": "1800000000.000000007", "filters": json.dumps({"type": ["container"]})}
    ]


@pytest.mark.anyio
async def test_adapter_closes_the_stream_when_cancelled(
    fake_dockerd: tuple[FakeDockerd, Any],
) -> None:
    """Cancelling the watcher closes the HTTP stream: dockerd sees the subscriber leave."""
    fake, docker = fake_dockerd
    fake.events = [raw("a", "start", T0 + 1)]
    fake.hold_open = True
    applied = anyio.Event()

    class SignallingTable(ContainerTable):
        def apply(self, event: ContainerEvent) -> Outcome:
            outcome = super().apply(event)
            applied.set()
            return outcome

    table = SignallingTable()
    watcher = ContainerWatcher(table, clock=clock_from(T0), retry_delay=0)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(watcher.run, AiodockerContainerSource(docker))
            await applied.wait()
            tg.cancel_scope.cancel()
        await fake.disconnected.wait()
    assert table.state_of("a") == "running"
    assert table.snapshot().events_by_action == {"start": 1}


@pytest.mark.anyio
async def test_adapter_reports_http_errors(fake_dockerd: tuple[FakeDockerd, Any]) -> None:
    """A 500 from dockerd becomes a ContainerSourceError naming the endpoint and the cause."""
    fake, docker = fake_dockerd
    fake.fail_list = True
    with pytest.raises(ContainerSourceError, match=r"container list.*shutting down"):
        await AiodockerContainerSource(docker).list_containers()


@pytest.mark.anyio
async def test_adapter_reports_refused_connections() -> None:
    """With nothing listening, both calls raise ContainerSourceError, not aiohttp errors."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with anyio.fail_after(5):
        docker = aiodocker.Docker(url=f"http://127.0.0.1:{port}", api_version="v1.41")
        try:
            source = AiodockerContainerSource(docker, endpoint="unix:///run/docker.sock")
            with pytest.raises(ContainerSourceError, match="container list at unix:///run/docker"):
                await source.list_containers()
            with pytest.raises(ContainerSourceError, match="events stream"):
                async for _ in source.events(since_ns=0):
                    pass
        finally:
            await docker.close()


def test_format_since() -> None:
    """`since` uses Docker's seconds.nanoseconds form, zero-padded."""
    assert format_since(0) == "0.000000000"
    assert format_since(T0 + 42) == "1800000000.000000042"


def test_aiohttp_is_the_transport() -> None:
    """The adapter maps aiohttp's errors: keep it honest if aiodocker changes transport."""
    assert issubclass(aiohttp.ClientConnectionError, aiohttp.ClientError)
