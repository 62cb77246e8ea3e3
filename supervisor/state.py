"""What a new agent needs to know of the one before it: a small JSON file in the state dir.

The descriptors travel through the fd store (``fdstore``); the facts travel
here: the container preparation's report and dockerd's environment (so a
new agent does not prepare the container again, and restarts dockerd with
the same iptables PATH), and dockerd's restart history (so /status and the
counters go on where they were). Written atomically; a missing or
unreadable file just means a fresh start.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from supervisor.atomicfile import replace_file

STATE_NAME = "agent-state.json"


def read(state_dir: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads((state_dir / STATE_NAME).read_bytes())
        if isinstance(data, dict):
            return data
    return {}


def write(state_dir: Path, data: dict[str, Any]) -> None:
    path = state_dir / STATE_NAME
    with contextlib.suppress(OSError):
        state_dir.mkdir(parents=True, exist_ok=True)
        # In /run: it need not outlive the host, only the agent.
        replace_file(path, json.dumps(data, sort_keys=True, default=str).encode(),
                     durable=False)


def update(state_dir: Path, **changes: Any) -> None:
    data = read(state_dir)
    data.update(changes)
    write(state_dir, data)
