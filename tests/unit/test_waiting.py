"""Tests for supervisor.waiting: the `wait` command's poll loop (fake clock) and its probe."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from supervisor.waiting import ready_once, wait_until_ready

pytestmark = pytest.mark.unit

URL = "http://127.0.0.1:9324"


class FakeTime:
    """A clock that only moves when the code under test pauses."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.pauses: list[float] = []

    def clock(self) -> float:
        return self.now

    def pause(self, seconds: float) -> None:
        assert seconds > 0
        self.pauses.append(seconds)
        self.now += seconds


class Probe:
    """Answers False until its n-th call, recording what it was asked."""

    def __init__(self, ready_on_call: int | None) -> None:
        self.ready_on_call = ready_on_call
        self.calls: list[tuple[str, float]] = []

    def __call__(self, base_url: str, timeout: float) -> bool:
        self.calls.append((base_url, timeout))
        return self.ready_on_call is not None and len(self.calls) >= self.ready_on_call


def test_ready_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    """Ready on the first probe: exit 0 without pausing or printing."""
    fake, probe = FakeTime(), Probe(ready_on_call=1)
    assert wait_until_ready(URL, timeout=5, probe=probe, clock=fake.clock, pause=fake.pause) == 0
    assert len(probe.calls) == 1
    assert fake.pauses == []
    assert capsys.readouterr().err == ""


def test_ready_after_some_polls() -> None:
    """Ready on the 7th probe: exit 0 after six short pauses."""
    fake, probe = FakeTime(), Probe(ready_on_call=7)
    assert wait_until_ready(URL, timeout=5, probe=probe, clock=fake.clock, pause=fake.pause) == 0
    assert len(probe.calls) == 7
    assert fake.pauses == pytest.approx([0.1] * 6)
    assert all(url == URL for url, _ in probe.calls)


def test_never_ready_times_out(capsys: pytest.CaptureFixture[str]) -> None:
    """Never ready: exit 1 once the timeout has passed, with a message naming URL and timeout."""
    fake, probe = FakeTime(), Probe(ready_on_call=None)
    start = fake.now
    assert wait_until_ready(URL, timeout=2.5, probe=probe, clock=fake.clock, pause=fake.pause) == 1
    assert fake.now - start == pytest.approx(2.5)
    assert len(probe.calls) == pytest.approx(26, abs=1)
    err = capsys.readouterr().err
    assert "not ready after 2.5 s" in err
    assert f"{URL}/readyz" in err


def test_probe_timeout_bounded() -> None:
    """Each probe gets at most 1 s and at least 50 ms, never more than the time left."""
    fake, probe = FakeTime(), Probe(ready_on_call=None)
    wait_until_ready(URL, timeout=3, probe=probe, clock=fake.clock, pause=fake.pause)
    timeouts = [t for _, t in probe.calls]
    assert max(timeouts) == 1.0
    assert min(timeouts) >= 0.05


def test_zero_timeout_probes_once() -> None:
    """timeout=0 still probes once, then gives up without pausing."""
    fake, probe = FakeTime(), Probe(ready_on_call=None)
    assert wait_until_ready(URL, timeout=0, probe=probe, clock=fake.clock, pause=fake.pause) == 1
    assert len(probe.calls) == 1
    assert fake.pauses == []


# ready_once against a real loopback server -------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.end_headers()
        self.wfile.write(b"x")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"status": 200})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_ready_once_200_and_503(server: tuple[str, type[_Handler]]) -> None:
    """ready_once is True for 200 on /readyz and False for 503."""
    url, handler = server
    assert ready_once(url, 2.0) is True
    handler.status = 503
    assert ready_once(url, 2.0) is False


def test_ready_once_connection_refused() -> None:
    """An agent not listening yet is simply 'not ready', not an error."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert ready_once(f"http://127.0.0.1:{port}", 1.0) is False


def test_ready_once_bad_url() -> None:
    """A malformed URL is 'not ready', not a crash."""
    assert ready_once("not a url", 1.0) is False
