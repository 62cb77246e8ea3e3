"""Does containerd answer on its socket? One HTTP/2 exchange, no gRPC library.

containerd serves gRPC, and a gRPC server answers a new connection with its
HTTP/2 SETTINGS frame once the client's preface arrives. So: connect, send
the preface and an empty SETTINGS frame, read one frame header, and check
that it is a SETTINGS frame. A socket file left by a dead containerd refuses
the connection; a stopped (SIGSTOP) or wedged one accepts it (the kernel
queues it) but sends nothing, and the read times out. Both come in two
flavours: ``answers_sync`` for the launch stage (before the event loop) and
``answers`` for the agent's loop. Neither raises.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

# RFC 9113 3.4: the client connection preface, then the client's SETTINGS frame
# (length 0, type 4, no flags, stream 0).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_FRAME_HEADER = 9
_SETTINGS = 4


def is_settings_frame(header: bytes) -> bool:
    """True when ``header`` is the 9-byte header of a SETTINGS frame on stream 0."""
    if len(header) < _FRAME_HEADER:
        return False
    return header[3] == _SETTINGS and int.from_bytes(header[5:9], "big") & 0x7FFFFFFF == 0


def answers_sync(path: Path, timeout: float = 1.0) -> bool:
    """Blocking: containerd sent its SETTINGS frame within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(PREFACE)
            header = b""
            while len(header) < _FRAME_HEADER:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = sock.recv(_FRAME_HEADER - len(header))
                if not chunk:
                    return False
                header += chunk
    except OSError:  # refused, absent, timed out, reset
        return False
    return is_settings_frame(header)


def wait_answering(path: Path, *, timeout: float, alive: object = None,
                   interval: float = 0.01) -> bool:
    """Blocking: poll ``answers_sync`` until it is true or ``timeout`` passed.

    ``alive`` (a callable returning bool) ends the wait early once containerd
    has exited.
    """
    deadline = time.monotonic() + timeout
    while True:
        if answers_sync(path, timeout=min(1.0, max(0.01, deadline - time.monotonic()))):
            return True
        if callable(alive) and not alive():
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


async def answers(path: Path, timeout: float = 1.0) -> bool:
    """The same check on the event loop (anyio); never blocks it."""
    import anyio

    with anyio.move_on_after(timeout):
        try:
            async with await anyio.connect_unix(str(path)) as stream:
                await stream.send(PREFACE)
                header = b""
                while len(header) < _FRAME_HEADER:
                    header += await stream.receive(_FRAME_HEADER - len(header))
                return is_settings_frame(header)
        except (OSError, anyio.EndOfStream, anyio.BrokenResourceError):
            return False
    return False
