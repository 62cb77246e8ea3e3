"""Explanations: runc's policy errors in dockerd's log, and what a container was given.

Owns recognising "error setting rlimit type N" (and runc's oom_score_adj
failures, and our own wrapper's refusals) in one log line and turning it into a
decoded RuntimeLimitError; and ``inspect`` for ``dind-supervisor check``. Reads
/proc through probe.py; counts and logs nothing itself (the caller does).

Messages as they really appear (runc 1.1.5, dockerd 20.10, seen on this machine):
  ...error during container init: error setting rlimits for ready process:
     error setting rlimit type 7: operation not permitted: unknown
  ...runc create failed: unable to start container process: can't get final
     child's PID from pipe: EOF: unknown   (a refused --oom-score-adj; runc's own
     "nsexec[N]: failed to update /proc/self/oom_score_adj: Permission denied"
     stays in runc's log and does not reach dockerd's)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.findings import Finding, Severity
from supervisor.policy import probe
from supervisor.policy.limits import (
    BY_NAME,
    BY_NUMBER,
    INFINITY,
    NOFILE,
    RLIMITS,
    Rlimit,
    format_pair,
    format_value,
)
from supervisor.policy.placement import Placement
from supervisor.policy.plan import (
    docker_ulimit,
    hard_limit_remedy,
    nr_open_remedy,
    outer_remedy,
)
from supervisor.spawn_wrapper import PREFIX as WRAPPER_PREFIX

_RLIMIT_ERROR = re.compile(r"error setting rlimit type (\d+): ([a-z ]+?)(?=[:\"\\]|$)", re.I)
_OOM_WRITE = re.compile(
    r"(?:failed to update|open|write) /proc/(?:self|\d+)/oom_score_adj: permission denied", re.I
)
_OOM_PROBABLE = re.compile(r"can't get final child's PID from pipe: EOF")
_WRAPPER_REFUSED = re.compile(
    re.escape(WRAPPER_PREFIX) + r"refused: cannot set (?:RLIMIT_\w+ \(rlimit type (?P<type>\d+)\)"
    r"|oom_score_adj) to (?P<value>\S+) of (?P<process>\S+): (?P<reason>.+?) \(errno"
)
_CONTAINER = re.compile(r"/containers/([0-9a-f]{12,64})/start")


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeLimitError:
    """A policy error found in dockerd's output, decoded."""

    kind: str  # "rlimit", "oom_score_adj", or "refused" (our wrapper, at dockerd's start)
    resource: str  # docker's rlimit name, or "oom_score_adj"
    rlimit_type: int | None
    error: str  # the kernel's answer as printed: "operation not permitted", ...
    requested: str | None  # runc does not print it; our wrapper does
    limit_found: str | None  # dockerd's soft:hard (or oom_score_adj) when readable
    container_id: str | None
    certain: bool  # False when inferred from runc's generic "EOF" failure
    message: str
    remedy: str

    @property
    def refused_by_wrapper(self) -> bool:
        """Our exec wrapper's refusal (dind_policy_errors_total), not runc's error setting a
        container's rlimit (dind_rlimit_errors_total)."""
        return self.kind == "refused"

    def as_event(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "resource": self.resource,
            "rlimit_type": self.rlimit_type,
            "error": self.error,
            "requested": self.requested,
            "limit_found": self.limit_found,
            "container_id": self.container_id,
            "certain": self.certain,
            "message": self.message,
            "remedy": self.remedy,
        }


def explain_runtime_error(
    line: str, *, proc_root: str | Path = "/proc", dockerd_pid: int | None = None,
    requested: str | None = None, placement: Placement | None = None,
) -> RuntimeLimitError | None:
    """Decode one of dockerd's log lines, or None when it is not a policy error.

    runc does not print the value a container asked for: the caller may know it
    (``requested``, ``SOFT:HARD`` from the container's HostConfig) and where the
    agent runs (``placement``), which the remedy then speaks of.
    """
    container = _CONTAINER.search(line)
    container_id = container.group(1) if container else None
    if match := _WRAPPER_REFUSED.search(line):
        return _from_wrapper(match)
    if match := _RLIMIT_ERROR.search(line):
        return _rlimit(int(match.group(1)), match.group(2).lower(), container_id,
                       proc_root, dockerd_pid, requested=requested,
                       placement=placement)  # fmt: skip
    if _OOM_WRITE.search(line):
        return _oom(container_id, proc_root, dockerd_pid, certain=True)
    if _OOM_PROBABLE.search(line) and not _has_cap_sys_resource(proc_root, dockerd_pid):
        return _oom(container_id, proc_root, dockerd_pid, certain=False)
    return None


def _read(proc_root: str | Path, pid: int | None) -> tuple[dict[int, tuple[int, int]], int | None]:
    if pid is None:
        return {}, None
    try:
        return probe.read_limits(proc_root, pid), probe.read_oom_score_adj(proc_root, pid)
    except (OSError, ValueError):
        return {}, None


def _has_cap_sys_resource(proc_root: str | Path, pid: int | None) -> bool:
    try:
        who: int | str = "self" if pid is None else pid
        caps = probe.read_capabilities(proc_root, who)
    except OSError:
        return False
    return caps.effective_has(probe.CAP_SYS_RESOURCE) and probe.in_initial_user_namespace(
        proc_root, who
    )


def _rlimit(
    number: int, error: str, container_id: str | None, proc_root: str | Path, pid: int | None,
    *, requested: str | None = None, placement: Placement | None = None,
) -> RuntimeLimitError:
    rlimit = BY_NUMBER.get(number)
    name = rlimit.name if rlimit else f"type{number}"
    what = rlimit.describe() if rlimit else f"rlimit type {number} (unknown to this agent)"
    limits, _ = _read(proc_root, pid)
    found = limits.get(number)
    limit_text = format_pair(*found) if found else None
    if error.startswith("invalid argument"):
        message = f"runc could not set {what} for a container: its soft limit is above its hard"
        remedy = "ask for SOFT:HARD with SOFT <= HARD (compose files are not checked for this)"
    else:
        hard = found[1] if found else None
        asked = f" ({requested})" if requested else ""
        wanted = _hard_of(requested)
        nr_open = probe.read_nr_open(proc_root)
        capable = _has_cap_sys_resource(proc_root, pid)
        # No capability lifts this one: the kernel caps open files at fs.nr_open, so even a
        # dockerd with CAP_SYS_RESOURCE gets EPERM (`--ulimit nofile=-1`). When the request
        # is unknown (a `docker run --rm` container is gone before it can be inspected), a
        # capable dockerd still leaves fs.nr_open as the only refusal setrlimit has.
        if rlimit is NOFILE and (wanted > nr_open if wanted is not None else capable):
            because = "" if wanted is not None else (
                " (dockerd may raise every other limit, so it was)")
            message = (
                f"runc could not set {what} for a container: it asked for a hard limit{asked}"
                f" above fs.nr_open ({nr_open}){because}, the kernel's ceiling on open files,"
                " which no capability lifts"
            )
            remedy = nr_open_remedy(None, nr_open)
        else:
            limit = f"dockerd's {format_value(hard)}" if hard is not None else "dockerd's"
            message = (
                f"runc could not set {what} for a container: it asked for a hard limit{asked}"
                f" above {limit}"
            )
            if rlimit is NOFILE and hard is not None and hard >= nr_open:
                remedy = nr_open_remedy(None, hard)
            elif rlimit is not None and hard is not None:
                most = _most(rlimit, nr_open)
                wanted = wanted or most
                remedy = (
                    f"run the container with {docker_ulimit(rlimit, hard, hard)} or less, or"
                    f" let dockerd have more: {outer_remedy(rlimit, wanted, wanted, placement)}"
                )
            else:
                remedy = "ask for less, or raise the limit in the outer runtime (--ulimit)"
            if not capable:
                message += ", and nothing in this container has CAP_SYS_RESOURCE to raise it"
    return RuntimeLimitError(
        kind="rlimit", resource=name, rlimit_type=number, error=error, requested=requested,
        limit_found=limit_text, container_id=container_id, certain=True, message=message,
        remedy=remedy,
    )  # fmt: skip


def _oom(
    container_id: str | None, proc_root: str | Path, pid: int | None, *, certain: bool
) -> RuntimeLimitError:
    _, floor = _read(proc_root, pid)
    floor_text = str(floor) if floor is not None else "dockerd's value"
    lead = "runc could not set" if certain else "most likely, runc could not set"
    message = (
        f"{lead} a container's oom_score_adj: it asked for less than {floor_text}, and going"
        " lower needs CAP_SYS_RESOURCE, which this container lacks"
    )
    remedy = (
        f"run the container with --oom-score-adj {floor_text} or more (or without"
        " --oom-score-adj); to allow lower values, start this DinD container with a lower"
        " --oom-score-adj or with CAP_SYS_RESOURCE"
    )
    return RuntimeLimitError(
        kind="oom_score_adj", resource="oom_score_adj", rlimit_type=None,
        error="permission denied" if certain else "can't get final child's PID from pipe: EOF",
        requested=None, limit_found=None if floor is None else str(floor),
        container_id=container_id, certain=certain, message=message, remedy=remedy,
    )  # fmt: skip


def _from_wrapper(match: re.Match[str]) -> RuntimeLimitError:
    number = int(match["type"]) if match["type"] else None
    rlimit = BY_NUMBER.get(number) if number is not None else None
    resource = rlimit.name if rlimit else "oom_score_adj"
    what = rlimit.describe() if rlimit else "oom_score_adj"
    process = match["process"]
    key = f"policy.{process}_rlimits.{resource}" if rlimit else f"policy.{process}_oom_score_adj"
    return RuntimeLimitError(
        kind="refused", resource=resource, rlimit_type=number, error=match["reason"],
        requested=match["value"], limit_found=None, container_id=None, certain=True,
        message=f"the kernel refused {what} {match['value']} for {process} at its start",
        remedy=f"lower {key}; the plan expected the kernel to allow it, so the outer"
        " limits changed since the agent looked (report it if they did not)",
    )  # fmt: skip


def _hard_of(requested: str | None) -> int | None:
    """The hard part of ``SOFT:HARD`` as docker writes it (-1: unlimited)."""
    if not requested:
        return None
    hard = requested.rpartition(":")[2]
    try:
        value = int(hard)
    except ValueError:
        return None
    return INFINITY if value < 0 else value


def _most(rlimit: Rlimit, nr_open: int) -> int:
    """The highest value worth asking the outer runtime for."""
    return nr_open if rlimit is NOFILE else INFINITY


# Limits whose finite hard value users commonly ask containers to exceed.
_NOTABLE = ("nofile", "nproc", "memlock", "core", "stack")


def inspect(proc_root: str | Path = "/proc", pid: int | str = "self") -> list[Finding]:
    """What this container received and what that means for the containers it will run."""
    limits = probe.read_limits(proc_root, pid)
    oom = probe.read_oom_score_adj(proc_root, pid)
    nr_open = probe.read_nr_open(proc_root)
    caps = probe.read_capabilities(proc_root, pid)
    can_raise = caps.effective_has(probe.CAP_SYS_RESOURCE)
    received = {r.name: format_pair(*limits[r.number]) for r in RLIMITS if r.number in limits}
    findings = [
        Finding(
            topic="policy",
            severity=Severity.INFO,
            message="limits received: "
            + ", ".join(f"{BY_NAME[n].name} {v}" for n, v in received.items())
            + f"; oom_score_adj {oom}; fs.nr_open {nr_open}",
            data={"rlimits": received, "oom_score_adj": oom, "nr_open": nr_open},
        )
    ]
    if can_raise:
        findings.append(Finding(
            topic="policy", severity=Severity.OK,
            message="CAP_SYS_RESOURCE is effective: hard limits can be raised (nofile up to"
            f" fs.nr_open {nr_open}) and oom_score_adj lowered",
        ))  # fmt: skip
        return findings
    in_bounding = caps.bounding_has(probe.CAP_SYS_RESOURCE)
    how = (
        "start this container with --cap-add SYS_RESOURCE to get it"
        if in_bounding
        else "not even in the bounding set, so nothing started here can get it"
    )
    findings.append(Finding(
        topic="policy", severity=Severity.WARNING,
        message=f"CAP_SYS_RESOURCE is missing ({how}): no process here can raise a hard limit"
        f" or lower oom_score_adj below {oom}",
        remedy="raise what the outer runtime gives this container (docker run --ulimit,"
        " --oom-score-adj), or lower the requests in [policy]",
        data={"cap_sys_resource": False, "in_bounding_set": in_bounding},
    ))  # fmt: skip
    findings.extend(_container_consequences(limits, oom, nr_open))
    return findings


def _container_consequences(
    limits: dict[int, tuple[int, int]], oom: int, nr_open: int
) -> list[Finding]:
    findings = []
    for name in _NOTABLE:
        rlimit = BY_NAME[name]
        if rlimit.number not in limits or limits[rlimit.number][1] >= INFINITY:
            continue
        hard = limits[rlimit.number][1]
        findings.append(Finding(
            topic="policy", severity=Severity.WARNING,
            message=f"containers asking --ulimit {name} above {hard} will fail with 'error"
            f" setting rlimit type {rlimit.number}: operation not permitted'"
            + (f" (fs.nr_open allows up to {nr_open})" if rlimit is NOFILE else ""),
            remedy=hard_limit_remedy(
                rlimit, _most(rlimit, nr_open), _most(rlimit, nr_open), None, hard
            ),
            data={"resource": name, "rlimit_type": rlimit.number, "hard": hard},
        ))  # fmt: skip
    findings.append(Finding(
        topic="policy", severity=Severity.WARNING if oom >= 0 else Severity.INFO,
        message=f"containers asking --oom-score-adj below {oom} will fail to start (runc:"
        " 'can't get final child's PID from pipe: EOF')"
        + ("; dockerd and the agent cannot go below containers' 0 either, so the OOM killer"
           " chooses between them by memory use alone" if oom == 0 else "")
        + ("; docker's default 0 is below it, so plain `docker run` may fail the same way"
           if oom > 0 else ""),
        remedy="start this container with --oom-score-adj -999 (or the lowest value you"
        " need); on Kubernetes the Guaranteed QoS class gives -997",
        data={"oom_score_adj": oom},
    ))  # fmt: skip
    return findings
