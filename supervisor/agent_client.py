"""Reaching a running agent's endpoint, for ``status``, ``wait`` and ``check``.

The agent serves /metrics /healthz /readyz /status on TCP (``http.listen``)
and on a unix socket (``http.socket``, mode 0600). The socket is the way in
from wherever its folder is visible: inside the container, or on the host for
the quick start (``./.local-state/run/dind-supervisor/agent.sock``), whose
network namespace is private, so TCP cannot reach it. ``endpoints`` decides
what a command asks, in order:

- ``--url URL``: that URL only;
- ``--socket PATH``, or an ``http.socket`` set on purpose (the variable
  DIND_SUPERVISOR_HTTP_SOCKET, the TOML file, ``--http-socket``): that socket
  only;
- otherwise the default socket when it exists, then TCP at ``http.listen``
  (a wildcard address is asked on loopback).

A request no endpoint answers raises ``Unreachable``, naming each endpoint and
why (connection refused, no such socket, permission denied, no answer in
time). That is kept apart from an HTTP answer such as 503 on /readyz:
"the agent cannot be reached" and "dockerd is not ready" call for different
fixes. Standard library only (``http.client``): these commands start fast.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import struct
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor import config
from supervisor.errors import CertificateError, ConfigError

_URL_HELP = "expected http://HOST:PORT or https://HOST:PORT, e.g. http://127.0.0.1:9324"


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """One way to the agent: a unix socket (``socket_path``) or a TCP URL (``url``)."""

    socket_path: str = ""
    url: str = ""
    context: ssl.SSLContext | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"unix:{self.socket_path}" if self.socket_path else self.url


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """What the agent said. ``peer_pid``: the agent's pid as this process sees it (unix only)."""

    endpoint: Endpoint
    status: int
    body: bytes
    peer_pid: int | None = None

    def document(self) -> dict[str, Any] | None:
        """The body as a JSON object, or None when it is not one."""
        try:
            value = json.loads(self.body)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


class Unreachable(Exception):
    """No endpoint answered; ``failures`` holds each one with the reason."""

    def __init__(self, failures: Sequence[tuple[Endpoint, str]]) -> None:
        self.failures = list(failures)
        super().__init__(self.describe())

    def describe(self) -> str:
        if len(self.failures) == 1:
            where, why = self.failures[0]
            return f"cannot reach the agent at {where}: {why}"
        tried = " or at ".join(f"{where} ({why})" for where, why in self.failures)
        return f"cannot reach the agent at {tried}"


REMEDY = (
    "is the agent running? Name its endpoint with --socket PATH (its unix socket; the"
    " quick start's is .local-state/run/dind-supervisor/agent.sock on the host) or --url URL"
)


def agent_url(cfg: config.Config, override: str | None = None) -> str:
    """The TCP URL of the endpoint: ``override``, else ``http.listen`` (wildcard: loopback)."""
    if override:
        return override.rstrip("/")
    host, port = config.parse_listen(cfg.http.listen or "127.0.0.1:9324")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if cfg.http.tls else "http"
    return f"{scheme}://{host}:{port}"


def client_ssl_context(cfg: config.Config) -> ssl.SSLContext | None:
    """With ``http.tls`` the agent wants the client certificate from its certdir."""
    if not cfg.http.tls or not cfg.tls.certdir:
        return None
    client = Path(cfg.tls.certdir) / "client"
    try:
        context = ssl.create_default_context(cafile=str(client / "ca.pem"))
        context.load_cert_chain(str(client / "cert.pem"), str(client / "key.pem"))
    except (OSError, ssl.SSLError) as exc:
        raise CertificateError(
            f"cannot load the client certificate for the agent's HTTPS endpoint from {client}:"
            f" {getattr(exc, 'strerror', None) or exc}",
            path=str(client),
            remedy="run this where the agent's certdir is mounted (DOCKER_TLS_CERTDIR), or"
            " use --socket, which needs no certificate",
        ) from None
    return context


def endpoints(
    cfg: config.Config, *, url: str | None = None, socket_path: str | None = None
) -> list[Endpoint]:
    """What to ask, in order (see the module's docstring). Raises ConfigError (exit 2)."""
    if url:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(key="--url", value=url, source="command line", reason=_URL_HELP)
        try:
            _ = parts.port
        except ValueError:
            raise ConfigError(
                key="--url", value=url, source="command line", reason=_URL_HELP
            ) from None
        context = client_ssl_context(cfg) if parts.scheme == "https" else None
        return [Endpoint(url=agent_url(cfg, url), context=context)]
    if socket_path:
        return [Endpoint(socket_path=socket_path)]
    configured = cfg.http.socket
    if configured and "http.socket" in cfg.sources:
        return [Endpoint(socket_path=configured)]
    found: list[Endpoint] = []
    # A socket file left by an agent that stopped still exists: connecting to it is
    # refused, and the TCP endpoint is tried next.
    if configured and os.path.exists(configured):
        found.append(Endpoint(socket_path=configured))
    if cfg.http.listen:
        found.append(Endpoint(url=agent_url(cfg), context=client_ssl_context(cfg)))
    if not found and configured:
        found.append(Endpoint(socket_path=configured))
    if not found:
        raise ConfigError(
            key="http.listen",
            value=cfg.http.listen,
            source=cfg.sources.get("http.listen", "default"),
            reason="the endpoint is off (http.listen and http.socket are both empty), so"
            " there is nothing to ask",
            remedy="name the agent's endpoint with --socket PATH or --url URL",
        )
    return found


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix stream socket."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def peer_pid(sock: socket.socket) -> int | None:
    """The pid of the process that listens on the other end of a unix socket, in this
    process's pid namespace (the kernel translates it); None when it is not visible here."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid, _uid, _gid = struct.unpack("3i", raw)
    return pid or None


def get(endpoint: Endpoint, path: str, *, timeout: float) -> Answer:
    """One GET; raises OSError or http.client.HTTPException when no HTTP answer came."""
    connection: http.client.HTTPConnection
    prefix = ""
    if endpoint.socket_path:
        connection = _UnixConnection(endpoint.socket_path, timeout)
    else:
        parts = urllib.parse.urlsplit(endpoint.url)
        host = parts.hostname or "127.0.0.1"
        prefix = parts.path.rstrip("/")
        if parts.scheme == "https":
            connection = http.client.HTTPSConnection(
                host, parts.port or 443, timeout=timeout, context=endpoint.context
            )
        else:
            connection = http.client.HTTPConnection(host, parts.port or 80, timeout=timeout)
    try:
        connection.connect()
        pid = peer_pid(connection.sock) if endpoint.socket_path else None
        connection.request("GET", prefix + path)
        response = connection.getresponse()
        return Answer(endpoint=endpoint, status=response.status, body=response.read(),
                      peer_pid=pid)
    finally:
        connection.close()


def reason(exc: BaseException, endpoint: Endpoint, timeout: float) -> str:
    """Why ``endpoint`` gave no answer, in a few words."""
    if isinstance(exc, FileNotFoundError):
        return "no such socket" if endpoint.socket_path else "not found"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, PermissionError):
        if endpoint.socket_path:
            return "permission denied (the socket is mode 0600: only the agent's user may use it)"
        return "permission denied"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionResetError | http.client.RemoteDisconnected):
        return "the connection was closed without an answer"
    if isinstance(exc, http.client.HTTPException):
        return f"not an HTTP answer ({type(exc).__name__})"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host: {exc.strerror}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    return str(exc) or type(exc).__name__


def ask(candidates: Sequence[Endpoint], path: str, *, timeout: float) -> Answer:
    """GET ``path`` from the first endpoint that answers; raises Unreachable."""
    failures: list[tuple[Endpoint, str]] = []
    for endpoint in candidates:
        try:
            return get(endpoint, path, timeout=timeout)
        except (OSError, http.client.HTTPException) as exc:
            failures.append((endpoint, reason(exc, endpoint, timeout)))
    raise Unreachable(failures)
