"""Every metric of the contract, defined once on the agent's own registry.

Names, labels and units are the contract that the dashboard, the alert
rules and users rely on (see DESIGN.md); change them only together. Nothing
here talks to Docker: values are pushed by the components or read by custom
collectors from memory, /proc and statvfs, so a scrape stays cheap.
"""

from __future__ import annotations

import platform

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.registry import Collector

from supervisor import __version__
from supervisor.dockerd.lifecycle import RestartReason, State

# `_created` series double the exposition and no dashboard or rule uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

_RLIMIT_NAMES = (
    "cpu", "fsize", "data", "stack", "core", "rss", "nproc", "nofile", "memlock", "as",
    "locks", "sigpending", "msgqueue", "nice", "rtprio", "rttime",
)
_READY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)
_PING_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The agent's metrics; one instance per agent, on its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.build_info = Info(
            "dind_build", "Version of the agent and of the Python running it.", registry=r
        )
        self.build_info.info({"version": __version__, "python": platform.python_version()})

        # Lifecycle of dockerd.
        self.dockerd_up = Gauge(
            "dind_dockerd_up", "1 when dockerd is ready and answering pings, else 0.", registry=r
        )
        self.dockerd_state = Gauge(
            "dind_dockerd_state",
            "1 for the lifecycle state dockerd is in, 0 for the others.",
            ["state"],
            registry=r,
        )
        self.dockerd_restarts = Counter(
            "dind_dockerd_restarts",
            "Restarts of dockerd by the agent, by reason.",
            ["reason"],
            registry=r,
        )
        self.dockerd_last_exit_code = Gauge(
            "dind_dockerd_last_exit_code",
            "Exit code of the last dockerd process (128+N when killed by signal N).",
            registry=r,
        )
        self.dockerd_start_time = Gauge(
            "dind_dockerd_start_time_seconds",
            "Unix time at which the current dockerd process was started.",
            registry=r,
        )
        self.dockerd_ready_duration = Histogram(
            "dind_dockerd_ready_duration_seconds",
            "Time from spawning dockerd to its API answering /_ping.",
            buckets=_READY_BUCKETS,
            registry=r,
        )
        self.dockerd_ping_duration = Histogram(
            "dind_dockerd_ping_duration_seconds",
            "Duration of successful liveness pings (GET /_ping) of dockerd.",
            buckets=_PING_BUCKETS,
            registry=r,
        )
        self.dockerd_ping_failures = Counter(
            "dind_dockerd_ping_failures",
            "Liveness pings of dockerd that failed or timed out.",
            registry=r,
        )
        for state in State:
            self.dockerd_state.labels(state=state.value).set(0)
        for reason in RestartReason:
            self.dockerd_restarts.labels(reason=reason.value)

        # TLS.
        self.tls_not_after = Gauge(
            "dind_tls_cert_not_after_timestamp_seconds",
            "Unix time after which the certificate is no longer valid.",
            ["cert"],
            registry=r,
        )
        self.tls_not_before = Gauge(
            "dind_tls_cert_not_before_timestamp_seconds",
            "Unix time from which the certificate is valid.",
            ["cert"],
            registry=r,
        )
        self.tls_rotations = Counter(
            "dind_tls_rotations", "Certificates renewed by the agent, by certificate.", ["cert"],
            registry=r,
        )
        self.tls_rotation_failures = Counter(
            "dind_tls_rotation_failures",
            "Attempts to renew certificates that failed (the current ones stay in use).",
            registry=r,
        )

        # Resource policy (dind_rlimit and dind_oom_score_adj: PolicyCollector, from /proc).
        self.policy_errors = Counter(
            "dind_policy_errors",
            "Parts of the resource policy the kernel refused, by kind and resource.",
            ["kind", "resource"],
            registry=r,
        )
        self.rlimit_errors = Counter(
            "dind_rlimit_errors",
            "'error setting rlimit' failures seen in dockerd's output, by resource.",
            ["resource"],
            registry=r,
        )

        # Data root.
        self.unclean_shutdowns = Counter(
            "dind_unclean_shutdowns",
            "Starts that found the previous run had not stopped cleanly.",
            registry=r,
        )
        self.gc_runs = Counter(
            "dind_gc_runs", "Disk-pressure garbage collections run.", registry=r
        )
        self.gc_reclaimed = Counter(
            "dind_gc_reclaimed_bytes",
            "Bytes reclaimed by disk-pressure garbage collection.",
            registry=r,
        )

        # Series that exist from the start, so increase() sees their first step.
        for cert in ("ca", "server", "client"):
            self.tls_rotations.labels(cert=cert)
        for resource in _RLIMIT_NAMES:
            self.rlimit_errors.labels(resource=resource)
            for kind in ("clamped", "refused"):
                self.policy_errors.labels(kind=kind, resource=resource)
        for kind in ("clamped", "refused"):
            self.policy_errors.labels(kind=kind, resource="oom_score_adj")

    def set_state(self, state: State) -> None:
        for each in State:
            self.dockerd_state.labels(state=each.value).set(1 if each is state else 0)
        self.dockerd_up.set(1 if state is State.RUNNING else 0)

    def register(self, collector: Collector) -> None:
        self.registry.register(collector)


def exit_code_value(returncode: int) -> int:
    """asyncio reports death by signal N as -N; the shell convention is 128+N."""
    return 128 - returncode if returncode < 0 else returncode
