"""Rootless mode's own logic: configuration, rootlesskit's command line, prerequisites,
cgroup delegation, the process tree, the policy and the skipped preparation (fake trees)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from supervisor.config import Config, load
from supervisor.dockerd import rootlesskit
from supervisor.doctor import check_rootless
from supervisor.errors import ConfigError
from supervisor.policy.limits import BY_NAME, INFINITY
from supervisor.policy.plan import Facts, plan
from supervisor.policy.spec import ROOTLESS_POLICY, Policy, parse_policy, policy_from_config
from supervisor.prepare import STEPS, options_from_config, prepare
from supervisor.prepare.report import Outcome
from supervisor.rootless import cgroups, prereqs
from supervisor.rootless.view import find_below

pytestmark = pytest.mark.unit

USER_ENV = {"HOME": "/home/rootless", "XDG_RUNTIME_DIR": "/run/user/1000"}


def rootless(env: dict[str, str] | None = None, **kwargs: object) -> Config:
    return load(env={**USER_ENV, **(env or {})}, euid=1000, **kwargs)  # type: ignore[arg-type]


# Configuration -----------------------------------------------------------------


def test_a_non_root_agent_is_rootless_with_the_rootless_paths() -> None:
    """uid 1000: rootless mode, data root in HOME, socket and runtime files in XDG_RUNTIME_DIR."""
    cfg = rootless()
    assert cfg.rootless_on
    assert cfg.dockerd.data_root == Path("/home/rootless/.local/share/docker")
    assert cfg.dockerd.host == "unix:///run/user/1000/docker.sock"
    assert cfg.dockerd.exec_root == Path("/run/user/1000/docker")
    assert cfg.dockerd.pidfile == Path("/run/user/1000/docker.pid")
    assert cfg.agent.state_dir == Path("/run/user/1000/dind-supervisor")
    assert cfg.http.socket == "/run/user/1000/dind-supervisor/agent.sock"
    assert cfg.sources["dockerd.data_root"] == "rootless mode's default"
    assert cfg.sources["rootless.enabled"] == "auto (the agent runs as uid 1000)"


def test_root_keeps_the_root_defaults_and_no_rootless_mode() -> None:
    """uid 0 with enabled=auto: nothing of rootless mode, the root paths unchanged."""
    cfg = load(env=USER_ENV, euid=0)
    assert not cfg.rootless_on
    assert cfg.dockerd.data_root == Path("/var/lib/docker")
    assert cfg.dockerd.socket_activation is True
    assert cfg.dockerd.live_restore is True


def test_xdg_runtime_dir_defaults_to_run_user_uid() -> None:
    """Without XDG_RUNTIME_DIR the socket is in /run/user/UID, as the entrypoint defaults it."""
    cfg = load(env={"HOME": "/home/rootless"}, euid=1234)
    assert cfg.dockerd.host == "unix:///run/user/1234/docker.sock"


def test_given_settings_win_over_rootless_defaults() -> None:
    """DOCKER_HOST, flags and dockerd's own --data-root beat the rootless defaults."""
    cfg = rootless({"DOCKER_HOST": "unix:///tmp/d.sock"},
                   flags={("agent", "state_dir"): "/tmp/state"},
                   dockerd_args=["--data-root=/data"])
    assert cfg.dockerd.host == "unix:///tmp/d.sock"
    assert cfg.agent.state_dir == Path("/tmp/state")
    assert cfg.dockerd.data_root == Path("/data")


def test_rootlesskit_variables_are_read_as_docker_dind_rootless_reads_them() -> None:
    """DOCKERD_ROOTLESS_ROOTLESSKIT_NET/MTU/FLAGS set [rootless]; empty ones mean the default."""
    cfg = rootless({"DOCKERD_ROOTLESS_ROOTLESSKIT_NET": "vpnkit",
                    "DOCKERD_ROOTLESS_ROOTLESSKIT_MTU": "65520",
                    "DOCKERD_ROOTLESS_ROOTLESSKIT_FLAGS": "--debug --slirp4netns-sandbox=auto"})
    assert (cfg.rootless.net, cfg.rootless.mtu) == ("vpnkit", 65520)
    assert cfg.rootless.flags == ("--debug", "--slirp4netns-sandbox=auto")
    assert rootless({"DOCKERD_ROOTLESS_ROOTLESSKIT_NET": ""}).rootless.net == "auto"


def test_socket_activation_and_live_restore_are_off_with_notices() -> None:
    """Rootless mode turns both off by default and says why in a notice each."""
    cfg = rootless()
    assert cfg.dockerd.socket_activation is False
    assert cfg.dockerd.live_restore is False
    assert {event for event, _ in cfg.notices} == {"socket_activation_off", "live_restore_off"}


def test_socket_activation_asked_for_in_rootless_mode_is_refused() -> None:
    """An explicit dockerd.socket_activation=true in rootless mode is a configuration error."""
    with pytest.raises(ConfigError, match="not available in rootless mode") as caught:
        rootless({"DIND_SUPERVISOR_DOCKERD_SOCKET_ACTIVATION": "true"})
    assert caught.value.key == "dockerd.socket_activation"


def test_rootless_forced_on_as_root_is_refused() -> None:
    """rootless.enabled=true while the agent is root: exit 2, with how to run it as a user."""
    with pytest.raises(ConfigError, match="that is root") as caught:
        load(env={"DIND_SUPERVISOR_ROOTLESS_ENABLED": "true"}, euid=0)
    assert caught.value.remedy is not None
    assert "--user" in caught.value.remedy


def test_exact_dockerd_args_without_host_ping_the_rootless_socket() -> None:
    """`IMAGE dockerd ARGS` without --host: dockerd's rootless default socket is supervised."""
    cfg = rootless(dockerd_args=["--debug"], exact_args=True)
    assert cfg.dockerd.host == "unix:///run/user/1000/docker.sock"


# rootlesskit's command line ------------------------------------------------------


def test_the_command_is_docker_dind_rootless_with_the_tls_port_published(tmp_path: Path) -> None:
    """rootlesskit's flags in the entrypoint's order, the state dir, -p 2376, then dockerd."""
    cfg = rootless({"DOCKER_TLS_CERTDIR": "/certs", "DOCKERD_ROOTLESS_ROOTLESSKIT_FLAGS": "--x"})
    argv = rootlesskit.command(cfg, ["dockerd", "--debug"], path=str(tmp_path))
    assert argv == [
        "rootlesskit", "--net=slirp4netns", "--mtu=1500", "--disable-host-loopback",
        "--port-driver=builtin", "--copy-up=/etc", "--copy-up=/run",
        "--state-dir=/run/user/1000/dind-supervisor/rootlesskit",
        "-p", "0.0.0.0:2376:2376/tcp", "--x", "dockerd", "--debug",
    ]


def test_plain_tcp_and_the_users_tcp_hosts_are_published() -> None:
    """Without TLS 2375 is published; a user's -H tcp:// replaces it and is published itself."""
    assert rootlesskit.published_ports(rootless()) == ["0.0.0.0:2375:2375/tcp"]
    cfg = rootless(dockerd_args=["-H", "tcp://127.0.0.1:4243", "--host=unix:///tmp/s"])
    assert rootlesskit.published_ports(cfg) == ["127.0.0.1:4243:4243/tcp"]


def test_a_state_dir_in_the_users_flags_is_kept() -> None:
    """--state-dir in DOCKERD_ROOTLESS_ROOTLESSKIT_FLAGS: ours is not added, theirs is read."""
    cfg = rootless({"DOCKERD_ROOTLESS_ROOTLESSKIT_FLAGS": "--state-dir=/tmp/rk"})
    argv = rootlesskit.command(cfg, ["dockerd"])
    assert [a for a in argv if a.startswith("--state-dir")] == ["--state-dir=/tmp/rk"]
    assert rootlesskit.state_dir(cfg) == Path("/tmp/rk")


def executables(folder: Path, *names: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text("#!/bin/sh\n")
        (folder / name).chmod(0o755)
    return str(folder)


def test_auto_net_is_slirp4netns_else_vpnkit(tmp_path: Path) -> None:
    """auto: slirp4netns where installed, vpnkit where only it is, slirp4netns when neither."""
    assert rootlesskit.resolve_net("auto", path=executables(tmp_path / "a", "slirp4netns",
                                                            "vpnkit")) == "slirp4netns"
    assert rootlesskit.resolve_net("auto", path=executables(tmp_path / "b", "vpnkit")) == "vpnkit"
    assert rootlesskit.resolve_net("auto", path=executables(tmp_path / "c")) == "slirp4netns"
    assert rootlesskit.resolve_net("pasta", path=str(tmp_path)) == "pasta"


# Prerequisites -------------------------------------------------------------------

WHO = prereqs.Who(uid=1000, gid=1000, name="rootless")
ALL_PROGRAMS = ("rootlesskit", "slirp4netns", "newuidmap", "newgidmap")


def machine(tmp_path: Path, *, programs: tuple[str, ...] = ALL_PROGRAMS,
            subids: str = "rootless:100000:65536\n", sysctls: dict[str, str] | None = None,
            tun: bool = True) -> prereqs.Host:
    """A fake /proc, /etc, /dev and PATH where every prerequisite holds unless told."""
    proc, etc, dev = tmp_path / "proc", tmp_path / "etc", tmp_path / "dev"
    for name, value in {"user/max_user_namespaces": "63432", **(sysctls or {})}.items():
        (proc / "sys" / name).parent.mkdir(parents=True, exist_ok=True)
        (proc / "sys" / name).write_text(value + "\n")
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "subuid").write_text(subids)
    (etc / "subgid").write_text(subids)
    if tun:
        (dev / "net").mkdir(parents=True, exist_ok=True)
        (dev / "net" / "tun").write_text("")
    env = {"PATH": executables(tmp_path / "bin", *programs), "HOME": str(tmp_path / "home"),
           "XDG_RUNTIME_DIR": str(tmp_path / "xdg")}
    return prereqs.Host(proc_root=str(proc), etc_root=str(etc), dev_root=str(dev), env=env)


def config_for(host: prereqs.Host) -> Config:
    return load(env=dict(host.env), euid=1000)


def test_every_prerequisite_met_gives_no_problem(tmp_path: Path) -> None:
    """A machine with everything: no problem, and `check` says so in one OK line."""
    host = machine(tmp_path)
    cfg = config_for(host)
    assert prereqs.problems(cfg, host, WHO) == []
    [finding] = prereqs.findings(cfg, host, WHO)
    assert finding.severity.name == "OK"
    assert (tmp_path / "xdg").is_dir()  # created, as the entrypoint's mkdir -p does
    assert (tmp_path / "home" / ".local/share/docker").is_dir()


@pytest.mark.parametrize(
    ("change", "prerequisite", "remedy"),
    [
        ({"programs": ("slirp4netns", "newuidmap", "newgidmap")}, "rootlesskit",
         "apt-get install rootlesskit"),
        ({"subids": "other:100000:65536\n"}, "subuid/subgid", "rootless:100000:65536"),
        ({"sysctls": {"kernel/unprivileged_userns_clone": "0"}},
         "kernel.unprivileged_userns_clone", "sysctl -w kernel.unprivileged_userns_clone=1"),
        ({"sysctls": {"user/max_user_namespaces": "0"}}, "user.max_user_namespaces",
         "sysctl -w user.max_user_namespaces"),
        ({"sysctls": {"kernel/apparmor_restrict_unprivileged_userns": "1"}},
         "kernel.apparmor_restrict_unprivileged_userns", "apparmor_restrict_unprivileged_userns=0"),
        ({"programs": ("rootlesskit", "slirp4netns")}, "newuidmap/newgidmap", "uidmap"),
        ({"programs": ("rootlesskit", "newuidmap", "newgidmap")}, "network driver slirp4netns",
         "apt-get install slirp4netns"),
        ({"tun": False}, "/dev/net/tun (slirp4netns)", "--device /dev/net/tun"),
    ],
)
def test_each_missing_prerequisite_is_named_with_its_remedy(
    tmp_path: Path, change: dict[str, object], prerequisite: str, remedy: str,
) -> None:
    """One missing prerequisite: one error (exit 2) naming it, what was found, and the remedy."""
    host = machine(tmp_path, **change)  # type: ignore[arg-type]
    [problem] = prereqs.problems(config_for(host), host, WHO)
    assert problem.prerequisite == prerequisite
    assert problem.exit_code == 2
    assert problem.remedy is not None
    assert remedy in problem.remedy
    assert problem.message.startswith("rootless mode: ")
    with pytest.raises(type(problem), match="rootless mode"):
        prereqs.require(config_for(host), host, WHO)


def test_subids_are_found_by_uid_too_and_few_are_a_warning(tmp_path: Path) -> None:
    """An entry by uid counts as the entry by name; fewer than 65536 ids is only a warning."""
    host = machine(tmp_path, subids="1000:100000:1000\n")
    findings = prereqs.findings(config_for(host), host, WHO)
    assert [f.severity.name for f in findings] == ["WARNING", "OK"]
    assert "1000 subordinate ids" in findings[0].message


def test_no_home_at_all_is_named(tmp_path: Path) -> None:
    """Neither HOME nor a password entry: the HOME prerequisite, not a crash."""
    host = machine(tmp_path)
    env = {k: v for k, v in host.env.items() if k != "HOME"}
    host = prereqs.Host(proc_root=host.proc_root, etc_root=host.etc_root,
                        dev_root=host.dev_root, env=env)
    nobody = prereqs.Who(uid=54321, gid=54321, name="rootless")
    cfg = load(env={**env, "DIND_SUPERVISOR_DOCKERD_DATA_ROOT": str(tmp_path / "d")}, euid=54321)
    assert [p.prerequisite for p in prereqs.problems(cfg, host, nobody)] == ["HOME"]


def test_check_has_nothing_to_say_about_rootless_mode_as_root() -> None:
    """`check` as root (rootless off) adds no rootless finding."""
    assert check_rootless(load(env={}, euid=0)) == []


# Cgroups -------------------------------------------------------------------------

HYBRID = (
    "30 20 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
    "31 30 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    "32 30 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
)


def test_cgroup_v1_or_hybrid_means_nested_limits_do_not_apply(tmp_path: Path) -> None:
    """Hybrid hierarchy: rootless dockerd has no cgroups; the finding warns with a remedy."""
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "mountinfo").write_text(HYBRID)
    found = cgroups.detect(str(tmp_path))
    assert not found.limits_apply
    assert found.mode == "hybrid"
    finding = found.finding()
    assert finding.severity.name == "WARNING"
    assert "--pids-limit" in finding.message
    assert finding.remedy is not None


def test_v2_cgroup_applies_limits_only_with_the_limit_controllers(tmp_path: Path) -> None:
    """v2 delegated: without memory/pids limits do not apply (named); with them they do."""
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    root = tmp_path / "cg"
    (proc / "self" / "mountinfo").write_text(f"30 20 0:26 / {root} rw - cgroup2 cgroup2 rw\n")
    (proc / "self" / "cgroup").write_text("0::/dind\n")
    (root / "dind").mkdir(parents=True)
    (root / "dind" / "cgroup.controllers").write_text("cpu io\n")
    for name in ("cgroup.procs", "cgroup.subtree_control"):
        (root / "dind" / name).write_text("")
    found = cgroups.detect(str(proc), str(root))
    assert found.mode == "v2"
    assert not found.limits_apply
    assert "memory, pids" in found.reason
    (root / "dind" / "cgroup.controllers").write_text("cpu io memory pids\n")
    assert cgroups.detect(str(proc), str(root)).limits_apply


# The process tree ----------------------------------------------------------------


def test_dockerd_is_found_two_levels_below_rootlesskit(tmp_path: Path) -> None:
    """rootlesskit (10) -> its child `exe` (11) -> dockerd (12): 12, and None once it is gone."""
    tree = {10: ("rootlesskit", [11, 13]), 11: ("exe", [12]), 12: ("dockerd", [14]),
            13: ("slirp4netns", []), 14: ("containerd", [])}
    for pid, (comm, children) in tree.items():
        task = tmp_path / str(pid) / "task" / str(pid)
        task.mkdir(parents=True)
        (tmp_path / str(pid) / "comm").write_text(comm + "\n")
        (task / "children").write_text(" ".join(map(str, children)))
    assert find_below(str(tmp_path), 10, "dockerd") == 12
    (tmp_path / "11" / "task" / "11" / "children").write_text("")
    assert find_below(str(tmp_path), 10, "dockerd") is None


# Policy and preparation ----------------------------------------------------------


def unprivileged_facts(nofile: tuple[int, int] = (1024, 20000)) -> Facts:
    return Facts(limits={7: nofile, 6: (4096, 8192), 4: (0, INFINITY)}, nr_open=1048576,
                 cap_sys_resource=False, oom_score_adj=0, unprivileged=True)


def test_the_rootless_policy_raises_soft_limits_to_the_hard_ones_without_deviation() -> None:
    """Rootless defaults: oom_score_adj inherited, nofile/nproc/core at their hard limits."""
    planned = plan(ROOTLESS_POLICY, unprivileged_facts())
    assert planned.deviations == ()
    assert planned.dockerd.expected_limits[7] == (20000, 20000)
    assert planned.dockerd.expected_limits[6] == (8192, 8192)
    assert planned.dockerd.oom_score_adj is None
    assert policy_from_config(load(env=USER_ENV, euid=1000)) == ROOTLESS_POLICY


def test_hard_is_a_value_for_any_rlimit() -> None:
    """`nofile=hard` in [policy] means up to the hard limit, shown as such."""
    policy = parse_policy({"dockerd_rlimits": "nofile=hard"}, "test", base=Policy())
    request = next(r for r in policy.dockerd_rlimits if r.rlimit is BY_NAME["nofile"])
    assert request.up_to_hard
    assert str(request) == "nofile=hard"


def test_unprivileged_deviations_do_not_suggest_cap_sys_resource() -> None:
    """Asking a rootless agent for -500 or a higher hard limit: explained without the capability."""
    wanted = parse_policy({"dockerd_oom_score_adj": -500,
                           "dockerd_rlimits": "nofile=65536"}, "test", base=ROOTLESS_POLICY)
    planned = plan(wanted, unprivileged_facts(), check=False)
    assert {d.resource for d in planned.deviations} == {"oom_score_adj", "nofile"}
    for deviation in planned.deviations:
        assert "rootless mode: an unprivileged user" in deviation.message
        assert "with CAP_SYS_RESOURCE" not in deviation.remedy


def test_preparation_is_skipped_step_by_step_in_rootless_mode() -> None:
    """Every preparation step is skipped in rootless mode, each with a reason naming root."""
    report = prepare(options_from_config(rootless()))
    assert [s.step for s in report.steps] == list(STEPS)
    for step in report.steps:
        assert step.outcome is Outcome.SKIPPED
        assert "rootless mode" in step.findings[0].message


def test_the_current_user_is_read_from_the_process() -> None:
    """Who.current(): this process's uid and gid."""
    who = prereqs.Who.current()
    assert (who.uid, who.gid) == (os.geteuid(), os.getegid())


def test_the_status_summary_has_a_rootless_line_only_in_rootless_mode() -> None:
    """`status` shows rootlesskit, dockerd's own pid and whether nested limits apply."""
    from supervisor.status_text import render

    document = {"rootless": {"enabled": True, "rootlesskit": "rootlesskit", "net": "slirp4netns",
                             "published": ["0.0.0.0:2376:2376/tcp"],
                             "pids": {"rootlesskit": 7, "dockerd": 9},
                             "cgroups": {"limits_apply": False, "reason": "hybrid"}}}
    text = render(document)
    assert "rootless   through rootlesskit (pid 7, dockerd's own 9), net slirp4netns" in text
    assert "nested --memory/--pids-limit/--cpus: NOT applied (hybrid)" in text
    assert "rootless" not in render({"rootless": {"enabled": False}})
