"""Tests for supervisor.notify: the sd_notify parser, the listener dockerd talks to, our notifier.

Real AF_UNIX datagram sockets in tmp_path (and one abstract address); no systemd needed.
"""

from __future__ import annotations

import os
import socket
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from supervisor.notify import NotifyListener, SystemdNotifier, parse_message

pytestmark = pytest.mark.unit


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def send(path: Path | str, payload: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(payload, str(path))


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    """A bound datagram socket standing in for systemd's notify socket."""
    path = tmp_path / "systemd-notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    try:
        yield sock, path
    finally:
        sock.close()


# parse_message -------------------------------------------------------------------


def test_parse_message_lines() -> None:
    """KEY=VALUE lines become a dict; values keep their own '=' and spaces."""
    assert parse_message(b"READY=1\nSTATUS=Processing requests: a=b\nMAINPID=42") == {
        "READY": "1",
        "STATUS": "Processing requests: a=b",
        "MAINPID": "42",
    }


def test_parse_message_ignores_lines_without_key() -> None:
    """Lines without '=' or with an empty key are ignored."""
    assert parse_message(b"garbage\n=nokey\n\nSTOPPING=1\n") == {"STOPPING": "1"}


def test_parse_message_invalid_utf8() -> None:
    """Undecodable bytes are replaced instead of failing."""
    assert parse_message(b"STATUS=caf\xff\nREADY=1") == {"STATUS": "caf\ufffd", "READY": "1"}


def test_parse_message_empty() -> None:
    """An empty datagram holds no fields."""
    assert parse_message(b"") == {}


# NotifyListener -------------------------------------------------------------------


@pytest.mark.anyio
async def test_listener_sets_ready_on_ready_message(tmp_path: Path) -> None:
    """READY=1 from a real datagram socket sets ``ready``; an earlier STATUS is kept."""
    path = tmp_path / "run" / "notify.sock"
    async with NotifyListener(path) as listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert not listener.ready.is_set()
        send(path, b"STATUS=loading plugins")
        send(path, b"READY=1\nSTATUS=ready")
        with anyio.fail_after(5):
            await listener.ready.wait()
        assert listener.status == "ready"
        assert not listener.stopping.is_set()
        tg.cancel_scope.cancel()
    assert not path.exists()


@pytest.mark.anyio
async def test_listener_status_kept_in_order(tmp_path: Path) -> None:
    """STATUS messages are taken in the order sent; the last one before READY wins."""
    path = tmp_path / "notify.sock"
    async with NotifyListener(path) as listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve)
        # Fewer than net.unix.max_dgram_qlen (10 by default), so a blocking send
        # from this same event loop can never wait for the listener.
        for n in range(6):
            send(path, f"STATUS=step {n}".encode())
        send(path, b"READY=1")
        with anyio.fail_after(5):
            await listener.ready.wait()
        assert listener.status == "step 5"
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_listener_sets_stopping(tmp_path: Path) -> None:
    """STOPPING=1 sets ``stopping`` (and STATUS in the same datagram is kept)."""
    path = tmp_path / "notify.sock"
    async with NotifyListener(path) as listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve)
        send(path, b"STOPPING=1\nSTATUS=shutting down")
        with anyio.fail_after(5):
            await listener.stopping.wait()
        assert listener.status == "shutting down"
        assert not listener.ready.is_set()
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_listener_ready_other_than_one_is_not_ready(tmp_path: Path) -> None:
    """READY=0 (or garbage) does not count as ready."""
    path = tmp_path / "notify.sock"
    async with NotifyListener(path) as listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve)
        send(path, b"READY=0")
        send(path, b"READY")
        send(path, b"STOPPING=1")
        with anyio.fail_after(5):
            await listener.stopping.wait()
        assert not listener.ready.is_set()
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_listener_replaces_stale_socket_file(tmp_path: Path) -> None:
    """A socket file left by a previous run is replaced, not an error."""
    path = tmp_path / "notify.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(path))
    stale.close()
    assert path.exists()
    async with NotifyListener(path) as listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve)
        send(path, b"READY=1")
        with anyio.fail_after(5):
            await listener.ready.wait()
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_serve_before_enter_is_an_error(tmp_path: Path) -> None:
    """serve() without `async with` says how to use it."""
    with pytest.raises(RuntimeError, match="async with"):
        await NotifyListener(tmp_path / "n.sock").serve()


# SystemdNotifier -----------------------------------------------------------------


def test_notifier_sends_to_bound_socket(receiver: tuple[socket.socket, Path]) -> None:
    """ready/status/watchdog/stopping each send their fields to NOTIFY_SOCKET."""
    sock, path = receiver
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path)})
    assert notifier.enabled
    assert notifier.ready("dockerd ready (pid 7)")
    assert sock.recv(4096) == b"READY=1\nSTATUS=dockerd ready (pid 7)"
    assert notifier.status("dockerd starting")
    assert sock.recv(4096) == b"STATUS=dockerd starting"
    assert notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert notifier.stopping("stopped")
    assert parse_message(sock.recv(4096)) == {"STOPPING": "1", "STATUS": "stopped"}


def test_notifier_abstract_address() -> None:
    """NOTIFY_SOCKET=@name reaches the abstract socket of that name."""
    name = f"dind-supervisor-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        notifier = SystemdNotifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready("up")
        assert parse_message(sock.recv(4096)) == {"READY": "1", "STATUS": "up"}


def test_notifier_disabled_without_notify_socket() -> None:
    """Without NOTIFY_SOCKET the notifier is off: sends nothing, no watchdog."""
    notifier = SystemdNotifier({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert notifier.watchdog() is False
    assert notifier.watchdog_interval is None


def test_notifier_send_failure_is_reported_not_raised(tmp_path: Path) -> None:
    """A NOTIFY_SOCKET with no listener makes send() return False."""
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    assert notifier.enabled
    assert notifier.status("x") is False


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "2000000"}, 1.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "self"}, 15.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "other"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(
    receiver: tuple[socket.socket, Path], env: dict[str, str], interval: float | None
) -> None:
    """watchdog_interval is half of WATCHDOG_USEC, None when unset or meant for another pid."""
    _sock, path = receiver
    pids = {"self": str(os.getpid()), "other": str(os.getpid() + 1)}
    env = {k: pids.get(v, v) for k, v in env.items()}
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path), **env})
    assert notifier.watchdog_interval == interval
