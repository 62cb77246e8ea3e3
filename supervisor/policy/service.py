"""The resource-policy component of the agent: what was applied, and runc's refusals.

The launch (``launch.py``) planned the policy, applied the agent's own
values, refused to start in strict mode (exit 2) and logged each clamp once;
dockerd gets its values from the exec wrapper, so containerd and every
container inherit them from their first instruction. This part counts what
could not be applied, exports what each process has (from /proc, at scrape
time), and watches dockerd's output for runc's refusals: each is logged
decoded (with the value the container asked for, read from its HostConfig
through the Docker API: runc does not print it), counted, and kept for
/status. The relay of dockerd's output only hands such lines over; the
decoding reads /proc and asks the API off the relay, in this part's task.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from supervisor.config import Config
from supervisor.logs import DockerdLine, get_logger
from supervisor.metrics import OOM_SCORE_ADJ, RLIMIT, Metrics, family
from supervisor.policy.explain import RuntimeLimitError, explain_runtime_error
from supervisor.policy.figures import PolicyFigures, policy_figures
from supervisor.policy.placement import Placement, detect
from supervisor.policy.plan import Plan, PolicyDeviation
from supervisor.policy.spec import Policy
from supervisor.procstats import pid_from_file

# Limits change only when a process starts (the pids are part of the key);
# a short age still shows an outside prlimit or oom_score_adj change soon.
_FIGURES_MAX_AGE = 5.0
_ALWAYS_EXPORTED = frozenset({"nofile", "nproc", "core", "memlock", "stack"})
_QUEUED_LINES = 256  # runc refusals waiting to be decoded; more are dropped (and said so)
_INSPECT_TIMEOUT = 5.0
# GET /containers/{id}/json's HostConfig: what a container asked for (its Ulimits).
HostConfigOf = Callable[[str], Awaitable[dict[str, Any]]]


class PolicyService:
    """The policy while the agent runs; the launch planned and applied it (``launch.py``)."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        *,
        policy: Policy,
        plan: Plan | None,
        deviations: Sequence[PolicyDeviation] = (),
        under_init: bool,
        dockerd_pid: Callable[[], int | None] = lambda: None,
        host_config: HostConfigOf | None = None,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._under_init = under_init
        self._log = get_logger(component="policy")
        self.policy = policy
        self.plan = plan
        self.deviations: list[dict[str, Any]] = [d.as_event() for d in deviations]
        self._planned_deviations = list(deviations)
        self.runtime_errors = 0
        self.last_runtime_error: dict[str, Any] | None = None
        self._dockerd_pid = dockerd_pid
        self._containerd_pid = pid_from_file(str(config.dockerd.containerd_pidfile),
                                             expect_comm="containerd")
        self._figures_cache: tuple[tuple[tuple[str, str], ...], float, PolicyFigures] | None = None
        self._host_config = host_config
        self.placement: Placement | None = None
        self._send, self._receive = anyio.create_memory_object_stream[str](_QUEUED_LINES)
        self._dropped = 0
        metrics.register(PolicyCollector(self))

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Count what the launch could not apply; then decode what observe_line hands over."""
        for deviation in self._planned_deviations:
            self._metrics.policy_errors.labels(**deviation.metric_labels()).inc()
        self.placement = await anyio.to_thread.run_sync(detect, dict(os.environ))
        task_status.started()
        with self._send, self._receive:  # closed at the end: later lines are not decoded
            async for line in self._receive:
                await self._decode(line)

    def observe_line(self, line: DockerdLine) -> None:
        """dockerd output observer: hand runc's policy refusals over (no I/O here)."""
        if "rlimit" not in line.message and "oom_score_adj" not in line.message and (
            "final child's PID" not in line.message and "policy" not in line.message
        ):
            return
        try:
            self._send.send_nowait(line.message)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return  # the part ended (the agent is stopping)
        except anyio.WouldBlock:
            self._dropped += 1
            if self._dropped in (1, 100, 10000):
                self._log.warning("policy_lines_dropped", dropped=self._dropped,
                                  reason="more runc refusals at once than can be decoded")

    async def _decode(self, message: str) -> None:
        pid = self._dockerd_pid()

        def explain(requested: str | None = None) -> RuntimeLimitError | None:
            return explain_runtime_error(message, dockerd_pid=pid, requested=requested,
                                         placement=self.placement)

        explained = await anyio.to_thread.run_sync(explain)
        if explained is None:
            return
        if explained.kind == "rlimit" and explained.container_id is not None:
            requested = await self._requested(explained.container_id, explained.resource)
            if requested is not None:
                explained = await anyio.to_thread.run_sync(explain, requested) or explained
        self._record(explained)

    async def _requested(self, container_id: str, resource: str) -> str | None:
        """What the container asked for: its HostConfig.Ulimits from the Docker API (the
        failed container stays Created), else the hostconfig.json dockerd wrote."""
        if self._host_config is not None:
            with anyio.move_on_after(_INSPECT_TIMEOUT):
                try:
                    found = ulimit_of(await self._host_config(container_id), resource)
                except Exception as exc:  # whatever the API says: the file is the fallback
                    self._log.debug("container_inspect_failed", container=container_id[:12],
                                    error=f"{type(exc).__name__}: {exc}")
                else:
                    if found is not None:
                        return found
        return await anyio.to_thread.run_sync(
            requested_ulimit, self._config.dockerd.data_root, container_id, resource
        )

    def _record(self, explained: RuntimeLimitError) -> None:
        self.runtime_errors += 1
        self.last_runtime_error = explained.as_event()
        if explained.refused_by_wrapper:
            self._metrics.policy_errors.labels(kind="refused", resource=explained.resource).inc()
        else:
            self._metrics.rlimit_errors.labels(resource=explained.resource).inc()
        self._log.error("container_policy_refused", **explained.as_event())

    def processes(self) -> dict[str, int | str]:
        found: dict[str, int | str] = {"agent": "self"}
        if self._under_init:
            found = {"init": 1, **found}
        dockerd = self._dockerd_pid()
        if dockerd is not None:
            found["dockerd"] = dockerd
            containerd = self._containerd_pid()
            if containerd is not None:
                found["containerd"] = containerd
        return found

    def figures(self) -> PolicyFigures:
        """Limits and oom_score_adj per process, read again only when a pid changed or
        after a few seconds: a scrape must not cost a /proc walk per process each time."""
        processes = self.processes()
        key = tuple(sorted((name, str(pid)) for name, pid in processes.items()))
        now = time.monotonic()
        cached = self._figures_cache
        if cached is not None and cached[0] == key and now - cached[1] < _FIGURES_MAX_AGE:
            return cached[2]
        figures = policy_figures(processes)
        self._figures_cache = (key, now, figures)
        return figures

    def exported_resources(self) -> frozenset[str]:
        """The rlimits worth a series: those the policy sets, and the ones containers trip
        over (every resource of every process would be 128 series on each scrape)."""
        named = {
            request.rlimit.name
            for request in (*self.policy.agent_rlimits, *self.policy.dockerd_rlimits)
        }
        return frozenset(named | _ALWAYS_EXPORTED)

    def status(self) -> dict[str, Any]:
        """What each process got (read from /proc now), what was planned, and what went wrong."""
        figures = self.figures()
        requests = (*self.policy.agent_rlimits, *self.policy.dockerd_rlimits)
        managed = {request.rlimit.name for request in requests}
        rlimits: dict[str, dict[str, dict[str, float | str]]] = {}
        for (process, resource, which), value in figures.rlimits:
            if resource in managed:
                shown = "unlimited" if math.isinf(value) else int(value)
                rlimits.setdefault(process, {}).setdefault(resource, {})[which] = shown
        planned = {}
        if self.plan is not None:
            for process_plan in (self.plan.init, self.plan.agent, self.plan.dockerd):
                if process_plan is not None:
                    planned[process_plan.process] = process_plan.expected_oom_score_adj
        return {
            "mode": self.policy.mode.value,
            "oom_score_adj": {process: int(value) for process, value in figures.oom_score_adj},
            "planned_oom_score_adj": planned,
            "rlimits": rlimits,
            "deviations": [d["message"] for d in self.deviations],
            "placement": self.placement.value if self.placement else None,
            "runtime_errors": self.runtime_errors,
            "last_runtime_error": self.last_runtime_error,
        }


def ulimit_of(host_config: dict[str, Any], resource: str) -> str | None:
    """``SOFT:HARD`` of one resource in a HostConfig's Ulimits (None when not asked for)."""
    for ulimit in host_config.get("Ulimits") or []:
        if isinstance(ulimit, dict) and ulimit.get("Name") == resource:
            return f"{ulimit.get('Soft')}:{ulimit.get('Hard')}"
    return None


def requested_ulimit(data_root: str | Path, container_id: str, resource: str) -> str | None:
    """What the container asked for (``SOFT:HARD``), from the hostconfig.json dockerd wrote:
    the fallback when the API cannot say (blocking: call it from a thread). It may already
    be gone for a ``--rm`` container."""
    path = Path(data_root) / "containers" / container_id / "hostconfig.json"
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return ulimit_of(document, resource) if isinstance(document, dict) else None


class PolicyCollector(Collector):
    """dind_rlimit and dind_oom_score_adj read from /proc at scrape time."""

    def __init__(self, service: PolicyService) -> None:
        self._service = service

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        figures = self._service.figures()
        rlimit = family(RLIMIT)
        shown = self._service.exported_resources()
        for labels, value in figures.rlimits:
            if labels[1] in shown:
                rlimit.add_metric(list(labels), value)
        yield rlimit
        oom = family(OOM_SCORE_ADJ)
        for process, value in figures.oom_score_adj:
            oom.add_metric([process], value)
        yield oom
