"""The running rootless dockerd as the agent sees it: which pid is dockerd, and /status.

The pid the agent spawned and supervises is rootlesskit's: signals go to it
(rootlesskit passes them to its child, which passes them to dockerd), its
exit is dockerd's end, and its process group is what KILL takes. The /proc
figures and the policy check want dockerd itself, two levels down:
rootlesskit → its child (in the new user namespace; pid in
``$STATE_DIR/child_pid``) → dockerd. ``dockerd_pid`` walks that tree
through ``/proc/PID/task/*/children`` (no pid namespace of its own: upstream
runs rootlesskit without ``--pidns``, so the pids are ours).

``dockerd_ready`` records what dockerd says about itself once it answers
(``docker info``: its cgroup driver, whether it runs rootless), which
replaces the prediction of ``cgroups.detect``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from supervisor.config import Config
from supervisor.dockerd import rootlesskit
from supervisor.policy.probe import find_children
from supervisor.rootless.cgroups import Delegation, detect

_MAX_DEPTH = 3  # rootlesskit, its child, dockerd (a user's wrapper script adds one)


def find_below(proc_root: str, top: int, comm: str, max_depth: int = _MAX_DEPTH) -> int | None:
    """The first process named ``comm`` among ``top`` and its descendants, breadth first."""
    level = [top]
    for _ in range(max_depth + 1):
        following: list[int] = []
        for pid in level:
            try:
                name = (Path(proc_root) / str(pid) / "comm").read_text().strip()
            except OSError:
                continue
            if name == comm:
                return pid
            following.extend(find_children(proc_root, pid))
        level = following
    return None


class RootlessView:
    @classmethod
    def for_config(cls, config: Config, launcher_pid: Callable[[], int | None]
                   ) -> RootlessView | None:
        """The view when the agent runs rootless, else None."""
        return cls(config, launcher_pid) if config.rootless_on else None

    def __init__(
        self, config: Config, launcher_pid: Callable[[], int | None], *,
        proc_root: str = "/proc", delegation: Delegation | None = None,
    ) -> None:
        self._config = config
        self._launcher_pid = launcher_pid
        self._proc_root = proc_root
        self._delegation = delegation
        self._info: Mapping[str, Any] | None = None

    @property
    def delegation(self) -> Delegation:
        # Read at first use (a scrape or /status, in a thread), not on the event loop.
        if self._delegation is None:
            self._delegation = detect(self._proc_root)
        return self._delegation

    def dockerd_pid(self) -> int | None:
        """dockerd's own pid below rootlesskit (None while it is not there yet)."""
        top = self._launcher_pid()
        if top is None:
            return None
        return find_below(self._proc_root, top, "dockerd")

    def child_pid(self) -> int | None:
        try:
            text = (rootlesskit.state_dir(self._config) / "child_pid").read_text()
        except OSError:
            return None
        return int(text) if text.strip().isdigit() else None

    def dockerd_ready(self, info: Mapping[str, Any]) -> None:
        from supervisor.logs import get_logger

        first = self._info is None
        self._info = info
        cgroups = self.cgroups()
        if first and not cgroups["limits_apply"]:
            get_logger(component="rootless").warning(
                "nested_limits_not_applied", cgroup_driver=cgroups.get("dockerd_cgroup_driver"),
                message="rootless dockerd runs without cgroups here: docker run --memory,"
                " --pids-limit and --cpus are accepted but not enforced",
                reason=self.delegation.reason, remedy=self.delegation.finding().remedy,
            )

    def cgroups(self) -> dict[str, Any]:
        figures = self.delegation.as_dict()
        figures["dockerd_cgroup_driver"] = None  # until dockerd answered once
        if self._info is not None:
            driver = self._info.get("CgroupDriver")
            figures["dockerd_cgroup_driver"] = driver
            # dockerd's own word, once it answered, outranks the prediction.
            figures["limits_apply"] = bool(driver) and driver != "none"
        return figures

    def status(self) -> dict[str, Any]:
        config = self._config
        security = (self._info or {}).get("SecurityOptions") or []
        return {
            "enabled": True,
            "rootlesskit": config.rootless.rootlesskit,
            "net": rootlesskit.resolve_net(config.rootless.net),
            "mtu": config.rootless.mtu,
            "published": rootlesskit.published_ports(config),
            "socket_activation": False,
            "pids": {"rootlesskit": self._launcher_pid(), "child": self.child_pid(),
                     "dockerd": self.dockerd_pid()},
            "dockerd_says_rootless": (any("rootless" in str(s) for s in security)
                                      if self._info is not None else None),
            "cgroups": self.cgroups(),
        }
