"""The data root (/var/lib/docker): one daemon per data root, state that survives, disk pressure.

Owns: stale pid files (``pidfiles``). Does not own dockerd's process, the
Docker API or metric definitions: callers pass plain paths and numbers in and
get frozen value objects back, which the agent logs and exports.
"""

from __future__ import annotations

from supervisor.dataroot.pidfiles import (
    CONTAINERD_PID_FILE,
    DEFAULT_PID_FILES,
    DOCKERD_PID_FILE,
    PidFileAction,
    PidFileOutcome,
    PidFileState,
    clean_stale_pid_files,
)

__all__ = [
    "CONTAINERD_PID_FILE",
    "DEFAULT_PID_FILES",
    "DOCKERD_PID_FILE",
    "PidFileAction",
    "PidFileOutcome",
    "PidFileState",
    "clean_stale_pid_files",
]
