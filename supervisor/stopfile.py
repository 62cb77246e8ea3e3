"""Sidecar mode: stop gracefully once a job container has written a file (``agent.stop_file``).

Clusters without native sidecars cannot stop a dind container when the job
container ends; the job writes a file on a shared volume instead, and this
part asks for the final stop when it appears.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
from anyio.abc import TaskStatus

from supervisor.logs import get_logger

_POLL_SECONDS = 1.0


async def watch_stop_file(
    path: Path, stop: Callable[[], None], *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()
    target = anyio.Path(path)
    # Polled: inotify does not see files written through another mount
    # namespace's view of a shared volume reliably, and once a second is plenty.
    while not await target.exists():  # noqa: ASYNC110
        await anyio.sleep(_POLL_SECONDS)
    get_logger(component="agent").info("stop_file_found", path=str(path))
    stop()
