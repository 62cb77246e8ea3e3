"""Running another program instead of the agent, as docker:dind's docker-entrypoint.sh does.

``docker run IMAGE sh`` must give an interactive shell as PID 1 (with job
control on a terminal), and ``docker run IMAGE version`` the docker CLI's
answer, exactly as with docker:dind. So the program is exec'd: nothing of
ours stays behind, no reaper, no signal forwarding. Before the exec the
environment gets what docker-entrypoint.sh gives it: a DOCKER_HOST when none
is set (the local socket if there is one, else ``tcp://docker:2376`` with
TLS or ``:2375`` without) and, when the client certificates exist,
DOCKER_TLS_VERIFY and DOCKER_CERT_PATH.

Standard library only: it runs in PID 1 before anything else is imported.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NoReturn

_LOCAL_SOCKET = "/var/run/docker.sock"
_CLIENT_FILES = ("ca.pem", "cert.pem", "key.pem")


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def _nonempty(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def client_tls_ready(env: Mapping[str, str]) -> bool:
    """docker-entrypoint.sh's _should_tls: a certdir whose client/ holds the three files."""
    certdir = env.get("DOCKER_TLS_CERTDIR", "")
    return bool(certdir) and all(_nonempty(Path(certdir, "client", n)) for n in _CLIENT_FILES)


def docker_knows(word: str) -> bool:
    """Whether ``word`` is a docker CLI subcommand (``docker help WORD`` succeeds)."""
    try:
        result = subprocess.run(
            ["docker", "help", word],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def prepare_exec(
    argv: list[str],
    env: Mapping[str, str],
    *,
    is_docker_subcommand: Callable[[str], bool] = docker_knows,
    socket_exists: Callable[[str], bool] = _is_socket,
) -> tuple[list[str], dict[str, str]]:
    """The program to exec and its environment, as docker-entrypoint.sh would make them."""
    program = list(argv)
    if program and is_docker_subcommand(program[0]):
        program = ["docker", *program]
    out = dict(env)
    tls = client_tls_ready(env)
    if not out.get("DOCKER_HOST"):
        if socket_exists(_LOCAL_SOCKET):
            out["DOCKER_HOST"] = f"unix://{_LOCAL_SOCKET}"
        elif tls or out.get("DOCKER_TLS_VERIFY"):
            out["DOCKER_HOST"] = "tcp://docker:2376"
        else:
            out["DOCKER_HOST"] = "tcp://docker:2375"
    if tls:
        out["DOCKER_TLS_VERIFY"] = "1"
        out["DOCKER_CERT_PATH"] = str(Path(env["DOCKER_TLS_CERTDIR"], "client"))
    return program, out


def exec_program(argv: list[str]) -> NoReturn:
    """Replace this process with ``argv`` (signals unblocked, as a fresh program expects)."""
    import signal

    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    program, env = prepare_exec(argv, os.environ)
    try:
        os.execvpe(program[0], program, env)  # noqa: S606 - replacing ourselves is the point
    except OSError as exc:
        print(f"dind-supervisor: cannot run {program[0]!r}: {exc.strerror or exc}", file=sys.stderr)
        # The shell's convention: 127 not found, 126 found but not runnable.
        sys.exit(127 if isinstance(exc, FileNotFoundError) else 126)
