"""Tests for supervisor.dockerd.process.build_argv: dockerd's argv as docker:dind builds it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from supervisor.config import Config, DockerdConfig, TlsConfig, load
from supervisor.dockerd.process import TlsFiles, build_argv, spawn

pytestmark = pytest.mark.unit

TLS = TlsFiles(
    ca=Path("/certs/server/ca.pem"),
    cert=Path("/certs/server/cert.pem"),
    key=Path("/certs/server/key.pem"),
)


def config(*args: str, **dockerd: object) -> Config:
    return Config(dockerd=DockerdConfig(args=tuple(args), **dockerd))  # type: ignore[arg-type]


def hosts(argv: list[str]) -> list[str]:
    return [a.removeprefix("--host=") for a in argv if a.startswith("--host=")]


def test_tls_off_defaults() -> None:
    """TLS off: unix socket and docker:dind's tcp 2375, --tls=false (no 15 s sleep), default
    paths, live-restore."""
    argv = build_argv(config())
    assert argv == [
        "dockerd",
        "--host=unix:///var/run/docker.sock",
        "--host=tcp://0.0.0.0:2375",
        "--tls=false",
        "--data-root=/var/lib/docker",
        "--exec-root=/var/run/docker",
        "--pidfile=/var/run/docker.pid",
        "--live-restore",
    ]


def test_tls_off_without_plain_tcp_serves_the_socket_only() -> None:
    """plain_tcp=false turns docker:dind's unauthenticated 2375 off."""
    assert hosts(build_argv(config(plain_tcp=False))) == ["unix:///var/run/docker.sock"]


@pytest.mark.parametrize(
    "args",
    [
        ("--host=unix:///var/run/docker.sock", "--group=123"),
        ("--debug",),
        (),
    ],
)
def test_exact_mode_adds_nothing(args: tuple[str, ...]) -> None:
    """`IMAGE dockerd ARGS`: the argv is the binary and ARGS, nothing else."""
    cfg = load(env={"DOCKER_TLS_CERTDIR": "/certs"}, dockerd_args=args, exact_args=True)
    assert build_argv(cfg, tls=None, mtu=1400, extra=["--oom-score-adjust=-500"]) == [
        "dockerd", *args,
    ]


def test_exact_mode_with_tcp_hosts_only_adds_the_agents_socket() -> None:
    """Exact arguments naming no unix socket: the agent's private socket is the one addition."""
    cfg = load(env={}, dockerd_args=("-H", "tcp://0.0.0.0:2375"), exact_args=True)
    assert build_argv(cfg) == [
        "dockerd", "-H", "tcp://0.0.0.0:2375", "--host=unix:///run/dind-supervisor/dockerd.sock",
    ]


def test_tls_on_adds_tcp_listener_and_files() -> None:
    """TLS on: the TLS tcp listener, --tlsverify and the three server files; no --tls=false."""
    argv = build_argv(config(), tls=TLS)
    assert hosts(argv) == ["unix:///var/run/docker.sock", "tcp://0.0.0.0:2376"]
    assert "--tlsverify" in argv
    assert "--tlscacert=/certs/server/ca.pem" in argv
    assert "--tlscert=/certs/server/cert.pem" in argv
    assert "--tlskey=/certs/server/key.pem" in argv
    assert "--tls=false" not in argv


def test_tls_listener_from_config() -> None:
    """The TLS listener address comes from tls.listen."""
    cfg = Config(tls=TlsConfig(certdir="/certs", listen="tcp://127.0.0.1:12376"))
    assert hosts(build_argv(cfg, tls=TLS))[1] == "tcp://127.0.0.1:12376"


def test_plain_tcp_adds_2375() -> None:
    """plain_tcp with TLS off adds the unauthenticated 2375 listener."""
    argv = build_argv(config(plain_tcp=True))
    assert hosts(argv) == ["unix:///var/run/docker.sock", "tcp://0.0.0.0:2375"]


def test_custom_paths_and_socket() -> None:
    """Socket, data-root, exec-root, pidfile and binary follow the configuration."""
    cfg = load(
        env={
            "DOCKER_HOST": "unix:///run/d/docker.sock",
            "DIND_SUPERVISOR_DOCKERD_DATA_ROOT": "/srv/docker",
            "DIND_SUPERVISOR_DOCKERD_EXEC_ROOT": "/run/d/exec",
            "DIND_SUPERVISOR_DOCKERD_PIDFILE": "/run/d/docker.pid",
            "DIND_SUPERVISOR_DOCKERD_BINARY": "/usr/local/bin/dockerd",
        }
    )
    argv = build_argv(cfg)
    assert argv[0] == "/usr/local/bin/dockerd"
    assert "--host=unix:///run/d/docker.sock" in argv
    assert "--data-root=/srv/docker" in argv
    assert "--exec-root=/run/d/exec" in argv
    assert "--pidfile=/run/d/docker.pid" in argv


def test_user_args_appended_verbatim_and_last() -> None:
    """User arguments after `--` come last, unchanged and in order, after extra args."""
    cfg = load(env={}, dockerd_args=["--storage-driver", "vfs", "--debug", "--label=a=b c"])
    argv = build_argv(cfg, mtu=1400, extra=["--default-ulimit=nofile=1024:2048"])
    assert argv[-4:] == ["--storage-driver", "vfs", "--debug", "--label=a=b c"]
    assert argv[-5] == "--default-ulimit=nofile=1024:2048"
    assert "--mtu=1400" in argv


@pytest.mark.parametrize(
    "user",
    [
        ["--host=tcp://0.0.0.0:2375"],
        ["--host", "unix:///x.sock"],
        ["-H", "tcp://0.0.0.0:2375"],
        ["-H=tcp://0.0.0.0:2375"],
    ],
)
def test_user_host_replaces_our_tcp_listeners_but_keeps_the_socket(user: list[str]) -> None:
    """A user --host/-H replaces our TCP listeners; the unix socket the agent pings stays."""
    argv = build_argv(config(*user, plain_tcp=True), tls=TLS)
    ours = argv[: len(argv) - len(user)]
    assert hosts(ours) == ["unix:///var/run/docker.sock"]
    assert argv[-len(user) :] == user


def test_user_listing_our_socket_gets_no_second_copy() -> None:
    """When the user's hosts include the agent's socket, it is not given twice."""
    user = ["-H", "unix:///var/run/docker.sock", "-H", "tcp://0.0.0.0:2375"]
    argv = build_argv(config(*user), tls=TLS)
    assert hosts(argv[: len(argv) - len(user)]) == []


@pytest.mark.parametrize(
    ("user", "ours"),
    [
        (["--data-root=/mnt/d"], "--data-root="),
        (["--data-root", "/mnt/d"], "--data-root="),
        (["-g", "/mnt/d"], "--data-root="),
        (["--graph=/mnt/d"], "--data-root="),
        (["--pidfile=/run/x.pid"], "--pidfile="),
        (["-p", "/run/x.pid"], "--pidfile="),
        (["--exec-root=/run/x"], "--exec-root="),
        (["--live-restore=false"], "--live-restore"),
        (["--live-restore"], "--live-restore"),
        (["--mtu=9000"], "--mtu="),
        (["--mtu", "9000"], "--mtu="),
        (["--tls=true"], "--tls=false"),
        (["--tlsverify"], "--tls=false"),
    ],
)
def test_user_option_suppresses_ours(user: list[str], ours: str) -> None:
    """An option the user gives after `--` is not given a second time by us."""
    argv = build_argv(config(*user), mtu=1400)
    mine = argv[: len(argv) - len(user)]
    assert not any(a == ours or a.startswith(ours) for a in mine), mine
    assert argv[-len(user) :] == user


def test_live_restore_off_gives_no_flag() -> None:
    """live_restore=false adds no --live-restore flag at all."""
    argv = build_argv(config(live_restore=False))
    assert not any(a.startswith("--live-restore") for a in argv)


def test_mtu_only_when_given() -> None:
    """--mtu appears only when a (detected or configured) MTU is passed."""
    assert not any(a.startswith("--mtu") for a in build_argv(config()))
    assert not any(a.startswith("--mtu") for a in build_argv(config(), mtu=0))
    assert "--mtu=1450" in build_argv(config(), mtu=1450)


def test_nothing_given_twice_by_us() -> None:
    """Our own part of the argv never repeats an option."""
    argv = build_argv(config(plain_tcp=True), tls=TLS, mtu=1500)
    names = [a.split("=", 1)[0] for a in argv[1:] if a != "--host" and not a.startswith("--host=")]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("user", "ours"),
    [(["-Htcp://0.0.0.0:2375"], "--host=tcp"), (["-p/run/x.pid"], "--pidfile=")],
)
def test_attached_short_option_suppresses_ours(user: list[str], ours: str) -> None:
    """dockerd (pflag) reads -Hvalue like -H value, so it suppresses ours too."""
    argv = build_argv(config(*user), tls=TLS)
    assert not any(a.startswith(ours) for a in argv[: len(argv) - len(user)])


def test_dockerd_starts_with_no_signal_blocked_whatever_the_spawner_blocks() -> None:
    """PID 1 spawns dockerd with the stop signals blocked; Go would keep SIGTERM blocked."""
    blocked = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        spawned = spawn(["grep", "SigBlk", "/proc/self/status"], env={"PATH": "/usr/bin:/bin"})
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    assert spawned.popen is not None
    assert spawned.popen.wait(timeout=10) == 0
    os.set_blocking(spawned.output, True)
    with os.fdopen(spawned.output, "rb") as output:
        assert output.read().split() == [b"SigBlk:", b"0000000000000000"]
