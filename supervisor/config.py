"""Configuration: defaults < TOML file < environment < flags, validated once.

This module owns the shape of the configuration (frozen dataclasses, one per
section), how each source is read and coerced, and the errors that name the
key, the value and the source. It does not decide anything at run time; the
components read the finished ``Config``.

Our own environment variables are ``DIND_SUPERVISOR_<SECTION>_<KEY>``; the
flags of ``run`` are ``--<section>-<key>``. docker:dind's variables keep
their meaning: DOCKER_TLS_CERTDIR (empty: no TLS), DOCKER_TLS_SAN and
DOCKER_HOST (used only when it names a unix socket, as docker:dind does: a
CI job's ``DOCKER_HOST=tcp://docker:2376`` reaches its service containers
too, and must not stop them).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor.dockerd_flags import last_value, option_values, user_sets
from supervisor.errors import ConfigError

ENV_PREFIX = "DIND_SUPERVISOR_"
CONFIG_ENV = "DIND_SUPERVISOR_CONFIG"

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2,
               "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4, "kib": 1024,
               "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.I)


def _duration(default: float, help_text: str) -> Any:
    return field(default=default, metadata={"duration": True, "help": help_text})


def _size(default: int, help_text: str) -> Any:
    return field(default=default, metadata={"size": True, "help": help_text})


def _opt(default: Any, help_text: str) -> Any:
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata={"help": help_text})
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True, slots=True, kw_only=True)
class DockerdConfig:
    binary: str = _opt("dockerd", "dockerd executable (name on PATH or absolute path)")
    data_root: Path = _opt(Path("/var/lib/docker"), "dockerd's --data-root")
    exec_root: Path = _opt(Path("/var/run/docker"), "dockerd's --exec-root")
    host: str = _opt("unix:///var/run/docker.sock", "unix socket dockerd serves (DOCKER_HOST)")
    pidfile: Path = _opt(Path("/var/run/docker.pid"), "dockerd's --pidfile")
    containerd_pidfile: Path = _opt(
        Path("/var/run/docker/containerd/containerd.pid"), "pid file of dockerd's containerd"
    )
    start_timeout: float = _duration(60.0, "longest wait from spawn to ready")
    stop_timeout: float = _duration(
        20.0, "wait after the one TERM before KILL (longer than dockerd's own 15 s)"
    )
    live_restore: bool = _opt(True, "run dockerd with --live-restore (containers survive)")
    plain_tcp: bool = _opt(
        True,
        "with TLS off, serve tcp://0.0.0.0:2375 WITHOUT authentication, as docker:dind does;"
        " false: the unix socket only",
    )
    mtu: int = _opt(0, "MTU for dockerd's bridge; 0 detects the default route's interface")
    args: tuple[str, ...] = _opt((), "extra dockerd arguments (also: after `--`)")
    socket_activation: bool = _opt(
        True,
        "hold dockerd's sockets in the agent and hand them over (-H fd://), so clients wait"
        " instead of being refused while dockerd restarts",
    )
    manage_containerd: bool = _opt(
        True,
        "run containerd under the agent (restarted at once when it dies) and point dockerd at"
        " it; false: dockerd starts its own",
    )
    exact_args: bool = _opt(
        False,
        "run dockerd with exactly dockerd.args, adding no socket, TLS, path or live-restore"
        " flag (what `IMAGE dockerd ARGS...` asks for)",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartConfig:
    backoff_initial: float = _duration(1.0, "delay before the first restart after a failure")
    backoff_factor: float = _opt(2.0, "growth of the delay per failure in the window")
    backoff_max: float = _duration(30.0, "cap of the restart delay")
    healthy_after: float = _duration(
        10.0, "a dockerd ready this long is restarted at once when it dies"
    )
    max_failures: int = _opt(5, "failed starts within the window before giving up (exit 1)")
    failure_window: float = _duration(120.0, "window in which failed starts are counted")
    max_crashes: int = _opt(
        10, "deaths of a dockerd that had become ready, within crash_window, before giving up"
    )
    crash_window: float = _duration(600.0, "window in which crashes of a ready dockerd count")


@dataclass(frozen=True, slots=True, kw_only=True)
class LivenessConfig:
    interval: float = _duration(5.0, "time between liveness pings of a ready dockerd")
    timeout: float = _duration(3.0, "a ping slower than this is a miss")
    failures: int = _opt(
        3, "misses in a row before dockerd (or the agent's containerd) is treated as hung"
    )
    kill_grace: float = _duration(5.0, "wait after TERM to a hung dockerd before KILL")


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpConfig:
    listen: str = _opt("0.0.0.0:9324", "address of /metrics /healthz /readyz /status; empty: off")
    socket: str = _opt(
        "/run/dind-supervisor/agent.sock",
        "the same endpoint on a unix socket (status/wait use it when they can); empty: off",
    )
    tls: bool = _opt(
        False, "serve HTTPS and require a client certificate signed by the agent's CA"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class LogConfig:
    format: str = _opt("auto", "auto (json unless on a terminal), json or console")
    level: str = _opt("info", "debug, info, warning or error")


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    state_dir: Path = _opt(Path("/run/dind-supervisor"), "runtime files (notify socket, state)")
    stop_file: str = _opt("", "stop gracefully when this file appears (sidecar jobs)")
    restart_limit: int = _opt(
        5, "as PID 1: deaths of the agent within restart_window before dockerd is stopped and"
        " the container exits 1"
    )
    restart_window: float = _duration(600.0, "window in which the agent's deaths count")


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsConfig:
    certdir: str = _opt("", "DOCKER_TLS_CERTDIR: empty disables TLS")
    san: str = _opt("", "DOCKER_TLS_SAN: extra SANs, e.g. 'DNS:foo IP:10.0.0.1'")
    listen: str = _opt("tcp://0.0.0.0:2376", "TLS listener of dockerd")
    key_type: str = _opt("ecdsa-p256", "ecdsa-p256, rsa-2048, rsa-3072 or rsa-4096")
    ca_lifetime: float = _duration(1825 * 86400.0, "lifetime of the CA the agent issues")
    server_lifetime: float = _duration(30 * 86400.0, "lifetime of dockerd's server certificate")
    client_lifetime: float = _duration(30 * 86400.0, "lifetime of the client certificate")
    renew_fraction: float = _opt(2 / 3, "renew a certificate at this fraction of its lifetime")
    client_key_mode: str = _opt("0644", "mode of client/key.pem (shared with other containers)")
    expiry_warning: float = _duration(14 * 86400.0, "warn when a user-managed cert is this close")
    rotate: bool = _opt(True, "renew certificates before they expire (restarts dockerd)")
    rotation_idle: float = _duration(
        5.0, "a due renewal restarts dockerd once no client connection carried data this long"
    )
    rotation_max_wait: float = _duration(
        6 * 3600.0, "longest wait for that quiet moment (and never past half the time left)"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class DataRootConfig:
    lock: bool = _opt(True, "refuse to share the data root with another agent or dockerd")
    check_daemon_locks: bool = _opt(True, "also detect a dockerd not started by an agent")
    clean_pid_files: bool = _opt(True, "remove stale dockerd/containerd pid files before starts")
    gc_enabled: bool = _opt(False, "prune build cache and unused images under disk pressure")
    gc_high: float = _opt(0.85, "start garbage collection above this used fraction")
    gc_low: float = _opt(0.80, "stop garbage collection below this used fraction")
    gc_interval: float = _duration(60.0, "how often disk usage is checked for garbage collection")
    min_free: int = _size(
        256 * 1024**2, "free space the data root needs before dockerd starts ('256MiB', '2GiB')"
    )
    min_free_inodes: int = _opt(1000, "free inodes the data root needs before dockerd starts")
    low_space: str = _opt(
        "refuse", "below min_free: refuse to start (exit 2) or warn and start dockerd anyway;"
        " with gc_enabled the agent always starts dockerd and prunes"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class PrepareConfig:
    enabled: str = _opt("auto", "auto (only as a container's PID 1), true or false")
    cgroup: bool = _opt(True, "cgroup v2: move processes to /init, enable controllers")
    securityfs: bool = _opt(True, "mount securityfs on /sys/kernel/security")
    tmp: bool = _opt(True, "mount a tmpfs on /tmp when it is not a mount")
    rshared: bool = _opt(True, "make / rshared")
    iptables: str = _opt("auto", "iptables backend: auto, legacy, nft or off")


@dataclass(frozen=True, slots=True, kw_only=True)
class RootlessConfig:
    enabled: str = _opt(
        "auto", "run dockerd through rootlesskit as docker:dind-rootless does: auto (when the"
        " agent is not root), true or false"
    )
    rootlesskit: str = _opt("rootlesskit", "rootlesskit executable (name on PATH or absolute path)")
    net: str = _opt(
        "auto", "rootlesskit's --net (DOCKERD_ROOTLESS_ROOTLESSKIT_NET); auto: slirp4netns, or"
        " vpnkit where slirp4netns is missing"
    )
    mtu: int = _opt(1500, "rootlesskit's --mtu (DOCKERD_ROOTLESS_ROOTLESSKIT_MTU)")
    flags: tuple[str, ...] = _opt(
        (), "more rootlesskit flags, before dockerd's command (DOCKERD_ROOTLESS_ROOTLESSKIT_FLAGS)"
    )


def _raw(help_text: str) -> Any:
    return field(default=None, metadata={"raw": True, "help": help_text})


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyConfig:
    """Raw values; ``supervisor.policy.spec.policy_from_config`` validates and merges them
    (the agent does, before it touches anything; ``check`` does too)."""

    mode: Any = _raw("best-effort (apply what the kernel allows, explain the rest) or strict")
    init_oom_score_adj: Any = _raw("oom_score_adj of PID 1 (default -999) or 'inherit'")
    agent_oom_score_adj: Any = _raw("oom_score_adj of the agent (default -900) or 'inherit'")
    dockerd_oom_score_adj: Any = _raw("oom_score_adj of dockerd (default -500) or 'inherit'")
    agent_rlimits: Any = _raw("rlimits of the agent: 'nofile=4096:8192,core=0'")
    dockerd_rlimits: Any = _raw(
        "rlimits of dockerd and its containers (default nofile=1048576,nproc=unlimited,"
        "core=unlimited); a TOML table or 'name=soft:hard,...'"
    )


_LOG_FORMATS = ("auto", "json", "console")
_KEY_TYPES = ("ecdsa-p256", "rsa-2048", "rsa-3072", "rsa-4096")
_LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    dockerd: DockerdConfig = field(default_factory=DockerdConfig)
    restart: RestartConfig = field(default_factory=RestartConfig)
    liveness: LivenessConfig = field(default_factory=LivenessConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    log: LogConfig = field(default_factory=LogConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    dataroot: DataRootConfig = field(default_factory=DataRootConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    rootless: RootlessConfig = field(default_factory=RootlessConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    # Where each non-default value came from, for error messages later on.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    # Values read and deliberately not used (e.g. a tcp:// DOCKER_HOST): (event,
    # one sentence) for the log, since quietly ignoring them would puzzle their author.
    notices: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    @property
    def tls_enabled(self) -> bool:
        # `IMAGE dockerd ARGS` gets exactly ARGS: docker:dind issues no
        # certificates then either.
        return bool(self.tls.certdir) and not self.dockerd.exact_args

    @property
    def plain_tcp_served(self) -> bool:
        """dockerd serves tcp 2375 without TLS (docker:dind's default with TLS off)."""
        d = self.dockerd
        return (
            d.plain_tcp
            and not self.tls_enabled
            and not d.exact_args
            and not user_sets(d.args, "-H", "--host")
        )

    @property
    def live_restore_on(self) -> bool:
        """dockerd keeps containers running when it exits (ours or the user's flag)."""
        d = self.dockerd
        if user_sets(d.args, "--live-restore"):
            return last_value(d.args, "--live-restore") not in ("false", "0")
        return d.live_restore and not d.exact_args

    @property
    def rootless_on(self) -> bool:
        """dockerd runs through rootlesskit (``load`` turns ``auto`` into ``true`` for a
        non-root agent)."""
        return self.rootless.enabled == "true"

    @property
    def socket_path(self) -> Path:
        return Path(self.dockerd.host.removeprefix("unix://"))


SECTIONS: dict[str, type[Any]] = {
    f.name: typing.get_type_hints(Config)[f.name]
    for f in dataclasses.fields(Config)
    if f.name not in ("sources", "notices")
}


def section_fields(section: str) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(SECTIONS[section])}


def field_type(section: str, key: str) -> Any:
    return typing.get_type_hints(SECTIONS[section])[key]


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as ``500ms``, ``30s``, ``5m``, ``2h``, ``30d``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration, got a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION_RE.match(value)):
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
    else:
        raise ValueError("expected a duration such as 30, '500ms', '30s', '5m', '2h' or '30d'")
    if not math.isfinite(seconds):
        raise ValueError("a duration must be a finite number of seconds")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from a number or a string such as ``512MiB``, ``2GiB``, ``1.5G`` (decimal units
    without ``i``, as df -H)."""
    if isinstance(value, bool):
        raise ValueError("expected a size, got a boolean")
    if isinstance(value, int):
        number, unit = float(value), ""
    elif isinstance(value, str) and (match := _SIZE_RE.match(value)):
        number, unit = float(match.group(1)), match.group(2).lower()
    else:
        raise ValueError("expected a size such as 1073741824, '512MiB' or '2GiB'")
    if unit not in _SIZE_UNITS:
        raise ValueError(f"unknown unit {unit!r}: use B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB)")
    return int(number * _SIZE_UNITS[unit])


def format_size(size: int) -> str:
    """The largest binary unit that divides the size: 256MiB, 2GiB; else bytes."""
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def _parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off", ""}:
            return False
    raise ValueError("expected a boolean (true/false, 1/0, yes/no, on/off)")


def _coerce(section: str, key: str, value: object) -> object:
    meta = section_fields(section)[key].metadata
    if meta.get("raw"):
        return value
    kind = field_type(section, key)
    if meta.get("duration"):
        return parse_duration(value)
    if meta.get("size"):
        return parse_size(value)
    if kind is bool:
        return _parse_bool(value)
    if kind is int:
        if isinstance(value, bool):
            raise ValueError("expected an integer, got a boolean")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
            return int(value)
        raise ValueError("expected an integer")
    if kind is float:
        if isinstance(value, bool):
            raise ValueError("expected a number, got a boolean")
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError("expected a number") from None
        if not math.isfinite(number):
            raise ValueError("expected a finite number")
        return number
    if kind is Path:
        if not isinstance(value, str) or not value:
            raise ValueError("expected a non-empty path")
        return Path(value)
    if kind is str:
        if not isinstance(value, str):
            raise ValueError("expected a string")
        return value
    if kind == tuple[str, ...]:
        if isinstance(value, str):
            return tuple(value.split())
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return tuple(value)
        raise ValueError("expected a list of strings")
    raise ValueError(f"unsupported setting type {kind!r}")  # pragma: no cover


class _Layer:
    """Values for some keys from one source, already coerced."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], object] = {}
        self.sources: dict[tuple[str, str], str] = {}
        self.notices: list[tuple[str, str]] = []

    def put(self, section: str, key: str, raw: object, source: str) -> None:
        if section not in SECTIONS:
            raise ConfigError(
                key=f"{section}.{key}" if key else section,
                value=raw,
                source=source,
                reason=f"unknown section; known: {', '.join(SECTIONS)}",
            )
        if key not in section_fields(section):
            known = ", ".join(section_fields(section))
            raise ConfigError(
                key=f"{section}.{key}",
                value=raw,
                source=source,
                reason=f"unknown key; keys of [{section}]: {known}",
            )
        try:
            self.values[section, key] = _coerce(section, key, raw)
        except ValueError as exc:
            raise ConfigError(
                key=f"{section}.{key}", value=raw, source=source, reason=str(exc)
            ) from None
        self.sources[section, key] = source


def _toml_layer(path: Path, *, named_by: tuple[str, str]) -> _Layer:
    """``named_by``: (key, source) of the setting that named this file, for errors."""
    layer = _Layer()
    source = f"config file {path}"
    named_key, named_source = named_by
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(
            key=named_key, value=str(path), source=named_source, reason="file not found"
        ) from None
    except OSError as exc:
        raise ConfigError(
            key=named_key, value=str(path), source=named_source, reason=exc.strerror or str(exc)
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            key="(file)", value=str(path), source=source,
            reason=f"not UTF-8 text (byte {exc.start}); TOML files are UTF-8",
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            key="(file)", value=str(path), source=source, reason=f"not valid TOML: {exc}"
        ) from None
    for section, table in document.items():
        if not isinstance(table, dict):
            raise ConfigError(
                key=section, value=table, source=source, reason="expected a [section] table"
            )
        for key, value in table.items():
            layer.put(section, key, value, source)
    return layer


# docker:dind-rootless's own variables, read as its entrypoint reads them.
_ROOTLESSKIT_VARIABLES = {
    "DOCKERD_ROOTLESS_ROOTLESSKIT_NET": "net",
    "DOCKERD_ROOTLESS_ROOTLESSKIT_MTU": "mtu",
    "DOCKERD_ROOTLESS_ROOTLESSKIT_FLAGS": "flags",
}


def _env_layer(env: Mapping[str, str]) -> _Layer:
    layer = _Layer()
    if "DOCKER_TLS_CERTDIR" in env:
        layer.put("tls", "certdir", env["DOCKER_TLS_CERTDIR"], "environment DOCKER_TLS_CERTDIR")
    if "DOCKER_TLS_SAN" in env:
        layer.put("tls", "san", env["DOCKER_TLS_SAN"], "environment DOCKER_TLS_SAN")
    for name, key in _ROOTLESSKIT_VARIABLES.items():
        if env.get(name):  # empty means the default, as the entrypoint's ${VAR:-default}
            layer.put("rootless", key, env[name], f"environment {name}")
    docker_host = env.get("DOCKER_HOST", "")
    if is_unix_socket_url(docker_host):
        layer.put("dockerd", "host", docker_host, "environment DOCKER_HOST")
    elif docker_host:
        layer.notices.append((
            "docker_host_ignored",
            f"DOCKER_HOST={docker_host!r} is not a unix:// socket, so it is ignored (as"
            " docker:dind does): it is how clients reach this daemon, and CI runners pass"
            " their jobs' variables to service containers too",
        ))
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        rest = name.removeprefix(ENV_PREFIX).lower()
        section = next((s for s in SECTIONS if rest.startswith(s + "_")), None)
        if section is None:
            raise ConfigError(
                key=name,
                value=value,
                source="environment",
                reason=f"no such setting; variables are {ENV_PREFIX}<SECTION>_<KEY> with"
                f" SECTION one of {', '.join(s.upper() for s in SECTIONS)}",
            )
        layer.put(section, rest.removeprefix(section + "_"), value, f"environment {name}")
    return layer


def flag_name(section: str, key: str) -> str:
    return f"--{section}-{key}".replace("_", "-")


def _validate(config: Config) -> None:
    def fail(section: str, key: str, value: object, reason: str) -> None:
        source = config.sources.get(f"{section}.{key}", "default")
        raise ConfigError(key=f"{section}.{key}", value=value, source=source, reason=reason)

    if not config.dockerd.binary.strip():
        fail("dockerd", "binary", config.dockerd.binary, "must name the dockerd executable")
    if not is_unix_socket_url(config.dockerd.host):
        fail(
            "dockerd",
            "host",
            config.dockerd.host,
            "must be a unix socket such as unix:///var/run/docker.sock (the agent supervises"
            " dockerd through it; TCP listeners come from [tls])",
        )
    if config.dockerd.start_timeout <= 0:
        fail("dockerd", "start_timeout", config.dockerd.start_timeout, "must be above 0")
    if config.dockerd.stop_timeout <= 0:
        fail("dockerd", "stop_timeout", config.dockerd.stop_timeout, "must be above 0")
    if config.dockerd.mtu != 0 and not 68 <= config.dockerd.mtu <= 65535:
        fail("dockerd", "mtu", config.dockerd.mtu, "must be 0 (detect) or 68..65535")
    if config.restart.backoff_factor < 1:
        fail("restart", "backoff_factor", config.restart.backoff_factor, "must be 1 or more")
    if config.restart.backoff_max < config.restart.backoff_initial:
        initial_source = config.sources.get("restart.backoff_initial", "default")
        fail(
            "restart",
            "backoff_max",
            config.restart.backoff_max,
            f"must not be below restart.backoff_initial ({config.restart.backoff_initial:g} s,"
            f" from {initial_source}); raise restart.backoff_max too",
        )
    if config.restart.max_failures < 1:
        fail("restart", "max_failures", config.restart.max_failures, "must be 1 or more")
    if config.restart.max_crashes < 1:
        fail("restart", "max_crashes", config.restart.max_crashes, "must be 1 or more")
    if config.agent.restart_limit < 0:
        fail("agent", "restart_limit", config.agent.restart_limit, "must be 0 or more")
    if config.liveness.failures < 1:
        fail("liveness", "failures", config.liveness.failures, "must be 1 or more")
    if config.liveness.interval <= 0:
        fail("liveness", "interval", config.liveness.interval, "must be above 0")
    if not 0 < config.liveness.timeout <= config.liveness.interval:
        fail(
            "liveness",
            "timeout",
            config.liveness.timeout,
            f"must be above 0 and at most liveness.interval ({config.liveness.interval:g} s,"
            f" from {config.sources.get('liveness.interval', 'default')}); set both",
        )
    if config.log.format not in _LOG_FORMATS:
        fail("log", "format", config.log.format, f"must be one of {', '.join(_LOG_FORMATS)}")
    if config.log.level not in _LOG_LEVELS:
        fail("log", "level", config.log.level, f"must be one of {', '.join(_LOG_LEVELS)}")
    if config.tls.key_type not in _KEY_TYPES:
        fail("tls", "key_type", config.tls.key_type, f"must be one of {', '.join(_KEY_TYPES)}")
    if not re.fullmatch(r"0?[0-7]{3}", config.tls.client_key_mode):
        fail("tls", "client_key_mode", config.tls.client_key_mode, "must be an octal mode: 0644")
    if not 0 < config.tls.renew_fraction < 1:
        fail("tls", "renew_fraction", config.tls.renew_fraction, "must be between 0 and 1")
    for key in ("ca_lifetime", "server_lifetime", "client_lifetime"):
        if getattr(config.tls, key) <= 0:
            fail("tls", key, getattr(config.tls, key), "must be above 0")
    if not 0 < config.dataroot.gc_low < config.dataroot.gc_high <= 1:
        fail(
            "dataroot",
            "gc_low",
            config.dataroot.gc_low,
            f"need 0 < gc_low < gc_high <= 1 (gc_high is {config.dataroot.gc_high:g});"
            " fractions of the filesystem, e.g. 0.80 and 0.85",
        )
    if config.dataroot.gc_interval <= 0:
        fail("dataroot", "gc_interval", config.dataroot.gc_interval, "must be above 0")
    if config.dataroot.min_free_inodes < 0:
        fail("dataroot", "min_free_inodes", config.dataroot.min_free_inodes, "must be 0 or more")
    if config.dataroot.low_space not in ("refuse", "warn"):
        fail("dataroot", "low_space", config.dataroot.low_space, "must be refuse or warn")
    if config.prepare.enabled not in ("auto", "true", "false"):
        fail("prepare", "enabled", config.prepare.enabled, "must be auto, true or false")
    if config.prepare.iptables not in ("auto", "legacy", "nft", "off"):
        fail("prepare", "iptables", config.prepare.iptables, "must be auto, legacy, nft or off")
    if config.rootless.enabled not in ("auto", "true", "false"):
        fail("rootless", "enabled", config.rootless.enabled, "must be auto, true or false")
    if not 68 <= config.rootless.mtu <= 65535:
        fail("rootless", "mtu", config.rootless.mtu, "must be 68..65535 (rootlesskit's --mtu)")
    if not config.rootless.net.strip():
        fail("rootless", "net", config.rootless.net, "must name a rootlesskit network driver"
             " (auto, slirp4netns, vpnkit, pasta, lxc-user-nic, host)")
    if config.http.tls and not config.tls.certdir:
        fail(
            "http",
            "tls",
            config.http.tls,
            "needs the agent's certificates: set DOCKER_TLS_CERTDIR (tls.certdir) too",
        )
    if config.http.listen:
        try:
            parse_listen(config.http.listen)
        except ValueError as exc:
            fail("http", "listen", config.http.listen, str(exc))


_DOCKERD_PATH_OPTIONS = {
    "data_root": ("--data-root", "--graph", "-g"),
    "exec_root": ("--exec-root",),
    "pidfile": ("--pidfile", "-p"),
}


def dockerd_path_options(args: Sequence[str]) -> dict[str, str]:
    """data_root, exec_root and pidfile as dockerd will read them from ``args`` (last wins)."""
    found = {key: last_value(args, *names) for key, names in _DOCKERD_PATH_OPTIONS.items()}
    return {key: value for key, value in found.items() if value}


def is_unix_socket_url(value: str) -> bool:
    return value.startswith("unix://") and len(value) > len("unix://")


def parse_listen(address: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9324`` for IPv6) into its parts."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected HOST:PORT with a port between 1 and 65535, e.g. 0.0.0.0:9324")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ValueError("an IPv6 address needs brackets: [::1]:9324")
    return host.strip("[]") or "0.0.0.0", int(port)


def load(
    *,
    env: Mapping[str, str],
    config_file: Path | None = None,
    flags: Mapping[tuple[str, str], object] | None = None,
    dockerd_args: Sequence[str] = (),
    exact_args: bool = False,
    euid: int | None = None,
) -> Config:
    """Merge the sources (later wins) and validate; raises ConfigError.

    ``exact_args``: the command line was ``dockerd ARGS`` (see invocation.py).
    ``euid``: the agent's user (default: this process's), which decides
    ``[rootless] enabled = auto``.
    """
    layers: list[_Layer] = []
    if config_file is not None:
        layers.append(_toml_layer(config_file, named_by=("--config", "command line")))
    elif env.get(CONFIG_ENV):
        layers.append(
            _toml_layer(Path(env[CONFIG_ENV]), named_by=(CONFIG_ENV, "environment"))
        )
    layers.append(_env_layer(env))
    flag_layer = _Layer()
    for (section, key), value in (flags or {}).items():
        flag_layer.put(section, key, value, f"flag {flag_name(section, key)}")
    layers.append(flag_layer)

    merged: dict[str, dict[str, object]] = {section: {} for section in SECTIONS}
    sources: dict[str, str] = {}
    for layer in layers:
        for (section, key), value in layer.values.items():
            merged[section][key] = value
            sources[f"{section}.{key}"] = layer.sources[section, key]
    if dockerd_args:
        existing = typing.cast(tuple[str, ...], merged["dockerd"].get("args", ()))
        merged["dockerd"]["args"] = (*existing, *dockerd_args)
        sources["dockerd.args"] = "arguments after --"
    if exact_args:
        merged["dockerd"]["exact_args"] = True
        sources["dockerd.exact_args"] = "arguments after -- (starting with `dockerd`)"
    # Before dockerd's own flags are read: they win over rootless defaults too.
    notices = [notice for layer in layers for notice in layer.notices]
    notices += _rootless_defaults(merged, sources, env, os.geteuid() if euid is None else euid)
    if merged["dockerd"].get("exact_args"):
        # dockerd serves the socket its own flags name, whatever DOCKER_HOST says.
        args = typing.cast(tuple[str, ...], merged["dockerd"].get("args", ()))
        rootless = merged["rootless"].get("enabled") == "true"
        default = str(merged["dockerd"]["host"]) if rootless else _DOCKERD_DEFAULT_SOCKET
        merged["dockerd"]["host"] = exact_mode_socket(args, default=default)
        sources["dockerd.host"] = "dockerd's own --host flags"
    # dockerd's own path options given after `--` are what dockerd will use, so
    # the agent locks, inspects and cleans those paths, not its defaults.
    for key, value in dockerd_path_options(
        typing.cast(tuple[str, ...], merged["dockerd"].get("args", ()))
    ).items():
        merged["dockerd"][key] = Path(value)
        sources[f"dockerd.{key}"] = "arguments after --"
    sections = {name: SECTIONS[name](**values) for name, values in merged.items()}
    config = Config(**sections, sources=sources, notices=tuple(notices))
    _validate(config)
    return config


def _rootless_defaults(
    merged: dict[str, dict[str, object]], sources: dict[str, str], env: Mapping[str, str],
    euid: int,
) -> list[tuple[str, str]]:
    """Resolve ``[rootless] enabled``; when on, the rootless paths replace the root defaults.

    Only settings no source gave are changed, each with its source saying why.
    Returns notices for the log.
    """
    from supervisor import rootless_paths as paths

    setting = str(merged["rootless"].get("enabled", paths.AUTO))
    if not paths.wanted(setting, euid):
        return []  # "auto" stays as it is: `rootless_on` reads only "true"
    merged["rootless"]["enabled"] = paths.ON
    if setting == paths.AUTO:
        sources["rootless.enabled"] = f"auto (the agent runs as uid {euid})"
    if euid == 0:
        raise ConfigError(
            key="rootless.enabled", value=setting,
            source=sources.get("rootless.enabled", "default"),
            reason="rootless mode runs dockerd as the agent's own user, and that is root",
            remedy="start the container as an unprivileged user (USER rootless, docker run"
            " --user 1000), or leave rootless.enabled at auto",
        )
    for (section, key), value in paths.RootlessPaths.of(env, euid).defaults().items():
        if f"{section}.{key}" not in sources:
            merged[section][key] = Path(value) if field_type(section, key) is Path else value
            sources[f"{section}.{key}"] = "rootless mode's default"
    notices: list[tuple[str, str]] = []
    if "dockerd.live_restore" not in sources:
        # Each rootlesskit start makes new user and network namespaces: containers left
        # running by a dockerd that exits cannot be taken back by the next one (their
        # shims stay behind). Without live-restore dockerd stops them itself.
        merged["dockerd"]["live_restore"] = False
        sources["dockerd.live_restore"] = "rootless mode's default"
        notices.append((
            "live_restore_off",
            "rootless mode: dockerd runs without --live-restore, because a new rootlesskit"
            " (after a crash, a hang or a certificate renewal) cannot take back the containers"
            " of the previous one: a dockerd restart stops the running containers",
        ))
    if merged["dockerd"].get("socket_activation", True):
        if "dockerd.socket_activation" in sources:
            raise ConfigError(
                key="dockerd.socket_activation", value=True,
                source=sources["dockerd.socket_activation"],
                reason="not available in rootless mode: rootlesskit (1.x, 2.0) does not pass"
                " the sockets the agent holds on to dockerd",
                remedy="leave dockerd.socket_activation unset in rootless mode (dockerd binds"
                " its own sockets; clients are refused while it restarts)",
            )
        merged["dockerd"]["socket_activation"] = False
        sources["dockerd.socket_activation"] = "rootless mode's default"
        notices.append((
            "socket_activation_off",
            "rootless mode: dockerd binds its own sockets (rootlesskit does not pass held"
            " sockets on to dockerd), so clients are refused, not queued, while it restarts;"
            " root mode keeps socket activation",
        ))
    return notices


# Where the agent has dockerd serve a socket of its own when the user's exact
# flags name only TCP listeners: the agent supervises dockerd through a unix socket.
PRIVATE_SOCKET = "unix:///run/dind-supervisor/dockerd.sock"
_DOCKERD_DEFAULT_SOCKET = "unix:///var/run/docker.sock"


def exact_mode_socket(args: Sequence[str], *, default: str = _DOCKERD_DEFAULT_SOCKET) -> str:
    """The unix socket a dockerd started with exactly ``args`` serves, for the agent's pings.

    No --host at all: dockerd's own ``default`` (another one in rootless mode).
    Only TCP (or fd://) hosts: the agent's private socket, which it then adds
    (the one flag it adds).
    """
    hosts = option_values(args, "--host", "-H")
    if not hosts:
        return default
    unix = [host for host in hosts if is_unix_socket_url(host)]
    return unix[0] if unix else PRIVATE_SOCKET


_METAVARS = {
    ("dockerd", "host"): "unix://PATH",
    ("log", "format"): "auto|json|console",
    ("log", "level"): "debug|info|warning|error",
    ("agent", "stop_file"): "PATH",
    ("http", "socket"): "PATH",
    ("tls", "certdir"): "PATH",
    ("tls", "san"): "'DNS:x IP:y'",
    ("tls", "listen"): "tcp://HOST:PORT",
    ("tls", "key_type"): "|".join(_KEY_TYPES),
    ("tls", "client_key_mode"): "OCTAL",
    ("prepare", "enabled"): "auto|true|false",
    ("dataroot", "low_space"): "refuse|warn",
    ("prepare", "iptables"): "auto|legacy|nft|off",
    ("rootless", "enabled"): "auto|true|false",
    ("rootless", "net"): "auto|slirp4netns|vpnkit|...",
    ("rootless", "flags"): "'FLAGS'",
    ("policy", "mode"): "best-effort|strict",
    ("policy", "init_oom_score_adj"): "ADJ|inherit",
    ("policy", "agent_oom_score_adj"): "ADJ|inherit",
    ("policy", "dockerd_oom_score_adj"): "ADJ|inherit",
    ("policy", "agent_rlimits"): "NAME=SOFT:HARD,...",
    ("policy", "dockerd_rlimits"): "NAME=SOFT:HARD,...",
}


def metavar(section: str, key: str) -> str:
    """What a flag's value looks like, for ``--help``."""
    if (section, key) in _METAVARS:
        return _METAVARS[section, key]
    meta = section_fields(section)[key].metadata
    kind = field_type(section, key)
    if meta.get("duration"):
        return "DURATION"
    if meta.get("size"):
        return "SIZE"
    if meta.get("raw"):
        return "VALUE"
    if kind is int:
        return "COUNT" if key in ("max_failures", "max_crashes", "failures", "restart_limit") else (
            "INTEGER"
        )
    if kind is float:
        return "FRACTION" if key.startswith(("gc_", "renew")) else "NUMBER"
    if kind is Path:
        return "PATH"
    if kind == tuple[str, ...]:
        return "ARGS"
    if key in ("listen",):
        return "ADDRESS"
    return key.rsplit("_", maxsplit=1)[-1].upper()


def shown_default(section: str, key: str) -> str:
    """A setting's default as a user would write it ('' when there is none worth showing)."""
    f = section_fields(section)[key]
    if f.metadata.get("raw") or isinstance(f.default, dataclasses._MISSING_TYPE):
        return ""
    value = f.default
    if isinstance(value, bool):
        return "true" if value else "false"
    if f.metadata.get("duration"):
        return format_duration(float(value))
    if f.metadata.get("size"):
        return format_size(int(value))
    if isinstance(value, float):
        return f"{value:.4g}"
    if value in ("", ()):
        return ""
    return str(value)


def format_duration(seconds: float) -> str:
    """The largest whole unit: 30s, 5m, 2h, 30d (500ms below a second)."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def describe() -> list[tuple[str, str, object, str]]:
    """(section, key, default, help) for every setting, for docs and ``--help``."""
    rows: list[tuple[str, str, object, str]] = []
    for section, cls in SECTIONS.items():
        defaults = cls()
        for f in dataclasses.fields(cls):
            rows.append((section, f.name, getattr(defaults, f.name), f.metadata.get("help", "")))
    return rows
