"""Rootless mode for real: the agent as uid 1000, dockerd through Debian's rootlesskit 1.1.

Each test runs the agent as PID 1 of private namespaces, as uid 1000 with
/etc/subuid and /etc/subgid entries of its own (tests/integration/rootless.py),
with rootlesskit, slirp4netns and newuidmap from Debian's packages. dockerd
then runs in rootlesskit's user, mount and network namespaces, its socket at
/run/user/1000/docker.sock and its TLS port published by rootlesskit in the
sandbox's network namespace. A missing prerequisite is simulated in the
sandbox's own mount namespace only (an empty /etc/subuid, /dev/null over
rootlesskit, a file holding 0 over /proc/sys/user/max_user_namespaces).
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.rootless import (
    DATA_ROOT,
    RUNTIME_DIR,
    RootlessSandbox,
    interpreter_works_as_user,
    rootless_box,
)
from tests.integration.sandbox import Sandbox, poll
from tests.integration.test_observability import schema_problems
from tests.integration.test_tls import TLS_ENV, docker_tls, wait_tls

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("rootlesskit") is None,
                       reason="rootlesskit is not installed (scripts/setup.sh installs it)"),
]

FAST_LIVENESS = [
    "--liveness-interval", "0.5", "--liveness-timeout", "0.4",
    "--liveness-failures", "2", "--liveness-kill-grace", "2",
]


@pytest.fixture(autouse=True)
def _user_can_run_the_agent() -> None:
    why = interpreter_works_as_user()
    if why is not None:
        pytest.fail(f"uid 1000 cannot run the agent's interpreter: {why}")


def failure(box: Sandbox) -> dict[str, object]:
    [event] = box.events_named("agent_failed")
    return event


def test_rootless_dockerd_runs_a_container_over_tls_and_status_says_rootless(
    sandboxes: Callable[..., Sandbox], busybox_tar: Path,
) -> None:
    """As uid 1000: dockerd ready, `docker run` over the published TLS port, /status rootless."""
    box = rootless_box(sandboxes, env=TLS_ENV)
    wait_tls(box)
    assert box.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    box.docker("import", str(busybox_tar), "busybox:test")
    run = docker_tls(box, "run", "--rm", "busybox:test", "sh", "-c", "echo hello; id -u",
                     cert_path=box.certs / "client")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["hello", "0"]  # root inside, uid 100000-ish outside
    status = box.status()
    assert schema_problems(status) == []  # docs/status.md, rootless keys included
    rootless = status["rootless"]
    assert rootless["enabled"] is True
    assert rootless["published"] == ["0.0.0.0:2376:2376/tcp"]
    assert rootless["socket_activation"] is False
    dockerd = box.dockerd_pid()
    assert dockerd is not None
    pids = rootless["pids"]
    # Inside the sandbox's pid namespace: rootlesskit is the agent's child, dockerd below it.
    assert pids["rootlesskit"] == status["dockerd"]["pid"] != pids["dockerd"]
    inner = box.ns_processes()[dockerd][0]
    assert pids["dockerd"] == inner
    assert Path(f"/proc/{dockerd}/status").read_text().count("\t1000\t") >= 1  # uid 1000 outside
    assert rootless["dockerd_says_rootless"] is True
    # This machine's cgroup hierarchy is hybrid: dockerd runs with the "none" driver.
    assert rootless["cgroups"]["limits_apply"] is False
    assert rootless["cgroups"]["dockerd_cgroup_driver"] == "none"
    assert box.events_named("nested_limits_not_applied")
    assert status["dockerd"]["state"] == "running"
    assert status["data_root"]["path"] == DATA_ROOT
    assert box.metric("dind_dockerd_process_open_fds") is not None  # dockerd's, not rootlesskit's
    steps = status["prepare"]["steps"] if status["prepare"] else {}
    assert all(step["outcome"] == "skipped" for step in steps.values())
    assert box.events_named("socket_activation_off")


def test_kill_9_of_rootless_dockerd_is_recovered(sandboxes: Callable[..., Sandbox]) -> None:
    """kill -9 of the dockerd below rootlesskit: a new rootlesskit and dockerd, ready again."""
    box = rootless_box(sandboxes, agent_args=FAST_LIVENESS)
    box.wait_ready(timeout=60)
    first = box.dockerd_pid()
    first_kit = box.status()["dockerd"]["pid"]
    assert first is not None
    os.kill(first, signal.SIGKILL)
    poll(lambda: (pid := box.dockerd_pid()) is not None and pid != first, timeout=30,
         what="a new dockerd")
    poll(lambda: box.status()["dockerd"]["state"] == "running", timeout=60, what="ready again")
    assert box.status()["dockerd"]["pid"] != first_kit
    assert box.docker_answers()
    assert box.metric("dind_dockerd_restarts_total", {"reason": "exit"}) == 1.0


def test_term_stops_rootless_dockerd_gracefully(sandboxes: Callable[..., Sandbox]) -> None:
    """TERM to PID 1: rootlesskit passes the one TERM on, dockerd stops cleanly, exit 0."""
    box = rootless_box(sandboxes)
    box.wait_ready(timeout=60)
    box.signal(signal.SIGTERM)
    assert box.wait(timeout=40) == 0
    lines = list(box.iter_dockerd_lines())
    assert any("Processing signal 'terminated'" in line for line in lines), lines[-20:]
    assert not any("Force shutdown" in line for line in lines)


def test_hup_reaches_the_rootless_dockerd(sandboxes: Callable[..., Sandbox]) -> None:
    """HUP to PID 1 goes to rootlesskit, which passes it to dockerd: it reloads its config."""
    box = rootless_box(sandboxes)
    box.wait_ready(timeout=60)
    box.signal(signal.SIGHUP)
    poll(lambda: any("Got signal to reload configuration" in line
                     for line in box.iter_dockerd_lines()),
         timeout=15, what="dockerd's reload line")
    assert box.status()["dockerd"]["state"] == "running"


# (subuid/subgid text or None for the usual, a breaking command, error part, remedy part)
MISSING = {
    "no_subids": ("", "", "/etc/subuid", "/etc/subuid and /etc/subgid"),
    "no_rootlesskit": (None, "mount --bind /dev/null /usr/bin/rootlesskit",
                       "'rootlesskit' not found", "apt-get install rootlesskit"),
    "max_user_namespaces_0": (
        None, "echo 0 > {root}/zero && mount --bind {root}/zero /proc/sys/user/max_user_namespaces",
        "user.max_user_namespaces is 0", "sysctl -w user.max_user_namespaces"),
}


@pytest.mark.parametrize("case", sorted(MISSING))
def test_a_missing_prerequisite_exits_2_naming_it_and_the_remedy(
    sandboxes: Callable[..., Sandbox], tmp_path: Path, case: str,
) -> None:
    """A missing prerequisite: exit 2 before anything starts, naming it and its remedy."""
    subids, breakage, prerequisite, remedy_part = MISSING[case]
    kwargs: dict[str, object] = {"breakage": breakage.format(root=tmp_path)}
    if subids is not None:
        kwargs["subids"] = subids
    box = rootless_box(sandboxes, **kwargs)  # type: ignore[arg-type]
    assert box.wait(timeout=30) == 2, box.log_tail()
    event = failure(box)
    assert "rootless mode" in str(event["error"])
    assert prerequisite in str(event["error"]), event
    assert remedy_part in str(event["remedy"]), event
    assert not box.events_named("dockerd_started")


def test_runtime_files_are_under_xdg_runtime_dir(sandboxes: Callable[..., Sandbox]) -> None:
    """The agent's runtime files (notify socket included) live under XDG_RUNTIME_DIR."""
    # Not under /run/dind-supervisor: the user cannot create it, and --copy-up=/run would
    # hide from dockerd any entry of /run made after rootlesskit started.
    box = rootless_box(sandboxes)
    box.wait_ready(timeout=60)
    assert isinstance(box, RootlessSandbox)
    state = box.run_dir / RUNTIME_DIR.removeprefix("/run/") / "dind-supervisor"
    assert (state / "rootlesskit" / "child_pid").exists()
    assert (state / "notify-1.sock").exists()
    assert (state / "agent.sock").exists()


def test_certificate_rotation_restarts_rootless_dockerd_and_leaves_no_container_behind(
    sandboxes: Callable[..., Sandbox], busybox_tar: Path,
) -> None:
    """A due renewal restarts rootlesskit and dockerd (`tls_rotation`); no shim is left behind."""
    box = rootless_box(sandboxes, env=TLS_ENV, agent_args=["--tls-server-lifetime", "15s",
                                                           "--tls-client-lifetime", "15s"])
    wait_tls(box)
    box.docker("import", str(busybox_tar), "busybox:test")
    container = box.docker("run", "-d", "--network", "none", "busybox:test", "sleep", "600")
    shims = box.host_pids("containerd-shim")
    assert shims
    old_cert = (box.certs / "server" / "cert.pem").read_bytes()
    old_dockerd = box.dockerd_pid()
    poll(lambda: box.metric("dind_dockerd_restarts_total", {"reason": "tls_rotation"}) == 1.0,
         timeout=40, interval=0.2, what="a rotation restart")
    poll(lambda: box.status()["dockerd"]["state"] == "running", timeout=60, what="ready again")
    assert (box.certs / "server" / "cert.pem").read_bytes() != old_cert
    assert box.dockerd_pid() != old_dockerd
    version = docker_tls(box, "version", "--format", "{{.Server.Version}}",
                         cert_path=box.certs / "client")
    assert version.returncode == 0, version.stderr
    # Without live-restore (rootless mode's default) dockerd stopped the container itself: the
    # new rootlesskit's namespaces could not have taken it back, and nothing of it remains.
    state = box.docker("inspect", "-f", "{{.State.Status}}", container.stdout.strip())
    assert state.stdout.strip() == "exited"
    assert not set(shims) & set(box.host_pids("containerd-shim"))


def test_rootless_containerd_is_dockerds_and_its_outage_is_seen(
    sandboxes: Callable[..., Sandbox],
) -> None:
    """Rootless: containerd stays dockerd's (inside rootlesskit's namespaces); the agent finds it
    below dockerd, probes its socket through /proc/PID/root, sees its kill -9 (/readyz 503,
    one event) and counts dockerd's replacement."""
    box = rootless_box(sandboxes)
    box.wait_ready(timeout=60)
    status = box.status()["containerd"]
    assert status["managed_by"] == "dockerd"
    poll(lambda: box.metric("dind_containerd_up") == 1, timeout=10, what="containerd answers")
    [containerd] = box.host_pids("containerd")
    os.kill(containerd, signal.SIGKILL)
    poll(lambda: box.http("/readyz")[0] == 503, timeout=5, interval=0.02, what="/readyz 503")
    poll(lambda: box.http("/readyz")[0] == 200, timeout=60, interval=0.2, what="/readyz 200")
    [exited] = box.events_named("containerd_exited")
    assert exited["managed_by"] == "dockerd"
    assert box.metric("dind_containerd_restarts_total") == 1
    assert box.host_pids("containerd") not in ([], [containerd])
