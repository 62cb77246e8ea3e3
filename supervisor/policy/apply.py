"""Applying a Plan: to the agent and PID 1 directly, to dockerd through an exec wrapper.

Owns the side effects (setrlimit, writing oom_score_adj) behind a small
injectable KernelOps object, and building dockerd's wrapped command line. The
values come from plan.py; nothing here decides them.

Why a wrapper: dockerd is spawned with anyio.open_process (no preexec_fn), and
the policy must be in place before dockerd's first instruction so that
containerd, the shims and every container inherit it; setting it after the
spawn (prlimit on a pid) would race with dockerd starting containerd.
The wrapper is ``python -I -S -c <supervisor/spawn_wrapper.py>``. Measured here
(median of 41 spawns wrapping /bin/true, machine under light load): /bin/true
1 ms, wrapped 18-20 ms (a bare ``python -I -S -c pass`` is 15-18 ms of that;
importing ``signal`` cost 9 ms more until the wrapper switched to ``_signal``),
util-linux ``prlimit ... choom -n ... --`` 3.5 ms. We still pick the Python
wrapper: prlimit/choom are not in the docker:dind (Alpine/busybox) image,
they stop without exec'ing on a refusal (best-effort must go on), and they
print no explanation; +17 ms is about 6% of a bare dockerd start (0.26 s) and
is paid once per dockerd start, not per container.
"""

from __future__ import annotations

import functools
import importlib.resources
import os
import resource
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from supervisor.policy.limits import INFINITY, format_value
from supervisor.policy.plan import Cause, Plan, PolicyDeviation, ProcessPlan, RlimitSetting
from supervisor.policy.spec import Mode

# Python's C-locale coercion (PEP 538) may add these to the wrapper's
# environment; the wrapper removes the ones the agent did not pass.
_COERCED_VARIABLES = ("LC_CTYPE",)


class KernelOps(Protocol):
    """The two system calls the policy makes on a running process."""

    def set_rlimit(self, pid: int, number: int, soft: int, hard: int) -> None: ...

    def write_oom_score_adj(self, pid: int, value: int) -> None: ...


class Kernel:
    """The real thing: prlimit(2) and /proc/<pid>/oom_score_adj (0 = this process)."""

    def __init__(self, proc_root: str | Path = "/proc") -> None:
        self.proc_root = Path(proc_root)

    def set_rlimit(self, pid: int, number: int, soft: int, hard: int) -> None:
        def c(value: int) -> int:
            return resource.RLIM_INFINITY if value >= INFINITY else value

        try:
            resource.prlimit(pid, number, (c(soft), c(hard)))
        except ValueError:  # CPython's spelling of EINVAL here
            raise OSError(22, "Invalid argument") from None

    def write_oom_score_adj(self, pid: int, value: int) -> None:
        target = "self" if pid == 0 else str(pid)
        (self.proc_root / target / "oom_score_adj").write_text(str(value))


def apply_to_agent(
    plan: Plan, *, kernel: KernelOps | None = None, init_pid: int = 1
) -> list[PolicyDeviation]:
    """Set PID 1's oom_score_adj (when planned) and the agent's own values, now.

    Returns what the kernel refused although the plan allowed it (best-effort);
    in strict mode the first refusal raises PolicyError.
    """
    ops = kernel if kernel is not None else Kernel()
    refusals: list[PolicyDeviation] = []
    targets = [(plan.agent, 0)]
    if plan.init is not None:
        targets.insert(0, (plan.init, init_pid))
    for process_plan, pid in targets:
        refusals.extend(_apply_one(process_plan, pid, ops))
    if refusals and plan.mode is Mode.STRICT:
        raise refusals[0].as_error()
    return refusals


def _apply_one(process_plan: ProcessPlan, pid: int, ops: KernelOps) -> list[PolicyDeviation]:
    refusals: list[PolicyDeviation] = []
    if process_plan.oom_score_adj is not None:
        try:
            ops.write_oom_score_adj(pid, process_plan.oom_score_adj)
        except OSError as error:
            refusals.append(_refusal(process_plan.process, None, process_plan, error))
    for setting in process_plan.rlimits:
        try:
            ops.set_rlimit(pid, setting.rlimit.number, setting.soft, setting.hard)
        except OSError as error:
            refusals.append(_refusal(process_plan.process, setting, process_plan, error))
    return refusals


def _refusal(
    process: str, setting: RlimitSetting | None, process_plan: ProcessPlan, error: OSError
) -> PolicyDeviation:
    reason = f"{error.strerror or error} (errno {error.errno})"
    if setting is None:
        value = str(process_plan.oom_score_adj)
        return PolicyDeviation(
            process=process,
            resource="oom_score_adj",
            rlimit_type=None,
            key=f"policy.{process}_oom_score_adj",
            requested=value,
            applied="unchanged",
            limit_found="unknown",
            cause=Cause.REFUSED,
            message=f"the kernel refused oom_score_adj {value} for {process}: {reason}",
            remedy=f"set policy.{process}_oom_score_adj to 'inherit' or a higher value,"
            " and report this: the plan expected the kernel to allow it",
        )
    rlimit = setting.rlimit
    wanted = f"{format_value(setting.soft)}:{format_value(setting.hard)}"
    return PolicyDeviation(
        process=process,
        resource=rlimit.name,
        rlimit_type=rlimit.number,
        key=f"policy.{process}_rlimits.{rlimit.name}",
        requested=wanted,
        applied="unchanged",
        limit_found="unknown",
        cause=Cause.REFUSED,
        message=f"the kernel refused {rlimit.describe()} {wanted} for {process}: {reason}",
        remedy=f"lower policy.{process}_rlimits.{rlimit.name}, and report this: the plan"
        " expected the kernel to allow it",
    )


@functools.cache
def _wrapper_code() -> str:
    return importlib.resources.files("supervisor").joinpath("spawn_wrapper.py").read_text()


def wrap_argv(
    plan: Plan | None,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    python: str = sys.executable,
    listen: Sequence[int] = (),
) -> list[str]:
    """dockerd's command line with the wrapper in front; ``argv`` unchanged when nothing to set.

    ``env`` is the environment the process will be given (default: this
    process's); it tells the wrapper which locale variables to take back out.
    ``listen`` are held sockets to hand over (socket activation).
    """
    if (plan is None or plan.dockerd.empty) and not listen:
        return list(argv)
    environment = env if env is not None else os.environ
    options = [f"listen={fd}" for fd in listen]
    if plan is None or plan.dockerd.empty:
        return [python, "-I", "-S", "-c", _wrapper_code(), *options, "--", *argv]
    dockerd = plan.dockerd
    options += [f"process={dockerd.process}", f"mode={plan.mode}"]
    options += [f"unset={name}" for name in _COERCED_VARIABLES if name not in environment]
    for setting in dockerd.rlimits:
        soft, hard = format_value(setting.soft), format_value(setting.hard)
        options.append(f"rlimit={setting.rlimit.number}:{soft}:{hard}")
    if dockerd.oom_score_adj is not None:
        options.append(f"oom_score_adj={dockerd.oom_score_adj}")
    return [python, "-I", "-S", "-c", _wrapper_code(), *options, "--", *argv]
