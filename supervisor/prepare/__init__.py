"""Container preparation before dockerd starts: what docker:dind's shell wrappers did, race-free.

Owns the entry point ``prepare()``, its options and report, and
``dockerd_env()``. The steps live in ``cgroups`` (v2 nesting), ``mounts``
(securityfs, tmpfs on /tmp, rshared /) and ``iptables`` (legacy or nft via a
private PATH directory). Does not own configuration parsing, logging setup,
metric definitions or spawning dockerd: the agent passes plain options in, and
takes the report (findings, a /status dict, metric samples) and the
environment for dockerd out.

Synchronous and blocking (it runs iptables probes): the agent calls it once
before spawning dockerd, in a worker thread if its event loop is running.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from supervisor.findings import Finding, Severity

if TYPE_CHECKING:
    from supervisor.config import Config
from supervisor.prepare.cgroups import (
    DEFAULT_INIT_GROUP,
    DEFAULT_MAX_ROUNDS,
    DEFAULT_ROOT,
    CgroupFS,
    CgroupMode,
    OsCgroupFS,
    prepare_cgroups,
)
from supervisor.prepare.iptables import (
    STANDARD_PATH,
    IptablesMode,
    Runner,
    SubprocessRunner,
    prepare_iptables,
)
from supervisor.prepare.mounts import (
    LinuxMountSystem,
    MountSystem,
    parse_mountinfo,
    prepare_rshared,
    prepare_securityfs,
    prepare_sys_rw,
    prepare_tmp,
    read_apparmor_facts,
)
from supervisor.prepare.report import Outcome, StepReport, skipped

__all__ = [
    "STEPS",
    "CgroupMode",
    "IptablesMode",
    "Outcome",
    "PrepareOptions",
    "PrepareReport",
    "StepReport",
    "agent_locations",
    "dockerd_env",
    "options_from_config",
    "prepare",
]

STEPS = ("sys_rw", "cgroup", "securityfs", "tmp", "rshared", "iptables")
# docker:dind's switch for Docker-in-Kata, where /sys comes read-only.
REMOUNT_SYS_RW_ENV = "DOCKER_REMOUNT_SYS_RW"


@dataclass(frozen=True, slots=True, kw_only=True)
class PrepareOptions:
    """What to prepare; one flag per step, paths injectable for tests."""

    cgroup: bool = True
    securityfs: bool = True
    tmp: bool = True
    rshared: bool = True
    iptables: IptablesMode = IptablesMode.AUTO
    dry_run: bool = False  # `check`: detect and report "planned", change nothing
    cgroup_root: str = DEFAULT_ROOT
    cgroup_init_group: str = DEFAULT_INIT_GROUP
    cgroup_max_rounds: int = DEFAULT_MAX_ROUNDS
    proc_root: str = "/proc"
    sys_root: str = "/sys"  # for the kernel's AppArmor switch
    iptables_dir: str = "/run/dind-supervisor/iptables-bin"
    tool_path: str | None = None  # where to find iptables-*; None: $PATH + the sbin dirs
    keep_visible: tuple[str, ...] = ()  # paths no mount may hide (the agent's own files)
    rootless: bool = False  # rootless mode: every step needs root, none runs


@dataclass(frozen=True, slots=True, kw_only=True)
class PrepareReport:
    steps: tuple[StepReport, ...]
    cgroup_mode: str | None
    iptables_backend: str | None
    iptables_dir: str | None
    dry_run: bool = False

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(f for s in self.steps for f in s.findings)

    @property
    def severity(self) -> Severity:
        return max((s.severity for s in self.steps), default=Severity.OK)

    def step(self, name: str) -> StepReport:
        for s in self.steps:
            if s.step == name:
                return s
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        """For /status and ``check --json``."""
        return {
            "severity": str(self.severity),
            "dry_run": self.dry_run,
            "cgroup_mode": self.cgroup_mode,
            "iptables_backend": self.iptables_backend,
            "iptables_dir": self.iptables_dir,
            "steps": {s.step: s.as_dict() for s in self.steps},
        }

    def metric_samples(self) -> dict[tuple[str, str], float]:
        """``dind_prepare_step{step,outcome}``: 1 for each step's outcome, 0 for the others."""
        outcomes = {s.step: s.outcome for s in self.steps}
        return {
            (step, str(o)): 1.0 if outcomes.get(step) is o else 0.0
            for step in STEPS
            for o in Outcome
        }


def agent_locations() -> tuple[str, ...]:
    """Where the agent's interpreter, packages and code live (symlinks resolved)."""
    import sys
    from pathlib import Path

    import supervisor

    places = (sys.prefix, sys.executable, str(Path(supervisor.__file__).parent))
    return tuple(str(Path(place).resolve()) for place in places)


def options_from_config(
    config: Config, *, dry_run: bool = False, proc_root: str = "/proc"
) -> PrepareOptions:
    """The [prepare] settings as options; the agent's own files always stay visible."""
    settings = config.prepare
    return PrepareOptions(
        cgroup=settings.cgroup,
        securityfs=settings.securityfs,
        tmp=settings.tmp,
        rshared=settings.rshared,
        iptables=IptablesMode(settings.iptables),
        iptables_dir=os.path.join(config.agent.state_dir, "iptables-bin"),
        proc_root=proc_root,
        dry_run=dry_run,
        keep_visible=agent_locations(),
        rootless=config.rootless_on,
    )


def dockerd_env(report: PrepareReport, base_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Variables to set on dockerd's environment (merge over the rest of it).

    PATH starts with the iptables link directory, so dockerd (which looks
    iptables up on PATH) uses the chosen backend; ``container=docker`` is what
    hack/dind exports so that tools inside know they run in a container.
    """
    base = os.environ if base_env is None else base_env
    out: dict[str, str] = {}
    if "container" not in base:
        out["container"] = "docker"
    path = base.get("PATH") or STANDARD_PATH
    if report.iptables_dir:
        rest = [p for p in path.split(os.pathsep) if p and p != report.iptables_dir]
        out["PATH"] = os.pathsep.join([report.iptables_dir, *rest])
    return out


# Why each step does not run in rootless mode: what it would change needs root.
_ROOTLESS_REASONS = {
    "sys_rw": "rootless mode: remounting /sys needs root",
    "cgroup": "rootless mode: moving processes between cgroups and enabling controllers needs"
    " root; dockerd gets only what is delegated to the user (see `rootless` in /status)",
    "securityfs": "rootless mode: mounting securityfs needs root",
    "tmp": "rootless mode: mounting a tmpfs on /tmp needs root",
    "rshared": "rootless mode: changing the propagation of / needs root; rootlesskit gives"
    " dockerd a mount namespace of its own",
    "iptables": "rootless mode: dockerd runs iptables inside rootlesskit's network namespace,"
    " with the backend it finds there",
}


def _rootless_report(options: PrepareOptions) -> PrepareReport:
    return PrepareReport(
        steps=tuple(skipped(step, _ROOTLESS_REASONS[step]) for step in STEPS),
        cgroup_mode=None, iptables_backend=None, iptables_dir=None, dry_run=options.dry_run,
    )


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def prepare(
    options: PrepareOptions,
    *,
    fs: CgroupFS | None = None,
    mounts: MountSystem | None = None,
    runner: Runner | None = None,
    env: Mapping[str, str] | None = None,
) -> PrepareReport:
    """Run every enabled step in order: sys_rw, cgroup, securityfs, tmp, rshared, iptables.

    sys_rw (only with DOCKER_REMOUNT_SYS_RW set) comes first: the cgroup step
    writes below /sys. rshared comes after the other mounts so the recursive
    flag covers them too.
    Mount failures and iptables trouble are findings; a cgroup v2 controller
    that cannot be enabled raises PreparationError (dockerd cannot nest).
    """
    if options.rootless:
        return _rootless_report(options)
    fs = OsCgroupFS() if fs is None else fs
    mounts = LinuxMountSystem(proc_root=options.proc_root) if mounts is None else mounts
    runner = SubprocessRunner() if runner is None else runner
    env = os.environ if env is None else env
    steps: list[StepReport] = []
    cgroup_mode: str | None = None

    if env.get(REMOUNT_SYS_RW_ENV):
        steps.append(prepare_sys_rw(mounts, dry_run=options.dry_run))
    else:
        steps.append(skipped(
            "sys_rw", f"/sys is left as it is ({REMOUNT_SYS_RW_ENV} is not set)"
        ))
    if options.cgroup:
        entries = parse_mountinfo(mounts.read_mountinfo())
        own = _read(f"{options.proc_root}/self/cgroup")
        report = prepare_cgroups(
            fs,
            entries,
            own,
            root=options.cgroup_root,
            init_group=options.cgroup_init_group,
            max_rounds=options.cgroup_max_rounds,
            dry_run=options.dry_run,
        )
        cgroup_mode = str(report.data.get("mode"))
        steps.append(report)
    else:
        steps.append(skipped("cgroup"))

    # dockerd looks tools up on this PATH (plus the iptables link directory).
    search_path = options.tool_path or os.pathsep.join(
        p for p in (env.get("PATH", ""), STANDARD_PATH) if p
    )
    apparmor = read_apparmor_facts(sys_root=options.sys_root, search_path=search_path)
    for name, enabled, run in (
        ("securityfs", options.securityfs, partial(prepare_securityfs, apparmor=apparmor)),
        ("tmp", options.tmp, partial(prepare_tmp, keep_visible=options.keep_visible)),
        ("rshared", options.rshared, prepare_rshared),
    ):
        steps.append(run(mounts, dry_run=options.dry_run) if enabled else skipped(name))

    ipt = prepare_iptables(
        options.iptables,
        runner=runner,
        env=env,
        directory=options.iptables_dir,
        search_path=search_path,
        proc_root=options.proc_root,
        dry_run=options.dry_run,
    )
    steps.append(ipt.report)
    return PrepareReport(
        steps=tuple(steps),
        cgroup_mode=cgroup_mode,
        iptables_backend=None if ipt.backend is None else str(ipt.backend),
        iptables_dir=ipt.directory,
        dry_run=options.dry_run,
    )
