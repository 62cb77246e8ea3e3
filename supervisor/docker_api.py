"""The narrow adapter between the agent and dockerd's API (aiodocker).

Only the calls the agent makes live here (ping, info, ...), so the rest of
the code depends on a few small methods that tests can fake. A scrape of
/metrics never comes through here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp


class DockerApiError(Exception):
    """dockerd did not answer as expected (connection refused, HTTP error, bad body)."""


class DockerApi:
    """One client for dockerd's unix socket, kept across dockerd restarts."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        # A fresh connection per request: a kept-alive one may belong to a
        # dockerd that was just killed, and pings must not wait on it.
        connector = aiohttp.UnixConnector(path=str(socket_path), force_close=True)
        # With our own connector, aiodocker takes the URL only as the base of
        # request URLs; the socket path lives in the connector.
        self.docker = aiodocker.Docker(url="http://docker", connector=connector)

    async def aclose(self) -> None:
        await self.docker.close()
        await self.docker.connector.close()

    async def ping(self) -> None:
        """GET /_ping; raises DockerApiError unless dockerd answers OK."""
        try:
            async with self.docker._query("_ping", versioned_api=False) as response:
                body = await response.text()
        except aiodocker.DockerError as exc:
            raise DockerApiError(str(exc)) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise DockerApiError(f"{type(exc).__name__}: {exc}") from exc
        if body.strip() != "OK":
            raise DockerApiError(f"unexpected /_ping answer {body[:80]!r}")

    async def info(self) -> dict[str, Any]:
        try:
            result: dict[str, Any] = dict(await self.docker.system.info())
        except aiodocker.DockerError as exc:
            raise DockerApiError(str(exc)) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise DockerApiError(f"{type(exc).__name__}: {exc}") from exc
        return result

    async def _post_json(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            result = await self.docker._query_json(path, method="POST", params=params)
        except aiodocker.DockerError as exc:
            raise DockerApiError(str(exc)) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise DockerApiError(f"{type(exc).__name__}: {exc}") from exc
        return dict(result or {})

    async def prune_build_cache(self) -> int:
        """POST /build/prune: every unused build cache record; bytes reclaimed."""
        result = await self._post_json("build/prune", {"all": "true"})
        return int(result.get("SpaceReclaimed") or 0)

    async def prune_images(self, *, dangling_only: bool) -> int:
        """POST /images/prune; Docker never removes an image a container uses."""
        filters = json.dumps({"dangling": ["true" if dangling_only else "false"]})
        result = await self._post_json("images/prune", {"filters": filters})
        return int(result.get("SpaceReclaimed") or 0)
