"""The agent's HTTP endpoint (aiohttp.web): /metrics, /healthz, /readyz, /status.

/healthz says the agent's loop is alive; /readyz says dockerd is ready (200)
or not (503); /status is the JSON document of docs/status.md; /metrics is
the agent's own registry. No handler calls the Docker API: a scrape reads
memory, /proc and statvfs, in a worker thread so the loop never waits on
them. Served on TCP (``http.listen``; bound by the launch so a busy port is
a configuration error, accepting only from here on) and on a unix socket
(``http.socket``), which ``status`` and ``wait`` use from the same host or
from another mount of the state folder (the quick start's host shell).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from aiohttp import web
from anyio.abc import TaskStatus
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from supervisor.logs import get_logger
from supervisor.metrics import Metrics
from supervisor.tls.files import TlsFiles

StatusFn = Callable[[bool], dict[str, Any]]  # True: asked over the unix socket
ReadyFn = Callable[[], bool]

# Requests are tiny; anything bigger is garbage or an attack.
_MAX_LINE = 8190
_MAX_FIELD = 8190


def build_app(*, metrics: Metrics, is_ready: ReadyFn, status: StatusFn) -> web.Application:
    async def get_metrics(_request: web.Request) -> web.Response:
        body = await anyio.to_thread.run_sync(generate_latest, metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def get_healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def get_readyz(_request: web.Request) -> web.Response:
        if is_ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="dockerd is not ready\n")

    async def get_status(request: web.Request) -> web.Response:
        document = await anyio.to_thread.run_sync(status, _over_unix_socket(request))
        return web.Response(
            text=json.dumps(document, indent=2, sort_keys=True, default=str) + "\n",
            content_type="application/json",
        )

    app = web.Application(handler_args={"max_line_size": _MAX_LINE, "max_field_size": _MAX_FIELD})
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", get_healthz)
    app.router.add_get("/readyz", get_readyz)
    app.router.add_get("/status", get_status)
    return app


def _over_unix_socket(request: web.Request) -> bool:
    """The unix socket is the local side (mode 0600): what only the host's root may read,
    the agent's full settings for one, is answered there and not on the TCP port."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    return sock is not None and sock.family == socket.AF_UNIX


def client_auth_context(*, ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """HTTPS that only answers clients holding a certificate signed by ``ca``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(str(cert), str(key))
    return context


class HttpEndpoint:
    """Serves ``build_app`` until cancelled; restartable (the TCP socket is kept and reused)."""

    def __init__(
        self,
        app: web.Application,
        *,
        sock: socket.socket | None,
        unix_path: Path | None = None,
        server_files: TlsFiles | None = None,
    ) -> None:
        self._app = app
        self.sock = sock
        self.unix_path = unix_path
        self._server_files = server_files
        self._context: ssl.SSLContext | None = None
        self._log = get_logger(component="http")

    def reload_certificates(self) -> None:
        """dockerd is (re)started after every renewal of server/: new connections get it too."""
        if self._context is None or self._server_files is None:
            return
        files = self._server_files
        try:
            self._context.load_cert_chain(str(files.cert), str(files.key))
        except (OSError, ssl.SSLError) as exc:
            self._log.warning("http_certificate_reload_failed", error=str(exc))

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        if self._server_files is not None:
            files = self._server_files
            self._context = await anyio.to_thread.run_sync(
                lambda: client_auth_context(ca=files.ca, cert=files.cert, key=files.key)
            )
        # Idle connections are closed after 15 s, so they cannot pile up.
        runner = web.AppRunner(
            self._app, access_log=None, handle_signals=False, keepalive_timeout=15
        )
        await runner.setup()
        try:
            if self.sock is not None:
                # A copy: the site closes what it is given, and a restart needs the socket.
                site = web.SockSite(runner, self.sock.dup(), ssl_context=self._context)
                await site.start()
                host, port = self.sock.getsockname()[:2]
                self._log.info("http_listening", host=host, port=port,
                               tls=self._context is not None)
            if self.unix_path is not None:
                await anyio.to_thread.run_sync(_make_room_for_socket, self.unix_path)
                await web.UnixSite(runner, str(self.unix_path)).start()
                await anyio.to_thread.run_sync(os.chmod, self.unix_path, 0o600)
                self._log.info("http_listening", socket=str(self.unix_path))
            task_status.started()
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()


def _make_room_for_socket(path: Path) -> None:
    """A socket file left by an agent that died is in the way of bind(2)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
