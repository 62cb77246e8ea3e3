"""Who runs containerd, where, with which configuration, and how soon it is restarted.

Pure: decides from the configuration (and daemon.json's top level, read by
the caller), touches nothing. The agent runs containerd itself unless
something says otherwise, in this order:

1. the user points dockerd at a containerd of their own (``--containerd``
   after ``--``, or daemon.json's ``"containerd"`` key): nobody here starts
   one, the agent only watches its socket (``external``);
2. exact mode (``IMAGE dockerd ARGS``): nothing is added to dockerd's command
   line, so dockerd starts its own (``dockerd``);
3. rootless mode: containerd lives in rootlesskit's namespaces, which only
   dockerd (inside them) can start it in (``dockerd``);
4. ``dockerd.manage_containerd = false`` (``dockerd``);
5. otherwise the agent (``agent``), with the paths dockerd would have used:
   state and socket under ``<exec-root>/containerd``, its data under
   ``<data-root>/containerd/daemon``, the pid file dockerd writes. A data root
   keeps working across both ways, in either direction.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.config import Config
from supervisor.dockerd_flags import last_value, user_sets

CONFIG_NAME = "containerd.toml"
SOCKET_NAME = "containerd.sock"
PID_NAME = "containerd.pid"
BINARY = "containerd"


class ManagedBy(enum.StrEnum):
    AGENT = "agent"  # the agent starts, restarts and stops it
    DOCKERD = "dockerd"  # dockerd starts its own; the agent watches it
    EXTERNAL = "external"  # the user's own containerd; the agent watches its socket


@dataclass(frozen=True, slots=True, kw_only=True)
class Setup:
    """Where containerd is and who runs it."""

    managed_by: ManagedBy
    reason: str
    address: Path  # the socket dockerd talks to
    pidfile: Path | None  # None: the user's containerd, pid unknown
    state_dir: Path  # <exec-root>/containerd: socket, pid file, configuration
    root: Path  # <data-root>/containerd/daemon: containerd's own data

    @property
    def config_file(self) -> Path:
        return self.state_dir / CONFIG_NAME

    def dockerd_flags(self) -> list[str]:
        """What dockerd needs on its command line: the agent's containerd, or nothing."""
        if self.managed_by is ManagedBy.AGENT:
            return [f"--containerd={self.address}"]
        return []


def _socket_path(value: str) -> Path:
    return Path(value.removeprefix("unix://"))


def decide(config: Config, daemon_json: Mapping[str, Any] | None = None) -> Setup:
    """Who manages containerd for this configuration, and its paths."""
    d = config.dockerd
    state_dir = Path(d.exec_root) / "containerd"
    pidfile = (Path(d.containerd_pidfile) if "dockerd.containerd_pidfile" in config.sources
               else state_dir / PID_NAME)
    root = Path(d.data_root) / "containerd" / "daemon"

    def setup(managed_by: ManagedBy, reason: str, address: Path | None = None) -> Setup:
        external = managed_by is ManagedBy.EXTERNAL
        return Setup(managed_by=managed_by, reason=reason,
                     address=address or state_dir / SOCKET_NAME,
                     pidfile=None if external else pidfile, state_dir=state_dir, root=root)

    given = last_value(d.args, "--containerd")
    if given:
        return setup(ManagedBy.EXTERNAL, "dockerd's --containerd names the user's containerd",
                     _socket_path(given))
    from_file = (daemon_json or {}).get("containerd")
    if isinstance(from_file, str) and from_file:
        return setup(ManagedBy.EXTERNAL, "daemon.json's \"containerd\" names the user's"
                     " containerd", _socket_path(from_file))
    if d.exact_args:
        return setup(ManagedBy.DOCKERD, "exact mode (`dockerd ARGS`): nothing is added to"
                     " dockerd's command line, so dockerd starts its own")
    if config.rootless_on:
        return setup(ManagedBy.DOCKERD, "rootless mode: containerd must run inside"
                     " rootlesskit's namespaces, where dockerd starts it")
    if not d.manage_containerd:
        return setup(ManagedBy.DOCKERD, "dockerd.manage_containerd is false")
    return setup(ManagedBy.AGENT, "the agent restarts a dead containerd at once; dockerd"
                 " would take about 10 s")


def _toml(value: str) -> str:
    return json.dumps(value)  # a TOML basic string is JSON's string syntax


def log_level(args: tuple[str, ...] | list[str]) -> str:
    """containerd's log level as dockerd would set it: its own --log-level, debug with -D."""
    level = last_value(args, "--log-level", "-l")
    if level:
        return level
    if user_sets(args, "--debug", "-D") and last_value(args, "--debug", "-D") not in (
        "false", "0"
    ):
        return "debug"
    return "info"


def config_text(setup: Setup, *, data_root: Path, args: tuple[str, ...] | list[str]) -> str:
    """containerd's configuration, as dockerd writes it (one file for dockerd 20.10 and 26).

    Format version 2 (containerd 1.3 and later; 2.x migrates it). The
    ``runtime.v1.linux`` section is what dockerd 20.10 sets for containers
    created with the old v1 shim (their state under ``<data-root>/runc``);
    containerd 1.6 and 1.7 accept it silently. ``oom_score = 0`` leaves
    containerd the oom_score_adj the exec wrapper gave it. The CRI plugin is
    off unless dockerd's --cri-containerd asks for it.
    """
    cri = user_sets(args, "--cri-containerd") and last_value(args, "--cri-containerd") not in (
        "false", "0"
    )
    disabled = "[]" if cri else '["io.containerd.grpc.v1.cri"]'
    return "\n".join([
        "# Written by dind-supervisor: the configuration dockerd would write for its containerd.",
        "version = 2",
        f"root = {_toml(str(setup.root))}",
        f"state = {_toml(str(setup.state_dir / 'daemon'))}",
        f"disabled_plugins = {disabled}",
        "oom_score = 0",
        "",
        "[grpc]",
        f"  address = {_toml(str(setup.address))}",
        "",
        "[debug]",
        f"  address = {_toml(str(setup.state_dir / 'containerd-debug.sock'))}",
        f"  level = {_toml(log_level(args))}",
        "",
        "[plugins]",
        '  [plugins."io.containerd.runtime.v1.linux"]',
        '    shim = "containerd-shim"',
        '    runtime = "runc"',
        f"    runtime_root = {_toml(str(data_root / 'runc'))}",
        "",
    ])


def argv(setup: Setup, binary: str = BINARY) -> list[str]:
    return [binary, "--config", str(setup.config_file)]


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """When the agent restarts its containerd: at once after a long run, later after short ones."""

    initial: float = 1.0
    factor: float = 2.0
    maximum: float = 30.0
    healthy_after: float = 10.0

    @classmethod
    def from_config(cls, config: Config) -> Backoff:
        r = config.restart
        return cls(initial=r.backoff_initial, factor=r.backoff_factor,
                   maximum=r.backoff_max, healthy_after=r.healthy_after)

    def after(self, *, ran_for: float, streak: int) -> tuple[float, int]:
        """(delay before the next start, the new streak of short runs).

        The first death is always answered at once: every second without
        containerd is a second without ``docker exec``. A containerd that
        ran ``healthy_after`` seconds or more ends the streak; each further
        short run in a row waits longer (``initial``, ``initial*factor``, ...
        up to ``maximum``), so a containerd that cannot start does not spin.
        """
        if ran_for >= self.healthy_after:
            return 0.0, 0
        streak += 1
        if streak == 1:
            return 0.0, streak
        return min(self.maximum, self.initial * self.factor ** (streak - 2)), streak
