"""mountinfo parsing, the mount decisions, and applying them through a fake mount table."""

from __future__ import annotations

import errno
import sys
from pathlib import Path

import pytest

import supervisor
from supervisor.findings import Severity
from supervisor.prepare import agent_locations
from supervisor.prepare.mounts import (
    MS_REC,
    MS_SHARED,
    AppArmorFacts,
    decide_rshared,
    decide_securityfs,
    decide_tmp,
    parse_mountinfo,
    prepare_rshared,
    prepare_securityfs,
    prepare_tmp,
    read_apparmor_facts,
    visible_mount,
)
from supervisor.prepare.report import Outcome

pytestmark = pytest.mark.unit

ROOT = "27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw"
ROOT_PRIVATE = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw"
SECFS = "63 46 0:7 / /sys/kernel/security rw,relatime shared:5 - securityfs none rw"
TMP = "70 27 0:40 / /tmp rw,nosuid shared:6 - tmpfs tmpfs rw"


def test_parses_fields_tags_and_escapes() -> None:
    """Optional fields, octal escapes and the super options come out right."""
    (e,) = parse_mountinfo(
        r"36 35 98:0 /mnt1 /mnt\040two rw,noatime master:1 shared:2 - ext3 /dev/r\134oot rw,err"
    )
    assert (e.mount_id, e.parent_id, e.root) == (36, 35, "/mnt1")
    assert e.mount_point == "/mnt two"
    assert e.source == "/dev/r\\oot"
    assert e.tags == ("master:1", "shared:2")
    assert e.shared
    assert e.fstype == "ext3"
    assert e.super_options == ("rw", "err")


def test_malformed_lines_are_skipped() -> None:
    """A truncated or garbled line does not break parsing of the others."""
    entries = parse_mountinfo(f"garbage\n1 2 3\n{ROOT}\n")
    assert [e.mount_point for e in entries] == ["/"]


def test_visible_mount_is_the_top_of_a_stack() -> None:
    """With two mounts stacked on /dev/shm, the one whose parent is the other is seen."""
    entries = parse_mountinfo(
        "25 24 0:23 / /dev/shm rw - tmpfs tmpfs rw\n30 25 0:27 / /dev/shm ro - tmpfs shm rw\n"
    )
    top = visible_mount(entries, "/dev/shm")
    assert top is not None
    assert top.mount_id == 30
    assert visible_mount(entries, "/nowhere") is None


@pytest.mark.parametrize(
    ("lines", "dir_exists", "needed", "outcome"),
    [
        ([ROOT], False, False, Outcome.NOT_NEEDED),
        ([ROOT], True, True, Outcome.DONE),
        ([ROOT, SECFS], True, False, Outcome.ALREADY),
        (
            [ROOT, "63 46 0:9 / /sys/kernel/security ro - tmpfs tmpfs ro"],
            True,
            False,
            Outcome.ALREADY,
        ),
    ],
)
def test_securityfs_decision(
    lines: list[str], dir_exists: bool, needed: bool, outcome: Outcome
) -> None:
    """Mount securityfs only when the directory exists and nothing is mounted there."""
    d = decide_securityfs(parse_mountinfo("\n".join(lines)), dir_exists=dir_exists)
    assert (d.needed, d.outcome) == (needed, outcome)


def test_tmp_decision() -> None:
    """A tmpfs goes on /tmp only when /tmp is not already a mount point."""
    assert decide_tmp(parse_mountinfo(ROOT)).needed
    assert not decide_tmp(parse_mountinfo(f"{ROOT}\n{TMP}")).needed


def test_tmp_left_alone_when_it_would_hide_the_agents_files() -> None:
    """No tmpfs on /tmp over the agent's own code: skipped, with a warning and a remedy."""
    d = decide_tmp(parse_mountinfo(ROOT), keep_visible=("/usr", "/tmp/ci/.venv"))
    assert (d.needed, d.outcome, d.severity) == (False, Outcome.SKIPPED, Severity.WARNING)
    assert "/tmp/ci/.venv" in d.reason
    assert d.remedy is not None
    assert decide_tmp(parse_mountinfo(ROOT), keep_visible=("/usr", "/tmpfoo")).needed


def test_agent_locations_name_this_interpreter_and_package() -> None:
    """The paths kept visible are this interpreter's prefix and the supervisor package."""
    here = agent_locations()
    assert str(Path(sys.prefix).resolve()) in here
    assert str(Path(supervisor.__file__).parent.resolve()) in here


def test_rshared_decision_looks_at_every_mount() -> None:
    """A private submount makes the recursive remount necessary even when / is shared."""
    assert decide_rshared(parse_mountinfo(ROOT_PRIVATE)).needed
    assert not decide_rshared(parse_mountinfo(f"{ROOT}\n{SECFS}")).needed
    mixed = decide_rshared(parse_mountinfo(f"{ROOT}\n72 27 0:41 / /data rw - ext4 /dev/x rw"))
    assert mixed.needed
    assert "/data" in mixed.reason


def test_mounts_what_is_missing_and_confirms(mount_system) -> None:  # type: ignore[no-untyped-def]
    """securityfs, /tmp and rshared are mounted with docker:dind's arguments and verified."""
    system = mount_system([ROOT_PRIVATE])
    assert prepare_securityfs(system).outcome is Outcome.DONE
    assert prepare_tmp(system).outcome is Outcome.DONE
    assert prepare_rshared(system).outcome is Outcome.DONE
    assert system.calls == [
        ("none", "/sys/kernel/security", "securityfs", 0, None),
        ("none", "/tmp", "tmpfs", 0, None),
        (None, "/", None, MS_REC | MS_SHARED, None),
    ]
    assert all(e.shared for e in parse_mountinfo(system.read_mountinfo()))


def test_second_run_mounts_nothing(mount_system) -> None:  # type: ignore[no-untyped-def]
    """An agent restart in the same container does not stack a second tmpfs on /tmp."""
    system = mount_system([ROOT, SECFS, TMP])
    reports = [prepare_securityfs(system), prepare_tmp(system), prepare_rshared(system)]
    assert [r.outcome for r in reports] == [Outcome.ALREADY] * 3
    assert system.calls == []


def test_permission_failure_is_a_warning_with_remedy(mount_system) -> None:  # type: ignore[no-untyped-def]
    """EPERM (no CAP_SYS_ADMIN) is reported as a warning naming errno and --privileged."""
    system = mount_system([ROOT], fail={"/sys/kernel/security": errno.EPERM})
    report = prepare_securityfs(system)
    assert report.outcome is Outcome.FAILED
    (finding,) = report.findings
    assert str(finding.severity) == "warning"
    assert "EPERM" in finding.message
    assert "AppArmor" in finding.message
    assert finding.remedy is not None
    assert "--privileged" in finding.remedy


def test_success_without_effect_is_reported(mount_system) -> None:  # type: ignore[no-untyped-def]
    """A mount call that returns 0 but leaves mountinfo unchanged is not claimed as done."""
    system = mount_system([ROOT], silent=True)
    report = prepare_tmp(system)
    assert report.outcome is Outcome.FAILED
    assert "still says" in report.findings[0].message


def test_dry_run_mounts_nothing(mount_system) -> None:  # type: ignore[no-untyped-def]
    """check's dry run plans the mount without calling mount(2)."""
    system = mount_system([ROOT_PRIVATE])
    assert prepare_tmp(system, dry_run=True).outcome is Outcome.PLANNED
    assert prepare_rshared(system, dry_run=True).outcome is Outcome.PLANNED
    assert system.calls == []


# AppArmor and securityfs --------------------------------------------------------
# Debian's kernel has AppArmor on. With securityfs mounted, dockerd before 23
# sees it and fails every `docker run` unless it can load docker-default with
# apparmor_parser; with the parser, a privileged container loads that profile
# into the host's global policy. (The VM lane shows the real failure.)

AA_NO_PARSER = AppArmorFacts(kernel_enabled=True, parser=None)
AA_PARSER = AppArmorFacts(kernel_enabled=True, parser="/usr/sbin/apparmor_parser")


def test_securityfs_not_mounted_when_apparmor_is_on_without_a_parser(mount_system) -> None:  # type: ignore[no-untyped-def]
    """Kernel AppArmor on, no apparmor_parser: securityfs stays unmounted; the report says why."""
    system = mount_system([ROOT])
    report = prepare_securityfs(system, apparmor=AA_NO_PARSER)
    assert system.calls == []
    assert report.outcome is Outcome.NOT_NEEDED
    assert report.severity is Severity.INFO
    message = report.findings[0].message
    assert "apparmor_parser" in message
    assert "docker-default profile could not be loaded" in message


def test_securityfs_already_mounted_without_a_parser_warns(mount_system) -> None:  # type: ignore[no-untyped-def]
    """securityfs mounted by someone else, AppArmor on, no parser: a warning naming the failure."""
    report = prepare_securityfs(mount_system([ROOT, SECFS]), apparmor=AA_NO_PARSER, dry_run=True)
    assert report.outcome is Outcome.ALREADY
    assert report.severity is Severity.WARNING
    assert "could not be loaded" in report.findings[0].message
    assert "dockerd 23" in (report.findings[0].remedy or "")


def test_securityfs_with_a_parser_is_mounted_with_a_host_policy_warning(mount_system) -> None:  # type: ignore[no-untyped-def]
    """With apparmor_parser in the image: mounted as docker:dind does, and the hazard named."""
    system = mount_system([ROOT])
    report = prepare_securityfs(system, apparmor=AA_PARSER)
    assert [c[1] for c in system.calls] == ["/sys/kernel/security"]
    assert report.outcome is Outcome.DONE
    assert report.severity is Severity.WARNING
    assert "host kernel's single, global policy" in report.findings[-1].message


def test_securityfs_without_kernel_apparmor_is_mounted_quietly(mount_system) -> None:  # type: ignore[no-untyped-def]
    """No AppArmor in the kernel: mounted as before, no warning."""
    system = mount_system([ROOT])
    report = prepare_securityfs(system, apparmor=AppArmorFacts(kernel_enabled=False, parser=None))
    assert report.outcome is Outcome.DONE
    assert report.severity is Severity.INFO


def test_apparmor_facts_come_from_sysfs_and_path(tmp_path: Path) -> None:
    """The kernel switch is read from /sys/module/apparmor; the parser is looked up on PATH."""
    params = tmp_path / "sys" / "module" / "apparmor" / "parameters"
    params.mkdir(parents=True)
    (params / "enabled").write_text("Y\n")
    bins = tmp_path / "bin"
    bins.mkdir()
    assert read_apparmor_facts(sys_root=str(tmp_path / "sys"), search_path=str(bins)) == (
        AA_NO_PARSER
    )
    parser = bins / "apparmor_parser"
    parser.write_text("#!/bin/sh\n")
    parser.chmod(0o755)
    facts = read_apparmor_facts(sys_root=str(tmp_path / "sys"), search_path=str(bins))
    assert facts == AppArmorFacts(kernel_enabled=True, parser=str(parser))
    (params / "enabled").write_text("N\n")
    off = read_apparmor_facts(sys_root=str(tmp_path / "sys"), search_path=str(bins))
    assert not off.kernel_enabled
    assert not read_apparmor_facts(sys_root=str(tmp_path / "nothing")).kernel_enabled
