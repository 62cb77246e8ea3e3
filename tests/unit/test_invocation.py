"""Tests for supervisor.invocation and supervisor.passthrough: what the words after the image
name mean, and the environment an exec'd program gets (as docker:dind's entrypoints give it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.invocation import Mode, classify
from supervisor.passthrough import client_tls_ready, prepare_exec

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("argv", "mode", "own", "rest"),
    [
        ([], Mode.AGENT, ["run"], []),
        (["--"], Mode.AGENT, ["run"], []),
        (["run", "--"], Mode.AGENT, ["run"], []),
        (["run", "--log-level", "debug"], Mode.AGENT, ["run", "--log-level", "debug"], []),
        (["--log-level", "debug"], Mode.AGENT, ["run", "--log-level", "debug"], []),
        (["run", "--", "--debug", "--mtu=1400"], Mode.AGENT, ["run"], ["--debug", "--mtu=1400"]),
        (["run", "--", "dockerd", "-H", "unix:///x"], Mode.EXACT, ["run"], ["-H", "unix:///x"]),
        (["run", "--", "dockerd"], Mode.EXACT, ["run"], []),
        (["run", "--", "--debug", "dockerd"], Mode.AGENT, ["run"], ["--debug", "dockerd"]),
        (["run", "--", "sh", "-c", "echo ok"], Mode.EXEC, ["run"], ["sh", "-c", "echo ok"]),
        (["run", "--", "docker", "info"], Mode.EXEC, ["run"], ["docker", "info"]),
        (["run", "--", "--", "x"], Mode.AGENT, ["run"], ["--", "x"]),
        (["status", "--json"], Mode.COMMAND, ["status", "--json"], []),
        (["--help"], Mode.COMMAND, ["--help"], []),
        (["version"], Mode.COMMAND, ["version"], []),
    ],
)
def test_classify(argv: list[str], mode: Mode, own: list[str], rest: list[str]) -> None:
    """A flag first means dockerd flags, `dockerd` exact arguments, any other word an exec."""
    invocation = classify(argv)
    assert (invocation.mode, list(invocation.own), list(invocation.rest)) == (mode, own, rest)


def _client_certs(tmp_path: Path) -> Path:
    client = tmp_path / "client"
    client.mkdir()
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (client / name).write_text("x")
    return tmp_path


def test_exec_prefixes_docker_subcommands() -> None:
    """`IMAGE version` runs `docker version`, as docker-entrypoint.sh does; `sh` stays `sh`."""
    known = {"version", "info"}.__contains__
    assert prepare_exec(["version"], {}, is_docker_subcommand=known,
                        socket_exists=lambda _p: False)[0] == ["docker", "version"]
    assert prepare_exec(["sh", "-c", "x"], {}, is_docker_subcommand=known,
                        socket_exists=lambda _p: False)[0] == ["sh", "-c", "x"]


@pytest.mark.parametrize(
    ("env", "socket", "host"),
    [
        ({}, True, "unix:///var/run/docker.sock"),
        ({}, False, "tcp://docker:2375"),
        ({"DOCKER_TLS_VERIFY": "1"}, False, "tcp://docker:2376"),
        ({"DOCKER_HOST": "tcp://elsewhere:1"}, True, "tcp://elsewhere:1"),
    ],
)
def test_exec_docker_host_default(env: dict[str, str], socket: bool, host: str) -> None:
    """No DOCKER_HOST: the local socket when there is one, else docker:2375 (2376 with TLS)."""
    _argv, out = prepare_exec(["sh"], env, is_docker_subcommand=lambda _w: False,
                              socket_exists=lambda _p: socket)
    assert out["DOCKER_HOST"] == host


def test_exec_with_client_certs_sets_tls_variables(tmp_path: Path) -> None:
    """Client certificates in the certdir: TLS on 2376 with DOCKER_CERT_PATH pointing at them."""
    certdir = _client_certs(tmp_path)
    env = {"DOCKER_TLS_CERTDIR": str(certdir)}
    assert client_tls_ready(env)
    _argv, out = prepare_exec(["sh"], env, is_docker_subcommand=lambda _w: False,
                              socket_exists=lambda _p: False)
    assert out["DOCKER_HOST"] == "tcp://docker:2376"
    assert out["DOCKER_TLS_VERIFY"] == "1"
    assert out["DOCKER_CERT_PATH"] == str(certdir / "client")


def test_exec_with_an_incomplete_certdir_stays_plain(tmp_path: Path) -> None:
    """A certdir without all three client files is not TLS (docker-entrypoint.sh's rule)."""
    certdir = _client_certs(tmp_path)
    (certdir / "client" / "key.pem").write_text("")
    env = {"DOCKER_TLS_CERTDIR": str(certdir)}
    assert not client_tls_ready(env)
    _argv, out = prepare_exec(["sh"], env, is_docker_subcommand=lambda _w: False,
                              socket_exists=lambda _p: False)
    assert out["DOCKER_HOST"] == "tcp://docker:2375"
    assert "DOCKER_CERT_PATH" not in out
