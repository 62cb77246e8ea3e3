"""Where a rootless dockerd keeps its files: the defaults dockerd itself uses without root.

Owns deciding whether rootless mode is on (``wanted``) and the path defaults
that replace the root ones (/var/lib/docker, /var/run/...) when it is: the
data root under ``$HOME/.local/share/docker``, the socket, exec root and pid
files under ``$XDG_RUNTIME_DIR`` (``/run/user/UID`` when unset, as
docker:dind's entrypoint sets it), and the agent's own runtime files there
too. Pure: the environment and the uid are arguments. Imported by
``supervisor.config``, so it imports nothing of the package.
"""

from __future__ import annotations

import pwd
from collections.abc import Mapping
from dataclasses import dataclass

AUTO = "auto"
ON = "true"
OFF = "false"


def wanted(setting: str, euid: int) -> bool:
    """``[rootless] enabled``: auto means "when the agent is not root", as docker:dind decides."""
    if setting == AUTO:
        return euid != 0
    return setting == ON


def runtime_dir(env: Mapping[str, str], uid: int) -> str:
    return env.get("XDG_RUNTIME_DIR") or f"/run/user/{uid}"


def home_dir(env: Mapping[str, str], uid: int) -> str | None:
    """``$HOME``, else the user's entry in the password database; None when neither exists."""
    if env.get("HOME"):
        return env["HOME"]
    try:
        return pwd.getpwuid(uid).pw_dir or None
    except KeyError:
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class RootlessPaths:
    home: str | None
    runtime_dir: str

    @classmethod
    def of(cls, env: Mapping[str, str], uid: int) -> RootlessPaths:
        return cls(home=home_dir(env, uid), runtime_dir=runtime_dir(env, uid))

    @property
    def data_root(self) -> str | None:
        return f"{self.home.rstrip('/')}/.local/share/docker" if self.home else None

    def defaults(self) -> dict[tuple[str, str], str]:
        """(section, key) -> value, for every setting whose root default does not fit."""
        run = self.runtime_dir.rstrip("/")
        found = {
            ("dockerd", "host"): f"unix://{run}/docker.sock",
            ("dockerd", "exec_root"): f"{run}/docker",
            ("dockerd", "pidfile"): f"{run}/docker.pid",
            ("dockerd", "containerd_pidfile"): f"{run}/docker/containerd/containerd.pid",
            ("agent", "state_dir"): f"{run}/dind-supervisor",
            ("http", "socket"): f"{run}/dind-supervisor/agent.sock",
        }
        if self.data_root is not None:
            found["dockerd", "data_root"] = self.data_root
        return found
