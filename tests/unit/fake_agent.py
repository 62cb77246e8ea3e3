"""A stand-in for the agent's endpoint on a unix socket, for the client-side tests.

Serves fixed answers for /readyz and /status from a thread of the test
process, so SO_PEERCRED on the client side names the test's own pid. The
tests set ``ready`` and ``document`` as they go.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class FakeAgent:
    """What the fake endpoint answers; change the fields between requests."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ready = False
        self.document: dict[str, Any] = {"schema": 1, "dockerd": {"state": "starting"}}
        self.requests: list[str] = []


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    agent: FakeAgent


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        agent = self.server.agent
        agent.requests.append(self.path)
        if self.path == "/readyz":
            status, body = (200, b"ready\n") if agent.ready else (503, b"dockerd is not ready\n")
        elif self.path == "/status":
            status, body = 200, json.dumps(agent.document).encode()
        else:
            status, body = 404, b"not found\n"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:
        return "unix"  # a unix peer has no (host, port) for the default log line

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve(path: Path) -> Iterator[FakeAgent]:
    """Listen on ``path`` until the block ends; the socket file is removed after."""
    agent = FakeAgent(path)
    server = _Server(str(path), _Handler)
    server.agent = agent
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield agent
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        path.unlink(missing_ok=True)
