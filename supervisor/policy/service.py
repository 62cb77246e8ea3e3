"""The resource-policy component of the agent: plan once, apply, wrap dockerd, explain.

Before anything else starts: read what this container received, plan what
the kernel will grant, refuse to start in strict mode (exit 2) or log each
clamp once and count it, and apply the agent's own values. dockerd gets its
values from an exec wrapper so that containerd and every container inherit
them from their first instruction. While dockerd runs, its output is
watched for runc's policy refusals; each is logged decoded and counted.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from supervisor.config import Config, resolved_policy
from supervisor.logs import DockerdLine, get_logger
from supervisor.metrics import Metrics
from supervisor.policy import Plan, apply_to_agent, explain_runtime_error, plan, read_facts
from supervisor.policy.figures import PolicyFigures, policy_figures
from supervisor.policy.plan import strict_error
from supervisor.policy.spec import Mode

# dockerd lost --oom-score-adjust in v26; before that it sets -500 itself and
# would override the policy's value on hosts that allow it.
_LAST_VERSION_WITH_OOM_FLAG = 25
# Limits change only when a process starts (the pids are part of the key);
# a short age still shows an outside prlimit or oom_score_adj change soon.
_FIGURES_MAX_AGE = 5.0
_ALWAYS_EXPORTED = frozenset({"nofile", "nproc", "core", "memlock", "stack"})


class DockerdVersionProbe:
    """``dockerd --version`` started at once and read when needed (it takes ~70 ms)."""

    def __init__(self, binary: str) -> None:
        self._major: int | None = None
        self._done = False
        try:
            self._process: subprocess.Popen[bytes] | None = subprocess.Popen(
                [binary, "--version"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
        except OSError:
            self._process = None

    def major(self) -> int | None:
        if not self._done and self._process is not None:
            self._done = True
            try:
                out, _ = self._process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.communicate()
                return None
            match = re.search(rb"version (\d+)\.", out)
            self._major = int(match.group(1)) if match else None
        return self._major


class PolicyService:
    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        *,
        under_init: bool,
        dockerd_pid: Callable[[], int | None] = lambda: None,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._under_init = under_init
        self._log = get_logger(component="policy")
        self.policy = resolved_policy(config)
        self.plan: Plan | None = None
        self.deviations: list[dict[str, Any]] = []
        self.runtime_errors = 0
        self._dockerd_pid = dockerd_pid
        self._figures_cache: tuple[tuple[tuple[str, str], ...], float, PolicyFigures] | None = None
        self._version = DockerdVersionProbe(config.dockerd.binary)
        metrics.register(PolicyCollector(self))

    def start(self) -> None:
        """Plan and apply; raises PolicyError (exit 2) in strict mode when refused."""
        facts = read_facts(init_pid=1 if self._under_init else None)
        planned = plan(self.policy, facts, check=False)
        if planned.deviations and self.policy.mode is Mode.STRICT:
            raise strict_error(planned.deviations)
        self.plan = planned
        self._record(planned.deviations, "policy_clamped")
        refused = apply_to_agent(planned)
        self._record(refused, "policy_refused")
        self._log.info(
            "policy_applied",
            mode=self.policy.mode.value,
            deviations=len(planned.deviations) + len(refused),
            dockerd_oom_score_adj=planned.dockerd.expected_oom_score_adj,
        )

    def _record(self, deviations: Sequence[Any], event: str) -> None:
        for deviation in deviations:
            self.deviations.append(deviation.as_event())
            self._metrics.policy_errors.labels(**deviation.metric_labels()).inc()
            self._log.warning(event, **deviation.as_event())

    @property
    def oom_flag(self) -> bool:
        major = self._version.major()
        return major is not None and major <= _LAST_VERSION_WITH_OOM_FLAG

    def extra_dockerd_args(self) -> list[str]:
        expected = self.plan.dockerd.expected_oom_score_adj if self.plan else None
        if self._config.dockerd.exact_args:
            return []  # exactly the user's flags; the exec wrapper still sets the value
        if self.oom_flag and expected is not None:  # the flag is gone since v26
            user = self._config.dockerd.args
            if not any(arg.startswith("--oom-score-adjust") for arg in user):
                return [f"--oom-score-adjust={expected}"]
        return []

    def wrap(self, argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
        from supervisor.policy import wrap_argv

        if self.plan is None:
            return list(argv)
        return wrap_argv(self.plan, argv, env=env)

    def observe_line(self, line: DockerdLine) -> None:
        """dockerd output observer: decode runc's policy refusals."""
        if "rlimit" not in line.message and "oom_score_adj" not in line.message and (
            "final child's PID" not in line.message and "policy" not in line.message
        ):
            return
        explained = explain_runtime_error(line.message, dockerd_pid=self._dockerd_pid())
        if explained is None:
            return
        if explained.requested is None and explained.container_id is not None:
            requested = requested_ulimit(
                self._config.dockerd.data_root, explained.container_id, explained.resource
            )
            explained = dataclasses.replace(explained, requested=requested)
        self.runtime_errors += 1
        name, labels = explained.metric()
        if name == "dind_rlimit_errors_total":
            self._metrics.rlimit_errors.labels(**labels).inc()
        else:
            self._metrics.policy_errors.labels(**labels).inc()
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

    def _containerd_pid(self) -> int | None:
        """containerd from dockerd's pid file (cheap on every scrape), checked by name."""
        try:
            with open(self._config.dockerd.containerd_pidfile, "rb") as handle:
                pid = int(handle.read().strip() or b"0")
            with open(f"/proc/{pid}/comm", "rb") as handle:
                comm = handle.read().strip()
        except (OSError, ValueError):
            return None
        return pid if comm == b"containerd" else None

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
            "runtime_errors": self.runtime_errors,
        }


def requested_ulimit(data_root: str | Path, container_id: str, resource: str) -> str | None:
    """What the container asked for (``SOFT:HARD``), from the hostconfig.json dockerd wrote.

    runc's message omits it; the file is read (no Docker API call: this runs
    on dockerd's output path) and may already be gone for a ``--rm`` container.
    """
    path = Path(data_root) / "containers" / container_id / "hostconfig.json"
    try:
        ulimits = json.loads(path.read_text()).get("Ulimits") or []
    except (OSError, ValueError, AttributeError):
        return None
    for ulimit in ulimits:
        if isinstance(ulimit, dict) and ulimit.get("Name") == resource:
            return f"{ulimit.get('Soft')}:{ulimit.get('Hard')}"
    return None


class PolicyCollector(Collector):
    """dind_rlimit and dind_oom_score_adj read from /proc at scrape time."""

    def __init__(self, service: PolicyService) -> None:
        self._service = service

    def collect(self) -> Iterator[GaugeMetricFamily]:
        figures = self._service.figures()
        rlimit = GaugeMetricFamily(
            "dind_rlimit",
            "Resource limit in force (+Inf: unlimited), by process, resource and soft/hard.",
            labels=["process", "resource", "limit"],
        )
        shown = self._service.exported_resources()
        for labels, value in figures.rlimits:
            if labels[1] in shown:
                rlimit.add_metric(list(labels), value)
        yield rlimit
        oom = GaugeMetricFamily(
            "dind_oom_score_adj", "oom_score_adj in force, by process.", labels=["process"]
        )
        for process, value in figures.oom_score_adj:
            oom.add_metric([process], value)
        yield oom
