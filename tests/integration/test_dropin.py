"""docker:dind's own command-line and environment conventions, against a real dockerd with the
agent as PID 1: a CI job's DOCKER_HOST, tcp 2375 with TLS off, `IMAGE dockerd ARGS` and
`IMAGE PROGRAM` (exec'd as PID 1)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.integration.sandbox import PYTHON, Sandbox

pytestmark = pytest.mark.integration


def _docker_tcp(box: Sandbox, address: str, *args: str) -> tuple[int, str]:
    """The docker CLI inside the sandbox's network namespace, over TCP."""
    result = box.nsenter("docker", "-H", address, *args, timeout=30,
                         env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(box.root)})
    return result.returncode, result.stdout + result.stderr


def test_a_ci_jobs_tcp_docker_host_is_ignored_and_logged(
    sandboxes: Callable[..., Sandbox],
) -> None:
    """DOCKER_HOST=tcp://docker:2376 (GitLab passes job variables to services): dockerd becomes
    ready on the default socket and one info line says why the variable was ignored."""
    box = sandboxes(env={"DOCKER_HOST": "tcp://docker:2376"})
    box.wait_ready()
    assert box.docker_answers()
    [notice] = box.events_named("docker_host_ignored")
    assert notice["level"] == "info"
    assert "tcp://docker:2376" in notice["message"]


def test_tls_off_serves_tcp_2375_like_docker_dind_and_warns(
    sandboxes: Callable[..., Sandbox],
) -> None:
    """DOCKER_TLS_CERTDIR="": a client reaches tcp://...:2375 (GitLab's TLS-disabled recipe),
    and the agent warns loudly that the port has no authentication."""
    box = sandboxes()
    box.wait_ready()
    code, out = _docker_tcp(box, "tcp://127.0.0.1:2375", "version", "--format",
                            "{{.Server.Version}}")
    assert code == 0, out
    [warning] = box.events_named("plain_tcp_served")
    assert warning["level"] == "warning"
    assert "DOCKER_TLS_CERTDIR" in warning["remedy"]


def test_plain_tcp_false_leaves_the_unix_socket_only(sandboxes: Callable[..., Sandbox]) -> None:
    """--no-dockerd-plain-tcp: nothing listens on 2375, the socket works, no warning."""
    box = sandboxes(agent_args=["--no-dockerd-plain-tcp"])
    box.wait_ready()
    code, out = _docker_tcp(box, "tcp://127.0.0.1:2375", "version")
    assert code != 0
    assert "cannot connect to the docker daemon" in out.lower()
    assert box.docker_answers()
    assert not box.events_named("plain_tcp_served")


def test_dockerd_first_runs_exactly_the_given_flags_supervised(
    sandboxes: Callable[..., Sandbox],
) -> None:
    """`IMAGE dockerd --host=unix:///var/run/docker.sock --debug`: dockerd gets exactly those
    flags (no TLS, no tcp, no paths added) and is still supervised (ready, /readyz, restart)."""
    flags = ["--host=unix:///var/run/docker.sock", "--debug", "--bridge=none"]
    box = sandboxes(
        env={"DOCKER_TLS_CERTDIR": "/certs"},
        command=[PYTHON, "-m", "supervisor", "run", "--log-level", "debug", "--",
                 "dockerd", *flags],
    )
    box.wait_ready()
    [started] = box.events_named("dockerd_started")
    assert started["argv"] == ["dockerd", *flags]
    assert box.docker("info", "--format", "{{.Debug}}").stdout.strip() == "true"
    assert not any((box.certs / part).exists() for part in ("ca", "server", "client"))
    assert box.status()["tls"] == {"enabled": False}
    assert box.events_named("dockerd_exact_args")


def test_another_program_replaces_the_agent_as_pid_1(sandboxes: Callable[..., Sandbox]) -> None:
    """`IMAGE sh -c ...` is exec'd as docker:dind does: it is PID 1, gets the default
    DOCKER_HOST, and its exit code is the container's."""
    box = sandboxes(command=[PYTHON, "-m", "supervisor", "run", "--", "sh", "-c",
                             'echo "pid=$$ host=$DOCKER_HOST"; sleep 1; exit 7'])
    assert box.wait(timeout=30) == 7
    assert "pid=1 host=tcp://docker:2375" in box.log_text()
