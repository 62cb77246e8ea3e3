"""dockerd's command line in rootless mode: rootlesskit in front, as docker:dind-rootless runs it.

docker:dind's entrypoint, when not root, runs ``rootlesskit --net=... --mtu=...
--disable-host-loopback --port-driver=builtin --copy-up=/etc --copy-up=/run
$DOCKERD_ROOTLESS_ROOTLESSKIT_FLAGS dockerd ...`` with dockerd's TCP port
published (``-p 0.0.0.0:2376:2376/tcp``). This module builds the same command
around the argv ``process.build_argv`` made, and the environment rootless
dockerd needs (``XDG_RUNTIME_DIR``, ``HOME``). It decides nothing about when
to run it (the Spawner does) and checks nothing (``supervisor.rootless.prereqs``).

Two choices of our own, both invisible to dockerd:
- ``--state-dir`` under the agent's state folder, unless the user's flags
  name one: rootlesskit's default is a new /tmp folder per start, left behind
  when rootlesskit is killed; a fixed one is reused (rootlesskit locks it)
  and holds ``child_pid``, which ``supervisor.rootless.tree`` reads.
- every TCP address dockerd serves is published, not only 2376/2375: a
  ``-H tcp://…`` of the user's would otherwise listen inside rootlesskit's
  network namespace only, reachable by nobody.

The process tree is rootlesskit (the agent's child, the pid it supervises and
signals; it forwards signals to its child) → rootlesskit's child (in the new
user namespace) → dockerd.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from supervisor import rootless_paths as paths
from supervisor.config import Config
from supervisor.dockerd.listeners import PLAIN_TCP_LISTEN, split_tcp
from supervisor.dockerd_flags import option_values, user_sets

# The network drivers that need a program of their own, and which (rootlesskit runs them).
NET_PROGRAMS = {"slirp4netns": "slirp4netns", "vpnkit": "vpnkit", "pasta": "pasta",
                "lxc-user-nic": "lxc-user-nic"}
# Drivers that open /dev/net/tun inside the user namespace.
TAP_DRIVERS = ("slirp4netns", "vpnkit", "pasta")
# docker:dind-rootless's default (its entrypoint since Docker 27); vpnkit where it is missing.
AUTO_ORDER = ("slirp4netns", "vpnkit")
STATE_DIR_NAME = "rootlesskit"


def resolve_net(setting: str, *, path: str | None = None) -> str:
    """The driver ``rootless.net`` means: ``auto`` is the first of AUTO_ORDER installed
    (slirp4netns when none is, so the prerequisite check names it)."""
    if setting != "auto":
        return setting
    return next((net for net in AUTO_ORDER if shutil.which(net, path=path)), AUTO_ORDER[0])


def published_ports(config: Config) -> list[str]:
    """``-p`` values for every TCP address dockerd listens on (rootlesskit's builtin driver
    listens there in the agent's network namespace and forwards into dockerd's)."""
    d = config.dockerd
    hosts = [h for h in option_values(d.args, "--host", "-H") if h.startswith("tcp://")]
    if not user_sets(d.args, "-H", "--host"):
        if config.tls_enabled:
            hosts.append(config.tls.listen)
        elif config.plain_tcp_served:
            hosts.append(PLAIN_TCP_LISTEN)
    published = []
    for host in hosts:
        address, port = split_tcp(host)
        spelled = f"[{address}]" if ":" in address else address
        published.append(f"{spelled}:{port}:{port}/tcp")
    return list(dict.fromkeys(published))


def command(config: Config, dockerd_argv: Sequence[str], *, path: str | None = None) -> list[str]:
    """rootlesskit's argv around ``dockerd_argv``."""
    r = config.rootless
    argv = [
        r.rootlesskit,
        f"--net={resolve_net(r.net, path=path)}",
        f"--mtu={r.mtu}",
        "--disable-host-loopback",
        "--port-driver=builtin",
        "--copy-up=/etc",
        "--copy-up=/run",
    ]
    # rootlesskit's long options read like dockerd's (--name value, --name=value), and
    # --state-dir is no dockerd flag, so the one scanner of arguments answers here too.
    if not user_sets(r.flags, "--state-dir"):
        argv.append(f"--state-dir={state_dir(config)}")
    for port in published_ports(config):
        argv += ["-p", port]
    return [*argv, *r.flags, *dockerd_argv]


def state_dir(config: Config) -> Path:
    """rootlesskit's --state-dir: the user's, or ours under the agent's state folder."""
    given = option_values(config.rootless.flags, "--state-dir")
    return Path(given[-1]) if given else Path(config.agent.state_dir) / STATE_DIR_NAME


def environment(env: Mapping[str, str]) -> dict[str, str]:
    """What rootless dockerd reads besides its flags: XDG_RUNTIME_DIR (exported, as the
    entrypoint does when it had to default it) and HOME."""
    uid = os.geteuid()
    extra = {"XDG_RUNTIME_DIR": paths.runtime_dir(env, uid)}
    home = paths.home_dir(env, uid)
    if home and not env.get("HOME"):
        extra["HOME"] = home
    return extra
