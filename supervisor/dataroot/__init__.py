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

from typing import TYPE_CHECKING

from supervisor.lazy import lazy_exports

if TYPE_CHECKING:
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
        adopt_lock,
        begin_run,
        end_run_cleanly,
        find_foreign_daemon,
        read_marker,
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
    )

# Names re-exported from the submodules, imported on first use (PEP 562): the
# launch stage imports one submodule and must not pay for all of them.
_WHERE = {
    "CONTAINERD_PID_FILE": "supervisor.dataroot.pidfiles",
    "DEFAULT_GC_HIGH": "supervisor.dataroot.disk",
    "DEFAULT_GC_LOW": "supervisor.dataroot.disk",
    "DEFAULT_PID_FILES": "supervisor.dataroot.pidfiles",
    "DOCKERD_PID_FILE": "supervisor.dataroot.pidfiles",
    "DataRootLock": "supervisor.dataroot.ownership",
    "DataRootReport": "supervisor.dataroot.preflight",
    "DiskFigures": "supervisor.dataroot.disk",
    "FsProbe": "supervisor.dataroot.preflight",
    "GcResult": "supervisor.dataroot.disk",
    "GcStep": "supervisor.dataroot.disk",
    "GcStepResult": "supervisor.dataroot.disk",
    "Holder": "supervisor.dataroot.ownership",
    "LOCK_NAME": "supervisor.dataroot.ownership",
    "MARKER_NAME": "supervisor.dataroot.ownership",
    "MountEntry": "supervisor.dataroot.mounts",
    "PidFileAction": "supervisor.dataroot.pidfiles",
    "PidFileOutcome": "supervisor.dataroot.pidfiles",
    "PidFileState": "supervisor.dataroot.pidfiles",
    "PruneApi": "supervisor.dataroot.disk",
    "RealFsProbe": "supervisor.dataroot.preflight",
    "UncleanStop": "supervisor.dataroot.ownership",
    "acquire": "supervisor.dataroot.ownership",
    "adopt_lock": "supervisor.dataroot.ownership",
    "assess": "supervisor.dataroot.preflight",
    "begin_run": "supervisor.dataroot.ownership",
    "check_thresholds": "supervisor.dataroot.disk",
    "clean_stale_pid_files": "supervisor.dataroot.pidfiles",
    "disk_figures": "supervisor.dataroot.disk",
    "driver_findings": "supervisor.dataroot.preflight",
    "end_run_cleanly": "supervisor.dataroot.ownership",
    "figures_from_statvfs": "supervisor.dataroot.disk",
    "find_foreign_daemon": "supervisor.dataroot.ownership",
    "gc_decision": "supervisor.dataroot.disk",
    "mount_for": "supervisor.dataroot.mounts",
    "parse_mountinfo": "supervisor.dataroot.mounts",
    "read_marker": "supervisor.dataroot.ownership",
    "read_mountinfo": "supervisor.dataroot.mounts",
    "run_gc": "supervisor.dataroot.disk",
}


__getattr__ = lazy_exports(__name__, _WHERE)


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
    "adopt_lock",
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
    "read_marker",
    "read_mountinfo",
    "run_gc",
]
