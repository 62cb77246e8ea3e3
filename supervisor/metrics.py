"""Every metric of the contract, declared once, on the agent's own registry.

Names, labels and units are the contract that the dashboard, the alert
rules and users rely on (docs/metrics.md is generated from ``CATALOGUE`` and
a test keeps the two equal); change them only together. Two kinds:

- pushed: the components set them (``Metrics`` holds one object each);
- collected: computed at scrape time from memory, /proc or statvfs by a
  collector elsewhere, which builds its families from the ``Family``
  declared here (``family(...)``), never from a name of its own.

Nothing here talks to Docker, so a scrape stays cheap.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from supervisor import __version__

# `_created` series double the exposition and no dashboard or rule uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

RLIMIT_NAMES = (
    "cpu", "fsize", "data", "stack", "core", "rss", "nproc", "nofile", "memlock", "as",
    "locks", "sigpending", "msgqueue", "nice", "rtprio", "rttime",
)  # fmt: skip
_READY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)
_PING_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_WAIT_BUCKETS = (0.0, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 21600.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Family:
    """One metric's contract: name (as exposed, counters with ``_total``), type, help, labels."""

    name: str
    kind: str  # gauge, counter, histogram, info
    help: str
    labels: tuple[str, ...] = ()

    @property
    def base(self) -> str:
        """The name prometheus_client wants: counters without ``_total``, info without ``_info``."""
        if self.kind == "counter":
            return self.name.removesuffix("_total")
        if self.kind == "info":
            return self.name.removesuffix("_info")
        return self.name


def _f(name: str, kind: str, help_text: str, *labels: str) -> Family:
    return Family(name=name, kind=kind, help=help_text, labels=labels)


# Pushed ------------------------------------------------------------------
BUILD_INFO = _f("dind_build_info", "info", "Version of the agent and of the Python running it.",
                "version", "python")
AGENT_RESTARTS = _f("dind_agent_restarts_total", "counter",
                    "Times PID 1 started a new agent after the previous one died.")
PART_FAILURES = _f("dind_agent_part_failures_total", "counter",
                   "Failures of an auxiliary part of the agent (restarted with backoff), by part.",
                   "part")
DOCKERD_UP = _f("dind_dockerd_up", "gauge", "1 when dockerd is ready and answering pings, else 0.")
DOCKERD_STATE = _f("dind_dockerd_state", "gauge",
                   "1 for the lifecycle state dockerd is in, 0 for the others.", "state")
DOCKERD_RESTARTS = _f("dind_dockerd_restarts_total", "counter",
                      "Restarts of dockerd by the agent, by reason.", "reason")
DOCKERD_LAST_EXIT_CODE = _f(
    "dind_dockerd_last_exit_code", "gauge",
    "Exit code of the last dockerd process (128+N when killed by signal N).",
)
DOCKERD_START_TIME = _f("dind_dockerd_start_time_seconds", "gauge",
                        "Unix time at which the current dockerd process was started.")
DOCKERD_READY_DURATION = _f("dind_dockerd_ready_duration_seconds", "histogram",
                            "Time from spawning dockerd to its API answering /_ping.")
DOCKERD_PING_DURATION = _f("dind_dockerd_ping_duration_seconds", "histogram",
                           "Duration of successful liveness pings (GET /_ping) of dockerd.")
DOCKERD_PING_FAILURES = _f("dind_dockerd_ping_failures_total", "counter",
                           "Liveness pings of dockerd that failed or timed out.")
CONTAINERD_UP = _f("dind_containerd_up", "gauge",
                   "1 when containerd answers on its socket, else 0 (whoever runs it).")
CONTAINERD_RESTARTS = _f("dind_containerd_restarts_total", "counter",
                         "Starts of a new containerd after one exited: by the agent when it"
                         " manages containerd, else by dockerd.")
TLS_NOT_AFTER = _f("dind_tls_cert_not_after_timestamp_seconds", "gauge",
                   "Unix time after which the certificate is no longer valid.", "cert")
TLS_NOT_BEFORE = _f("dind_tls_cert_not_before_timestamp_seconds", "gauge",
                    "Unix time from which the certificate is valid.", "cert")
TLS_ROTATIONS = _f("dind_tls_rotations_total", "counter",
                   "Certificates renewed by the agent, by certificate.", "cert")
TLS_ROTATION_FAILURES = _f("dind_tls_rotation_failures_total", "counter",
                           "Attempts to renew certificates that failed (the current ones stay"
                           " in use).")
TLS_ROTATION_PENDING = _f("dind_tls_rotation_pending", "gauge",
                          "1 while a due server certificate renewal waits for clients to be"
                          " quiet, else 0.")
TLS_ROTATION_WAIT = _f("dind_tls_rotation_wait_seconds", "histogram",
                       "Time a due renewal waited for a quiet moment before dockerd restarted.")
TLS_ROTATION_CUT = _f("dind_tls_rotation_cut_connections_total", "counter",
                      "Client TCP connections that had carried data within the idle threshold"
                      " when a rotation restarted dockerd.")
TLS_CLIENT_HANDSHAKE_FAILURES = _f(
    "dind_tls_client_handshake_failures_total", "counter",
    "TLS handshakes with dockerd that a client failed (port probes, wrong CA, no"
    " certificate), by reason; the client's problem, not dockerd's.", "reason",
)
POLICY_ERRORS = _f("dind_policy_errors_total", "counter",
                   "Parts of the resource policy the kernel refused, by kind and resource.",
                   "kind", "resource")
RLIMIT_ERRORS = _f("dind_rlimit_errors_total", "counter",
                   "'error setting rlimit' failures seen in dockerd's output, by resource.",
                   "resource")
UNCLEAN_SHUTDOWNS = _f("dind_unclean_shutdowns_total", "counter",
                       "Starts that found the previous run had not stopped cleanly.")
GC_RUNS = _f("dind_gc_runs_total", "counter", "Disk-pressure garbage collections run.")
GC_RECLAIMED = _f("dind_gc_reclaimed_bytes_total", "counter",
                  "Bytes reclaimed by disk-pressure garbage collection.")

# Collected ---------------------------------------------------------------
DATA_ROOT_SIZE = _f("dind_data_root_size_bytes", "gauge", "Size of the data root's filesystem.")
DATA_ROOT_FREE = _f("dind_data_root_free_bytes", "gauge",
                    "Bytes available on the data root's filesystem.")
DATA_ROOT_INODES = _f("dind_data_root_inodes", "gauge", "Inodes of the data root's filesystem.")
DATA_ROOT_FREE_INODES = _f("dind_data_root_free_inodes", "gauge",
                           "Free inodes on the data root's filesystem.")
DATA_ROOT_INFO = _f("dind_data_root_info", "gauge",
                    "Where the data root lives: filesystem, dockerd's storage driver, persistence.",
                    "fstype", "storage_driver", "persistent")
CONTAINERS = _f("dind_containers", "gauge",
                "Containers known to dockerd, by state (one list at ready, then events).",
                "state")
CONTAINER_OOM_KILLS = _f("dind_container_oom_kills_total", "counter",
                         "Container OOM kills reported by dockerd (event action oom).")
CONTAINER_EVENTS = _f("dind_container_events_total", "counter",
                      "Container events reported by dockerd, by action (first word of the"
                      " action).", "action")
RLIMIT = _f("dind_rlimit", "gauge",
            "Resource limit in force (+Inf: unlimited), by process, resource and soft/hard.",
            "process", "resource", "limit")
OOM_SCORE_ADJ = _f("dind_oom_score_adj", "gauge", "oom_score_adj in force, by process.",
                   "process")


def process_families(process: str) -> tuple[Family, ...]:
    """dind_<process>_process_*: one supervised process's own figures from /proc."""
    prefix = f"dind_{process}_process_"
    return (
        _f(prefix + "resident_memory_bytes", "gauge",
           f"Resident memory of the {process} process, in bytes."),
        _f(prefix + "virtual_memory_bytes", "gauge",
           f"Virtual memory of the {process} process, in bytes."),
        _f(prefix + "cpu_seconds_total", "counter",
           f"User and system CPU time of the {process} process, in seconds."),
        _f(prefix + "open_fds", "gauge", f"File descriptors the {process} process has open."),
        _f(prefix + "max_fds", "gauge",
           f"The {process} process's soft limit on open file descriptors (RLIMIT_NOFILE)."),
        _f(prefix + "start_time_seconds", "gauge",
           f"Start time of the current {process} process, in Unix seconds."),
    )


SUPERVISED_PROCESSES = ("dockerd", "containerd")

CATALOGUE: tuple[Family, ...] = (
    BUILD_INFO, AGENT_RESTARTS, PART_FAILURES,
    DOCKERD_UP, DOCKERD_STATE, DOCKERD_RESTARTS, DOCKERD_LAST_EXIT_CODE, DOCKERD_START_TIME,
    DOCKERD_READY_DURATION, DOCKERD_PING_DURATION, DOCKERD_PING_FAILURES,
    CONTAINERD_UP, CONTAINERD_RESTARTS,
    *(f for p in SUPERVISED_PROCESSES for f in process_families(p)),
    TLS_NOT_AFTER, TLS_NOT_BEFORE, TLS_ROTATIONS, TLS_ROTATION_FAILURES, TLS_ROTATION_PENDING,
    TLS_ROTATION_WAIT, TLS_ROTATION_CUT, TLS_CLIENT_HANDSHAKE_FAILURES,
    RLIMIT, OOM_SCORE_ADJ, POLICY_ERRORS, RLIMIT_ERRORS,
    DATA_ROOT_SIZE, DATA_ROOT_FREE, DATA_ROOT_INODES, DATA_ROOT_FREE_INODES, DATA_ROOT_INFO,
    UNCLEAN_SHUTDOWNS, GC_RUNS, GC_RECLAIMED,
    CONTAINERS, CONTAINER_OOM_KILLS, CONTAINER_EVENTS,
)  # fmt: skip


def family(spec: Family, value: float | None = None) -> GaugeMetricFamily | CounterMetricFamily:
    """An empty (or single-valued) family for a collector to fill, from its declaration."""
    labels = list(spec.labels) if value is None else None
    if spec.kind == "counter":
        return CounterMetricFamily(spec.base, spec.help, value=value, labels=labels)
    if spec.kind == "gauge":
        return GaugeMetricFamily(spec.base, spec.help, value=value, labels=labels)
    raise ValueError(f"{spec.name} is a {spec.kind}: collectors build gauges and counters")


class Metrics:
    """The agent's pushed metrics; one instance per agent, on its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # No auto_describe: it would call collect() of the standard library collectors
        # (process, platform, GC) at registration, reading /proc on the event loop. Ours
        # describe() their declared families, and name clashes are still refused.
        self.registry = registry or CollectorRegistry(auto_describe=False)
        r = self.registry

        def gauge(spec: Family) -> Gauge:
            return Gauge(spec.base, spec.help, list(spec.labels), registry=r)

        def counter(spec: Family) -> Counter:
            return Counter(spec.base, spec.help, list(spec.labels), registry=r)

        def histogram(spec: Family, buckets: Iterable[float]) -> Histogram:
            return Histogram(spec.base, spec.help, list(spec.labels), buckets=tuple(buckets),
                             registry=r)

        self.build_info = Info(BUILD_INFO.base, BUILD_INFO.help, registry=r)
        self.build_info.info({"version": __version__, "python": platform.python_version()})
        self.agent_restarts = counter(AGENT_RESTARTS)
        self.part_failures = counter(PART_FAILURES)

        self.dockerd_up = gauge(DOCKERD_UP)
        self.dockerd_state = gauge(DOCKERD_STATE)
        self.dockerd_restarts = counter(DOCKERD_RESTARTS)
        self.dockerd_last_exit_code = gauge(DOCKERD_LAST_EXIT_CODE)
        self.dockerd_start_time = gauge(DOCKERD_START_TIME)
        self.dockerd_ready_duration = histogram(DOCKERD_READY_DURATION, _READY_BUCKETS)
        self.dockerd_ping_duration = histogram(DOCKERD_PING_DURATION, _PING_BUCKETS)
        self.dockerd_ping_failures = counter(DOCKERD_PING_FAILURES)
        self._states: list[str] = []
        self.containerd_up = gauge(CONTAINERD_UP)
        self.containerd_restarts = counter(CONTAINERD_RESTARTS)

        self.tls_not_after = gauge(TLS_NOT_AFTER)
        self.tls_not_before = gauge(TLS_NOT_BEFORE)
        self.tls_rotations = counter(TLS_ROTATIONS)
        self.tls_rotation_failures = counter(TLS_ROTATION_FAILURES)
        self.tls_rotation_pending = gauge(TLS_ROTATION_PENDING)
        self.tls_rotation_wait = histogram(TLS_ROTATION_WAIT, _WAIT_BUCKETS)
        self.tls_rotation_cut = counter(TLS_ROTATION_CUT)
        self.tls_client_handshake_failures = counter(TLS_CLIENT_HANDSHAKE_FAILURES)

        self.policy_errors = counter(POLICY_ERRORS)
        self.rlimit_errors = counter(RLIMIT_ERRORS)

        self.unclean_shutdowns = counter(UNCLEAN_SHUTDOWNS)
        self.gc_runs = counter(GC_RUNS)
        self.gc_reclaimed = counter(GC_RECLAIMED)

        # Series that exist from the start, so increase() sees their first step.
        for cert in ("ca", "server", "client"):
            self.tls_rotations.labels(cert=cert)
        for resource in RLIMIT_NAMES:
            self.rlimit_errors.labels(resource=resource)
            for kind in ("clamped", "refused"):
                self.policy_errors.labels(kind=kind, resource=resource)
        for kind in ("clamped", "refused"):
            self.policy_errors.labels(kind=kind, resource="oom_score_adj")

    def declare_states(self, states: Iterable[str]) -> None:
        """The lifecycle's states, each a series from the start (0 until entered)."""
        self._states = list(states)
        for state in self._states:
            self.dockerd_state.labels(state=state).set(0)

    def declare_restart_reasons(self, reasons: Iterable[str]) -> None:
        for reason in reasons:
            self.dockerd_restarts.labels(reason=reason)

    def declare_handshake_reasons(self, reasons: Iterable[str]) -> None:
        """Reasons a client's TLS handshake fails, each a series from the start."""
        for reason in reasons:
            self.tls_client_handshake_failures.labels(reason=reason)

    def set_state(self, state: str, *, ready: bool) -> None:
        for each in self._states:
            self.dockerd_state.labels(state=each).set(1 if each == state else 0)
        self.dockerd_up.set(1 if ready else 0)

    def register(self, collector: Collector) -> None:
        self.registry.register(collector)


def exit_code_value(returncode: int) -> int:
    """asyncio reports death by signal N as -N; the shell convention is 128+N."""
    return 128 - returncode if returncode < 0 else returncode
