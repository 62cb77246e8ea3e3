"""How CI systems start docker:dind, with our image: the words after the image name, the env.

- ``docker run IMAGE sh -c ...`` and ``docker run -it IMAGE sh``: another
  program replaces the entrypoint, as docker:dind's does (an interactive
  shell is PID 1 with a controlling terminal and job control);
- Actions Runner Controller's sidecar: ``IMAGE dockerd --host=unix://... --group=GID``
  with /var/run on a volume shared with the runner container;
- GitLab CI passes job variables to services: ``DOCKER_HOST=tcp://docker:2376``
  given to the dind container itself is ignored (with an info line);
- GitLab's "TLS disabled" recipe: ``DOCKER_TLS_CERTDIR=`` and a client on
  ``tcp://docker:2375``.

Every scenario runs once per suite.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.image import Suite
from tests.e2e.outer import Outer, Pool
from tests.integration.sandbox import poll

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

NO_TLS = ("-e", "DOCKER_TLS_CERTDIR=")


def test_another_program_after_the_image_name_is_run(dinds: Pool) -> None:
    """`docker run IMAGE sh -c 'echo ok'` prints ok, as with docker:dind."""
    result = dinds.run("--rm", dinds.image, "sh", "-c", "echo ok", timeout=60)
    assert result.stdout == "ok\n", result


class Terminal:
    """A program on a pseudo-terminal: type into it, read until a pattern shows up."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        try:
            self.process = subprocess.Popen(
                argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
            )
        finally:
            os.close(slave)
        self.output = ""

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\r")

    def expect(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.output)
            if found:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {pattern!r} within {timeout} s in:\n{self.output}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # EIO: the program closed the terminal
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"the terminal closed before {pattern!r}:\n{self.output}")
                self.output += chunk.decode(errors="replace")

    def close(self) -> int | None:
        if self.process.poll() is None:
            self.process.kill()
        code = self.process.wait(timeout=30)
        os.close(self.master)
        return code


def test_an_interactive_shell_is_pid_1_with_a_terminal_and_job_control(
    outer: Outer, dinds: Pool
) -> None:
    """`docker run -it IMAGE sh` through a pty: the shell answers, is PID 1, has job control."""
    name = dinds.name("interactive")
    env = {**os.environ, "DOCKER_CONFIG": str(outer.root / "docker-config")}
    env.pop("DOCKER_HOST", None)
    terminal = Terminal(
        ["docker", "-H", f"unix://{outer.box.socket}", "run", "--rm", "-it", "--name", name,
         dinds.image, "sh"],
        env,
    )
    try:
        terminal.expect(r"# $")
        # The typed line is echoed too: only the shell's answer has R=42.
        terminal.type('echo "R=$((6*7)) PID=$$ TTY=$(tty) FLAGS=$-"')
        answer = terminal.expect(r"R=42 PID=(\d+) TTY=(\S+) FLAGS=(\w+)")
        pid, tty, flags = answer.groups()
        assert pid == "1", terminal.output
        assert tty.startswith("/dev/pts/"), terminal.output
        assert "i" in flags, terminal.output  # interactive
        assert "m" in flags, terminal.output  # monitor: job control
        terminal.type("sleep 300 &")
        terminal.type("jobs")
        terminal.expect(r"\[1\] \+ Running")
        terminal.type("kill %1; exit 7")
        poll(lambda: terminal.process.poll() is not None, timeout=60, interval=0.1,
             what="the docker CLI to end with the shell")
        assert terminal.process.returncode == 7, terminal.output
        assert "job control turned off" not in terminal.output, terminal.output
    finally:
        terminal.close()


def test_actions_runner_controller_sidecar_serves_the_shared_socket(
    dinds: Pool, suite: Suite
) -> None:
    """ARC's `IMAGE dockerd --host=unix:///var/run/docker.sock --group=123`: the runner's CLI."""
    sockets = dinds.volume("dind-sock")
    flags = ["--host=unix:///var/run/docker.sock", "--group=123"]
    dind = dinds(options=["-v", f"{sockets}:/var/run"], dockerd_args=["dockerd", *flags])
    # The runner container: the same volume on /var/run, the CLI's default socket.
    runner = dinds.start("-v", f"{sockets}:/var/run", "--entrypoint", "sleep", dinds.image,
                         "infinity")

    def runner_docker(*args: str) -> subprocess.CompletedProcess[str]:
        return dinds.outer.docker("exec", runner, "docker", *args, check=False, timeout=60)

    def info() -> str:
        state = dind.inspect()["State"]
        if not state["Running"]:
            raise AssertionError(f"dind exited ({state['ExitCode']}):\n{dind.logs()[-4000:]}")
        result = runner_docker("info", "--format", "{{.ServerVersion}}")
        return result.stdout.strip() if result.returncode == 0 else ""

    # As ARC's startup probe does: `docker info` until it answers.
    version = poll(info, timeout=90, interval=0.5, what="`docker info` in the runner container")
    assert version.startswith(suite.dockerd), version
    group = dinds.outer.docker("exec", runner, "stat", "-c", "%g", "/var/run/docker.sock")
    assert group.stdout.strip() == "123", group
    started = dind.events_named("dockerd_started")
    assert started, dind.logs()[-3000:]
    argv = started[0]["argv"]
    assert Path(argv[0]).name == "dockerd", argv
    assert argv[1:] == flags, argv


def test_a_tcp_docker_host_given_to_the_dind_container_is_ignored(
    dinds: Pool, suite: Suite
) -> None:
    """GitLab passes DOCKER_HOST=tcp://docker:2376 to services: ready, and an info line says so."""
    dind = dinds(options=["-e", "DOCKER_HOST=tcp://docker:2376"])
    dind.wait_ready()
    ignored = dind.events_named("docker_host_ignored")
    assert len(ignored) == 1, dind.logs()[-3000:]
    assert ignored[0]["level"] == "info", ignored
    assert "tcp://docker:2376" in str(ignored[0]), ignored
    started = dind.events_named("dockerd_started")[0]
    assert "unix:///var/run/docker.sock" in started["serves"], started
    assert not any("docker:2376" in arg for arg in [*started["argv"], *started["serves"]]), started
    version = dind.exec("docker", "-H", "unix:///var/run/docker.sock", "version",
                        "--format", "{{.Server.Version}}")
    assert version.stdout.startswith(suite.dockerd), version


def test_with_tls_off_a_client_reaches_tcp_2375(dinds: Pool, suite: Suite) -> None:
    """GitLab's "TLS disabled" recipe: DOCKER_TLS_CERTDIR= and DOCKER_HOST=tcp://docker:2375."""
    network = dinds.network("e2e-plain")
    dind = dinds(options=["--network", network, "--network-alias", "docker", *NO_TLS])
    dind.wait_ready()
    client = dinds.run(
        "--rm", "--network", network, "-e", "DOCKER_HOST=tcp://docker:2375",
        "--entrypoint", "docker", dinds.image, "version", "--format", "{{.Server.Version}}",
        timeout=120,
    )
    assert client.stdout.startswith(suite.dockerd), client
    # The agent holds 2375 and hands it to dockerd (-H fd://), so dockerd does not know
    # the address and its own "without encryption" warning in `docker info` is gone:
    # the agent says it instead, at every start.
    warned = dind.events_named("plain_tcp_served")
    assert warned, dind.logs()[-3000:]
    assert warned[0]["level"] == "warning", warned
    assert "tcp://0.0.0.0:2375" in str(warned[0]), warned
