"""cgroup detection and v2 nesting on a fake cgroupfs tree."""

from __future__ import annotations

import errno

import pytest

from supervisor.errors import PreparationError
from supervisor.prepare.cgroups import (
    CgroupMode,
    detect_mode,
    enable_nesting,
    own_v2_path,
    plan_nesting,
    prepare_cgroups,
)
from supervisor.prepare.mounts import parse_mountinfo
from supervisor.prepare.report import Outcome

pytestmark = pytest.mark.unit

ROOT = "27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw"
V1 = f"""{ROOT}
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
"""
# What this machine shows: v1 hierarchies plus systemd's cgroup2 "unified".
HYBRID = V1 + "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
V2 = f"""{ROOT}
35 27 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw,nsdelegate
"""
V2_RO = V2.replace("rw,nosuid", "ro,nosuid")
# --cgroupns=host, or unshare --cgroup without remounting: the mount is not our root.
V2_FOREIGN = V2.replace(" / /sys/fs/cgroup", " /../.. /sys/fs/cgroup")


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        (V1, CgroupMode.V1),
        (HYBRID, CgroupMode.HYBRID),
        (V2, CgroupMode.V2),
        (ROOT, CgroupMode.NONE),
    ],
)
def test_detects_layout_from_mountinfo(text: str, mode: CgroupMode) -> None:
    """v1, hybrid (v1 + unified), v2 and nothing mounted are told apart."""
    assert detect_mode(parse_mountinfo(text)) is mode


def test_own_path_comes_from_the_v2_line() -> None:
    """Only the 0:: line of /proc/self/cgroup names our v2 group."""
    assert own_v2_path("12:pids:/x\n0::/init\n") == "/init"
    assert own_v2_path("12:pids:/x\n") is None


@pytest.mark.parametrize(
    ("text", "own", "act"),
    [
        (V2, "0::/\n", True),
        (V2, "0::/system.slice/docker-1.scope\n", False),
        # /init without the group made by nesting is someone else's group of that name.
        (V2, "0::/init\n", False),
        (V2_FOREIGN, "0::/\n", False),
        (HYBRID, "0::/\n", False),
    ],
)
def test_acts_only_at_the_root_of_a_private_namespace(text: str, own: str, act: bool) -> None:
    """Host processes are never moved: both the mount root and our cgroup must be '/'."""
    assert plan_nesting(parse_mountinfo(text), own).act is act


def test_racing_processes_are_moved_until_root_is_empty(cgroup_tree) -> None:  # type: ignore[no-untyped-def]
    """Processes that appear during the move end in init and every controller gets enabled."""
    tree = cgroup_tree(spawn_reads=2, vanishing={7})
    result = enable_nesting(tree)
    assert tree.procs[""] == []
    assert sorted(tree.procs["init"]) == [1, 42, 1001, 1002]
    assert tree.subtree[""] == ["cpuset", "cpu", "io", "memory", "pids"]
    assert result.vanished == 1
    assert result.moved == 4
    assert result.rounds == 3  # two EBUSY retries caused by the newcomers


def test_rerun_finds_nothing_to_do(cgroup_tree) -> None:  # type: ignore[no-untyped-def]
    """A second run (agent restarted in the same container) reports already-done."""
    tree = cgroup_tree()
    first = prepare_cgroups(tree, parse_mountinfo(V2), "0::/\n")
    assert first.outcome is Outcome.DONE
    again = prepare_cgroups(tree, parse_mountinfo(V2), "0::/\n")
    assert again.outcome is Outcome.ALREADY
    assert again.data["already_enabled"] == ["cpuset", "cpu", "io", "memory", "pids"]


def test_undelegated_controller_is_named_with_remedy(cgroup_tree) -> None:  # type: ignore[no-untyped-def]
    """A controller the kernel refuses gives PreparationError naming it and --cgroupns."""
    tree = cgroup_tree(refuse={"io": errno.EINVAL})
    with pytest.raises(PreparationError) as info:
        enable_nesting(tree)
    err = info.value
    assert err.step == "cgroup"
    assert "'io'" in err.message
    assert "EINVAL" in err.message
    assert err.remedy is not None
    assert "--cgroupns=private" in err.remedy
    assert tree.subtree[""] == ["cpuset", "cpu", "memory", "pids"]  # the others still enabled


def test_process_that_cannot_leave_root_bounds_the_loop(cgroup_tree) -> None:  # type: ignore[no-untyped-def]
    """An unmovable pid makes every round EBUSY; the loop stops and names pid and controller."""
    tree = cgroup_tree(stuck={42: errno.EINVAL})
    with pytest.raises(PreparationError) as info:
        enable_nesting(tree, max_rounds=5)
    assert "'cpuset'" in info.value.message
    assert "42 (EINVAL)" in info.value.message
    assert "after 5 rounds" in info.value.message
    moves = [w for w in tree.writes if w[0] == "init/cgroup.procs" and w[1] == "42"]
    assert len(moves) == 5


def test_endless_newcomers_do_not_loop_forever(cgroup_tree) -> None:  # type: ignore[no-untyped-def]
    """A root group that never stays empty ends in an EBUSY error, not an endless retry."""
    tree = cgroup_tree(spawn_reads=10_000)
    with pytest.raises(PreparationError, match="EBUSY after 7 rounds"):
        enable_nesting(tree, max_rounds=7)


def test_read_only_cgroupfs_is_a_preparation_error(cgroup_tree) -> None:  # type: ignore[no-untyped-def]
    """A read-only v2 mount (non-privileged container) fails with the --privileged remedy."""
    tree = cgroup_tree()
    with pytest.raises(PreparationError) as info:
        prepare_cgroups(tree, parse_mountinfo(V2_RO), "0::/\n")
    assert info.value.remedy is not None
    assert "--privileged" in info.value.remedy
    assert tree.writes == []


def test_dry_run_changes_nothing(cgroup_tree) -> None:  # type: ignore[no-untyped-def]
    """check's dry run reports the planned move and leaves the tree alone."""
    tree = cgroup_tree()
    report = prepare_cgroups(
        tree, parse_mountinfo(V2), "0::/\n", dry_run=True
    )
    assert report.outcome is Outcome.PLANNED
    assert report.data["root_processes"] == 3
    assert tree.writes == []
    assert not (tree.root / "init").exists()


def test_v1_and_hybrid_need_nothing(cgroup_tree) -> None:  # type: ignore[no-untyped-def]
    """On v1/hybrid the step reports the mode and touches no file."""
    tree = cgroup_tree()
    report = prepare_cgroups(tree, parse_mountinfo(HYBRID), "0::/\n")
    assert report.outcome is Outcome.NOT_NEEDED
    assert report.data["mode"] == "hybrid"
    assert tree.writes == []


def test_foreign_namespace_is_a_warning_not_a_move(cgroup_tree) -> None:  # type: ignore[no-untyped-def]
    """v2 seen through the host's namespace warns with the --cgroupns remedy and moves nothing."""
    tree = cgroup_tree()
    report = prepare_cgroups(
        tree, parse_mountinfo(V2), "0::/docker/abc\n"
    )
    assert report.outcome is Outcome.NOT_NEEDED
    assert str(report.severity) == "warning"
    assert "--cgroupns=private" in (report.findings[0].remedy or "")
    assert tree.writes == []


def test_nested_already_counts_as_our_namespace() -> None:
    """A process in /init, the group nesting made at the namespace root, may act (idempotent)."""
    plan = plan_nesting(parse_mountinfo(V2), "0::/init\n", init_group_exists=True)
    assert plan.act
    assert "nested already" in plan.reason
    foreign = plan_nesting(parse_mountinfo(V2_FOREIGN), "0::/init\n", init_group_exists=True)
    assert not foreign.act


def test_check_from_docker_exec_after_nesting_reports_it_in_place(cgroup_tree) -> None:  # type: ignore[no-untyped-def]
    """`docker exec ... check` after nesting runs in /init: no warning, nesting shown as done."""
    tree = cgroup_tree()
    assert prepare_cgroups(tree, parse_mountinfo(V2), "0::/\n").outcome is Outcome.DONE
    writes = len(tree.writes)
    report = prepare_cgroups(tree, parse_mountinfo(V2), "0::/init\n", dry_run=True)
    assert report.outcome is Outcome.ALREADY
    assert str(report.severity) == "ok", report.findings
    assert "nesting is in place" in report.findings[0].message
    assert len(tree.writes) == writes  # a dry run writes nothing


def test_check_after_nesting_still_sees_a_newcomer_in_root(cgroup_tree) -> None:  # type: ignore[no-untyped-def]
    """A process left in the root group after nesting is reported as a planned move, not OK."""
    tree = cgroup_tree()
    prepare_cgroups(tree, parse_mountinfo(V2), "0::/\n")
    tree.spawn()
    report = prepare_cgroups(tree, parse_mountinfo(V2), "0::/init\n", dry_run=True)
    assert report.outcome is Outcome.PLANNED
    assert report.data["root_processes"] == 1


def test_agent_restarted_in_init_moves_newcomers_only(cgroup_tree) -> None:  # type: ignore[no-untyped-def]
    """A new agent started in /init after nesting moves what is in root and nothing else."""
    tree = cgroup_tree()
    prepare_cgroups(tree, parse_mountinfo(V2), "0::/\n")
    newcomer = tree.spawn()
    report = prepare_cgroups(tree, parse_mountinfo(V2), "0::/init\n")
    assert report.outcome is Outcome.DONE
    assert report.data["moved"] == 1
    assert tree.procs[""] == []
    assert newcomer in tree.procs["init"]


def test_domain_controller_refused_while_processes_remain_names_them(cgroup_tree) -> None:  # type: ignore[no-untyped-def]
    """Nothing movable: cpuset/cpu go on beside the processes, io is EOPNOTSUPP; blame them.

    What kernel 6.12 did in the VM lane when the move was deliberately skipped.
    """
    tree = cgroup_tree(pids=(1, 7), stuck={1: errno.EPERM, 7: errno.EPERM},
                       threaded_rules=True)
    with pytest.raises(PreparationError) as info:
        enable_nesting(tree, max_rounds=2)
    assert "'io'" in info.value.message
    assert "ENOTSUP" in info.value.message  # errno.errorcode names EOPNOTSUPP so
    assert "processes are still in the root group (1 (EPERM), 7 (EPERM))" in info.value.message
    assert "did not delegate" not in info.value.message


def test_threaded_rules_still_give_ebusy_for_a_newcomer(cgroup_tree) -> None:  # type: ignore[no-untyped-def]
    """With init populated, a newcomer in root makes even cpuset EBUSY: the retry loop works."""
    tree = cgroup_tree(spawn_reads=2, threaded_rules=True)
    result = enable_nesting(tree)
    assert tree.procs[""] == []
    assert result.rounds == 3


def test_domain_controller_refused_with_an_empty_root_is_delegation(cgroup_tree) -> None:  # type: ignore[no-untyped-def]
    """EOPNOTSUPP with nothing left in root still points at the outer runtime's delegation."""
    tree = cgroup_tree(refuse={"io": errno.EOPNOTSUPP})
    with pytest.raises(PreparationError) as info:
        enable_nesting(tree)
    assert "did not delegate" in info.value.message
