"""The VM lane: what a real cgroup v2 host shows, one test per scenario.

The guest (Debian 13: kernel 6.12 with AppArmor on, systemd as init, its own
docker.service 26.1 as the outer runtime, --privileged working, so dind
containers have CAP_SYS_RESOURCE) ran each scenario of
tests/vm/guest/scenarios.py once in one boot and recorded what it saw;
these tests assert on those observations (conftest.py builds and boots).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.image import suite_named
from tests.vm.conftest import Lane

pytestmark = [pytest.mark.vm, pytest.mark.timeout(3600)]

UNLIMITED = "unlimited"
# The nesting scenario runs with both dind images (dockerd 20.10 and 26.1).
BOTH_SUITES = pytest.mark.parametrize("suite", ["bookworm", "trixie"])


def _step(prepare: dict[str, Any] | None, name: str) -> dict[str, Any]:
    assert prepare is not None, "the agent ran no preparation (not PID 1?)"
    return dict(prepare["steps"][name])


def _findings(check_stdout: str, topic: str) -> list[dict[str, Any]]:
    return [f for f in json.loads(check_stdout) if f["topic"] == topic]


def _limits(process: dict[str, Any], row: str) -> tuple[str, str]:
    for line in process["limits"].splitlines():
        if line.startswith(row):
            soft, hard = line[len(row):].split()[:2]
            return soft, hard
    raise AssertionError(f"no {row!r} in /proc/{process['pid']}/limits")


def test_guest_booted_and_ran_every_scenario(lane: Lane) -> None:
    """The guest booted Debian 13's kernel on cgroup v2, loaded the images, ran every scenario."""
    info = lane.results.get("lane", {})
    assert "setup_error" not in info, info.get("setup_error")
    setup = info["setup"]
    assert setup["kernel"].startswith("6.12"), setup
    version, cgroup_version, driver = setup["outer_dockerd"].split()
    assert version.startswith("26.1"), setup
    assert (cgroup_version, driver) == ("2", "systemd"), setup
    assert info.get("finished"), (info.get("order"), lane.serial_tail())
    assert info["order"] == [run["id"] for run in info["manifest"]["runs"]]
    assert lane.accel.name in ("kvm", "tcg")


# 1. cgroup v2 nesting ---------------------------------------------------------------


@BOTH_SUITES
def test_nesting_empties_the_root_group_and_delegates_controllers(lane: Lane, suite: str) -> None:
    """--privileged, private cgroupns: the container's root group is empty, controllers enabled."""
    obs = lane.scenario("cgroup_v2_nesting", suite)
    files = obs["host_group_files"]
    assert files["cgroup.procs"] == "", files  # seen from the guest host, not from inside
    delegated = files["cgroup.subtree_control"].split()
    assert {"cpu", "memory", "pids"} <= set(delegated), files
    assert "init" in obs["host_group_children"], obs["host_group_children"]
    root_procs, pid1, own = (part.strip() for part in obs["inner_view"].split("---"))
    assert root_procs == ""
    assert pid1 == "0::/init"
    assert own == "0::/init"  # docker exec after nesting lands in /init
    step = _step(obs["prepare"], "cgroup")
    assert step["outcome"] == "done", step
    assert step["data"]["moved"] >= 1, step


@BOTH_SUITES
def test_exec_storm_during_start_leaves_the_root_group_empty(lane: Lane, suite: str) -> None:
    """docker exec in a loop while the agent nests (docker-library/docker#308, #495): no EBUSY."""
    obs = lane.scenario("cgroup_v2_nesting", suite)
    storm = obs["storm"]
    assert storm["started"] >= storm["workers"] * 2, storm
    step = _step(obs["prepare"], "cgroup")
    assert step["outcome"] == "done", step
    # More than PID 1 and the agent: exec'd processes were in the root group, and moved.
    assert step["data"]["moved"] >= 3, step
    assert obs["root_procs_at_end"] == "", obs["root_procs_at_end"]
    # Execs that failed did so because the container was not running yet, never EBUSY.
    assert not [e for e in storm["errors"] if "EBUSY" in e or "busy" in e], storm


@BOTH_SUITES
def test_nested_limits_are_enforced(lane: Lane, suite: str) -> None:
    """--memory 64m, --pids-limit 50 and --cpus 0.5 on a nested container hold in its cgroup."""
    obs = lane.scenario("cgroup_v2_nesting", suite)
    assert obs["nested_group"].startswith(obs["host_group"] + "/docker/"), obs["nested_group"]
    assert obs["nested_files"] == {
        "memory.max": "67108864\n", "pids.max": "50\n", "cpu.max": "50000 100000\n"
    }, obs["nested_files"]
    pids = obs["pids_after"]
    assert int(pids["pids.current"]) <= 50, pids
    assert int(pids["pids.events"].split()[1]) > 0, pids  # "max N": forks refused
    cpu = dict(line.split() for line in obs["cpu_stat"].splitlines())
    assert int(cpu["nr_throttled"]) > 0, cpu
    assert obs["oom_inspect"] == "true 137", (obs["oom_inspect"], obs["oom_run"])


def test_cgroupns_host_moves_nothing_and_says_what_it_costs(lane: Lane) -> None:
    """--cgroupns=host: the guest's groups untouched; the report names the flag and the cost."""
    obs = lane.scenario("cgroupns_host")
    assert obs["guest_pid1_cgroup_after"] == obs["guest_pid1_cgroup_before"]
    assert obs["root_subtree_after"] == obs["root_subtree_before"]
    assert "/init" not in obs["container_pid1_cgroup"], obs["container_pid1_cgroup"]
    step = _step(obs["prepare"], "cgroup")
    assert (step["outcome"], step["severity"]) == ("not_needed", "warning"), step
    finding = step["findings"][0]
    assert "--cgroupns=host" in finding["message"], finding
    assert "--pids-limit" in finding["message"], finding
    assert "--cgroupns=private" in finding["remedy"], finding
    # What the warning is about: nested containers land outside the dind container's group,
    # in a /docker group at the root of the host's hierarchy.
    assert obs["nested_run"]["rc"] == 0, obs["nested_run"]
    nested_path = obs["nested_cgroup"].strip().partition("::")[2]
    assert nested_path.startswith("/docker/"), obs["nested_cgroup"]
    assert not ("/sys/fs/cgroup" + nested_path).startswith(obs["dind_group"]), obs
    assert "docker" not in obs["top_groups_before"]
    assert "docker" in obs["top_groups_after"]


# Defect b: `check` from docker exec after nesting ----------------------------------------


@BOTH_SUITES
def test_check_after_nesting_reports_nesting_in_place(lane: Lane, suite: str) -> None:
    """`docker exec <dind> dind-supervisor check` once nested: no cgroupns warning, exit 0."""
    obs = lane.scenario("cgroup_v2_nesting", suite)
    check = obs["check"]
    assert check["rc"] == 0, check
    cgroup = _findings(check["stdout"], "prepare.cgroup")
    assert [f["severity"] for f in cgroup] == ["ok"], cgroup
    assert "nesting is in place" in cgroup[0]["message"], cgroup


# Defect a: AppArmor kernel, dockerd 20.10, securityfs ----------------------------------------


@BOTH_SUITES
def test_apparmor_kernel_nested_runs_work_without_securityfs(lane: Lane, suite: str) -> None:
    """AppArmor kernel: the agent leaves securityfs alone, so dockerd 20.10 runs containers."""
    obs = lane.scenario("cgroup_v2_nesting", suite)
    assert obs["dockerd_version"].startswith(suite_named(suite).dockerd), obs["dockerd_version"]
    assert obs["securityfs_in_container"] == "0"
    step = _step(obs["prepare"], "securityfs")
    assert step["outcome"] == "not_needed", step
    assert "apparmor_parser" in step["findings"][0]["message"], step
    # The nested runs above (limited, oomer) went through: AppArmor did not block them.
    assert obs["nested_files"]["pids.max"] == "50\n"


def test_apparmor_securityfs_mounted_breaks_dockerd_20_and_check_says_so(lane: Lane) -> None:
    """The failure the fix avoids is real here, and check warns about it when someone mounts it."""
    obs = lane.scenario("apparmor_securityfs")
    assert obs["kernel_apparmor"] == "Y"
    assert "docker-default" not in (obs["host_profiles"] or ""), obs["host_profiles"]
    nested = obs["nested_run"]
    assert nested["rc"] != 0, nested
    assert "docker-default profile could not be loaded" in nested["err"], nested
    assert "apparmor_parser" in nested["err"], nested
    warnings = [f for f in _findings(obs["check"]["stdout"], "prepare.securityfs")
                if f["severity"] == "warning"]
    assert warnings, obs["check"]
    assert "could not be loaded" in warnings[0]["message"], warnings


def test_apparmor_securityfs_mounted_does_not_break_dockerd_26(lane: Lane) -> None:
    """dockerd 26.1 checks for apparmor_parser itself: with securityfs mounted it still runs."""
    obs = lane.scenario("apparmor_securityfs", "trixie")
    assert obs["kernel_apparmor"] == "Y"
    assert obs["nested_run"]["rc"] == 0, obs["nested_run"]


# 2. the policy with CAP_SYS_RESOURCE --------------------------------------------------------


def _process(procs: list[dict[str, Any]], comm: str) -> dict[str, Any]:
    found = [p for p in procs if p["comm"] == comm]
    assert found, f"no {comm} among {[p['comm'] for p in procs]}"
    return found[0]


def test_policy_applies_limits_and_oom_score_adj_with_cap_sys_resource(lane: Lane) -> None:
    """--privileged: dockerd and containerd get the policy's rlimits and oom_score_adj."""
    obs = lane.scenario("policy_privileged")
    policy = obs["policy"]
    assert policy["deviations"] == [], policy["deviations"]
    procs = obs["processes"]
    dockerd = _process(procs, "dockerd")
    containerd = _process(procs, "containerd")
    for process in (dockerd, containerd):
        assert _limits(process, "Max open files") == ("1048576", "1048576"), process["limits"]
        assert _limits(process, "Max processes") == (UNLIMITED, UNLIMITED), process["limits"]
        assert _limits(process, "Max core file size") == (UNLIMITED, UNLIMITED)
    assert dockerd["oom_score_adj"] == policy["planned_oom_score_adj"]["dockerd"] == -500
    assert policy["oom_score_adj"]["dockerd"] == -500
    assert containerd["oom_score_adj"] == policy["oom_score_adj"]["containerd"], policy
    init = next(p for p in procs if p["inner_pid"] == 1)
    assert init["oom_score_adj"] == policy["planned_oom_score_adj"]["init"] == -999


def test_oom_kill_order_is_containers_then_dockerd_then_agent(lane: Lane) -> None:
    """/proc/<pid>/oom_score: agent < dockerd < nested container."""
    obs = lane.scenario("policy_privileged")
    procs = obs["processes"]
    init = next(p for p in procs if p["inner_pid"] == 1)
    agent = next(p for p in procs if p["ppid"] == init["pid"] and p["comm"] == init["comm"])
    dockerd = _process(procs, "dockerd")
    nested = obs["nested_process"]
    assert nested is not None
    assert agent["oom_score_adj"] == -900
    assert nested["oom_score_adj"] == 0
    assert agent["oom_score"] < dockerd["oom_score"] < nested["oom_score"], (
        agent["oom_score"], dockerd["oom_score"], nested["oom_score"])


# 3. the docker:dind docs' runtime settings ------------------------------------------------------


def test_docs_example_as_written_fails_in_runc_before_the_agent_runs(lane: Lane) -> None:
    """--ulimit nofile=-1 exceeds fs.nr_open: runc's "error setting rlimit type 7", no agent."""
    obs = lane.scenario("docs_runtime_settings")
    written = obs["as_written"]
    assert written["rc"] != 0, written
    assert "error setting rlimit type 7" in written["stderr"], written
    assert written["state"].split()[0] == "created", written  # never started
    assert written["logs"] == ""  # the agent never ran, so it could not explain


def test_docs_example_with_1048576_works(lane: Lane) -> None:
    """nofile=1048576:1048576 (the rest as in the docs): ready, limits and pids.max as asked."""
    obs = lane.scenario("docs_runtime_settings")
    # --pids-limit -1 under the systemd cgroup driver leaves the scope at systemd's
    # DefaultTasksMax, the same as no --pids-limit at all: not "max".
    assert obs["pids_max"] == lane.scenario("policy_privileged")["pids_max"], obs["pids_max"]
    init = next(p for p in obs["processes"] if p["inner_pid"] == 1)
    assert _limits(init, "Max open files") == ("1048576", "1048576")
    assert _limits(init, "Max processes") == (UNLIMITED, UNLIMITED)
    assert obs["policy"]["deviations"] == [], obs["policy"]
    assert obs["nested_nofile_1048576"] == {"rc": 0, "out": "1048576\n"}


def test_nested_unlimited_nofile_is_seen_and_explained(lane: Lane) -> None:
    """A nested --ulimit nofile=-1 fails in runc; the agent sees it and names the resource."""
    obs = lane.scenario("docs_runtime_settings")
    nested = obs["nested_nofile_unlimited"]
    assert nested["rc"] != 0, nested
    assert "error setting rlimit type 7" in nested["err"], nested
    assert obs["explanations"], obs.get("explanation_timeout")
    explained = obs["explanations"][-1]
    assert (explained["resource"], explained["rlimit_type"]) == ("nofile", 7), explained


def test_nested_unlimited_nofile_explanation_names_fs_nr_open(lane: Lane) -> None:
    """With CAP_SYS_RESOURCE, only fs.nr_open refuses nofile: the explanation must say so."""
    obs = lane.scenario("docs_runtime_settings")
    assert obs["explanations"], obs.get("explanation_timeout")
    explained = obs["explanations"][-1]
    assert "CAP_SYS_RESOURCE" not in explained["message"], explained["message"]
    assert "nr_open" in explained["message"] + explained["remedy"], explained


# 5. kill -9 ------------------------------------------------------------------------------------


def test_kill_9_dockerd_is_recovered_and_nested_containers_keep_running(lane: Lane) -> None:
    """kill -9 of the nested dockerd: a new ready dockerd, same nested container, one restart."""
    obs = lane.scenario("kill_recovery")
    assert "dockerd_recovery_error" not in obs, obs["dockerd_recovery_error"]
    assert obs["nested_after_dockerd"] == obs["nested_before"]
    assert obs["dockerd_restarts_exit"] == 1


def test_kill_9_agent_is_survived(lane: Lane) -> None:
    """kill -9 of the agent: a new agent takes over dockerd; the nested container keeps its pid."""
    obs = lane.scenario("kill_recovery")
    assert obs["container_after_agent"].startswith("running"), obs.get("logs_tail")
    assert "agent_recovery_error" not in obs, obs["agent_recovery_error"]
    assert obs["nested_after_agent"] == obs["nested_before"]
    assert obs["agent_restarts"] == 1


# 4. systemd as init, with the project's unit -------------------------------------------------


def test_systemd_start_returns_when_docker_answers(lane: Lane) -> None:
    """Type=notify: `systemctl start` returns once dockerd is ready; the API answers at once."""
    obs = lane.scenario("systemd_unit")
    assert obs["start"]["rc"] == 0, obs["start"]
    after = obs["after_start"]
    assert (after["Type"], after["ActiveState"], after["SubState"]) == (
        "notify", "active", "running"), after
    assert obs["docker_right_after_start"]["rc"] == 0, obs["docker_right_after_start"]
    assert obs["docker_right_after_start"]["out"].startswith("26.1")
    assert after["WatchdogUSec"] in ("1min", "60000000"), after


def test_systemd_watchdog_restarts_the_service_while_dockerd_hangs(lane: Lane) -> None:
    """SIGSTOP dockerd: the agent stops petting, systemd's watchdog fires, the unit restarts."""
    obs = lane.scenario("systemd_unit")
    assert obs["after_watchdog"] is not None, (obs["watchdog_restart_seconds"],
                                               obs["journal_watchdog"])
    assert obs["after_watchdog"]["NRestarts"] == "1"
    assert any("Watchdog timeout" in line for line in obs["journal_watchdog"]), obs
    assert obs["dockerd_pid_after"] not in (None, obs["dockerd_stopped"])
    # Not before the watchdog could have fired: the agent did not pet while dockerd hung.
    assert obs["watchdog_restart_seconds"] >= 30, obs["watchdog_restart_seconds"]


def test_systemd_reload_and_graceful_stop(lane: Lane) -> None:
    """The unit offers no reload (said plainly); `systemctl stop` ends dockerd cleanly, exit 0."""
    obs = lane.scenario("systemd_unit")
    assert obs["after_start"]["CanReload"] == "no"
    assert obs["reload"]["rc"] != 0, obs["reload"]
    assert "not applicable" in obs["reload"]["err"], obs["reload"]
    assert obs["stop"]["rc"] == 0
    assert obs["stop"]["seconds"] < 45, obs["stop"]
    after = obs["after_stop"]
    assert (after["ActiveState"], after["Result"]) == ("inactive", "success"), after
    exits = [e for e in obs["last_events"] if e.get("event") == "dockerd_exited"]
    assert exits, obs["last_events"]
    assert exits[-1].get("exit_code") == 0, obs["last_events"]
    assert [e.get("exit_code") for e in obs["last_events"]
            if e.get("event") == "agent_stopped"][-1:] == [0], obs["last_events"]
    assert not (obs["left_in_cgroup"] or "").strip()
