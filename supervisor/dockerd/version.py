"""Which major version the dockerd binary is, cheaply.

dockerd up to 25 sets its own oom_score_adj (--oom-score-adjust, default
-500) and would undo a different value of the policy; 26 removed the flag.
So the agent passes the flag only to dockerd <= 25, and only when the value
differs from dockerd's default. Asking ``dockerd --version`` takes ~70 ms,
too long for the path to dockerd's spawn, so the answer is kept next to the
data root, keyed by the binary's identity (path, inode, size, mtime): a
restart on the same image reads it in microseconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from supervisor.atomicfile import replace_file

CACHE_NAME = ".dind-supervisor.dockerd-version"
DOCKERD_DEFAULT_OOM_SCORE_ADJ = -500
LAST_MAJOR_WITH_OOM_FLAG = 25


def _identity(binary: str, path: str | None) -> str | None:
    resolved = shutil.which(binary, path=path) if "/" not in binary else binary
    if resolved is None:
        return None
    try:
        st = os.stat(resolved)
    except OSError:
        return None
    return f"{os.path.realpath(resolved)}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def major(binary: str, *, cache_dir: Path, path: str | None = None) -> int | None:
    """dockerd's major version (None when it cannot be run or read)."""
    identity = _identity(binary, path)
    if identity is None:
        return None
    cache = cache_dir / CACHE_NAME
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        record = json.loads(cache.read_text())
        if record["binary"] == identity:
            return int(record["major"])
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, timeout=10, check=False,
            env={"PATH": path or os.environ.get("PATH", "")},
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(rb"version (\d+)\.", out)
    if match is None:
        return None
    found = int(match.group(1))
    with contextlib.suppress(OSError):
        replace_file(cache, json.dumps({"binary": identity, "major": found}).encode(),
                     durable=False)  # a cache: lost, it is asked again
    return found


def oom_flag(expected: int | None, major_version: int | None) -> list[str]:
    """``--oom-score-adjust=V`` when dockerd would otherwise set its own, different value."""
    if expected is None or expected == DOCKERD_DEFAULT_OOM_SCORE_ADJ:
        return []
    if major_version is None or major_version > LAST_MAJOR_WITH_OOM_FLAG:
        return []
    return [f"--oom-score-adjust={expected}"]
