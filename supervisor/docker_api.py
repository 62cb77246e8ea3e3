"""The narrow adapter between the agent and dockerd's API.

Only the calls the agent makes live here (ping, info, prune), so the rest of
the code depends on a few small methods that tests can fake. ``/_ping`` is a
few bytes over the unix socket, written by hand: it is on the path to
readiness, and aiohttp plus aiodocker take about 0.3 s to import, which the
agent spends while dockerd starts rather than before (app.py imports them after
dockerd's spawn, before the event loop runs: an import on the loop would block
it). Everything else goes through aiodocker, created on first use. A scrape of
/metrics never comes through here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from supervisor.logs import get_logger

if TYPE_CHECKING:
    import aiodocker

_PING_REQUEST = b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
_MAX_PING_RESPONSE = 64 * 1024
_TLS_PROBE_TIMEOUT = 2.0


class DockerApiError(Exception):
    """dockerd did not answer as expected (connection refused, HTTP error, bad body)."""


def parse_ping_response(raw: bytes) -> None:
    """Raise DockerApiError unless ``raw`` is an HTTP 200 whose body is OK."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0]
    parts = status_line.split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise DockerApiError(f"not an HTTP answer to /_ping: {status_line[:80]!r}")
    if parts[1] != b"200":
        raise DockerApiError(f"/_ping answered {status_line.decode(errors='replace')}")
    if b"chunked" in head.lower():
        # "2\r\nOK\r\n0\r\n\r\n": the body is the first chunk.
        body = body.split(b"\r\n")[1] if b"\r\n" in body else body
    if body.strip() != b"OK":
        raise DockerApiError(f"unexpected /_ping answer {body[:80]!r}")


async def _exchange_ping(stream: anyio.abc.ByteStream) -> bytes:
    await stream.send(_PING_REQUEST)
    raw = b""
    while len(raw) < _MAX_PING_RESPONSE:
        try:
            raw += await stream.receive()
        except anyio.EndOfStream:
            break
    return raw


class DockerApi:
    """One client for dockerd's unix socket, kept across dockerd restarts."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self._docker: aiodocker.Docker | None = None

    @property
    def docker(self) -> aiodocker.Docker:
        if self._docker is None:
            import aiodocker
            import aiohttp

            # A fresh connection per request: a kept-alive one may belong to a
            # dockerd that was just killed. With our own connector, aiodocker
            # takes the URL only as the base of request URLs.
            connector = aiohttp.UnixConnector(path=str(self.socket_path), force_close=True)
            self._docker = aiodocker.Docker(url="http://docker", connector=connector)
        return self._docker

    async def aclose(self) -> None:
        if self._docker is not None:
            await self._docker.close()
            await self._docker.connector.close()
            self._docker = None

    async def ping(self) -> None:
        """GET /_ping; raises DockerApiError unless dockerd answers OK."""
        try:
            async with await anyio.connect_unix(self.socket_path) as stream:
                raw = await _exchange_ping(stream)
        except OSError as exc:
            raise DockerApiError(f"cannot connect to {self.socket_path}: {exc}") from exc
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise DockerApiError(f"connection to {self.socket_path} broke: {exc!r}") from exc
        parse_ping_response(raw)

    async def _call(self, coroutine_fn: Any) -> Any:
        import aiodocker
        import aiohttp

        try:
            return await coroutine_fn()
        except aiodocker.DockerError as exc:
            raise DockerApiError(str(exc)) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise DockerApiError(f"{type(exc).__name__}: {exc}") from exc

    async def answers(self, *, tls_address: str | None = None, tls_files: Any = None) -> None:
        """What dockerd's readiness means: /_ping on the socket and, with TLS, a full
        handshake with the client certificate (a bare TCP connect would succeed on a
        held socket, and leaves an error in dockerd's log)."""
        await self.ping()
        if tls_address and tls_files is not None:
            with anyio.fail_after(_TLS_PROBE_TIMEOUT):
                await tls_ping(tls_address, tls_files)

    async def info(self) -> dict[str, Any]:
        result = await self._call(self.docker.system.info)
        return dict(result)

    async def container_host_config(self, container_id: str) -> dict[str, Any]:
        """GET /containers/{id}/json's HostConfig: what the container asked for."""
        docker = self.docker

        async def inspect() -> Any:
            return await docker._query_json(f"containers/{container_id}/json")

        result = await self._call(inspect)
        return dict((result or {}).get("HostConfig") or {})

    async def stop_running_containers(self) -> int:
        """Stop every running container in parallel, each with its own stop timeout.

        Cancellable; returns how many were asked to stop. A container that is
        already gone or refuses counts as done: dockerd handles the rest.
        """
        containers = await self._call(self.docker.containers.list)
        log = get_logger(component="dockerd")

        async def stop(container: Any) -> None:
            try:
                await self._call(lambda: container.stop(timeout=None))
            except DockerApiError as exc:
                log.warning("container_stop_failed", container=container.id[:12], error=str(exc))

        async with anyio.create_task_group() as tg:
            for container in containers:
                tg.start_soon(stop, container)
        return len(containers)

    async def stop_containers_within(self, seconds: float) -> None:
        """Containers first, at the final stop under --live-restore: dockerd would leave
        them running, and they would die with the PID namespace without their stop signal."""
        log = get_logger(component="dockerd")
        started = anyio.current_time()
        stopped = 0
        with anyio.move_on_after(seconds):
            try:
                stopped = await self.stop_running_containers()
            except DockerApiError as exc:
                log.warning("containers_not_stopped", error=str(exc))
        log.info("containers_stopped", containers=stopped,
                 seconds=round(anyio.current_time() - started, 3))

    async def _post_json(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        docker = self.docker

        async def post() -> Any:
            return await docker._query_json(path, method="POST", params=params)

        return dict(await self._call(post) or {})

    async def prune_build_cache(self) -> int:
        """POST /build/prune: every unused build cache record; bytes reclaimed."""
        result = await self._post_json("build/prune", {"all": "true"})
        return int(result.get("SpaceReclaimed") or 0)

    async def prune_images(self, *, dangling_only: bool) -> int:
        """POST /images/prune; Docker never removes an image a container uses."""
        filters = json.dumps({"dangling": ["true" if dangling_only else "false"]})
        result = await self._post_json("images/prune", {"filters": filters})
        return int(result.get("SpaceReclaimed") or 0)


async def hand_out_info(
    api: DockerApi, readers: Sequence[Callable[[dict[str, Any]], None]]
) -> None:
    """Once per ready dockerd, what it chose (storage and cgroup drivers, security options)
    to the parts that judge it."""
    try:
        info = await api.info()
    except DockerApiError as exc:
        get_logger(component="agent").warning("dockerd_info_failed", error=str(exc))
        return
    for read in readers:
        read(info)


async def tcp_listening(url: str) -> None:
    """Raise DockerApiError unless something accepts connections at ``tcp://host:port``."""
    host, _, port = url.removeprefix("tcp://").rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    try:
        stream = await anyio.connect_tcp(host, int(port))
    except (OSError, ValueError) as exc:
        raise DockerApiError(f"nothing listens on {url} yet: {exc}") from exc
    await stream.aclose()


async def tls_ping(address: str, files: Any) -> None:
    """GET /_ping over TLS with the client certificate: what a client's first call does.

    ``files`` has ``server`` (its ca.pem verifies dockerd) and ``client`` (our
    certificate). Raises DockerApiError unless dockerd answers OK.
    """
    import ssl

    host, _, port = address.removeprefix("tcp://").rpartition(":")
    host = host.strip("[]")
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    try:
        context = ssl.create_default_context(cafile=str(files.server.ca))
        context.check_hostname = False  # our own dockerd: the chain is what matters
        context.load_cert_chain(str(files.client.cert), str(files.client.key))
        async with await anyio.connect_tcp(host, int(port), ssl_context=context,
                                           tls_standard_compatible=False) as stream:
            raw = await _exchange_ping(stream)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise DockerApiError(f"no TLS answer on {address}: {exc}") from exc
    except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
        raise DockerApiError(f"TLS connection to {address} broke: {exc!r}") from exc
    parse_ping_response(raw)
