"""Resource policy: oom_score_adj and rlimits for PID 1, the agent and dockerd.

Owns parsing the [policy] configuration (spec), the pure plan of what the
kernel will grant (plan), reading /proc (probe), applying it to the agent and
wrapping dockerd's command line (apply, with supervisor.spawn_wrapper),
explaining runc's refusals and inspecting a container for ``check`` (explain),
and the gauge figures for metrics (figures). It does not read configuration
files, log, or define metrics: the caller wires those.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from supervisor.lazy import lazy_exports

if TYPE_CHECKING:
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

# Names re-exported from the submodules, imported on first use (PEP 562): the
# launch stage imports one submodule and must not pay for all of them.
_WHERE = {
    "Cause": "supervisor.policy.plan",
    "DEFAULT_POLICY": "supervisor.policy.spec",
    "Facts": "supervisor.policy.plan",
    "INFINITY": "supervisor.policy.limits",
    "Kernel": "supervisor.policy.apply",
    "KernelOps": "supervisor.policy.apply",
    "Mode": "supervisor.policy.spec",
    "Plan": "supervisor.policy.plan",
    "Policy": "supervisor.policy.spec",
    "PolicyDeviation": "supervisor.policy.plan",
    "PolicyFigures": "supervisor.policy.figures",
    "ProcessPlan": "supervisor.policy.plan",
    "RLIMITS": "supervisor.policy.limits",
    "Rlimit": "supervisor.policy.limits",
    "RlimitRequest": "supervisor.policy.spec",
    "RlimitSetting": "supervisor.policy.plan",
    "RuntimeLimitError": "supervisor.policy.explain",
    "apply_to_agent": "supervisor.policy.apply",
    "check_policy": "supervisor.policy.spec",
    "explain_runtime_error": "supervisor.policy.explain",
    "find_children": "supervisor.policy.probe",
    "inspect": "supervisor.policy.explain",
    "lookup": "supervisor.policy.limits",
    "parse_policy": "supervisor.policy.spec",
    "policy_figures": "supervisor.policy.figures",
    "read_facts": "supervisor.policy.probe",
    "resolve_policy": "supervisor.policy.spec",
    "wrap_argv": "supervisor.policy.apply",
}


__getattr__ = lazy_exports(__name__, _WHERE)


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
    "policy_figures",
    "read_facts",
    "resolve_policy",
    "wrap_argv",
]
