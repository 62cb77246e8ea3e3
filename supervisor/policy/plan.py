"""Planning: what of the requested policy the kernel will grant, and why not the rest.

Pure. Given the Policy and the Facts found (this process's limits, fs.nr_open,
CAP_SYS_RESOURCE, oom_score_adj) it computes the values each process will get
and one explained PolicyDeviation per shortfall. Reading the facts is probe.py's
job; applying the plan is apply.py's.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from supervisor.errors import PolicyError
from supervisor.findings import Finding, Severity
from supervisor.policy.limits import (
    INFINITY,
    NOFILE,
    NR_OPEN_MAX,
    Rlimit,
    format_pair,
    format_value,
)
from supervisor.policy.placement import Placement, raise_limit_remedy
from supervisor.policy.spec import PROCESSES, Mode, Policy


class Cause(enum.StrEnum):
    HARD_LIMIT = "hard_limit"  # inherited from the outer runtime; no CAP_SYS_RESOURCE to raise it
    NR_OPEN = "nr_open"  # fs.nr_open caps nofile for every process, capability or not
    OOM_FLOOR = "oom_score_adj_floor"  # lowering below the start value needs CAP_SYS_RESOURCE
    REFUSED = "refused"  # the kernel said no although the plan expected yes


@dataclass(frozen=True, slots=True, kw_only=True)
class Facts:
    """What this process (the agent, before it changes anything) was given."""

    limits: Mapping[int, tuple[int, int]]  # rlimit type -> (soft, hard)
    nr_open: int
    cap_sys_resource: bool  # in the effective set
    oom_score_adj: int
    # PID 1's value when PID 1 is our own init (and so ours to set); None otherwise.
    init_oom_score_adj: int | None = None
    # Not root (rootless mode): CAP_SYS_RESOURCE is out of reach, remedies say so.
    unprivileged: bool = False

    def limit(self, number: int) -> tuple[int, int]:
        # A limit /proc did not show constrains nothing we know of; the kernel
        # will still have the last word when it is applied.
        return self.limits.get(number, (INFINITY, INFINITY))


@dataclass(frozen=True, slots=True, kw_only=True)
class RlimitSetting:
    rlimit: Rlimit
    soft: int
    hard: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessPlan:
    """What to set on one process, and what it will then have."""

    process: str
    rlimits: tuple[RlimitSetting, ...] = ()  # only those that differ from what it inherits
    oom_score_adj: int | None = None  # None: leave the inherited value
    expected_limits: Mapping[int, tuple[int, int]] = field(default_factory=dict)
    expected_oom_score_adj: int | None = None

    @property
    def empty(self) -> bool:
        return not self.rlimits and self.oom_score_adj is None


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyDeviation:
    """One setting the process will not get as asked, with its cause and remedy."""

    process: str
    resource: str  # docker's rlimit name, or "oom_score_adj"
    rlimit_type: int | None
    key: str  # the configuration key to change
    requested: str
    applied: str
    limit_found: str
    cause: Cause
    message: str
    remedy: str

    def metric_labels(self) -> dict[str, str]:
        """Labels for dind_policy_errors_total{kind,resource}."""
        kind = "refused" if self.cause is Cause.REFUSED else "clamped"
        return {"kind": kind, "resource": self.resource}

    def as_event(self) -> dict[str, Any]:
        """Key/values for one structured log event (e.g. ``policy_clamped``)."""
        return {
            "process": self.process,
            "resource": self.resource,
            "rlimit_type": self.rlimit_type,
            "requested": self.requested,
            "applied": self.applied,
            "limit_found": self.limit_found,
            "cause": str(self.cause),
            "key": self.key,
            "message": self.message,
            "remedy": self.remedy,
        }

    def as_finding(self) -> Finding:
        return Finding(
            topic="policy",
            severity=Severity.WARNING,
            message=f"{self.message}; {self.process} gets {self.applied}",
            remedy=self.remedy,
            data=self.as_event(),
        )

    def as_error(self) -> PolicyError:
        return PolicyError(
            self.message,
            resource=self.resource,
            requested=self.requested,
            limit=self.limit_found,
            cause=str(self.cause),
            remedy=self.remedy,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    mode: Mode
    init: ProcessPlan | None  # None when PID 1 is not our init
    agent: ProcessPlan
    dockerd: ProcessPlan
    deviations: tuple[PolicyDeviation, ...] = ()

    def findings(self) -> list[Finding]:
        return [d.as_finding() for d in self.deviations]


def docker_ulimit(rlimit: Rlimit, soft: int, hard: int) -> str:
    """The `docker run --ulimit` spelling (-1 for unlimited)."""

    def one(value: int) -> str:
        return "-1" if value >= INFINITY else str(value)

    return f"--ulimit {rlimit.name}={one(soft)}:{one(hard)}"


def outer_remedy(
    rlimit: Rlimit, soft: int, hard: int, placement: Placement | None = None
) -> str:
    """How to give this container a higher hard limit from outside; said for where the
    agent runs when that is known (``placement.detect``), else for each place."""
    if placement is not None:
        def one(value: int) -> str:
            return "unlimited" if value >= INFINITY else str(value)

        return raise_limit_remedy(placement, rlimit.name, one(soft), one(hard),
                                  docker_ulimit(rlimit, soft, hard))
    return (
        f"start this container with {docker_ulimit(rlimit, soft, hard)} (under systemd:"
        f" Limit{rlimit.name.upper()}= in the unit; Kubernetes has no per-pod ulimit: set"
        f" Limit{rlimit.name.upper()} on the node's container runtime, e.g. containerd's"
        " systemd unit)"
    )


def hard_limit_remedy(rlimit: Rlimit, soft: int, hard: int, key: str | None, found: int) -> str:
    lower = f"lower {key} to" if key else "ask for"
    return f"{outer_remedy(rlimit, soft, hard)}, or {lower} at most {format_value(found)}"


def nr_open_remedy(key: str | None, nr_open: int) -> str:
    lower = f"lower {key} to" if key else "ask for"
    if nr_open >= NR_OPEN_MAX:
        # Already the most any kernel accepts (systemd sets it so): only a number fits.
        return f"{lower} a number of open files, at most {nr_open} (unlimited is not possible)"
    return (
        "raise fs.nr_open on the host (sysctl -w fs.nr_open=N; it cannot be changed from"
        f" inside a container), or {lower} at most {nr_open}"
    )


def oom_floor_remedy(process: str, lowest_wanted: int, floor: int,
                     unprivileged: bool = False) -> str:
    capability = "" if unprivileged else ", or with CAP_SYS_RESOURCE"
    return (
        f"start the container with --oom-score-adj {lowest_wanted} (on Kubernetes the"
        f" Guaranteed QoS class gives -997){capability}, or set"
        f" policy.{process}_oom_score_adj to {floor} or more"
    )


_UNPRIVILEGED = (
    " (rootless mode: an unprivileged user may raise a soft limit up to its hard limit and"
    " oom_score_adj upwards, nothing more)"
)


def plan(policy: Policy, facts: Facts, *, check: bool = True) -> Plan:
    """Compute what will be applied; in strict mode any deviation raises PolicyError.

    ``check=False`` returns the plan even in strict mode, so the caller can log
    every deviation before raising ``strict_error(plan.deviations)`` itself.
    """
    deviations: list[PolicyDeviation] = []
    floor = None if facts.cap_sys_resource else facts.oom_score_adj
    wanted = [v for p in PROCESSES if (v := policy.oom_score_adj(p)) is not None]
    lowest_wanted = min(wanted, default=0)

    def oom_for(process: str, inherited: int | None) -> tuple[int | None, int | None]:
        requested = policy.oom_score_adj(process)
        if requested is None:
            return None, inherited
        granted = requested
        if floor is not None and requested < floor:
            granted = floor
            deviations.append(_oom_deviation(process, requested, floor, lowest_wanted,
                                             unprivileged=facts.unprivileged))
        write = None if granted == inherited else granted
        return write, granted

    init_plan: ProcessPlan | None = None
    agent_inherits = facts.oom_score_adj
    if facts.init_oom_score_adj is not None:
        write, init_value = oom_for("init", facts.init_oom_score_adj)
        init_plan = ProcessPlan(
            process="init", oom_score_adj=write, expected_oom_score_adj=init_value
        )
    agent_write, agent_value = oom_for("agent", agent_inherits)
    agent_limits, agent_settings = _plan_rlimits("agent", policy, facts, dict(facts.limits))
    deviations.extend(agent_settings[1])
    agent_plan = ProcessPlan(
        process="agent",
        rlimits=agent_settings[0],
        oom_score_adj=agent_write,
        expected_limits=agent_limits,
        expected_oom_score_adj=agent_value,
    )
    dockerd_write, dockerd_value = oom_for("dockerd", agent_value)
    dockerd_limits, dockerd_settings = _plan_rlimits("dockerd", policy, facts, agent_limits)
    deviations.extend(dockerd_settings[1])
    dockerd_plan = ProcessPlan(
        process="dockerd",
        rlimits=dockerd_settings[0],
        oom_score_adj=dockerd_write,
        expected_limits=dockerd_limits,
        expected_oom_score_adj=dockerd_value,
    )
    # rlimits first: they are what runc will trip over later, oom_score_adj second.
    deviations.sort(key=lambda d: (d.rlimit_type is None, PROCESSES.index(d.process)))
    result = Plan(
        mode=policy.mode,
        init=init_plan,
        agent=agent_plan,
        dockerd=dockerd_plan,
        deviations=tuple(deviations),
    )
    if check and policy.mode is Mode.STRICT and deviations:
        raise strict_error(deviations)
    return result


def strict_error(deviations: Sequence[PolicyDeviation]) -> PolicyError:
    """The first deviation as the error, the others named so one run shows them all."""
    error = deviations[0].as_error()
    if len(deviations) > 1:
        others = "; ".join(d.message for d in deviations[1:])
        error = PolicyError(
            f"{error.message} (and {len(deviations) - 1} more: {others})",
            resource=error.resource,
            requested=error.requested,
            limit=error.limit,
            cause=error.cause,
            remedy=error.remedy,
        )
    return error


def _plan_rlimits(
    process: str,
    policy: Policy,
    facts: Facts,
    inherited: dict[int, tuple[int, int]],
) -> tuple[dict[int, tuple[int, int]], tuple[tuple[RlimitSetting, ...], list[PolicyDeviation]]]:
    limits = dict(inherited)
    settings: list[RlimitSetting] = []
    deviations: list[PolicyDeviation] = []
    for request in policy.rlimits(process):
        number = request.rlimit.number
        current = limits.get(number, facts.limit(number))
        ceiling = INFINITY if facts.cap_sys_resource else current[1]
        cause = Cause.HARD_LIMIT
        if request.rlimit is NOFILE and facts.nr_open < ceiling:
            ceiling, cause = facts.nr_open, Cause.NR_OPEN
        hard = min(request.hard, ceiling)
        soft = min(request.soft, hard)
        if hard != request.hard and not request.up_to_hard:
            deviations.append(
                _rlimit_deviation(
                    process=process,
                    rlimit=request.rlimit,
                    requested=(request.soft, request.hard),
                    applied=(soft, hard),
                    ceiling=ceiling,
                    cause=cause,
                    unprivileged=facts.unprivileged,
                )
            )
        if (soft, hard) != current:
            settings.append(RlimitSetting(rlimit=request.rlimit, soft=soft, hard=hard))
            limits[number] = (soft, hard)
    return limits, (tuple(settings), deviations)


def _rlimit_deviation(
    *,
    process: str,
    rlimit: Rlimit,
    requested: tuple[int, int],
    applied: tuple[int, int],
    ceiling: int,
    cause: Cause,
    unprivileged: bool = False,
) -> PolicyDeviation:
    key = f"policy.{process}_rlimits.{rlimit.name}"
    head = f"cannot raise {rlimit.describe()} of {process} to {format_value(requested[1])}"
    if cause is Cause.NR_OPEN:
        message = f"{head}: fs.nr_open is {ceiling}, the kernel's ceiling for every process"
        remedy = nr_open_remedy(key, ceiling)
    else:
        message = (
            f"{head}: hard limit is {format_value(ceiling)} and this process lacks"
            " CAP_SYS_RESOURCE"
        ) + (_UNPRIVILEGED if unprivileged else "")
        remedy = hard_limit_remedy(rlimit, requested[0], requested[1], key, ceiling)
    return PolicyDeviation(
        process=process,
        resource=rlimit.name,
        rlimit_type=rlimit.number,
        key=key,
        requested=format_pair(*requested),
        applied=format_pair(*applied),
        limit_found=format_value(ceiling),
        cause=cause,
        message=message,
        remedy=remedy,
    )


def _oom_deviation(
    process: str, requested: int, floor: int, lowest_wanted: int, *, unprivileged: bool = False
) -> PolicyDeviation:
    granted = floor
    message = (
        f"cannot set oom_score_adj of {process} to {requested}: that is below {floor}, the"
        " value this process started with, and going lower needs CAP_SYS_RESOURCE, which"
        " this process lacks (the kernel answers EACCES)"
    ) + (_UNPRIVILEGED if unprivileged else "")
    if granted > 0:
        message += (
            f"; at {granted} it stays above containers' default 0, so the OOM killer may"
            f" take the {process} before a container"
        )
    return PolicyDeviation(
        process=process,
        resource="oom_score_adj",
        rlimit_type=None,
        key=f"policy.{process}_oom_score_adj",
        requested=str(requested),
        applied=str(granted),
        limit_found=str(floor),
        cause=Cause.OOM_FLOOR,
        message=message,
        remedy=oom_floor_remedy(process, lowest_wanted, floor, unprivileged),
    )
