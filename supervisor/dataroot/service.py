"""The data-root component of the agent: ownership, preflight, figures and GC.

At start: take the data root's lock (a second agent or dockerd makes us exit
2 naming the holder), record the run (an unclean previous stop is counted),
and inspect where the data root lives. Before every dockerd start: clean
stale pid files. Once dockerd is ready: note the storage driver it chose.
On every scrape: statvfs figures (no Docker API call). When enabled: prune
under disk pressure. At a clean stop: mark the run clean and unlock.
Does not own the Docker client (the agent passes a ``PruneApi``), dockerd's
process, or the metric definitions (``Metrics``).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from supervisor.config import Config
from supervisor.dataroot import (
    MARKER_NAME,
    DataRootLock,
    DataRootReport,
    GcResult,
    Holder,
    PidFileAction,
    PruneApi,
    UncleanStop,
    begin_run,
    clean_stale_pid_files,
    disk_figures,
    driver_findings,
    end_run_cleanly,
    run_gc,
)
from supervisor.dataroot.preflight import preflight
from supervisor.errors import DataRootError
from supervisor.findings import Finding, Severity
from supervisor.logs import get_logger
from supervisor.metrics import (
    DATA_ROOT_FREE,
    DATA_ROOT_FREE_INODES,
    DATA_ROOT_INFO,
    DATA_ROOT_INODES,
    DATA_ROOT_SIZE,
    Metrics,
    family,
)


def log_findings(log: Any, event: str, findings: tuple[Finding, ...] | list[Finding]) -> None:
    for finding in findings:
        level = {Severity.ERROR: "error", Severity.WARNING: "warning"}.get(finding.severity, "info")
        getattr(log, level)(
            event, topic=finding.topic, message=finding.message, remedy=finding.remedy,
            severity=str(finding.severity),
        )


class DataRootService:
    """The data root while the agent runs; the launch took its lock (``launch.py``)."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        *,
        lock: DataRootLock | None,
        previous_run: Holder | None,
        clean: Callable[[], bool],
        takeover: bool = False,
        proc_root: Path = Path("/proc"),
    ):
        self.path = Path(config.dockerd.data_root)
        self._config = config
        self._metrics = metrics
        self._proc = proc_root
        self._log = get_logger(component="dataroot")
        self.lock = lock
        self._previous = previous_run
        self._clean = clean  # asked at the end: did the agent stop cleanly?
        self._takeover = takeover
        self.report: DataRootReport | None = None
        self.storage_driver: str | None = None
        self.unclean_previous_stop: dict[str, object] | None = None
        self.gc_runs = 0
        self.gc_checks = 0
        self.gc_last_check: float | None = None
        self.gc_reclaimed = 0
        self._run_begun = takeover  # an agent that took over continues its predecessor's run
        metrics.register(DataRootCollector(self))

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Record the run, inspect where the data root lives; at the end mark a clean stop
        (when ``clean()`` says it was one) and unlock."""
        try:
            if not self._takeover:
                await anyio.to_thread.run_sync(self._begin_run)
            report = await anyio.to_thread.run_sync(preflight, self.path, self._proc)
            self.report = report
            self._log.info(
                "data_root_inspected",
                path=report.path,
                fstype=report.fstype,
                mount_point=report.mount_point,
                persistent=report.persistent,
                overlay2_supported=report.overlay2_supported,
            )
            log_findings(self._log, "data_root_finding", report.findings)
            task_status.started()
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.stop, self._clean())

    def _begin_run(self) -> None:
        now = dt.datetime.now(dt.UTC)
        if self._previous is not None:
            unclean = UncleanStop(marker=self.path / MARKER_NAME, previous=self._previous,
                                  detected_at=now)
            self.unclean_previous_stop = unclean.as_log()
            self._metrics.unclean_shutdowns.inc()
            self._log.warning("unclean_shutdown_detected", **unclean.as_log())
        try:
            begin_run(self.path, now, pid=os.getpid(), host=socket.gethostname())
        except DataRootError as exc:
            if not exc.no_space:
                raise
            # The launch let a full disk through (gc_enabled, low_space = warn): dockerd
            # gets its chance to start and be pruned; only this run's record is missing.
            self._log.warning("run_not_recorded", path=str(self.path), error=exc.message,
                              remedy=exc.remedy, consequence="an unclean stop of this run"
                              " will not be detected at the next start")
            return
        self._run_begun = True

    async def before_spawn(self) -> None:
        if not self._config.dataroot.clean_pid_files:
            return
        paths = (Path(self._config.dockerd.pidfile), Path(self._config.dockerd.containerd_pidfile))
        outcomes = await anyio.to_thread.run_sync(clean_stale_pid_files, paths, self._proc)
        for outcome in outcomes:
            if outcome.action is PidFileAction.NONE:
                continue
            # A kept file (a live daemon) or one that could not be removed makes
            # dockerd refuse to start: that deserves more than an info line.
            level = "info" if outcome.action is PidFileAction.REMOVED else "warning"
            getattr(self._log, level)(
                "pid_file_checked", message=outcome.message, **outcome.as_log()
            )

    def dockerd_ready(self, info: dict[str, Any]) -> None:
        """Once dockerd answers: the storage driver it chose, and what that means here."""
        driver = str(info.get("Driver") or "unknown")
        if driver != self.storage_driver:
            self.storage_driver = driver
            self._log.info("storage_driver_reported", storage_driver=driver)
            if self.report is not None:
                log_findings(self._log, "data_root_finding", driver_findings(self.report, driver))

    def stop(self, clean: bool) -> None:
        """Mark a clean stop (when it was one) and unlock; never raises. Blocking (fsync)."""
        try:
            # Only a run this agent began is ours to end: after a refused lock
            # the marker belongs to the agent that holds the data root.
            if clean and self._run_begun:
                end_run_cleanly(self.path)
        except OSError as exc:
            # The next start will count an unclean stop; say why now.
            self._log.warning(
                "clean_stop_not_recorded", path=str(self.path), error=exc.strerror or str(exc)
            )
        finally:
            if self.lock is not None:
                self.lock.release()

    async def run_gc_loop(
        self, api: PruneApi, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """While dockerd is ready: check usage every interval, prune above the high mark."""
        settings = self._config.dataroot
        task_status.started()
        while True:
            try:
                result = await run_gc(
                    api, lambda: disk_figures(self.path), settings.gc_high, settings.gc_low
                )
            except OSError as exc:
                # statvfs failed (the volume went away?): the agent keeps supervising.
                self._log.warning(
                    "gc_failed", path=str(self.path), error=exc.strerror or str(exc)
                )
            else:
                self._record_gc(result, settings.gc_low)
            self.gc_checks += 1
            self.gc_last_check = time.time()
            await anyio.sleep(settings.gc_interval)

    def _record_gc(self, result: GcResult, low: float) -> None:
        if not result.runs:
            return
        self.gc_runs += result.runs
        self.gc_reclaimed += result.reclaimed_bytes
        self._metrics.gc_runs.inc(result.runs)
        self._metrics.gc_reclaimed.inc(result.reclaimed_bytes)
        if result.error is None and result.reached_low(low):
            self._log.info("gc_finished", **result.as_log())
        else:
            # What is left is in use (or a prune failed): pruning again will not
            # help, someone has to free space or grow the volume.
            self._log.warning(
                "gc_finished",
                remedy="remove unused containers and volumes, or give the data root more room",
                **result.as_log(),
            )

    def status(self) -> dict[str, Any]:
        report = self.report
        try:
            figures = disk_figures(self.path)
        except OSError:
            figures = None
        return {
            "path": str(self.path),
            "fstype": report.fstype if report else None,
            "mount_point": report.mount_point if report else None,
            "persistent": report.persistent if report else None,
            "overlay2_supported": report.overlay2_supported if report else None,
            "storage_driver": self.storage_driver,
            "locked": bool(self.lock and self.lock.held),
            "unclean_previous_stop": self.unclean_previous_stop,
            "used_percent": round(figures.used_fraction * 100, 1) if figures else None,
            "free_bytes": figures.free_bytes if figures else None,
            "free_inodes": figures.free_inodes if figures else None,
            "gc": {"enabled": self._config.dataroot.gc_enabled, "checks": self.gc_checks,
                   "last_check_at": self.gc_last_check, "runs": self.gc_runs,
                   "reclaimed_bytes": self.gc_reclaimed},
            "findings": [f.as_dict() for f in report.findings] if report else [],
        }


class DataRootCollector(Collector):
    """statvfs at scrape time, and the info series once dockerd named its driver."""

    def __init__(self, service: DataRootService) -> None:
        self._service = service

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        try:
            figures = disk_figures(self._service.path)
        except OSError:
            figures = None
        if figures is not None:
            yield family(DATA_ROOT_SIZE, figures.size_bytes)
            yield family(DATA_ROOT_FREE, figures.free_bytes)
            yield family(DATA_ROOT_INODES, figures.inodes)
            yield family(DATA_ROOT_FREE_INODES, figures.free_inodes)
        report = self._service.report
        if report is not None:
            labels = report.info_labels(self._service.storage_driver or "unknown")
            info = family(DATA_ROOT_INFO)
            info.add_metric([labels[name] for name in DATA_ROOT_INFO.labels], 1)
            yield info
