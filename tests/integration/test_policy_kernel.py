"""Real-kernel tests of the resource policy (no dockerd): each runs in its own subprocess.

This machine lacks CAP_SYS_RESOURCE, has a hard RLIMIT_NOFILE of 20000, refuses a
negative oom_score_adj with EACCES, and has runc and busybox-static installed.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from supervisor.policy.explain import explain_runtime_error, inspect
from supervisor.policy.probe import find_children, read_limits

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HARD_NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
SHOW = "ulimit -Hn; ulimit -Sn; cat /proc/self/oom_score_adj"

PRELUDE = """
import json, os, subprocess, sys
from supervisor.errors import PolicyError
from supervisor.policy import Facts, apply_to_agent, parse_policy, read_facts, wrap_argv
from supervisor.policy.plan import plan
"""


def run_script(body: str, *, soft_nofile: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run PRELUDE + body in a fresh interpreter, so this test process is never changed."""

    def lower_soft() -> None:
        if soft_nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft_nofile, HARD_NOFILE))

    return subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(body)],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)}, preexec_fn=lower_soft,
    )  # fmt: skip


def test_machine_is_as_described() -> None:
    """The facts these tests rely on: hard nofile below 1048576 and no CAP_SYS_RESOURCE."""
    assert HARD_NOFILE < 1048576
    status = Path("/proc/self/status").read_text()
    capeff = int(next(x for x in status.splitlines() if x.startswith("CapEff")).split()[1], 16)
    assert not capeff >> 24 & 1


def test_strict_nofile_exits_2_with_the_explanation() -> None:
    """Strict + nofile 1048576: PolicyError naming RLIMIT_NOFILE type 7, the hard limit and fix."""
    result = run_script("""
        policy = parse_policy({"mode": "strict", "dockerd_rlimits": {"nofile": 1048576,
            "nproc": "inherit", "core": "inherit"}, "init_oom_score_adj": "inherit",
            "agent_oom_score_adj": "inherit", "dockerd_oom_score_adj": "inherit"}, "test")
        try:
            plan(policy, read_facts())
        except PolicyError as error:
            print(error, file=sys.stderr)
            sys.exit(error.exit_code)
    """)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(
        f"cannot raise RLIMIT_NOFILE (rlimit type 7) of dockerd to 1048576: hard limit is"
        f" {HARD_NOFILE} and this process lacks CAP_SYS_RESOURCE; start this container with"
        " --ulimit nofile=1048576:1048576"
    )
    assert f"or lower policy.dockerd_rlimits.nofile to at most {HARD_NOFILE}" in result.stderr


def test_best_effort_clamps_and_the_wrapped_shell_shows_it() -> None:
    """Best-effort: nofile clamped to the hard limit, oom -500 to 0; the shell really has them."""
    result = run_script(f"""
        the_plan = plan(parse_policy({{}}, "test"), read_facts())
        print(json.dumps([d.as_event() for d in the_plan.deviations]))
        refused = apply_to_agent(the_plan)
        assert refused == [], refused
        sys.stdout.flush()
        argv = wrap_argv(the_plan, ["/bin/sh", "-c", {SHOW!r}])
        os.execv(argv[0], argv)
    """, soft_nofile=1024)  # fmt: skip
    assert result.returncode == 0, result.stderr
    first, *shell = result.stdout.splitlines()
    assert shell == [str(HARD_NOFILE), str(HARD_NOFILE), "0"]
    events = {(e["process"], e["resource"]): e for e in json.loads(first)}
    assert events["dockerd", "nofile"]["applied"] == f"{HARD_NOFILE}:{HARD_NOFILE}"
    assert events["dockerd", "nofile"]["rlimit_type"] == 7
    assert events["dockerd", "oom_score_adj"]["applied"] == "0"
    assert events["dockerd", "oom_score_adj"]["requested"] == "-500"
    assert result.stderr == ""  # nothing was refused at apply time


def test_raised_oom_values_reach_dockerd_and_its_children() -> None:
    """Agent 100 is set on the agent, dockerd 250 through the wrapper, and a grandchild inherits."""
    result = run_script("""
        policy = parse_policy({"init_oom_score_adj": "inherit", "agent_oom_score_adj": 100,
                               "dockerd_oom_score_adj": 250, "dockerd_rlimits": "inherit"}, "test")
        the_plan = plan(policy, read_facts())
        apply_to_agent(the_plan)
        print(open("/proc/self/oom_score_adj").read().strip(), flush=True)
        argv = wrap_argv(the_plan, ["/bin/sh", "-c",
                         "cat /proc/self/oom_score_adj; sh -c 'cat /proc/self/oom_score_adj'"])
        os.execv(argv[0], argv)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["100", "250", "250"]


def test_negative_oom_is_refused_with_eacces_and_explained() -> None:
    """Writing -500 really fails with EACCES; the plan explains it, the wrapper reports it."""
    result = run_script("""
        from supervisor.policy import Kernel
        try:
            Kernel().write_oom_score_adj(0, -500)
        except PermissionError as error:
            print("errno", error.errno)
        the_plan = plan(parse_policy({"dockerd_rlimits": "inherit"}, "test"), read_facts())
        print(json.dumps([d.message for d in the_plan.deviations]))
        # A plan made on wrong facts (claiming the capability) lets the kernel say no.
        lying = Facts(limits={}, nr_open=1048576, cap_sys_resource=True, oom_score_adj=0)
        for mode in ("best-effort", "strict"):
            forced = plan(parse_policy({"mode": mode, "dockerd_rlimits": "inherit",
                          "init_oom_score_adj": "inherit", "agent_oom_score_adj": "inherit"},
                          "test"), lying)
            argv = wrap_argv(forced, ["/bin/sh", "-c", "echo ran; cat /proc/self/oom_score_adj"])
            child = subprocess.run(argv, capture_output=True, text=True)
            print(json.dumps([mode, child.returncode, child.stdout, child.stderr]))
    """)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "errno 13"
    messages = json.loads(lines[1])
    assert any(m.startswith("cannot set oom_score_adj of dockerd to -500") and "EACCES" in m
               for m in messages)  # fmt: skip
    mode, code, out, err = json.loads(lines[2])
    assert (mode, code, out.split()) == ("best-effort", 0, ["ran", "0"])
    assert err.startswith("dind-supervisor policy: refused: cannot set oom_score_adj to -500"
                          " of dockerd: Permission denied (errno 13); continuing")  # fmt: skip
    decoded = explain_runtime_error(err.splitlines()[0])
    assert decoded is not None
    assert (decoded.kind, decoded.resource, decoded.requested) == ("refused", "oom_score_adj",
                                                                   "-500")  # fmt: skip
    mode, code, out, err = json.loads(lines[3])
    assert (mode, code, out) == ("strict", 2, "")
    assert "not starting it (strict mode)" in err


def test_lowered_nofile_and_nproc_are_applied() -> None:
    """nofile 4096 and nproc 5000 are what /proc/<pid>/limits shows for the child and grandchild."""
    result = run_script("""
        policy = parse_policy({"dockerd_rlimits": "nofile=4096,nproc=5000,core=inherit",
                               "init_oom_score_adj": "inherit", "agent_oom_score_adj": "inherit",
                               "dockerd_oom_score_adj": "inherit"}, "test")
        the_plan = plan(policy, read_facts())
        assert the_plan.deviations == (), the_plan.deviations
        argv = wrap_argv(the_plan, ["/bin/sh", "-c", "cat /proc/self/limits; sh -c 'ulimit -n'"])
        os.execv(argv[0], argv)
    """)
    assert result.returncode == 0, result.stderr
    limits_text, _, grandchild = result.stdout.rpartition("Max realtime timeout")
    rows = {line[:26].strip(): line[26:].split()[:2] for line in limits_text.splitlines()}
    assert rows["Max open files"] == ["4096", "4096"]
    assert rows["Max processes"] == ["5000", "5000"]
    assert grandchild.split()[-1] == "4096"


def test_wrapper_leaves_environment_and_signals_as_given() -> None:
    """The wrapped program sees the same environment and ignored signals as an unwrapped one."""
    probe = ["/bin/sh", "-c", "env | sort; grep -E 'SigIgn|SigBlk' /proc/self/status"]
    env = {"PATH": "/usr/bin:/bin", "MARK": "x"}
    result = run_script(f"""
        the_plan = plan(parse_policy({{"dockerd_rlimits": "nofile=4096", "init_oom_score_adj":
            "inherit", "agent_oom_score_adj": "inherit", "dockerd_oom_score_adj": "inherit"}},
            "test"), read_facts())
        argv = wrap_argv(the_plan, {probe!r}, env={env!r})
        assert argv[1:3] == ["-I", "-S"]
        wrapped = subprocess.run(argv, env={env!r}, capture_output=True, text=True).stdout
        direct = subprocess.run({probe!r}, env={env!r}, capture_output=True, text=True).stdout
        print(json.dumps([wrapped, direct]))
    """)
    assert result.returncode == 0, result.stderr
    wrapped, direct = json.loads(result.stdout)
    assert "MARK=x" in direct
    assert wrapped == direct


def test_missing_program_is_reported() -> None:
    """A program that does not exist: the wrapper says so and exits 127, like a shell."""
    result = run_script("""
        the_plan = plan(parse_policy({"dockerd_rlimits": "nofile=4096"}, "test"), read_facts())
        child = subprocess.run(wrap_argv(the_plan, ["/nonexistent/dockerd"]),
                               capture_output=True, text=True)
        print(child.returncode, child.stderr.strip().splitlines()[-1])
    """)
    assert result.stdout.startswith(
        "127 dind-supervisor policy: cannot run /nonexistent/dockerd: No such file or directory"
    ), result.stderr


def _bundle(tmp_path: Path, process: dict[str, object]) -> Path:
    bundle = tmp_path / "bundle"
    (bundle / "rootfs" / "bin").mkdir(parents=True)
    busybox = shutil.which("busybox")
    assert busybox is not None
    shutil.copy(busybox, bundle / "rootfs" / "bin" / "busybox")
    subprocess.run(["runc", "spec"], cwd=bundle, check=True, timeout=30)
    config = json.loads((bundle / "config.json").read_text())
    config["process"].update({"terminal": False, "args": ["/bin/busybox", "true"], **process})
    config["linux"]["cgroupsPath"] = f"/dind-policy-test-{uuid.uuid4().hex[:12]}"
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


@pytest.mark.parametrize(
    ("process", "expected"),
    [
        ({"rlimits": [{"type": "RLIMIT_NOFILE", "hard": 30000, "soft": 30000}]},
         ("rlimit", "nofile", 7, "error setting rlimit type 7: operation not permitted")),
        ({"rlimits": [{"type": "RLIMIT_MEMLOCK", "hard": 2**40, "soft": 2**40}]},
         ("rlimit", "memlock", 8, "error setting rlimit type 8: operation not permitted")),
        ({"oomScoreAdj": -500},
         ("oom_score_adj", "oom_score_adj", None,
          "failed to update /proc/self/oom_score_adj: Permission denied")),
    ],
)  # fmt: skip
def test_real_runc_errors_are_decoded(
    tmp_path: Path, process: dict[str, object], expected: tuple[str, str, int | None, str]
) -> None:
    """runc's own refusal (what dockerd relays) is decoded to the resource and dockerd's limit."""
    kind, resource_name, number, text = expected
    bundle = _bundle(tmp_path, process)
    state = tmp_path / "state"
    name = f"policy-{uuid.uuid4().hex[:8]}"
    try:
        result = subprocess.run(
            ["runc", "--root", str(state), "run", "--bundle", str(bundle), name],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
    finally:
        subprocess.run(["runc", "--root", str(state), "delete", "--force", name],
                       capture_output=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode != 0
    assert text in result.stderr
    line = next(x for x in result.stderr.splitlines() if text in x)
    decoded = explain_runtime_error(line, dockerd_pid=os.getpid())
    assert decoded is not None
    assert (decoded.kind, decoded.resource, decoded.rlimit_type) == (kind, resource_name, number)
    if number == 7:
        assert decoded.limit_found == f"{HARD_NOFILE}:{HARD_NOFILE}"
        assert f"--ulimit nofile={HARD_NOFILE}:{HARD_NOFILE} or less" in decoded.remedy


def test_inspect_this_machine() -> None:
    """check on this machine names the nofile ceiling and the missing capability."""
    messages = [f.message for f in inspect("/proc", "self")]
    assert any(m.startswith(f"containers asking --ulimit nofile above {HARD_NOFILE} will fail")
               for m in messages)  # fmt: skip
    assert any("CAP_SYS_RESOURCE is missing" in m for m in messages)


def test_children_and_limits_of_a_real_process_tree() -> None:
    """find_children finds a real child, and its inherited limits read back from /proc."""
    parent = subprocess.Popen(
        ["/bin/sh", "-c", "sleep 30 & echo $!; wait"],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())  # printed once the child exists
        assert find_children("/proc", parent.pid) == [child]
        assert read_limits("/proc", child)[7][1] == HARD_NOFILE
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.communicate(timeout=10)
