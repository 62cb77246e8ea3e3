"""Unit tests: reading fake /proc trees, decoding runc's errors, `check` findings, figures."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from supervisor.findings import Severity
from supervisor.policy.explain import explain_runtime_error, inspect
from supervisor.policy.figures import policy_figures
from supervisor.policy.limits import INFINITY
from supervisor.policy.probe import find_children, read_facts

pytestmark = pytest.mark.unit

# Captured on this machine from dockerd 20.10.24 + runc 1.1.5 (docker run --ulimit
# nofile=30000:30000, and --oom-score-adj -500), inside a private namespace.
REAL_RLIMIT_LINE = (
    'time="2026-11-28T20:20:11.263011795Z" level=error msg="Handler for POST /v1.41/containers/'
    "cada1ec72d0015fe69996daeadf52630c909349824eec71001e9b1c00473b904/start returned error:"
    " failed to create shim task: OCI runtime create failed: runc create failed: unable to"
    " start container process: error during container init: error setting rlimits for ready"
    ' process: error setting rlimit type 7: operation not permitted: unknown"'
)
REAL_OOM_LINE = (
    'time="2026-11-28T20:20:11.386163921Z" level=error msg="Handler for POST /v1.41/containers/'
    "c95215ed380ec3819bf972c88f228e54a81b369770fce093dea93b45b14dc9f3/start returned error:"
    " failed to create shim task: OCI runtime create failed: runc create failed: unable to"
    " start container process: can't get final child's PID from pipe: EOF: unknown\""
)
# runc's own log (runc run directly), as seen here.
RUNC_NSEXEC_LINE = (
    'time="2026-11-28T20:15:11Z" level=fatal msg="nsexec[5882]: failed to update'
    ' /proc/self/oom_score_adj: Permission denied"'
)
RUNC_EINVAL_LINE = (
    "runc run failed: unable to start container process: error during container init: error"
    " setting rlimits for ready process: error setting rlimit type 7: invalid argument"
)

NO_CAP = "000001fffeffffff"  # this machine: every capability but CAP_SYS_RESOURCE (24)
ALL_CAPS = "000001ffffffffff"


def limits_text(rows: dict[str, tuple[str, str]]) -> str:
    header = "Limit                     Soft Limit           Hard Limit           Units     \n"
    return header + "".join(
        f"{label:<26}{soft:<21}{hard:<21}units\n" for label, (soft, hard) in rows.items()
    )


def fake_process(
    root: Path,
    pid: int | str,
    *,
    nofile: tuple[str, str] = ("20000", "20000"),
    memlock: tuple[str, str] = ("8388608", "8388608"),
    oom: int = 0,
    capeff: str = NO_CAP,
    capbnd: str = NO_CAP,
    comm: str = "dockerd",
    children: tuple[int, ...] = (),
) -> Path:
    folder = root / str(pid)
    (folder / "task" / str(pid)).mkdir(parents=True)
    rows = {
        "Max cpu time": ("unlimited", "unlimited"),
        "Max core file size": ("0", "unlimited"),
        "Max processes": ("96365", "96365"),
        "Max open files": nofile,
        "Max locked memory": memlock,
    }
    (folder / "limits").write_text(limits_text(rows))
    (folder / "oom_score_adj").write_text(f"{oom}\n")
    (folder / "status").write_text(
        f"Name:\t{comm}\nCapInh:\t0000000000000000\nCapPrm:\t{capeff}\nCapEff:\t{capeff}\n"
        f"CapBnd:\t{capbnd}\n"
    )
    (folder / "comm").write_text(comm + "\n")
    (folder / "task" / str(pid) / "children").write_text(" ".join(map(str, children)))
    return folder


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    (root / "sys" / "fs").mkdir(parents=True)
    (root / "sys" / "fs" / "nr_open").write_text("1048576\n")
    fake_process(root, "self", comm="python3")
    fake_process(root, 1, comm="dind-supervisor", oom=0)
    fake_process(root, 42, children=(57, 58))
    fake_process(root, 57, comm="containerd", oom=-500, nofile=("4096", "8192"))
    fake_process(root, 58, comm="sleep")
    return root


def test_facts_come_from_the_tree(proc: Path) -> None:
    """read_facts reads limits, nr_open, CapEff bit 24 and both oom_score_adj values."""
    facts = read_facts(proc, "self", init_pid=1)
    assert facts.limits[7] == (20000, 20000)
    assert facts.limits[4] == (0, INFINITY)
    assert facts.nr_open == 1048576
    assert facts.cap_sys_resource is False
    assert (facts.oom_score_adj, facts.init_oom_score_adj) == (0, 0)
    fake_process(proc, 77, capeff=ALL_CAPS)
    assert read_facts(proc, 77).cap_sys_resource is True
    assert read_facts(proc, 77).init_oom_score_adj is None


def test_children_by_name(proc: Path) -> None:
    """find_children finds dockerd's containerd by comm, and [] for a gone process."""
    assert find_children(proc, 42) == [57, 58]
    assert find_children(proc, 42, comm="containerd") == [57]
    assert find_children(proc, 999) == []


def test_real_rlimit_error_is_decoded(proc: Path) -> None:
    """dockerd's real 'error setting rlimit type 7' line names nofile, 20000 and a remedy."""
    error = explain_runtime_error(REAL_RLIMIT_LINE, proc_root=proc, dockerd_pid=42)
    assert error is not None
    assert (error.kind, error.resource, error.rlimit_type) == ("rlimit", "nofile", 7)
    assert error.error == "operation not permitted"
    assert error.limit_found == "20000:20000"
    assert error.container_id is not None
    assert error.container_id.startswith("cada1ec72d00")
    assert "RLIMIT_NOFILE (rlimit type 7)" in error.message
    assert "above dockerd's 20000" in error.message
    assert "--ulimit nofile=20000:20000 or less" in error.remedy
    assert "--ulimit nofile=1048576:1048576" in error.remedy
    assert not error.refused_by_wrapper  # dind_rlimit_errors_total{resource="nofile"}
    assert error.resource == "nofile"
    assert error.as_event()["rlimit_type"] == 7


def test_every_type_number_is_decoded(proc: Path) -> None:
    """Each of 0..15 decodes to its RLIMIT name; an unknown number still explains itself."""
    names = ["cpu", "fsize", "data", "stack", "core", "rss", "nproc", "nofile", "memlock",
             "as", "locks", "sigpending", "msgqueue", "nice", "rtprio", "rttime"]  # fmt: skip
    for number, name in enumerate(names):
        line = f"error setting rlimit type {number}: operation not permitted: unknown"
        error = explain_runtime_error(line, proc_root=proc, dockerd_pid=42)
        assert error is not None
        assert (error.resource, error.rlimit_type) == (name, number)
        assert f"RLIMIT_{name.upper()} (rlimit type {number})" in error.message
    odd = explain_runtime_error("error setting rlimit type 16: operation not permitted")
    assert odd is not None
    assert "unknown to this agent" in odd.message


def test_nofile_at_nr_open_points_to_the_sysctl(proc: Path) -> None:
    """When dockerd already has nofile = fs.nr_open, the remedy is the host's sysctl."""
    fake_process(proc, 43, nofile=("1048576", "1048576"), capeff=ALL_CAPS)
    error = explain_runtime_error(REAL_RLIMIT_LINE, proc_root=proc, dockerd_pid=43)
    assert error is not None
    assert "fs.nr_open" in error.remedy


def test_unlimited_nofile_with_the_capability_names_fs_nr_open(proc: Path) -> None:
    """--privileged (CAP_SYS_RESOURCE) and `--ulimit nofile=-1`: only fs.nr_open refuses; the
    explanation names it and never blames a missing capability (seen in the VM lane)."""
    fake_process(proc, 45, nofile=("1048576", "1048576"), capeff=ALL_CAPS)
    error = explain_runtime_error(REAL_RLIMIT_LINE, proc_root=proc, dockerd_pid=45,
                                  requested="-1:-1")
    assert error is not None
    assert "CAP_SYS_RESOURCE" not in error.message
    assert "above fs.nr_open (1048576)" in error.message
    assert "fs.nr_open" in error.remedy


def test_with_the_capability_no_missing_capability_is_blamed(proc: Path) -> None:
    """A capable dockerd whose own hard limit is lower: the limit is named, not the capability."""
    fake_process(proc, 46, nofile=("20000", "20000"), capeff=ALL_CAPS)
    error = explain_runtime_error(REAL_RLIMIT_LINE, proc_root=proc, dockerd_pid=46,
                                  requested="30000:30000")
    assert error is not None
    assert "above dockerd's 20000" in error.message
    assert "CAP_SYS_RESOURCE" not in error.message
    without = explain_runtime_error(REAL_RLIMIT_LINE, proc_root=proc, dockerd_pid=42,
                                    requested="30000:30000")
    assert without is not None
    assert "nothing in this container has CAP_SYS_RESOURCE" in without.message


def test_soft_above_hard_is_explained(proc: Path) -> None:
    """runc's 'invalid argument' means soft above hard, and says so."""
    error = explain_runtime_error(RUNC_EINVAL_LINE, proc_root=proc, dockerd_pid=42)
    assert error is not None
    assert error.error == "invalid argument"
    assert "soft limit is above its hard" in error.message


def test_oom_errors_are_decoded(proc: Path) -> None:
    """runc's nsexec message is certain; dockerd's bare EOF is 'most likely' without the cap."""
    certain = explain_runtime_error(RUNC_NSEXEC_LINE, proc_root=proc, dockerd_pid=42)
    assert certain is not None
    assert (certain.kind, certain.certain, certain.limit_found) == ("oom_score_adj", True, "0")
    assert "--oom-score-adj 0 or more" in certain.remedy
    probable = explain_runtime_error(REAL_OOM_LINE, proc_root=proc, dockerd_pid=42)
    assert probable is not None
    assert probable.certain is False
    assert probable.message.startswith("most likely")
    assert probable.container_id is not None
    assert not probable.refused_by_wrapper
    assert probable.resource == "oom_score_adj"
    fake_process(proc, 44, capeff=ALL_CAPS)
    assert explain_runtime_error(REAL_OOM_LINE, proc_root=proc, dockerd_pid=44) is None


def test_wrapper_refusals_are_recognised() -> None:
    """Our wrapper's stderr line becomes a 'refused' event counted as a policy error."""
    line = (
        "dind-supervisor policy: refused: cannot set RLIMIT_NOFILE (rlimit type 7) to"
        " 30000:30000 of dockerd: Operation not permitted (errno 1); continuing (best-effort)"
    )
    error = explain_runtime_error(line)
    assert error is not None
    assert (error.kind, error.resource, error.requested) == ("refused", "nofile", "30000:30000")
    assert error.refused_by_wrapper  # dind_policy_errors_total{kind="refused"}
    oom = explain_runtime_error(
        "dind-supervisor policy: refused: cannot set oom_score_adj to -500 of dockerd:"
        " Permission denied (errno 13); continuing (best-effort)"
    )
    assert oom is not None
    assert (oom.resource, oom.requested, oom.error) == ("oom_score_adj", "-500",
                                                        "Permission denied")  # fmt: skip


@pytest.mark.parametrize(
    "line",
    [
        'level=info msg="Loading containers: done."',
        'level=error msg="stream copy error: reading from a closed fifo"',
        "error setting rlimits",
        "",
    ],
)
def test_other_lines_are_not_policy_errors(line: str) -> None:
    """Ordinary log lines give None."""
    assert explain_runtime_error(line) is None


def test_limit_unknown_when_dockerd_is_gone(proc: Path) -> None:
    """A vanished dockerd pid still gives the decoded resource, without a limit."""
    error = explain_runtime_error(REAL_RLIMIT_LINE, proc_root=proc, dockerd_pid=4242)
    assert error is not None
    assert error.limit_found is None
    assert error.resource == "nofile"


def test_inspect_without_the_capability(proc: Path) -> None:
    """check reports the limits, the missing capability and what containers will hit."""
    findings = inspect(proc, "self")
    summary = findings[0]
    assert summary.severity is Severity.INFO
    assert "nofile 20000:20000" in summary.message
    assert "fs.nr_open 1048576" in summary.message
    messages = [f.message for f in findings]
    assert any("CAP_SYS_RESOURCE is missing (not even in the bounding set" in m
               for m in messages)  # fmt: skip
    assert ("containers asking --ulimit nofile above 20000 will fail with 'error setting"
            " rlimit type 7: operation not permitted' (fs.nr_open allows up to 1048576)"
            ) in messages  # fmt: skip
    assert any("--ulimit memlock above 8388608" in m for m in messages)
    assert any("--oom-score-adj below 0 will fail" in m for m in messages)
    assert not any("--ulimit core" in m for m in messages)  # hard core is unlimited here
    assert max(f.severity for f in findings) is Severity.WARNING


def test_inspect_with_the_capability(proc: Path) -> None:
    """With CAP_SYS_RESOURCE, check says limits can be raised and warns of nothing."""
    fake_process(proc, 80, capeff=ALL_CAPS, capbnd=ALL_CAPS)
    findings = inspect(proc, 80)
    assert [f.severity for f in findings] == [Severity.INFO, Severity.OK]


def test_inspect_cap_in_bounding_set_only(proc: Path) -> None:
    """Missing from CapEff but in CapBnd: the remedy is --cap-add SYS_RESOURCE."""
    fake_process(proc, 81, capeff=NO_CAP, capbnd=ALL_CAPS)
    assert any("--cap-add SYS_RESOURCE" in f.message for f in inspect(proc, 81))


def test_figures_per_process(proc: Path) -> None:
    """dind_rlimit values per process/resource/limit, unlimited as +Inf; gone pids skipped."""
    figures = policy_figures({"agent": "self", "dockerd": 42, "containerd": 57, "gone": 999},
                             proc_root=proc)  # fmt: skip
    values = dict(figures.rlimits)
    assert values[("dockerd", "nofile", "hard")] == 20000.0
    assert values[("containerd", "nofile", "soft")] == 4096.0
    assert values[("agent", "core", "hard")] == math.inf
    assert values[("agent", "core", "soft")] == 0.0
    assert not any(key[0] == "gone" for key in values)
    assert dict(figures.oom_score_adj) == {"agent": 0.0, "dockerd": 0.0, "containerd": -500.0}


@pytest.mark.parametrize(("placement", "words"), [
    ("container", ("start this container with --ulimit nofile=30000:30000", "ulimits:")),
    ("kubernetes", ("no per-pod ulimit", "LIMITNOFILE=".lower())),
    ("systemd", ("LimitNOFILE=30000:30000", "systemctl edit")),
    ("shell", ("prlimit --nofile=30000:30000", "limits.conf")),
])
def test_rlimit_remedy_fits_where_the_agent_runs(proc: Path, placement: str,
                                                 words: tuple[str, ...]) -> None:
    """With the value the container asked for, the remedy says how to give dockerd that much
    where the agent runs, and nothing about the other places."""
    from supervisor.policy.placement import Placement

    error = explain_runtime_error(REAL_RLIMIT_LINE, proc_root=proc, dockerd_pid=42,
                                  requested="30000:30000", placement=Placement(placement))
    assert error is not None
    assert error.requested == "30000:30000"
    assert "asked for a hard limit (30000:30000) above dockerd's 20000" in error.message
    assert error.remedy.startswith("run the container with --ulimit nofile=20000:20000 or less")
    for word in words:
        assert word.lower() in error.remedy.lower()
    others = {"container": "--ulimit nofile=30000", "systemd": "systemctl",
              "shell": "prlimit", "kubernetes": "per-pod"}
    for other, word in others.items():
        if other != placement:
            assert word not in error.remedy.split(" or less", 1)[1], other


def test_unknown_request_with_the_capability_names_fs_nr_open(proc: Path) -> None:
    """`docker run --rm --ulimit nofile=-1` on a capable dockerd: the container is gone before
    it can be inspected, yet only fs.nr_open can have refused (seen in the VM lane, where
    systemd raised fs.nr_open above dockerd's own limit)."""
    (proc / "sys" / "fs" / "nr_open").write_text("1073741816\n")
    fake_process(proc, 47, nofile=("1048576", "1048576"), capeff=ALL_CAPS)
    error = explain_runtime_error(REAL_RLIMIT_LINE, proc_root=proc, dockerd_pid=47)
    assert error is not None
    assert "above fs.nr_open (1073741816)" in error.message
    assert "dockerd may raise every other limit, so it was" in error.message
    assert "CAP_SYS_RESOURCE" not in error.message  # the VM lane's check: no capability blamed
    assert "unlimited is not possible" in error.remedy  # fs.nr_open is already the maximum


def test_capability_inside_a_user_namespace_raises_nothing(proc: Path) -> None:
    """A full CapEff inside a user namespace (rootless, userns-remap) does not count for
    setrlimit: the missing capability is still named, and fs.nr_open is not guessed."""
    folder = fake_process(proc, 48, nofile=("1048576", "1048576"), capeff=ALL_CAPS)
    (folder / "uid_map").write_text("         0       1000          1\n")
    error = explain_runtime_error(REAL_RLIMIT_LINE, proc_root=proc, dockerd_pid=48)
    assert error is not None
    assert "nothing in this container has CAP_SYS_RESOURCE" in error.message
    assert "fs.nr_open (" not in error.message
