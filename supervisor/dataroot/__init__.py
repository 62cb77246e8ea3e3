"""The data root (/var/lib/docker): one daemon per data root, state that survives, disk pressure.

Owns: stale pid files (``pidfiles``), the preflight of where the data root
lives (``mounts``, ``preflight``), exclusive ownership and the clean-shutdown
marker (``ownership``), disk figures and disk-pressure GC (``disk``). Does not
own dockerd's process, the Docker client or metric definitions: callers pass
plain paths, numbers and a small ``PruneApi`` in, and get frozen value
objects back, which the agent logs and exports.

Call order at agent start: ``acquire`` -> ``begin_run`` ->
``clean_stale_pid_files`` -> ``preflight``; at a clean stop:
``end_run_cleanly`` -> ``release``.
"""

from __future__ import annotations

from supervisor.dataroot.disk import (
    DEFAULT_GC_HIGH,
    DEFAULT_GC_LOW,
    DiskFigures,
    GcResult,
    GcStep,
    GcStepResult,
    PruneApi,
    check_thresholds,
    disk_figures,
    figures_from_statvfs,
    gc_decision,
    run_gc,
)
from supervisor.dataroot.mounts import MountEntry, mount_for, parse_mountinfo, read_mountinfo
from supervisor.dataroot.ownership import (
    LOCK_NAME,
    MARKER_NAME,
    DataRootLock,
    Holder,
    UncleanStop,
    acquire,
    begin_run,
    end_run_cleanly,
    find_foreign_daemon,
)
from supervisor.dataroot.pidfiles import (
    CONTAINERD_PID_FILE,
    DEFAULT_PID_FILES,
    DOCKERD_PID_FILE,
    PidFileAction,
    PidFileOutcome,
    PidFileState,
    clean_stale_pid_files,
)
from supervisor.dataroot.preflight import (
    DataRootReport,
    FsProbe,
    RealFsProbe,
    assess,
    driver_findings,
    preflight,
)

__all__ = [
    "CONTAINERD_PID_FILE",
    "DEFAULT_GC_HIGH",
    "DEFAULT_GC_LOW",
    "DEFAULT_PID_FILES",
    "DOCKERD_PID_FILE",
    "LOCK_NAME",
    "MARKER_NAME",
    "DataRootLock",
    "DataRootReport",
    "DiskFigures",
    "FsProbe",
    "GcResult",
    "GcStep",
    "GcStepResult",
    "Holder",
    "MountEntry",
    "PidFileAction",
    "PidFileOutcome",
    "PidFileState",
    "PruneApi",
    "RealFsProbe",
    "UncleanStop",
    "acquire",
    "assess",
    "begin_run",
    "check_thresholds",
    "clean_stale_pid_files",
    "disk_figures",
    "driver_findings",
    "end_run_cleanly",
    "figures_from_statvfs",
    "find_foreign_daemon",
    "gc_decision",
    "mount_for",
    "parse_mountinfo",
    "preflight",
    "read_mountinfo",
    "run_gc",
]
