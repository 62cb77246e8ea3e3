"""Unit tests: applying a plan to the agent (recorded kernel calls) and dockerd's wrapped argv."""

from __future__ import annotations

import errno
import sys

import pytest

from supervisor.errors import PolicyError
from supervisor.policy.apply import apply_to_agent, wrap_argv
from supervisor.policy.limits import INFINITY, RLIMITS
from supervisor.policy.plan import Cause, Facts, plan
from supervisor.policy.spec import Mode, Policy, RlimitRequest

pytestmark = pytest.mark.unit

PRIVILEGED = Facts(limits={7: (1024, 4096), 4: (0, 0), 6: (10, 10)}, nr_open=1048576,
                   cap_sys_resource=True, oom_score_adj=0, init_oom_score_adj=0)  # fmt: skip
DOCKERD = ["dockerd", "--host=unix:///var/run/docker.sock"]


class RecordingKernel:
    """Records calls; refuses the ones listed in ``refuse`` with the given errno."""

    def __init__(self, refuse: dict[tuple[str, int], int] | None = None) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.refuse = refuse or {}

    def set_rlimit(self, pid: int, number: int, soft: int, hard: int) -> None:
        self.calls.append(("rlimit", pid, number, soft, hard))
        if (code := self.refuse.get(("rlimit", number))) is not None:
            raise OSError(code, "Operation not permitted")

    def write_oom_score_adj(self, pid: int, value: int) -> None:
        self.calls.append(("oom", pid, value))
        if (code := self.refuse.get(("oom", pid))) is not None:
            raise OSError(code, "Permission denied")


def test_agent_and_pid1_get_their_values() -> None:
    """PID 1 first, then the agent itself (pid 0 = self), with the planned values."""
    policy = Policy(agent_rlimits=(RlimitRequest(rlimit=RLIMITS[4], soft=INFINITY,
                                                 hard=INFINITY),))  # fmt: skip
    kernel = RecordingKernel()
    assert apply_to_agent(plan(policy, PRIVILEGED), kernel=kernel, init_pid=1) == []
    assert kernel.calls == [("oom", 1, -999), ("oom", 0, -900),
                            ("rlimit", 0, 4, INFINITY, INFINITY)]  # fmt: skip


def test_refusal_is_reported_in_best_effort() -> None:
    """A refusal the plan did not expect becomes a 'refused' deviation; the rest still runs."""
    kernel = RecordingKernel(refuse={("oom", 1): errno.EACCES})
    refusals = apply_to_agent(plan(Policy(), PRIVILEGED), kernel=kernel)
    assert [r.cause for r in refusals] == [Cause.REFUSED]
    assert "Permission denied (errno 13)" in refusals[0].message
    assert refusals[0].metric_labels() == {"kind": "refused", "resource": "oom_score_adj"}
    assert ("oom", 0, -900) in kernel.calls


def test_refusal_raises_in_strict() -> None:
    """In strict mode a refusal at apply time is a PolicyError (exit 2)."""
    kernel = RecordingKernel(refuse={("oom", 0): errno.EACCES})
    with pytest.raises(PolicyError, match=r"refused oom_score_adj -900 for agent"):
        apply_to_agent(plan(Policy(mode=Mode.STRICT), PRIVILEGED), kernel=kernel)


def test_wrapped_argv_carries_the_plan() -> None:
    """dockerd's argv gets the wrapper in front with one option per setting."""
    result = plan(Policy(), PRIVILEGED)
    argv = wrap_argv(result, DOCKERD, env={"PATH": "/bin"}, python="/py")
    assert argv[:4] == ["/py", "-I", "-S", "-c"]
    assert "def main(" in argv[4]
    options = argv[5 : argv.index("--")]
    assert options == [
        "process=dockerd",
        "mode=best-effort",
        "unset=LC_CTYPE",
        "rlimit=4:unlimited:unlimited",
        "rlimit=6:unlimited:unlimited",
        "rlimit=7:1048576:1048576",
        "oom_score_adj=-500",
    ]
    assert argv[argv.index("--") + 1 :] == DOCKERD
    kept = wrap_argv(result, DOCKERD, env={"LC_CTYPE": "C.UTF-8"})
    assert "unset=LC_CTYPE" not in kept
    assert kept[0] == sys.executable


def test_nothing_to_apply_leaves_argv_alone() -> None:
    """With nothing to set, dockerd is spawned directly, without the wrapper."""
    policy = Policy(init_oom_score_adj=None, agent_oom_score_adj=None,
                    dockerd_oom_score_adj=None, dockerd_rlimits=())  # fmt: skip
    assert wrap_argv(plan(policy, PRIVILEGED), DOCKERD) == DOCKERD
