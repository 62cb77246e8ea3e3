"""What one preparation step found and did: the value types every step returns.

Owns the outcome vocabulary (``Outcome``) and ``StepReport``. Does not own any
step, logging or metric definitions: the entry point (``supervisor.prepare``)
collects these, and the agent logs them, exports them and shows them in
/status and ``check``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from supervisor.findings import Finding, Severity


class Outcome(enum.StrEnum):
    """How a step ended; also the ``outcome`` label of ``dind_prepare_step``."""

    DONE = "done"  # changed something, and re-reading the system confirms it
    ALREADY = "already"  # the system was already as dockerd needs it
    NOT_NEEDED = "not_needed"  # does not apply here (cgroup v1, no securityfs dir)
    PLANNED = "planned"  # dry run: would change something
    SKIPPED = "skipped"  # turned off by configuration
    FAILED = "failed"  # tried and failed; a warning unless the step raised


@dataclass(frozen=True, slots=True, kw_only=True)
class StepReport:
    """One step: its name (cgroup, securityfs, tmp, rshared, iptables), outcome, evidence."""

    step: str
    outcome: Outcome
    findings: tuple[Finding, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> Severity:
        return max((f.severity for f in self.findings), default=Severity.OK)

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "outcome": str(self.outcome),
            "severity": str(self.severity),
            "findings": [f.as_dict() for f in self.findings],
            "data": self.data,
        }


def reported(
    step: str,
    outcome: Outcome,
    severity: Severity,
    message: str,
    *,
    remedy: str | None = None,
    evidence: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> StepReport:
    """A step's report that one finding explains (``evidence`` is that finding's data)."""
    finding = Finding(topic=f"prepare.{step}", severity=severity, message=message,
                      remedy=remedy, data=evidence or {})
    return StepReport(step=step, outcome=outcome, findings=(finding,), data=data or {})


def skipped(step: str, reason: str | None = None) -> StepReport:
    """The report of a step that configuration turned off (or did not ask for)."""
    message = reason or f"{step} preparation is turned off by configuration"
    return reported(step, Outcome.SKIPPED, Severity.INFO, message)
