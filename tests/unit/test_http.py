"""Tests for supervisor.http: the endpoint's routes through aiohttp's test server, on loopback."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from supervisor.dockerd.lifecycle import RestartReason, State
from supervisor.http import HttpEndpoint, build_app
from supervisor.metrics import Metrics
from supervisor.network import bind_listener

pytestmark = pytest.mark.unit


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Agent:
    """The two views the endpoint needs, with values the tests set."""

    def __init__(self) -> None:
        self.ready = False
        self.metrics = Metrics()
        self.document: dict[str, Any] = {"schema": 1, "dockerd": {"state": "starting"}}
        self.asked_locally: bool | None = None

    def is_ready(self) -> bool:
        return self.ready

    def status(self, local: bool = False) -> dict[str, Any]:
        self.asked_locally = local
        return self.document


@pytest.fixture
def agent() -> Agent:
    return Agent()


@pytest.fixture
async def client(agent: Agent) -> AsyncIterator[TestClient[Any, Any]]:
    app = build_app(metrics=agent.metrics, is_ready=agent.is_ready, status=agent.status)
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


@pytest.mark.anyio
async def test_metrics_content_type_and_parses(client: TestClient[Any, Any], agent: Agent) -> None:
    """/metrics answers in the Prometheus text format, which the reference parser reads."""
    agent.metrics.declare_states(s.value for s in State)
    agent.metrics.declare_restart_reasons(r.value for r in RestartReason)
    agent.metrics.set_state(State.RUNNING.value, ready=True)
    agent.metrics.dockerd_restarts.labels(reason=RestartReason.UNHEALTHY.value).inc(2)
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    text = await response.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    expected = {"dind_build_info", "dind_dockerd_up", "dind_dockerd_state", "dind_dockerd_restarts"}
    assert expected <= set(families)
    up = families["dind_dockerd_up"].samples[0]
    assert up.value == 1.0
    restarts = {
        s.labels["reason"]: s.value
        for s in families["dind_dockerd_restarts"].samples
        if s.name == "dind_dockerd_restarts_total"
    }
    assert restarts["unhealthy"] == 2.0
    assert restarts["exit"] == 0.0
    states = {s.labels["state"]: s.value for s in families["dind_dockerd_state"].samples}
    assert states["running"] == 1.0
    assert sum(states.values()) == 1.0


@pytest.mark.anyio
async def test_metrics_pass_promtool(client: TestClient[Any, Any]) -> None:
    """The exposition passes `promtool check metrics` (naming and type lint)."""
    body = await (await client.get("/metrics")).read()
    with anyio.fail_after(30):
        result = await anyio.run_process(["promtool", "check", "metrics"], input=body, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.anyio
async def test_healthz(client: TestClient[Any, Any]) -> None:
    """/healthz answers 200 whatever dockerd is doing."""
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.text() == "ok\n"


@pytest.mark.anyio
async def test_readyz_follows_is_ready(client: TestClient[Any, Any], agent: Agent) -> None:
    """/readyz is 503 while dockerd is not ready and 200 once it is, read at each request."""
    assert (await client.get("/readyz")).status == 503
    agent.ready = True
    assert (await client.get("/readyz")).status == 200
    agent.ready = False
    assert (await client.get("/readyz")).status == 503


@pytest.mark.anyio
async def test_status_json(client: TestClient[Any, Any], agent: Agent) -> None:
    """/status is the status document as JSON; paths and other objects become strings."""
    agent.document = {"schema": 1, "dockerd": {"state": "running", "data_root": Path("/d")}}
    response = await client.get("/status")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert json.loads(await response.text()) == {
        "schema": 1,
        "dockerd": {"state": "running", "data_root": "/d"},
    }
    assert agent.asked_locally is False  # over TCP: not the local side


@pytest.mark.anyio
async def test_unknown_path_404(client: TestClient[Any, Any]) -> None:
    """A path we do not serve is 404."""
    assert (await client.get("/nope")).status == 404


@pytest.mark.anyio
async def test_wrong_method_405(client: TestClient[Any, Any]) -> None:
    """POST to a GET route is refused with 405."""
    assert (await client.post("/readyz")).status == 405


async def raw_request(client: TestClient[Any, Any], request: bytes) -> bytes:
    host, port = "127.0.0.1", client.port
    assert port is not None
    async with await anyio.connect_tcp(host, port) as stream:
        await stream.send(request)
        reply = b""
        with anyio.fail_after(5):
            while b"\r\n" not in reply:
                reply += await stream.receive()
    return reply


@pytest.mark.anyio
async def test_overlong_request_line_is_4xx(client: TestClient[Any, Any]) -> None:
    """A 20 kB request line gets a 4xx answer and the endpoint keeps serving."""
    reply = await raw_request(client, b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    status = int(reply.split(b" ", 2)[1])
    assert 400 <= status < 500
    assert (await client.get("/healthz")).status == 200


@pytest.mark.anyio
async def test_overlong_header_is_4xx(client: TestClient[Any, Any]) -> None:
    """A 20 kB header gets a 4xx answer and the endpoint keeps serving."""
    reply = await raw_request(
        client, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n"
    )
    status = int(reply.split(b" ", 2)[1])
    assert 400 <= status < 500
    assert (await client.get("/healthz")).status == 200


@pytest.mark.anyio
async def test_garbage_request_is_4xx(client: TestClient[Any, Any]) -> None:
    """Bytes that are not HTTP get a 4xx answer, not a crash."""
    reply = await raw_request(client, b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
    assert reply.startswith(b"HTTP/1.")
    assert 400 <= int(reply.split(b" ", 2)[1]) < 500
    assert (await client.get("/healthz")).status == 200


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.anyio
async def test_endpoint_serves_until_cancelled(agent: Agent, tmp_path: Path) -> None:
    """HttpEndpoint.run accepts on the bound TCP socket only once it serves, serves TCP and the
    unix socket, stops on cancel, and serves again when restarted (the socket is kept)."""
    app = build_app(metrics=agent.metrics, is_ready=agent.is_ready, status=agent.status)
    sock = bind_listener("127.0.0.1", 0, listen=False)
    port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/healthz"
    with pytest.raises(OSError, match="connection attempts failed"):
        await anyio.connect_tcp("127.0.0.1", port)  # bound, not yet accepting
    path = tmp_path / "agent.sock"
    endpoint = HttpEndpoint(app, sock=sock, unix_path=path)
    for _restart in range(2):
        async with anyio.create_task_group() as tg:
            await tg.start(endpoint.run)
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                assert response.status == 200
            connector = aiohttp.UnixConnector(path=str(path))
            async with aiohttp.ClientSession(connector=connector) as session, session.get(
                "http://agent/healthz"
            ) as response:
                assert response.status == 200
            tg.cancel_scope.cancel()
    sock.close()
    with pytest.raises(OSError, match="connection attempts failed"):
        await anyio.connect_tcp("127.0.0.1", port)
