"""The agent's HTTP endpoint (aiohttp.web): /metrics, /healthz, /readyz, /status.

/healthz says the agent's loop is alive; /readyz says dockerd is ready (200)
or not (503); /status is the JSON document described in the README; /metrics
is the agent's own registry. No handler calls the Docker API: everything is
read from memory, /proc or statvfs, so a scrape stays cheap whatever dockerd
is doing.
"""

from __future__ import annotations

import json
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

StatusFn = Callable[[], dict[str, Any]]
ReadyFn = Callable[[], bool]

# Requests are tiny; anything bigger is garbage or an attack.
_MAX_LINE = 8190
_MAX_FIELD = 8190


def build_app(*, metrics: Metrics, is_ready: ReadyFn, status: StatusFn) -> web.Application:
    async def get_metrics(_request: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def get_healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def get_readyz(_request: web.Request) -> web.Response:
        if is_ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="dockerd is not ready\n")

    async def get_status(_request: web.Request) -> web.Response:
        return web.Response(
            text=json.dumps(status(), indent=2, sort_keys=True, default=str) + "\n",
            content_type="application/json",
        )

    app = web.Application(handler_args={"max_line_size": _MAX_LINE, "max_field_size": _MAX_FIELD})
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", get_healthz)
    app.router.add_get("/readyz", get_readyz)
    app.router.add_get("/status", get_status)
    return app


def client_auth_context(*, ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """HTTPS that only answers clients holding a certificate signed by ``ca``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(str(cert), str(key))
    return context


class HttpEndpoint:
    """Serves ``build_app`` on ``host:port`` until cancelled."""

    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self._app = app
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.sock = sock  # bound beforehand (a bad address fails early), else bind here
        self._log = get_logger(component="http")

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        # Idle connections are closed after 15 s, so they cannot pile up.
        runner = web.AppRunner(
            self._app, access_log=None, handle_signals=False, keepalive_timeout=15
        )
        await runner.setup()
        try:
            site: web.BaseSite
            if self.sock is not None:
                site = web.SockSite(runner, self.sock, ssl_context=self.ssl_context)
            else:
                site = web.TCPSite(
                    runner, self.host, self.port, reuse_address=True, ssl_context=self.ssl_context
                )
            await site.start()
            self._log.info(
                "http_listening", host=self.host, port=self.port, tls=self.ssl_context is not None
            )
            task_status.started()
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()
