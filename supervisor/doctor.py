"""``dind-supervisor check``: the preflight doctor.

Gathers the findings of every preflight area (resource policy, data root,
container preparation, TLS) without changing anything, prints each with its
severity and remedy, and exits 1 when one of them would break dockerd.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable

from supervisor import policy
from supervisor.checks import check_data_root, check_preparation, check_tls_files
from supervisor.config import Config
from supervisor.findings import Finding, Severity
from supervisor.policy.plan import plan
from supervisor.policy.spec import policy_from_config

Check = Callable[[Config], list[Finding]]


def check_dockerd_binary(config: Config) -> list[Finding]:
    path = shutil.which(config.dockerd.binary)
    if path is None:
        return [
            Finding(
                topic="dockerd",
                severity=Severity.ERROR,
                message=f"dockerd executable {config.dockerd.binary!r} not found on PATH",
                remedy="install dockerd (Debian: apt-get install docker.io) or set"
                " --dockerd-binary to its path",
            )
        ]
    return [
        Finding(
            topic="dockerd",
            severity=Severity.OK,
            message=f"dockerd executable: {path}",
            data={"path": path},
        )
    ]


def check_resource_policy(config: Config, proc_root: str = "/proc") -> list[Finding]:
    """What this container received (policy.inspect), then whether [policy] fits in it.

    A deviation is an ERROR in strict mode (``run`` would exit 2), a WARNING in
    best-effort (``run`` clamps and goes on).
    """
    findings = policy.inspect(proc_root)
    wanted = policy_from_config(config)
    planned = plan(wanted, policy.read_facts(proc_root), check=False)
    strict = wanted.mode is policy.Mode.STRICT
    for deviation in planned.deviations:
        outcome = "run refuses to start (strict mode)" if strict else (
            f"run applies {deviation.applied} instead (best-effort)"
        )
        findings.append(
            Finding(
                topic="policy",
                severity=Severity.ERROR if strict else Severity.WARNING,
                message=f"{deviation.message}; {outcome}",
                remedy=deviation.remedy,
                data=deviation.as_event(),
            )
        )
    if not planned.deviations:
        findings.append(
            Finding(
                topic="policy",
                severity=Severity.OK,
                message=f"the configured policy ({wanted.mode}) can be applied as asked",
            )
        )
    return findings


def check_rootless(config: Config) -> list[Finding]:
    """Rootless mode only: its prerequisites, nested cgroup limits, socket activation."""
    if not config.rootless_on:
        return []
    from supervisor.rootless import cgroups, prereqs

    return [
        *prereqs.findings(config),
        cgroups.detect().finding(),
        Finding(
            topic="rootless", severity=Severity.INFO,
            message="socket activation is off in rootless mode: rootlesskit does not pass the"
            " agent's held sockets on to dockerd, so clients are refused while dockerd restarts",
        ),
    ]


CHECKS: list[Check] = [
    check_rootless,
    check_dockerd_binary,
    check_resource_policy,
    check_data_root,
    check_preparation,
    check_tls_files,
]


def gather(config: Config, checks: list[Check] | None = None) -> list[Finding]:
    findings: list[Finding] = []
    for check in checks or CHECKS:
        findings.extend(check(config))
    return findings


def render(findings: list[Finding]) -> str:
    lines = []
    for finding in findings:
        lines.append(f"[{finding.severity!s:7}] {finding.topic}: {finding.message}")
        if finding.remedy and finding.severity >= Severity.WARNING:
            lines.append(f"          remedy: {finding.remedy}")
    return "\n".join(lines)


def run_check(config: Config, *, as_json: bool) -> int:
    findings = gather(config)
    if as_json:
        print(json.dumps([f.as_dict() for f in findings], indent=2, default=str))
    else:
        print(render(findings))
    worst = max((f.severity for f in findings), default=Severity.OK)
    return 1 if worst >= Severity.ERROR else 0
