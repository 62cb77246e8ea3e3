"""Figures for the metrics the policy feeds: current limits and oom_score_adj per process.

Owns reading the gauge values at scrape time from /proc (cheap: two small
files per process, no Docker API). The counters (dind_policy_errors_total,
dind_rlimit_errors_total) are incremented by the caller from
PolicyDeviation.metric_labels() and RuntimeLimitError.refused_by_wrapper;
metrics.py declares every metric.

Unlimited is exported as +Inf, not -1: comparisons in PromQL and alert rules
(``dind_rlimit{resource="nofile",limit="hard"} < 65536``) then read naturally.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from supervisor.policy import probe
from supervisor.policy.limits import BY_NUMBER, INFINITY


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyFigures:
    # dind_rlimit{process,resource,limit}: ((process, resource, "soft"|"hard"), value)
    rlimits: tuple[tuple[tuple[str, str, str], float], ...]
    # dind_oom_score_adj{process}
    oom_score_adj: tuple[tuple[str, float], ...]


def _gauge(value: int) -> float:
    return math.inf if value >= INFINITY else float(value)


def policy_figures(
    processes: Mapping[str, int | str], *, proc_root: str | Path = "/proc"
) -> PolicyFigures:
    """Read limits and oom_score_adj of e.g. {"agent": "self", "dockerd": 42, "containerd": 57}.

    A process that is gone (dockerd restarting) is skipped, not an error.
    """
    rlimits: list[tuple[tuple[str, str, str], float]] = []
    oom: list[tuple[str, float]] = []
    for process, pid in processes.items():
        try:
            limits = probe.read_limits(proc_root, pid)
            score = probe.read_oom_score_adj(proc_root, pid)
        except (OSError, ValueError):
            continue
        for number, (soft, hard) in sorted(limits.items()):
            name = BY_NUMBER[number].name
            rlimits.append(((process, name, "soft"), _gauge(soft)))
            rlimits.append(((process, name, "hard"), _gauge(hard)))
        oom.append((process, float(score)))
    return PolicyFigures(rlimits=tuple(rlimits), oom_score_adj=tuple(oom))
