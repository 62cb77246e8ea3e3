"""The prepare() entry point: step order, skipping, report shapes, and dockerd's environment."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from supervisor.errors import PreparationError
from supervisor.prepare import (
    STEPS,
    IptablesMode,
    Outcome,
    PrepareOptions,
    PrepareReport,
    dockerd_env,
    prepare,
)
from supervisor.prepare.mounts import MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RELATIME, MS_REMOUNT

pytestmark = pytest.mark.unit

ROOT_PRIVATE = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw"
CGROUP2 = "35 27 0:30 / /sys/fs/cgroup rw,nosuid,nodev - cgroup2 cgroup rw,nsdelegate"
NFT_VERSION = (0, "iptables v1.8.9 (nf_tables)\n", "")


def _proc(tmp_path: Path, own: str = "0::/\n") -> str:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "net").mkdir()
    (proc / "self" / "cgroup").write_text(own)
    return str(proc)


def _options(tmp_path: Path, bins: Path, **kw: object) -> PrepareOptions:
    return PrepareOptions(
        proc_root=_proc(tmp_path),
        sys_root=str(tmp_path / "sys"),  # no AppArmor, whatever the machine running the tests has
        iptables_dir=str(tmp_path / "iptables-bin"),
        tool_path=str(bins),
        **kw,  # type: ignore[arg-type]
    )


def test_full_run_on_a_v2_container(  # type: ignore[no-untyped-def]
    tmp_path, cgroup_tree, mount_system, fake_runner, bin_dir
) -> None:
    """Every step runs in order and the report is JSON-able with one outcome per step."""
    tree = cgroup_tree(spawn_reads=1)
    mounts = mount_system([ROOT_PRIVATE, CGROUP2])
    runner = fake_runner({"iptables --version": NFT_VERSION})
    with capture_logs() as logs:
        report = prepare(
            _options(tmp_path, bin_dir()), fs=tree, mounts=mounts, runner=runner, env={}
        )
    assert logs == []  # the caller logs the report once (the launch, or `check`)
    assert [s.step for s in report.steps] == list(STEPS)
    # sys_rw only with DOCKER_REMOUNT_SYS_RW set.
    assert [s.outcome for s in report.steps] == [Outcome.SKIPPED] + [Outcome.DONE] * 5
    assert tree.procs[""] == []
    assert report.cgroup_mode == "v2"
    assert report.iptables_backend == "nft"
    assert json.loads(json.dumps(report.as_dict()))["steps"]["tmp"]["outcome"] == "done"
    # rshared last, so the securityfs and /tmp mounts made just before are shared too
    assert [c[1] for c in mounts.calls] == ["/sys/kernel/security", "/tmp", "/"]


def test_metric_samples_are_one_hot_per_step(  # type: ignore[no-untyped-def]
    tmp_path, cgroup_tree, mount_system, fake_runner, bin_dir
) -> None:
    """dind_prepare_step{step,outcome} has exactly one 1 per step, for its outcome."""
    report = prepare(
        _options(tmp_path, bin_dir(), tmp=False, iptables=IptablesMode.OFF),
        fs=cgroup_tree(),
        mounts=mount_system([ROOT_PRIVATE, CGROUP2]),
        runner=fake_runner(),
        env={},
    )
    samples = report.metric_samples()
    for step in STEPS:
        ones = [o for (s, o), v in samples.items() if s == step and v == 1.0]
        assert ones == [str(report.step(step).outcome)]
    assert samples[("tmp", "skipped")] == 1.0
    assert samples[("iptables", "skipped")] == 1.0


def test_every_step_can_be_turned_off(  # type: ignore[no-untyped-def]
    tmp_path, cgroup_tree, mount_system, fake_runner, bin_dir
) -> None:
    """With all steps off nothing is read, written, mounted or run."""
    tree, mounts, runner = cgroup_tree(), mount_system([ROOT_PRIVATE, CGROUP2]), fake_runner()
    report = prepare(
        _options(
            tmp_path,
            bin_dir(),
            cgroup=False,
            securityfs=False,
            tmp=False,
            rshared=False,
            iptables=IptablesMode.OFF,
        ),
        fs=tree,
        mounts=mounts,
        runner=runner,
        env={},
    )
    assert {s.outcome for s in report.steps} == {Outcome.SKIPPED}
    assert (tree.writes, mounts.calls, runner.calls) == ([], [], [])
    assert report.iptables_dir is None


def test_mount_failures_do_not_stop_preparation(  # type: ignore[no-untyped-def]
    tmp_path, cgroup_tree, mount_system, fake_runner, bin_dir
) -> None:
    """EPERM on every mount leaves warnings, and the iptables step still runs."""
    mounts = mount_system(
        [ROOT_PRIVATE], fail={"/sys/kernel/security": errno.EPERM, "/tmp": errno.EPERM, "/": 1}
    )
    report = prepare(
        _options(tmp_path, bin_dir()),
        fs=cgroup_tree(),
        mounts=mounts,
        runner=fake_runner({"iptables --version": NFT_VERSION}),
        env={},
    )
    assert [report.step(s).outcome for s in ("securityfs", "tmp", "rshared")] == [
        Outcome.FAILED
    ] * 3
    assert str(report.severity) == "warning"
    assert report.step("iptables").outcome is Outcome.DONE


def test_cgroup_failure_raises(  # type: ignore[no-untyped-def]
    tmp_path, cgroup_tree, mount_system, fake_runner, bin_dir
) -> None:
    """A controller that cannot be enabled stops preparation with PreparationError."""
    with pytest.raises(PreparationError, match="'memory'"):
        prepare(
            _options(tmp_path, bin_dir()),
            fs=cgroup_tree(refuse={"memory": errno.EOPNOTSUPP}),
            mounts=mount_system([ROOT_PRIVATE, CGROUP2]),
            runner=fake_runner(),
            env={},
        )


def test_dry_run_changes_nothing(  # type: ignore[no-untyped-def]
    tmp_path, cgroup_tree, mount_system, fake_runner, bin_dir
) -> None:
    """check's dry run reports planned steps without writing, mounting or linking."""
    tree, mounts = cgroup_tree(), mount_system([ROOT_PRIVATE, CGROUP2])
    report = prepare(
        _options(tmp_path, bin_dir(), dry_run=True),
        fs=tree,
        mounts=mounts,
        runner=fake_runner(),
        env={},
    )
    assert {s.outcome for s in report.steps[1:]} == {Outcome.PLANNED}
    assert (tree.writes, mounts.calls) == ([], [])
    assert not (tmp_path / "iptables-bin").exists()


def _report(directory: str | None) -> PrepareReport:
    return PrepareReport(
        steps=(), cgroup_mode=None, iptables_backend=None, iptables_dir=directory
    )


def test_dockerd_env_puts_the_iptables_dir_first() -> None:
    """dockerd's PATH starts with the link directory, once, followed by the rest in order."""
    env = dockerd_env(_report("/run/x"), {"PATH": "/usr/sbin:/run/x:/usr/bin"})
    assert env["PATH"] == "/run/x:/usr/sbin:/usr/bin"
    assert env["container"] == "docker"


def test_dockerd_env_without_iptables_dir_keeps_path() -> None:
    """With iptables selection off, PATH is not overridden and container= is kept."""
    env = dockerd_env(_report(None), {"PATH": "/bin", "container": "podman"})
    assert env == {}


def test_dockerd_env_with_empty_path_uses_the_standard_one() -> None:
    """An empty PATH still finds dockerd's other tools after the link directory."""
    path = dockerd_env(_report("/run/x"), {})["PATH"]
    assert path.startswith("/run/x:")
    assert "/usr/sbin" in path


SYS_RO = "40 27 0:21 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro"


def test_remount_sys_rw_on_request(  # type: ignore[no-untyped-def]
    tmp_path, cgroup_tree, mount_system, fake_runner, bin_dir
) -> None:
    """DOCKER_REMOUNT_SYS_RW (Docker-in-Kata): a read-only /sys is remounted read-write
    first, keeping its nosuid/nodev/noexec flags, and mountinfo confirms it."""
    mounts = mount_system([ROOT_PRIVATE, SYS_RO, CGROUP2])
    report = prepare(
        _options(tmp_path, bin_dir(), iptables=IptablesMode.OFF),
        fs=cgroup_tree(), mounts=mounts, runner=fake_runner(),
        env={"DOCKER_REMOUNT_SYS_RW": "1"},
    )
    assert report.step("sys_rw").outcome is Outcome.DONE
    source, target, fstype, flags, _data = mounts.calls[0]
    assert (source, target, fstype) == (None, "/sys", None)
    assert flags == MS_REMOUNT | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RELATIME
    assert " /sys rw," in mounts.read_mountinfo()


def test_remount_sys_rw_leaves_a_writable_sys_alone(  # type: ignore[no-untyped-def]
    tmp_path, cgroup_tree, mount_system, fake_runner, bin_dir
) -> None:
    """With /sys already read-write the step reports `already` and mounts nothing there."""
    mounts = mount_system([ROOT_PRIVATE, SYS_RO.replace("ro,", "rw,", 1), CGROUP2])
    report = prepare(
        _options(tmp_path, bin_dir(), iptables=IptablesMode.OFF),
        fs=cgroup_tree(), mounts=mounts, runner=fake_runner(),
        env={"DOCKER_REMOUNT_SYS_RW": "1"},
    )
    assert report.step("sys_rw").outcome is Outcome.ALREADY
    assert all(call[1] != "/sys" for call in mounts.calls)


def test_remount_sys_rw_failure_is_a_warning_naming_errno(  # type: ignore[no-untyped-def]
    tmp_path, cgroup_tree, mount_system, fake_runner, bin_dir
) -> None:
    """A refused remount is a warning with errno and remedy; the other steps still run."""
    mounts = mount_system([ROOT_PRIVATE, SYS_RO, CGROUP2], fail={"/sys": errno.EPERM})
    report = prepare(
        _options(tmp_path, bin_dir(), iptables=IptablesMode.OFF),
        fs=cgroup_tree(), mounts=mounts, runner=fake_runner(),
        env={"DOCKER_REMOUNT_SYS_RW": "1"},
    )
    step = report.step("sys_rw")
    assert step.outcome is Outcome.FAILED
    assert "EPERM" in step.findings[0].message
    assert "--privileged" in (step.findings[0].remedy or "")
    assert report.step("cgroup").outcome is Outcome.DONE
