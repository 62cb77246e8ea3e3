"""The docker:dind documentation's scenarios with our image, in real nested Docker.

Each test starts its own dind container(s) in the session's outer dockerd
(tests/e2e/conftest.py), with the capability set that stands in for
--privileged on this machine (tests/e2e/outer.py); the TLS client test uses
the suite's shared ``tls_daemon``. Every test runs once per Debian suite.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.image import Suite
from tests.e2e.outer import Outer, Pool, TlsDaemon
from tests.integration.sandbox import poll

# The first test of a suite also pays for building its image (about 1 min for
# a cold debootstrap); the others take well under a minute each.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

# Without TLS a dind container is ready sooner; TLS has its own test.
NO_TLS = ("-e", "DOCKER_TLS_CERTDIR=")


def test_second_container_uses_the_daemon_over_tls(
    tls_daemon: TlsDaemon, suite: Suite, image: str
) -> None:
    """A client container on the network reaches tcp://docker:2376 with the client certs."""
    code, output = tls_daemon.client(
        "docker version --format '{{.Server.Version}}' && "
        "docker info --format 'driver={{.Driver}}' && "
        "docker run --rm --network none busybox:test echo hello-from-nested",
    )
    assert code == 0, output
    lines = output.split()
    assert lines[0].startswith(suite.dockerd), output
    # The image's VOLUME gives /var/lib/docker an anonymous volume: overlay2 works.
    assert "driver=overlay2" in lines
    assert "hello-from-nested" in lines
    # Without the certificates the daemon refuses the client.
    anonymous = tls_daemon.pool.run(
        "--rm", "--network", tls_daemon.network, "-e", "DOCKER_HOST=tcp://docker:2376",
        "--entrypoint", "docker", image, "version", check=False, timeout=120,
    )
    assert anonymous.returncode != 0
    # The image's HEALTHCHECK (`dind-supervisor wait`) turns the container healthy.
    poll(lambda: tls_daemon.dind.inspect()["State"]["Health"]["Status"] == "healthy",
         timeout=60, interval=1, what="Health.Status = healthy")


def test_daemon_flags_after_the_image_name_reach_dockerd(
    dinds: Pool, busybox_tar: Path
) -> None:
    """`docker run IMAGE --debug --default-ulimit nofile=2048:2048` reaches the nested dockerd."""
    dind = dinds(options=NO_TLS, dockerd_args=["--debug", "--default-ulimit", "nofile=2048:2048"])
    dind.wait_ready()
    dind.load_busybox(busybox_tar)
    assert dind.docker("info", "--format", "{{.Debug}}").stdout.strip() == "true"
    nofile = dind.docker("run", "--rm", "--network", "none", "busybox:test",
                         "sh", "-c", "ulimit -n")
    assert nofile.stdout.strip() == "2048"
    argv = dind.events_named("dockerd_started")[0]["argv"]
    assert argv[-3:] == ["--debug", "--default-ulimit", "nofile=2048:2048"] or {
        "--debug", "nofile=2048:2048"
    } <= set(argv), argv


def test_a_data_volume_keeps_images_and_restart_always_containers(
    outer: Outer, dinds: Pool, busybox_tar: Path
) -> None:
    """On a volume: overlay2, and an image and a restart=always container outlive the container."""
    volume = dinds.volume("dind-data")
    first = dinds(options=[*NO_TLS, "-v", f"{volume}:/var/lib/docker"])
    first.wait_ready()
    first.load_busybox(busybox_tar)
    first.docker("run", "-d", "--name", "keeper", "--restart=always", "--network", "none",
                 "busybox:test", "sleep", "100000")
    assert first.docker("info", "--format", "{{.Driver}}").stdout.strip() == "overlay2"
    data_root = first.status()["data_root"]
    assert data_root["persistent"] is True, data_root
    assert first.metric("dind_data_root_info",
                        {"storage_driver": "overlay2", "persistent": "true"}) == 1
    outer.docker("stop", "-t", "30", first.name, timeout=60)
    first.remove()

    second = dinds(options=[*NO_TLS, "-v", f"{volume}:/var/lib/docker"])
    second.wait_ready()
    second.docker("image", "inspect", "busybox:test")
    poll(
        lambda: second.docker("inspect", "-f", "{{.State.Running}}", "keeper",
                              check=False).stdout.strip() == "true",
        timeout=60, interval=0.5, what="keeper running again in the new dind container",
    )


def test_without_a_volume_the_agent_warns_and_dockerd_uses_vfs(
    dinds: Pool,
) -> None:
    """A data root on the container's own overlay layer: vfs, persistent="false" and a warning."""
    # The image's VOLUME always mounts one on /var/lib/docker under Docker (not
    # under Kubernetes, which ignores VOLUME); a data root elsewhere on the
    # container's layer is the same situation.
    dind = dinds(options=[*NO_TLS, "-e", "DIND_SUPERVISOR_DOCKERD_DATA_ROOT=/var/lib/dind"])
    dind.wait_ready()
    assert dind.docker("info", "--format", "{{.Driver}}").stdout.strip() == "vfs"
    data_root = dind.status()["data_root"]
    assert data_root["persistent"] is False, data_root
    assert data_root["fstype"] == "overlay", data_root
    assert dind.metric("dind_data_root_info",
                       {"storage_driver": "vfs", "persistent": "false"}) == 1
    warnings = [e for e in dind.events_named("data_root_finding") if e.get("level") == "warning"]
    assert warnings, dind.logs()[-3000:]
    assert any("volume" in (w.get("remedy") or "") for w in warnings), warnings


def test_docker_stop_exits_zero_within_the_stop_timeout(
    outer: Outer, dinds: Pool, busybox_tar: Path
) -> None:
    """`docker stop` with a TERM-ignoring nested container: exit code 0 within the timeout."""
    dind = dinds(options=NO_TLS)
    dind.wait_ready()
    dind.load_busybox(busybox_tar)
    # PID 1 of a container ignores TERM without a handler: the worst case.
    dind.docker("run", "-d", "--name", "stubborn", "--network", "none", "busybox:test",
                "sleep", "100000")
    started = time.monotonic()
    outer.docker("stop", "-t", "30", dind.name, timeout=90)
    elapsed = time.monotonic() - started
    state = dind.inspect()["State"]
    assert state["ExitCode"] == 0, (state, dind.logs()[-3000:])
    assert not state["OOMKilled"]
    assert elapsed < 30, elapsed
    assert [e["exit_code"] for e in dind.events_named("agent_stopped")] == [0]
    exits = dind.events_named("dockerd_exited")
    assert exits, dind.logs()[-3000:]
    assert exits[-1]["exit_code"] == 0, exits


def _nested_state_after_stop(
    outer: Outer, dinds: Pool, busybox_tar: Path, options: tuple[str, ...]
) -> list[str]:
    """Stop a dind container; report how its nested container ended (3 = its TERM trap ran)."""
    volume = dinds.volume("dind-stop")
    first = dinds(options=[*NO_TLS, *options, "-v", f"{volume}:/var/lib/docker"])
    first.wait_ready()
    first.load_busybox(busybox_tar)
    first.docker("run", "-d", "--name", "polite", "--network", "none", "busybox:test",
                 "sh", "-c", "trap 'exit 3' TERM; while :; do sleep 1; done")
    outer.docker("stop", "-t", "30", first.name, timeout=90)
    assert first.inspect()["State"]["ExitCode"] == 0, first.logs()[-3000:]
    first.remove()
    # The volume keeps the nested container's record for a new dind container to read.
    second = dinds(options=[*NO_TLS, *options, "-v", f"{volume}:/var/lib/docker"])
    second.wait_ready()
    return second.docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}",
                         "polite").stdout.split()


def test_docker_stop_stops_nested_containers_gracefully(
    outer: Outer, dinds: Pool, busybox_tar: Path
) -> None:
    """At `docker stop` of the dind container, nested containers get TERM and exit on their own."""
    assert _nested_state_after_stop(outer, dinds, busybox_tar, ()) == ["exited", "3"]


def test_without_live_restore_nested_containers_get_their_stop_signal(
    outer: Outer, dinds: Pool, busybox_tar: Path
) -> None:
    """DIND_SUPERVISOR_DOCKERD_LIVE_RESTORE=false: dockerd TERMs nested containers first."""
    options = ("-e", "DIND_SUPERVISOR_DOCKERD_LIVE_RESTORE=false")
    assert _nested_state_after_stop(outer, dinds, busybox_tar, options) == ["exited", "3"]


def test_a_killed_dockerd_is_restarted_and_nested_containers_keep_running(
    dinds: Pool, busybox_tar: Path
) -> None:
    """kill -9 of the nested dockerd: the agent starts a new one; the container keeps running."""
    dind = dinds(options=NO_TLS)
    dind.wait_ready()
    dind.load_busybox(busybox_tar)
    dind.docker("run", "-d", "--name", "survivor", "--network", "none", "busybox:test",
                "sleep", "100000")
    before = dind.docker("inspect", "-f", "{{.State.Pid}} {{.State.StartedAt}}",
                         "survivor").stdout.strip()
    old_pid = dind.status()["dockerd"]["pid"]
    dind.exec("sh", "-c", f"kill -9 {old_pid}")

    def restarted() -> bool:
        status = dind.status()["dockerd"]
        return status["pid"] not in (None, old_pid) and dind.http("/readyz")[0] == 200

    poll(restarted, timeout=90, interval=0.5, what="a new ready dockerd")
    after = dind.docker("inspect", "-f", "{{.State.Pid}} {{.State.StartedAt}}",
                        "survivor").stdout.strip()
    assert after == before
    assert dind.docker("inspect", "-f", "{{.State.Running}}", "survivor").stdout.strip() == "true"
    assert dind.metric("dind_dockerd_restarts_total", {"reason": "exit"}) == 1


def test_outer_ulimit_and_oom_score_adj_agree_with_the_policy_report(
    dinds: Pool,
) -> None:
    """--ulimit nofile and --oom-score-adj on the outer `docker run` are what the agent reports."""
    dind = dinds(options=[*NO_TLS, "--ulimit", "nofile=4096:8192", "--oom-score-adj", "500"])
    dind.wait_ready()
    policy = dind.status()["policy"]
    init_limits = dind.exec("cat", "/proc/1/limits").stdout
    assert "Max open files            4096                 8192" in init_limits, init_limits
    # Lowering oom_score_adj needs CAP_SYS_RESOURCE, which this container lacks:
    # every process keeps the 500 it was started with, and the report says so.
    assert policy["oom_score_adj"] == {
        "init": 500, "agent": 500, "dockerd": 500, "containerd": 500
    }, policy
    for process in ("init", "agent", "dockerd"):
        assert dind.metric("dind_oom_score_adj", {"process": process}) == 500
        assert any(f"oom_score_adj of {process}" in d for d in policy["deviations"]), policy
    # The hard limit of the outer run is the ceiling: dockerd's wanted 1048576 is clamped to it.
    assert dind.metric("dind_rlimit",
                       {"process": "agent", "resource": "nofile", "limit": "hard"}) == 8192
    for limit in ("soft", "hard"):
        assert dind.metric("dind_rlimit",
                           {"process": "dockerd", "resource": "nofile", "limit": limit}) == 8192
    assert any("RLIMIT_NOFILE" in d and "8192" in d for d in policy["deviations"]), policy


def test_the_stop_file_ends_the_sidecar_when_the_job_is_done(
    outer: Outer, dinds: Pool
) -> None:
    """[agent] stop_file: a job container touching the shared file makes dind exit 0."""
    state = dinds.volume("job-state")
    dind = dinds(options=[*NO_TLS, "-v", f"{state}:/job-state:ro",
                          "-e", "DIND_SUPERVISOR_AGENT_STOP_FILE=/job-state/done"])
    dind.wait_ready()
    dinds.run("--rm", "-v", f"{state}:/job-state", "--entrypoint", "sh", dinds.image,
              "-c", "touch /job-state/done")
    poll(lambda: not dind.inspect()["State"]["Running"], timeout=60, interval=0.5,
         what="the dind container to stop after the stop file appeared")
    assert dind.inspect()["State"]["ExitCode"] == 0, dind.logs()[-3000:]
    assert dind.events_named("stop_file_found")


KILL_CONTAINERD_AND_TIME_EXEC = """
import os, signal, subprocess, sys, time
pid = int(open("/var/run/docker/containerd/containerd.pid").read())
killed = time.monotonic()
os.kill(pid, signal.SIGKILL)
deadline = killed + 60
while subprocess.run(["docker", "exec", "keep", "true"], capture_output=True).returncode != 0:
    if time.monotonic() > deadline:
        sys.exit("docker exec did not come back within 60 s")
    time.sleep(0.02)
print(pid, round(time.monotonic() - killed, 3))
"""


def test_a_killed_containerd_is_restarted_by_the_agent_under_this_dockerd(
    dinds: Pool, busybox_tar: Path, suite: Suite, record_property: Any
) -> None:
    """kill -9 of the agent's containerd under this suite's dockerd (--containerd): exec works
    again within seconds, the nested container and dockerd live on, the exit is logged and
    counted, and the final stop ends containerd after dockerd."""
    dind = dinds(options=NO_TLS)
    dind.wait_ready()
    dind.load_busybox(busybox_tar)
    dind.docker("run", "-d", "--name", "keep", "--network", "none", "busybox:test",
                "sleep", "100000")
    before = dind.docker("inspect", "-f", "{{.State.Pid}}", "keep").stdout.strip()
    status = dind.status()
    assert status["containerd"]["managed_by"] == "agent"
    dockerd = status["dockerd"]["pid"]
    timed = dind.exec("/opt/dind-supervisor/bin/python", "-c", KILL_CONTAINERD_AND_TIME_EXEC,
                      timeout=90).stdout.split()
    killed, seconds = int(timed[0]), float(timed[1])
    record_property(f"containerd_exec_back_seconds_{suite.name}", seconds)
    print(f"{suite.name}: docker exec back {seconds:.2f} s after kill -9 containerd")
    assert seconds < 8, seconds
    [exited] = dind.events_named("containerd_exited")
    assert (exited["pid"], exited["signal"], exited["exit_code"]) == (killed, "SIGKILL", 137)
    assert dind.metric("dind_containerd_restarts_total") == 1
    poll(lambda: dind.http("/readyz")[0] == 200, timeout=10, interval=0.2, what="/readyz")
    after = dind.status()
    assert after["dockerd"]["pid"] == dockerd
    assert after["containerd"]["pid"] not in (None, killed)
    assert dind.docker("inspect", "-f", "{{.State.Pid}}", "keep").stdout.strip() == before
    dind.outer.docker("stop", "-t", "30", dind.name, timeout=60)
    order = [e["event"] for e in dind.events()
             if e.get("event") in ("dockerd_exited", "containerd_exited")]
    assert order[-2:] == ["dockerd_exited", "containerd_exited"]
