"""The sd_notify protocol, both ways.

- ``NotifyListener``: the datagram socket the agent gives dockerd as
  NOTIFY_SOCKET. dockerd sends READY=1 once its API listeners serve and
  STOPPING=1 when it shuts down. One listener per dockerd process, so a
  message from an old process can never be taken for the new one.
- ``SystemdNotifier``: the agent's own messages to systemd (READY=1,
  STATUS=, WATCHDOG=1, STOPPING=1) when it runs under a unit with
  Type=notify. A no-op when NOTIFY_SOCKET is unset.

It does not decide when to send what; ``app.py`` does.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the launch stage binds before anyio is imported
    import anyio
    from anyio.abc import TaskStatus

_MAX_DATAGRAM = 4096


def parse_message(data: bytes) -> dict[str, str]:
    """``KEY=VALUE`` lines into a dict; lines without ``=`` are ignored."""
    fields: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep and key:
            fields[key.strip()] = value
    return fields


def bind_datagram(path: Path) -> socket.socket:
    """The AF_UNIX datagram socket dockerd will write to, bound now (no event loop needed)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class NotifyListener:
    """A bound AF_UNIX datagram socket; ``ready`` is set when READY=1 arrives.

    Bound at construction (synchronously, so it can exist before the event
    loop) or given an already bound socket (one a previous agent left).
    """

    def __init__(self, path: Path, sock: socket.socket | None = None) -> None:
        self.path = path
        self.sock = sock
        self.status = ""
        self._ready: anyio.Event | None = None
        self._stopping: anyio.Event | None = None

    @property
    def ready(self) -> anyio.Event:
        if self._ready is None:
            import anyio

            self._ready = anyio.Event()
        return self._ready

    @property
    def stopping(self) -> anyio.Event:
        if self._stopping is None:
            import anyio

            self._stopping = anyio.Event()
        return self._stopping

    async def __aenter__(self) -> NotifyListener:
        if self.sock is None:
            self.sock = bind_datagram(self.path)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def close(self, *, unlink: bool = True) -> None:
        """``unlink=False`` when the socket is handed on (its path is the one dockerd knows)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def serve(self) -> None:
        """Receive messages until cancelled."""
        import anyio.abc

        if self.sock is None:
            raise RuntimeError("use `async with NotifyListener(...)` before serve()")
        receiver = await anyio.abc.UNIXDatagramSocket.from_socket(self.sock.dup())
        async with receiver:
            async for data, _sender in receiver:
                fields = parse_message(data[:_MAX_DATAGRAM])
                if fields.get("READY") == "1":
                    self.ready.set()
                if fields.get("STOPPING") == "1":
                    self.stopping.set()
                if "STATUS" in fields:
                    self.status = fields["STATUS"]


class SystemdNotifier:
    """Messages to the service manager named by NOTIFY_SOCKET, if any."""

    def __init__(self, env: Mapping[str, str]) -> None:
        address = env.get("NOTIFY_SOCKET", "")
        # A leading '@' names an abstract socket.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_usec = int(env.get("WATCHDOG_USEC", "0") or 0)
        watchdog_pid = env.get("WATCHDOG_PID", "")
        if watchdog_pid and watchdog_pid.isdigit() and int(watchdog_pid) != os.getpid():
            self.watchdog_usec = 0  # the watchdog is meant for another process

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 messages (half of WATCHDOG_USEC), or None."""
        if not self.enabled or self.watchdog_usec <= 0:
            return None
        return self.watchdog_usec / 2_000_000

    def send(self, **fields: str) -> bool:
        if not self.enabled:
            return False
        payload = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            try:
                sock.sendto(payload, self._address)
            except OSError:
                return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY="1", STATUS=status)

    def status(self, status: str) -> bool:
        return self.send(STATUS=status)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG="1")

    def stopping(self, status: str) -> bool:
        return self.send(STOPPING="1", STATUS=status)

    async def watchdog_while(
        self, healthy: Callable[[], bool], *, task_status: TaskStatus[None]
    ) -> None:
        """WATCHDOG=1 only while our loop runs and ``healthy()`` (dockerd not known hung)."""
        import anyio

        interval = self.watchdog_interval or 1.0
        task_status.started()
        while True:
            await anyio.sleep(interval)
            if healthy():
                self.watchdog()

