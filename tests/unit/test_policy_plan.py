"""Unit tests: the pure plan (clamping, order, explanations, strict mode) and its invariants."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.errors import PolicyError
from supervisor.findings import Severity
from supervisor.policy.limits import INFINITY, RLIMITS
from supervisor.policy.plan import Cause, Facts, plan, strict_error
from supervisor.policy.spec import Mode, Policy, RlimitRequest, parse_policy

pytestmark = pytest.mark.unit

# This machine: no CAP_SYS_RESOURCE, hard nofile 20000, oom_score_adj 0.
HERE = Facts(
    limits={7: (20000, 20000), 6: (96365, 96365), 4: (0, INFINITY)},
    nr_open=1048576,
    cap_sys_resource=False,
    oom_score_adj=0,
    init_oom_score_adj=0,
)
PRIVILEGED = Facts(
    limits={7: (1024, 4096), 6: (1000, 1000), 4: (0, 0)},
    nr_open=1048576,
    cap_sys_resource=True,
    oom_score_adj=0,
    init_oom_score_adj=0,
)


def test_strict_nofile_names_type_7_the_hard_limit_and_the_remedy() -> None:
    """Strict mode refuses nofile 1048576 over a hard 20000 with the full explanation."""
    policy = parse_policy(
        {"mode": "strict", "dockerd_rlimits": {"nofile": 1048576, "nproc": "inherit",
         "core": "inherit"}, "init_oom_score_adj": "inherit", "agent_oom_score_adj": "inherit",
         "dockerd_oom_score_adj": "inherit"},
        "t",
    )  # fmt: skip
    with pytest.raises(PolicyError) as caught:
        plan(policy, HERE)
    error = caught.value
    text = str(error)
    assert text.startswith(
        "cannot raise RLIMIT_NOFILE (rlimit type 7) of dockerd to 1048576: hard limit is 20000"
        " and this process lacks CAP_SYS_RESOURCE; start this container with --ulimit"
        " nofile=1048576:1048576"
    )
    assert "or lower policy.dockerd_rlimits.nofile to at most 20000" in text
    assert "Kubernetes has no per-pod ulimit" in text
    assert error.exit_code == 2
    assert (error.resource, error.requested, error.limit, error.cause) == (
        "nofile", "1048576:1048576", "20000", "hard_limit")  # fmt: skip


def test_strict_error_lists_every_deviation() -> None:
    """With the defaults here, strict names the first rlimit and mentions the others too."""
    with pytest.raises(PolicyError, match=r"^cannot raise RLIMIT_NPROC .*and 4 more: .*"
                       r"RLIMIT_NOFILE.*oom_score_adj of init.*of agent.*of dockerd"):
        plan(Policy(mode=Mode.STRICT), HERE)
    unchecked = plan(Policy(mode=Mode.STRICT), HERE, check=False)
    assert len(unchecked.deviations) == 5
    assert str(strict_error(unchecked.deviations)).startswith("cannot raise RLIMIT_NPROC")


def test_best_effort_clamps_and_explains() -> None:
    """Best-effort gives dockerd 20000 and 0, with one deviation per shortfall."""
    result = plan(Policy(), HERE)
    assert result.dockerd.expected_limits[7] == (20000, 20000)
    assert result.dockerd.expected_limits[6] == (96365, 96365)
    assert result.dockerd.expected_limits[4] == (INFINITY, INFINITY)
    assert result.dockerd.expected_oom_score_adj == 0
    assert result.agent.expected_oom_score_adj == 0
    assert result.init is not None
    assert result.init.expected_oom_score_adj == 0
    by_key = {d.key: d for d in result.deviations}
    assert set(by_key) == {
        "policy.dockerd_rlimits.nofile",
        "policy.dockerd_rlimits.nproc",
        "policy.init_oom_score_adj",
        "policy.agent_oom_score_adj",
        "policy.dockerd_oom_score_adj",
    }
    nofile = by_key["policy.dockerd_rlimits.nofile"]
    assert (nofile.rlimit_type, nofile.applied, nofile.cause) == (7, "20000:20000",
                                                                   Cause.HARD_LIMIT)
    oom = by_key["policy.dockerd_oom_score_adj"]
    assert "EACCES" in oom.message
    assert (oom.requested, oom.applied, oom.limit_found) == ("-500", "0", "0")
    assert "--oom-score-adj -999" in oom.remedy
    assert nofile.metric_labels() == {"kind": "clamped", "resource": "nofile"}
    finding = nofile.as_finding()
    assert finding.severity is Severity.WARNING
    assert finding.message.endswith("dockerd gets 20000:20000")
    # Only what changes is applied: core 0 -> unlimited; nofile/nproc are already there.
    assert [(s.rlimit.name, s.soft, s.hard) for s in result.dockerd.rlimits] == [
        ("core", INFINITY, INFINITY)
    ]
    assert result.dockerd.oom_score_adj is None  # already 0, inherited


def test_nr_open_caps_nofile_even_with_the_capability() -> None:
    """With CAP_SYS_RESOURCE, nofile is still capped by fs.nr_open, and says so."""
    policy = Policy(dockerd_rlimits=(RlimitRequest(rlimit=RLIMITS[7], soft=2_000_000,
                                                   hard=2_000_000),))  # fmt: skip
    result = plan(policy, PRIVILEGED)
    (deviation,) = result.deviations
    assert deviation.cause is Cause.NR_OPEN
    assert "fs.nr_open is 1048576" in deviation.message
    assert "sysctl" in deviation.remedy
    assert result.dockerd.expected_limits[7] == (1048576, 1048576)


def test_privileged_gets_everything_asked() -> None:
    """With CAP_SYS_RESOURCE the defaults apply unchanged and in order."""
    result = plan(Policy(mode=Mode.STRICT), PRIVILEGED)
    assert result.deviations == ()
    assert result.init is not None
    assert (result.init.oom_score_adj, result.agent.oom_score_adj,
            result.dockerd.oom_score_adj) == (-999, -900, -500)  # fmt: skip
    assert {(s.rlimit.name, s.soft, s.hard) for s in result.dockerd.rlimits} == {
        ("nofile", 1048576, 1048576),
        ("nproc", INFINITY, INFINITY),
        ("core", INFINITY, INFINITY),
    }


def test_outer_negative_value_is_kept_as_the_floor() -> None:
    """Started at -500 (docker run --oom-score-adj -500): the agent keeps -500, dockerd -500."""
    facts = Facts(limits={}, nr_open=1048576, cap_sys_resource=False, oom_score_adj=-500)
    result = plan(Policy(), facts)
    assert result.init is None  # PID 1 is not ours
    assert result.agent.expected_oom_score_adj == -500
    assert result.dockerd.expected_oom_score_adj == -500
    assert result.dockerd.oom_score_adj is None
    assert [d.process for d in result.deviations] == ["agent"]


def test_floor_above_zero_warns_about_the_order() -> None:
    """Started at 300, dockerd cannot stay at or below containers' 0, and the message says so."""
    facts = Facts(limits={}, nr_open=1048576, cap_sys_resource=False, oom_score_adj=300)
    result = plan(Policy(), facts)
    dockerd = next(d for d in result.deviations if d.process == "dockerd")
    assert "above containers' default 0" in dockerd.message


def test_nothing_to_do_leaves_dockerd_empty() -> None:
    """A policy that asks for what dockerd inherits plans no change."""
    policy = Policy(
        init_oom_score_adj=None,
        agent_oom_score_adj=None,
        dockerd_oom_score_adj=0,
        dockerd_rlimits=(RlimitRequest(rlimit=RLIMITS[7], soft=20000, hard=20000),),
    )
    result = plan(policy, HERE)
    assert result.dockerd.empty
    assert result.agent.empty
    assert result.deviations == ()


def test_lowering_is_always_possible() -> None:
    """Lowering nofile to 4096 needs no capability: no deviation, one setting."""
    policy = Policy(dockerd_rlimits=(RlimitRequest(rlimit=RLIMITS[7], soft=4096, hard=4096),),
                    init_oom_score_adj=None, agent_oom_score_adj=None,
                    dockerd_oom_score_adj=None)  # fmt: skip
    result = plan(policy, HERE)
    assert result.deviations == ()
    assert [(s.rlimit.number, s.soft, s.hard) for s in result.dockerd.rlimits] == [
        (7, 4096, 4096)
    ]


# --- invariants -------------------------------------------------------------

values = st.one_of(st.integers(0, 2_000_000), st.just(INFINITY))
ooms = st.one_of(st.none(), st.integers(-1000, 1000))


@st.composite
def requests(draw: st.DrawFn) -> tuple[RlimitRequest, ...]:
    chosen = draw(st.lists(st.sampled_from(RLIMITS), unique=True, max_size=6))
    result = []
    for rlimit in chosen:
        hard = draw(values)
        if not rlimit.may_be_unlimited and hard >= INFINITY:
            hard = 1048576
        soft = draw(st.one_of(st.just(hard), st.integers(0, 2_000_000)).filter(
            lambda s, h=hard: s <= h))  # fmt: skip
        result.append(RlimitRequest(rlimit=rlimit, soft=soft, hard=hard))
    return tuple(result)


@st.composite
def facts(draw: st.DrawFn) -> Facts:
    limits = {}
    for rlimit in RLIMITS:
        hard = draw(values)
        limits[rlimit.number] = (draw(st.integers(0, 2_000_000).map(lambda s, h=hard: min(s, h))),
                                 hard)  # fmt: skip
    return Facts(
        limits=limits,
        nr_open=draw(st.integers(1024, 2_000_000)),
        cap_sys_resource=draw(st.booleans()),
        oom_score_adj=draw(st.integers(-1000, 1000)),
        init_oom_score_adj=draw(st.one_of(st.none(), st.integers(-1000, 1000))),
    )


@st.composite
def ordered_ooms(draw: st.DrawFn) -> tuple[int | None, int | None, int | None]:
    chosen = sorted(draw(st.lists(st.integers(-1000, 1000), min_size=3, max_size=3)))
    mask = draw(st.lists(st.booleans(), min_size=3, max_size=3))
    init, agent, dockerd = (v if keep else None for v, keep in zip(chosen, mask, strict=True))
    return init, agent, dockerd


@settings(max_examples=120, deadline=None)
@given(facts(), requests(), ordered_ooms())
def test_plan_invariants(f: Facts, dockerd_rlimits: tuple[RlimitRequest, ...],
                         ooms: tuple[int | None, int | None, int | None]) -> None:  # fmt: skip
    """Never above the hard limit without CAP_SYS_RESOURCE, never above nr_open, soft <= hard,
    never below the oom floor without the capability, order init <= agent <= dockerd kept,
    and every shortfall explained."""
    policy = Policy(init_oom_score_adj=ooms[0], agent_oom_score_adj=ooms[1],
                    dockerd_oom_score_adj=ooms[2], dockerd_rlimits=dockerd_rlimits)  # fmt: skip
    result = plan(policy, f)
    explained = {(d.process, d.resource) for d in result.deviations}
    for request in dockerd_rlimits:
        number = request.rlimit.number
        soft, hard = result.dockerd.expected_limits[number]
        assert soft <= hard
        if not f.cap_sys_resource:
            assert hard <= f.limits[number][1]
        if number == 7:
            assert hard <= f.nr_open
        if (soft, hard) != (request.soft, request.hard):
            assert ("dockerd", request.rlimit.name) in explained
        else:
            assert ("dockerd", request.rlimit.name) not in explained
    got = {
        "agent": result.agent.expected_oom_score_adj,
        "dockerd": result.dockerd.expected_oom_score_adj,
    }
    if result.init is not None:
        got["init"] = result.init.expected_oom_score_adj
    for process, wanted in zip(("init", "agent", "dockerd"), ooms, strict=True):
        value = got.get(process)
        if wanted is None or value is None:
            continue
        if not f.cap_sys_resource:
            assert value >= f.oom_score_adj
        if value != wanted:
            assert (process, "oom_score_adj") in explained
    managed = [got[p] for p, w in zip(("init", "agent", "dockerd"), ooms, strict=True)
               if w is not None and p in got]  # fmt: skip
    assert managed == sorted(managed)  # type: ignore[type-var]
    # Strict mode raises exactly when best-effort had something to explain.
    strict = Policy(mode=Mode.STRICT, init_oom_score_adj=ooms[0], agent_oom_score_adj=ooms[1],
                    dockerd_oom_score_adj=ooms[2], dockerd_rlimits=dockerd_rlimits)  # fmt: skip
    if result.deviations:
        with pytest.raises(PolicyError):
            plan(strict, f)
    else:
        plan(strict, f)
