"""Resource policy: oom_score_adj and rlimits for PID 1, the agent and dockerd.

Owns parsing the [policy] configuration (spec), the pure plan of what the
kernel will grant (plan), reading /proc (probe), applying it to the agent and
wrapping dockerd's command line (apply, with supervisor.spawn_wrapper),
explaining runc's refusals and inspecting a container for ``check`` (explain),
and the gauge figures for metrics (figures). It does not read configuration
files, log, or define metrics: the caller wires those.
"""

from __future__ import annotations

from supervisor.policy.apply import Kernel, KernelOps, apply_to_agent, wrap_argv
from supervisor.policy.explain import RuntimeLimitError, explain_runtime_error, inspect
from supervisor.policy.figures import PolicyFigures, policy_figures
from supervisor.policy.limits import INFINITY, RLIMITS, Rlimit, lookup
from supervisor.policy.plan import (
    Cause,
    Facts,
    Plan,
    PolicyDeviation,
    ProcessPlan,
    RlimitSetting,
    plan,
)
from supervisor.policy.probe import find_children, read_facts
from supervisor.policy.spec import (
    DEFAULT_POLICY,
    Mode,
    Policy,
    RlimitRequest,
    check_policy,
    parse_policy,
    resolve_policy,
)

__all__ = [
    "DEFAULT_POLICY",
    "INFINITY",
    "RLIMITS",
    "Cause",
    "Facts",
    "Kernel",
    "KernelOps",
    "Mode",
    "Plan",
    "Policy",
    "PolicyDeviation",
    "PolicyFigures",
    "ProcessPlan",
    "Rlimit",
    "RlimitRequest",
    "RlimitSetting",
    "RuntimeLimitError",
    "apply_to_agent",
    "check_policy",
    "explain_runtime_error",
    "find_children",
    "inspect",
    "lookup",
    "parse_policy",
    "plan",
    "policy_figures",
    "read_facts",
    "resolve_policy",
    "wrap_argv",
]
