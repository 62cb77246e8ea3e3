"""The resource policy's acceptance tests against the real agent as PID 1 and a real dockerd.

This machine lacks CAP_SYS_RESOURCE, gives a hard RLIMIT_NOFILE of 20000 and
refuses a negative oom_score_adj with EACCES: the refusals below are the
kernel's, not simulated. Every agent runs in a Sandbox (private namespaces);
``check`` runs in a private mount namespace with temporary folders over the
machine's docker paths.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from supervisor.policy.probe import find_children, read_limits, read_oom_score_adj
from tests.conftest import ReliabilityTally
from tests.integration.conftest import import_busybox
from tests.integration.sandbox import PYTHON, REPO, Sandbox, poll

pytestmark = pytest.mark.integration

HARD_NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
NR_OPEN = int(Path("/proc/sys/fs/nr_open").read_text())
NOFILE, NPROC = 7, 6

# Leave every other part of the policy as inherited, so one test sees one deviation.
ONLY_POLICY = [
    "--policy-init-oom-score-adj", "inherit",
    "--policy-agent-oom-score-adj", "inherit",
    "--policy-dockerd-oom-score-adj", "inherit",
    "--policy-dockerd-rlimits", "inherit",
]  # fmt: skip


def policy_args(*overrides: str) -> list[str]:
    """ONLY_POLICY with some flags given other values (argparse keeps the last one)."""
    return [*ONLY_POLICY, *overrides]


def only(rlimits: str) -> str:
    """A dockerd_rlimits value that also drops the defaults it does not name."""
    named = {item.partition("=")[0] for item in rlimits.split(",")}
    return ",".join([rlimits, *(f"{d}=inherit" for d in ("nofile", "nproc", "core")
                                if d not in named)])


def no_dockerd_ran(box: Sandbox) -> bool:
    events = {str(e.get("event")) for e in box.events()}
    spawned = {"dockerd_started", "dockerd_spawn_failed", "dockerd_exited"} & events
    return not box.socket.exists() and not spawned and not list(box.iter_dockerd_lines())


def failure(box: Sandbox) -> dict[str, object]:
    failed = box.events_named("agent_failed")
    assert len(failed) == 1, box.log_tail()
    return failed[0]


def container_pid(box: Sandbox, comm: str) -> int:
    """Host pid of a container's process: a child of one of the sandbox's shims."""

    def find() -> int | None:
        for shim in box.host_pids("containerd-shim"):
            found = find_children("/proc", shim, comm=comm)
            if found:
                return found[0]
        return None

    return int(poll(find, timeout=20, what=f"container process {comm}"))


# Configuration ------------------------------------------------------------------


def test_machine_refuses_what_the_tests_rely_on() -> None:
    """Preconditions are real: hard nofile below the ask, negative oom_score_adj is EACCES."""
    assert HARD_NOFILE < 1048576 <= NR_OPEN
    probe = subprocess.run(
        [sys.executable, "-c", "import os; os.write(os.open('/proc/self/oom_score_adj',"
                              " os.O_WRONLY), b'-500')"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert probe.returncode != 0
    assert "PermissionError: [Errno 13]" in probe.stderr


@pytest.mark.parametrize(
    ("flags", "key", "reason"),
    [
        (["--policy-dockerd-rlimits", "nofiles=10"], "policy.dockerd_rlimits.nofiles",
         "unknown resource 'nofiles'"),
        (["--policy-dockerd-rlimits", "nofile=4096:1024"], "policy.dockerd_rlimits.nofile",
         "soft limit 4096 is above hard limit 1024"),
        (["--policy-dockerd-oom-score-adj", "1001"], "policy.dockerd_oom_score_adj",
         "out of range -1000..1000"),
        (["--policy-agent-oom-score-adj", "lots"], "policy.agent_oom_score_adj",
         "not an integer"),
        (["--policy-agent-rlimits", "core=big"], "policy.agent_rlimits.core",
         "'big' is not a number"),
        (["--policy-mode", "lenient"], "policy.mode", "unknown mode"),
    ],
)  # fmt: skip
def test_bad_policy_values_exit_2_naming_the_key(
    sandboxes: Callable[..., Sandbox], flags: list[str], key: str, reason: str
) -> None:
    """A bad [policy] value exits 2 naming the key, the flag and why; nothing starts."""
    box = sandboxes(agent_args=flags)
    assert box.wait(timeout=30) == 2
    text = box.log_text()
    assert f"flag {flags[0]}: {key}=" in text
    assert reason in text
    assert "dind-supervisor: remedy: " in text
    assert no_dockerd_ran(box)


# rlimits at start ----------------------------------------------------------------


def test_strict_nofile_above_hard_limit_exits_2_before_dockerd(
    sandboxes: Callable[..., Sandbox],
) -> None:
    """strict + nofile 1048576: exit 2 naming RLIMIT_NOFILE type 7, value, hard limit, remedy."""
    box = sandboxes(agent_args=policy_args(
        "--policy-mode", "strict", "--policy-dockerd-rlimits", only("nofile=1048576:1048576")))
    assert box.wait(timeout=30) == 2
    failed = failure(box)
    assert failed["exit_code"] == 2
    assert failed["error"] == (
        "cannot raise RLIMIT_NOFILE (rlimit type 7) of dockerd to 1048576: hard limit is"
        f" {HARD_NOFILE} and this process lacks CAP_SYS_RESOURCE"
    )
    remedy = str(failed["remedy"])
    assert remedy.startswith("start this container with --ulimit nofile=1048576:1048576")
    assert remedy.endswith(f"or lower policy.dockerd_rlimits.nofile to at most {HARD_NOFILE}")
    assert no_dockerd_ran(box)


def test_best_effort_nofile_clamps_warns_once_and_counts(
    sandboxes: Callable[..., Sandbox],
) -> None:
    """best-effort + nofile 1048576: dockerd gets the hard limit; one warning, one count, ever."""
    box = sandboxes(
        agent_args=policy_args("--policy-dockerd-rlimits", only("nofile=1048576:1048576"))
    )
    box.wait_ready()
    first = box.dockerd_pid()
    assert first is not None
    assert read_limits("/proc", first)[NOFILE] == (HARD_NOFILE, HARD_NOFILE)
    clamped = box.events_named("policy_clamped")
    assert [(e["process"], e["resource"]) for e in clamped] == [("dockerd", "nofile")]
    event = clamped[0]
    assert (event["rlimit_type"], event["requested"], event["applied"]) == (
        7, "1048576:1048576", f"{HARD_NOFILE}:{HARD_NOFILE}")
    assert event["level"] == "warning"
    assert "RLIMIT_NOFILE (rlimit type 7)" in event["message"]
    assert f"lower policy.dockerd_rlimits.nofile to at most {HARD_NOFILE}" in event["remedy"]
    # A restarted dockerd is wrapped again, but the clamp is neither re-warned nor re-counted.
    os.kill(first, 9)
    poll(lambda: box.dockerd_pid() not in (None, first), timeout=30, what="a new dockerd")
    box.wait_ready()
    second = box.dockerd_pid()
    assert second is not None
    assert read_limits("/proc", second)[NOFILE] == (HARD_NOFILE, HARD_NOFILE)
    assert len(box.events_named("policy_clamped")) == 1
    errors = {"kind": "clamped", "resource": "nofile"}
    assert box.metric("dind_policy_errors_total", errors) == 1.0
    assert box.metric("dind_policy_errors_total", {"kind": "clamped", "resource": "nproc"}) == 0
    labels = {"process": "dockerd", "resource": "nofile", "limit": "hard"}
    assert box.metric("dind_rlimit", labels) == HARD_NOFILE
    assert box.status()["policy"]["deviations"] == [event["message"]]


# oom_score_adj at start ----------------------------------------------------------


def test_strict_negative_oom_score_adj_exits_2_saying_what_to_change(
    sandboxes: Callable[..., Sandbox],
) -> None:
    """strict + dockerd oom_score_adj -500: exit 2 explaining EACCES and the settings to change."""
    box = sandboxes(agent_args=policy_args(
        "--policy-mode", "strict", "--policy-dockerd-oom-score-adj", "-500"))
    assert box.wait(timeout=30) == 2
    failed = failure(box)
    error, remedy = str(failed["error"]), str(failed["remedy"])
    assert error.startswith("cannot set oom_score_adj of dockerd to -500: that is below 0")
    assert "needs CAP_SYS_RESOURCE" in error
    assert "EACCES" in error
    assert remedy.startswith("start the container with --oom-score-adj -500")
    assert remedy.endswith("or set policy.dockerd_oom_score_adj to 0 or more")
    assert no_dockerd_ran(box)


def test_best_effort_negative_oom_score_adj_gets_the_floor_in_order(
    sandboxes: Callable[..., Sandbox], busybox_tar: Path
) -> None:
    """Default -999/-900/-500 refused: each gets 0 (the floor); init<=agent<=dockerd<=container."""
    box = sandboxes(agent_args=["--policy-dockerd-rlimits", "inherit"])
    box.wait_ready()
    import_busybox(box, busybox_tar)
    box.docker("run", "-d", "--network", "none", "busybox:test", "sleep", "300")
    sleeper = container_pid(box, "sleep")
    dockerd, agent = box.dockerd_pid(), box.agent_pid()
    assert dockerd is not None
    assert agent is not None
    assert box.pid1 is not None
    (containerd,) = box.host_pids("containerd")
    got = {name: read_oom_score_adj("/proc", pid) for name, pid in [
        ("init", box.pid1), ("agent", agent), ("dockerd", dockerd),
        ("containerd", containerd), ("container", sleeper)]}  # fmt: skip
    assert got == dict.fromkeys(got, 0)
    assert got["init"] <= got["agent"] <= got["dockerd"] <= got["container"]
    clamped = box.events_named("policy_clamped")
    assert [(e["process"], e["requested"], e["applied"]) for e in clamped] == [
        ("init", "-999", "0"), ("agent", "-900", "0"), ("dockerd", "-500", "0")]
    assert all("EACCES" in e["message"] for e in clamped)
    policy = box.status()["policy"]
    assert policy["mode"] == "best-effort"
    assert policy["oom_score_adj"] == {"init": 0, "agent": 0, "dockerd": 0, "containerd": 0}
    assert policy["planned_oom_score_adj"] == {"init": 0, "agent": 0, "dockerd": 0}
    assert len(policy["deviations"]) == 3
    for process in ("init", "agent", "dockerd", "containerd"):
        assert box.metric("dind_oom_score_adj", {"process": process}) == 0.0
    assert box.metric(
        "dind_policy_errors_total", {"kind": "clamped", "resource": "oom_score_adj"}) == 3.0


# What dockerd, containerd and containers inherit ------------------------------------


def test_lowered_rlimits_and_raised_oom_reach_dockerd_containerd_and_containers(
    sandboxes: Callable[..., Sandbox], busybox_tar: Path
) -> None:
    """nofile 4096, nproc 5000, oom 100: /proc shows them for dockerd, containerd, a container."""
    box = sandboxes(agent_args=policy_args(
        "--policy-dockerd-rlimits", only("nofile=4096:4096,nproc=5000:5000"),
        "--policy-dockerd-oom-score-adj", "100"))  # fmt: skip
    box.wait_ready()
    import_busybox(box, busybox_tar)
    box.docker("run", "-d", "--network", "none", "busybox:test", "sleep", "300")
    sleeper = container_pid(box, "sleep")
    dockerd = box.dockerd_pid()
    assert dockerd is not None
    (containerd,) = box.host_pids("containerd")
    for pid in (dockerd, containerd, sleeper):
        limits = read_limits("/proc", pid)
        assert (limits[NOFILE], limits[NPROC]) == ((4096, 4096), (5000, 5000)), pid
    assert read_oom_score_adj("/proc", dockerd) == 100
    assert read_oom_score_adj("/proc", containerd) == 100
    # Docker writes its default 0 into every container (HostConfig.OomScoreAdj):
    # lowering back to 0 is allowed, so containers stay below dockerd.
    assert read_oom_score_adj("/proc", sleeper) == 0
    assert box.events_named("policy_clamped") == []
    policy = box.status()["policy"]
    assert policy["oom_score_adj"] == {"init": 0, "agent": 0, "dockerd": 100, "containerd": 100}
    assert policy["rlimits"]["dockerd"] == {
        "nproc": {"soft": 5000, "hard": 5000}, "nofile": {"soft": 4096, "hard": 4096}}
    assert policy["rlimits"]["containerd"] == policy["rlimits"]["dockerd"]
    for process in ("dockerd", "containerd"):
        assert box.metric("dind_oom_score_adj", {"process": process}) == 100.0
        labels = {"process": process, "resource": "nofile", "limit": "soft"}
        assert box.metric("dind_rlimit", labels) == 4096.0


def test_agent_and_dockerd_raised_together_are_accepted(tmp_path: Path) -> None:
    """agent 50 with dockerd 100 is a valid order, whichever key is read first."""
    result = run_check(tmp_path, env={
        "DIND_SUPERVISOR_POLICY_AGENT_OOM_SCORE_ADJ": "50",
        "DIND_SUPERVISOR_POLICY_DOCKERD_OOM_SCORE_ADJ": "100"})  # fmt: skip
    assert result.returncode != 2, result.stderr


# Containers asking more than dockerd has ------------------------------------------


def test_ulimit_above_dockerds_fails_in_runc_and_is_decoded_once(
    sandboxes: Callable[..., Sandbox], busybox_tar: Path, reliability_tally: ReliabilityTally
) -> None:
    """--ulimit nofile=30000: runc's real 'rlimit type 7' error, one decoded event, counter +1."""
    box = sandboxes(agent_args=ONLY_POLICY)
    box.wait_ready()
    import_busybox(box, busybox_tar)
    labels = {"resource": "nofile"}
    assert box.metric("dind_rlimit_errors_total", labels) == 0.0
    result = box.docker("run", "--name", "greedy", "--network", "none", "--ulimit",
                        "nofile=30000:30000", "busybox:test", "true", check=False)
    assert result.returncode == 125
    assert "error setting rlimit type 7: operation not permitted" in result.stderr
    (event,) = poll(lambda: box.events_named("container_policy_refused"), timeout=10,
                    what="container_policy_refused")
    assert event["level"] == "error"
    assert (event["kind"], event["resource"], event["rlimit_type"]) == ("rlimit", "nofile", 7)
    assert event["error"] == "operation not permitted"
    assert event["requested"] == "30000:30000"
    assert event["limit_found"] == f"{HARD_NOFILE}:{HARD_NOFILE}"
    container = box.docker("inspect", "-f", "{{.Id}}", "greedy").stdout.strip()
    assert event["container_id"] == container
    assert "RLIMIT_NOFILE (rlimit type 7)" in event["message"]
    assert event["remedy"].startswith(
        f"run the container with --ulimit nofile={HARD_NOFILE}:{HARD_NOFILE} or less")
    assert box.metric("dind_rlimit_errors_total", labels) == 1.0
    # A container within the limit still runs, and nothing more is counted.
    box.docker("run", "--rm", "--network", "none", "--ulimit", f"nofile={HARD_NOFILE}",
               "busybox:test", "true")
    assert len(box.events_named("container_policy_refused")) == 1
    assert box.metric("dind_rlimit_errors_total", labels) == 1.0
    policy = box.status()["policy"]
    assert policy["runtime_errors"] == 1
    assert policy["last_runtime_error"]["requested"] == "30000:30000"
    # The remedy speaks of where the agent runs: this machine's signs (the sandbox's
    # environment has no unit or pod variables; /.dockerenv shows through).
    from supervisor.policy.placement import detect

    where = detect({}, Path("/"))
    assert policy["placement"] == where.value
    raise_here = {"container": "start this container with --ulimit nofile=30000:30000",
                  "shell": "prlimit --nofile=30000:30000"}[where.value]
    assert raise_here in event["remedy"]
    assert "systemctl" not in event["remedy"]
    # `status` shows the explanation, not just a count.
    text = box.nsenter(PYTHON, "-m", "supervisor", "status", cwd=REPO)
    assert text.returncode == 0, text.stderr
    assert f"last (container {container[:12]}): runc could not set RLIMIT_NOFILE" in text.stdout
    assert "remedy: run the container with --ulimit nofile=" in text.stdout
    # A bad input of the reliability line (tests/integration/test_bad_inputs.py): clear.
    reliability_tally.bad_inputs += 1
    reliability_tally.clear_errors += 1


# dind-supervisor check ---------------------------------------------------------------


def run_check(
    tmp_path: Path, *, env: dict[str, str], prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """`python -m supervisor check --json` with temporary folders over the docker paths."""
    for name in ("lib", "run", "certs"):
        (tmp_path / name).mkdir(exist_ok=True)
    script = (
        f"mount --bind {tmp_path}/lib /var/lib/docker && mount --bind {tmp_path}/run /run"
        f" && mount --bind {tmp_path}/certs /certs && exec \"$@\""
    )
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh",
         *prefix, sys.executable, "-m", "supervisor", "check", "--json"],
        capture_output=True, text=True, timeout=60, check=False, cwd=REPO,
        env={"PATH": os.environ["PATH"], "DOCKER_TLS_CERTDIR": "", **env},
    )  # fmt: skip


def policy_findings(result: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    return [f for f in json.loads(result.stdout) if f["topic"] == "policy"]


def test_check_reports_limits_nr_open_oom_and_what_containers_may_ask(tmp_path: Path) -> None:
    """check lists the limits received, that none can be raised, fs.nr_open, oom_score_adj."""
    result = run_check(tmp_path, env={}, prefix=("prlimit", "--nofile=4096:8192", "--"))
    assert result.returncode == 0, result.stderr
    findings = policy_findings(result)
    received = findings[0]
    assert received["severity"] == "info"
    data = received["data"]
    assert isinstance(data, dict)
    assert data["rlimits"]["nofile"] == "4096:8192"
    assert (data["oom_score_adj"], data["nr_open"]) == (0, NR_OPEN)
    assert "nofile 4096:8192," in str(received["message"])
    assert str(received["message"]).endswith(f"; oom_score_adj 0; fs.nr_open {NR_OPEN}")
    messages = [str(f["message"]) for f in findings]
    assert any(m.startswith("CAP_SYS_RESOURCE is missing") and "raise a hard limit" in m
               for m in messages)
    assert any(m.startswith("containers asking --ulimit nofile above 8192 will fail with"
                            " 'error setting rlimit type 7") for m in messages)
    assert any(m.startswith("containers asking --oom-score-adj below 0 will fail")
               for m in messages)
    # The default policy does not fit here: explained, but best-effort means no ERROR.
    assert {f["severity"] for f in findings} <= {"ok", "info", "warning"}
    assert any("RLIMIT_NOFILE (rlimit type 7) of dockerd to 1048576: hard limit is 8192" in m
               and "run applies 8192:8192 instead" in m for m in messages)


def test_check_exits_1_when_strict_policy_would_be_refused(tmp_path: Path) -> None:
    """check: a strict policy the kernel would refuse is an ERROR (exit 1); one that fits is OK."""
    refused = run_check(tmp_path, env={
        "DIND_SUPERVISOR_POLICY_MODE": "strict",
        "DIND_SUPERVISOR_POLICY_DOCKERD_RLIMITS": "inherit",
        "DIND_SUPERVISOR_POLICY_INIT_OOM_SCORE_ADJ": "inherit",
        "DIND_SUPERVISOR_POLICY_AGENT_OOM_SCORE_ADJ": "inherit",
        "DIND_SUPERVISOR_POLICY_DOCKERD_OOM_SCORE_ADJ": "-500"})  # fmt: skip
    assert refused.returncode == 1, refused.stderr
    errors = [f for f in policy_findings(refused) if f["severity"] == "error"]
    assert len(errors) == 1
    assert str(errors[0]["message"]).startswith("cannot set oom_score_adj of dockerd to -500")
    assert "run refuses to start (strict mode)" in str(errors[0]["message"])
    fits = run_check(tmp_path, env={
        "DIND_SUPERVISOR_POLICY_MODE": "strict",
        "DIND_SUPERVISOR_POLICY_DOCKERD_RLIMITS": only("nofile=4096:4096"),
        "DIND_SUPERVISOR_POLICY_INIT_OOM_SCORE_ADJ": "inherit",
        "DIND_SUPERVISOR_POLICY_AGENT_OOM_SCORE_ADJ": "inherit",
        "DIND_SUPERVISOR_POLICY_DOCKERD_OOM_SCORE_ADJ": "100"})  # fmt: skip
    assert fits.returncode == 0, fits.stdout
    assert any(f["severity"] == "ok" and "can be applied as asked" in str(f["message"])
               for f in policy_findings(fits))
