"""Unit tests: the RLIMIT table, limit values, and parsing the [policy] configuration."""

from __future__ import annotations

import resource

import pytest

from supervisor import spawn_wrapper
from supervisor.errors import ConfigError
from supervisor.policy.limits import (
    INFINITY,
    RLIMITS,
    format_pair,
    lookup,
    parse_pair,
    parse_proc_limits,
)
from supervisor.policy.spec import DEFAULT_POLICY, Mode, parse_policy

pytestmark = pytest.mark.unit

SRC = "test.toml"


def test_table_numbers_match_the_kernel() -> None:
    """Every RLIMIT's type number is the one the kernel (and runc's message) uses."""
    assert [r.number for r in RLIMITS] == list(range(16))
    for rlimit in RLIMITS:
        constant = getattr(resource, rlimit.constant, None)
        if constant is not None:  # Python has no RLIMIT_LOCKS
            assert constant == rlimit.number, rlimit.name
    assert lookup(7) is lookup("nofile") is lookup("RLIMIT_NOFILE") is lookup("7")
    assert lookup(7).describe() == "RLIMIT_NOFILE (rlimit type 7)"
    assert lookup("nosuch") is None


def test_wrapper_names_match_the_table() -> None:
    """The self-contained wrapper's names agree with the table it cannot import."""
    assert tuple(r.constant for r in RLIMITS) == spawn_wrapper.RLIMIT_CONSTANTS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1024", (1024, 1024)),
        (1024, (1024, 1024)),
        ("1024:4096", (1024, 4096)),
        ("unlimited", (INFINITY, INFINITY)),
        ("-1", (INFINITY, INFINITY)),
        (-1, (INFINITY, INFINITY)),
        ("1024:unlimited", (1024, INFINITY)),
        ("1024:-1", (1024, INFINITY)),
        (" infinity ", (INFINITY, INFINITY)),
    ],
)
def test_values_as_docker_writes_them(text: str | int, expected: tuple[int, int]) -> None:
    """Single values mean soft=hard; -1 and 'unlimited' mean unlimited, as in docker."""
    assert parse_pair(text) == expected


@pytest.mark.parametrize("text", ["lots", "-2", "1.5", "", "10k", True])
def test_garbage_values_are_refused(text: str | int) -> None:
    """Anything but a number, -1 or 'unlimited' is a ValueError."""
    with pytest.raises(ValueError, match=r"."):
        parse_pair(text)


def test_proc_limits_are_parsed() -> None:
    """/proc/<pid>/limits rows become {type: (soft, hard)}, unlimited as INFINITY."""
    text = (
        "Limit                     Soft Limit           Hard Limit           Units     \n"
        "Max cpu time              unlimited            unlimited            seconds   \n"
        "Max core file size        0                    unlimited            bytes     \n"
        "Max open files            20000                20000                files     \n"
        "Max nice priority         0                    0                    \n"
        "Max future thing          1                    2                    things    \n"
    )
    assert parse_proc_limits(text) == {
        0: (INFINITY, INFINITY),
        4: (0, INFINITY),
        7: (20000, 20000),
        13: (0, 0),
    }
    assert format_pair(0, INFINITY) == "0:unlimited"


def test_defaults_follow_docker_service() -> None:
    """Defaults: best-effort, dockerd -500 with nofile 1048576 and nproc/core unlimited."""
    policy = parse_policy({}, SRC)
    assert policy == DEFAULT_POLICY
    assert policy.mode is Mode.BEST_EFFORT
    assert policy.dockerd_oom_score_adj == -500
    assert policy.init_oom_score_adj <= policy.agent_oom_score_adj < -500  # type: ignore[operator]
    assert {str(r) for r in policy.dockerd_rlimits} == {
        "nofile=1048576:1048576",
        "nproc=unlimited:unlimited",
        "core=unlimited:unlimited",
    }


def test_the_example_table_parses() -> None:
    """The issue's example [policy] table gives what it says."""
    policy = parse_policy(
        {
            "mode": "strict",
            "agent_oom_score_adj": -900,
            "dockerd_oom_score_adj": -500,
            "dockerd_rlimits": {"nofile": "1048576", "nproc": "unlimited", "memlock": "64:128"},
        },
        SRC,
    )
    assert policy.mode is Mode.STRICT
    assert {str(r) for r in policy.dockerd_rlimits} == {
        "nofile=1048576:1048576",
        "nproc=unlimited:unlimited",
        "core=unlimited:unlimited",  # merged over the defaults
        "memlock=64:128",
    }


def policy_defaults() -> tuple[object, ...]:
    return DEFAULT_POLICY.dockerd_rlimits


def test_environment_strings_parse_and_merge() -> None:
    """The env form 'nofile=N:N,nproc=unlimited' parses; 'inherit' drops a default."""
    policy = parse_policy(
        {
            "dockerd_rlimits": "nofile=4096:8192, nproc=unlimited,core=inherit",
            "dockerd_oom_score_adj": "-400",
            "mode": "best_effort",
        },
        "environment",
    )
    assert {str(r) for r in policy.dockerd_rlimits} == {
        "nofile=4096:8192",
        "nproc=unlimited:unlimited",
    }
    assert policy.dockerd_oom_score_adj == -400
    later = parse_policy({"dockerd_oom_score_adj": "inherit"}, "flags", base=policy)
    assert later.dockerd_oom_score_adj is None
    assert later.dockerd_rlimits == policy.dockerd_rlimits
    assert parse_policy({"dockerd_rlimits": "inherit"}, "env").dockerd_rlimits == ()
    assert parse_policy({"dockerd_rlimits": {}}, "env").dockerd_rlimits == policy_defaults()


@pytest.mark.parametrize(
    ("mapping", "key", "reason"),
    [
        ({"dockerd_rlimits": {"nofiles": "10"}}, "policy.dockerd_rlimits.nofiles", "unknown"),
        ({"dockerd_rlimits": "nofile=10,bogus=1"}, "policy.dockerd_rlimits.bogus", "unknown"),
        ({"dockerd_rlimits": {"nofile": "4096:1024"}}, "policy.dockerd_rlimits.nofile", "above"),
        ({"dockerd_rlimits": {"nofile": "unlimited"}}, "policy.dockerd_rlimits.nofile", "nr_open"),
        ({"dockerd_rlimits": {"nofile": 2**31}}, "policy.dockerd_rlimits.nofile", "nr_open"),
        ({"dockerd_rlimits": {"core": "lots"}}, "policy.dockerd_rlimits.core", "not a number"),
        ({"dockerd_rlimits": {"core": True}}, "policy.dockerd_rlimits.core", "expected"),
        ({"dockerd_rlimits": "nofile"}, "policy.dockerd_rlimits", "NAME=VALUE"),
        ({"dockerd_rlimits": "nofile=1,nofile=2"}, "policy.dockerd_rlimits.nofile", "twice"),
        ({"dockerd_rlimits": 5}, "policy.dockerd_rlimits", "table"),
        ({"dockerd_oom_score_adj": 1001}, "policy.dockerd_oom_score_adj", "out of range"),
        ({"agent_oom_score_adj": -1001}, "policy.agent_oom_score_adj", "out of range"),
        ({"dockerd_oom_score_adj": "low"}, "policy.dockerd_oom_score_adj", "not an integer"),
        ({"dockerd_oom_score_adj": False}, "policy.dockerd_oom_score_adj", "not an integer"),
        ({"mode": "lenient"}, "policy.mode", "unknown mode"),
        ({"colour": "red"}, "policy.colour", "unknown key"),
        ({"agent_oom_score_adj": 0}, "policy.dockerd_oom_score_adj", "take the agent"),
        (
            {"agent_rlimits": {"nofile": "1024"}},
            "policy.agent_rlimits.nofile",
            "below dockerd",
        ),
    ],
)
def test_bad_values_name_the_key(mapping: dict[str, object], key: str, reason: str) -> None:
    """Every bad value is a ConfigError (exit 2) naming the key, the source and a remedy."""
    with pytest.raises(ConfigError) as caught:
        parse_policy(mapping, SRC)
    error = caught.value
    assert error.key == key
    assert error.source == SRC
    assert reason in error.reason
    assert error.remedy
    assert error.exit_code == 2
    assert key in str(error)
