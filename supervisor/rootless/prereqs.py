"""What rootless mode needs before rootlesskit can start dockerd, checked before anything runs.

docker:dind's entrypoint checks, when not root: rootlesskit installed,
entries for the user in /etc/subuid and /etc/subgid, the kernel switches
``kernel.unprivileged_userns_clone`` (Debian's older kernels) and
``user.max_user_namespaces``, and writable HOME and XDG_RUNTIME_DIR folders.
We check the same, plus what rootlesskit would otherwise fail on with a
cryptic line: Ubuntu 24.04's ``kernel.apparmor_restrict_unprivileged_userns``,
the network driver's program (slirp4netns, vpnkit), ``newuidmap`` and
``newgidmap`` (package uidmap), and a /dev/net/tun the user may open (a
0600 node gives "open: Permission denied" from rootlesskit's ``ip tuntap``).

Each missing prerequisite is a ``RootlessPrerequisiteError`` naming it, what
was found and the remedy (exit 2); ``check`` shows them as findings. /proc,
/etc and /dev are read through ``Host``, so tests point them at a fake tree.
Only the two writable folders are created here (as the entrypoint's
``mkdir -p`` does); nothing else is changed.
"""

from __future__ import annotations

import os
import pwd
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from supervisor.config import Config
from supervisor.dockerd.rootlesskit import NET_PROGRAMS, TAP_DRIVERS, resolve_net
from supervisor.errors import RootlessPrerequisiteError
from supervisor.findings import Finding, Severity
from supervisor.rootless_paths import home_dir, runtime_dir

RECOMMENDED_SUBIDS = 65536  # what dockerd's rootless documentation asks for
_IMAGE_HINT = "the dind-supervisor rootless image (Dockerfile.rootless, FROM docker:dind-rootless)"


@dataclass(frozen=True, slots=True, kw_only=True)
class Host:
    """Where the prerequisites are read; the real machine by default."""

    proc_root: str = "/proc"
    etc_root: str = "/etc"
    dev_root: str = "/dev"
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)

    @property
    def path(self) -> str | None:
        """PATH for programs (None: the standard search path)."""
        return self.env.get("PATH")


@dataclass(frozen=True, slots=True, kw_only=True)
class Who:
    uid: int
    gid: int
    name: str | None  # None: no entry in the password database

    @classmethod
    def current(cls) -> Who:
        uid = os.geteuid()
        try:
            name: str | None = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = None
        return cls(uid=uid, gid=os.getegid(), name=name)

    def __str__(self) -> str:
        return f"uid {self.uid}" + (f" ({self.name})" if self.name else "")


def _fail(prerequisite: str, message: str, found: str, remedy: str) -> RootlessPrerequisiteError:
    return RootlessPrerequisiteError(message, prerequisite=prerequisite, found=found,
                                     remedy=remedy)


def _read_sysctl(host: Host, name: str) -> str | None:
    """A /proc/sys value (``kernel.x`` is ``sys/kernel/x``); None when the kernel has none."""
    try:
        return (Path(host.proc_root) / "sys" / name.replace(".", "/")).read_text().strip()
    except OSError:
        return None


def check_rootlesskit(config: Config, host: Host, who: Who) -> RootlessPrerequisiteError | None:
    binary = config.rootless.rootlesskit
    if shutil.which(binary, path=host.path):
        return None
    return _fail(
        "rootlesskit", f"{binary!r} not found on PATH: rootless dockerd runs through rootlesskit",
        "missing",
        f"use {_IMAGE_HINT}, or install rootlesskit (Debian: apt-get install rootlesskit),"
        " or set rootless.rootlesskit to its path",
    )


def check_net_driver(config: Config, host: Host, who: Who) -> RootlessPrerequisiteError | None:
    net = resolve_net(config.rootless.net, path=host.path)
    program = NET_PROGRAMS.get(net)
    if program is None or shutil.which(program, path=host.path):
        return None
    also = " (nor vpnkit)" if config.rootless.net == "auto" else ""
    return _fail(
        f"network driver {net}", f"{program} not found on PATH{also}: rootlesskit's --net={net}"
        " runs it", "missing",
        f"install {program} (Debian: apt-get install {program}; docker:dind-rootless has"
        " slirp4netns and vpnkit), or choose another driver with"
        " DOCKERD_ROOTLESS_ROOTLESSKIT_NET",
    )


def check_uidmap(config: Config, host: Host, who: Who) -> RootlessPrerequisiteError | None:
    missing = [p for p in ("newuidmap", "newgidmap") if not shutil.which(p, path=host.path)]
    if not missing:
        return None
    return _fail(
        "newuidmap/newgidmap", f"{' and '.join(missing)} not found on PATH: rootlesskit maps"
        " the subordinate ids with them", "missing",
        "install them setuid root (Debian: apt-get install uidmap; Alpine: apk add shadow-uidmap)",
    )


def _subid_count(text: str, who: Who) -> int:
    """Sub-ids granted to ``who`` (by name or number) in an /etc/subuid-format text."""
    names = {str(who.uid)} | ({who.name} if who.name else set())
    total = 0
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in names and parts[2].isdigit():
            total += int(parts[2])
    return total


def subid_counts(host: Host, who: Who) -> dict[str, int]:
    counts = {}
    for file in ("subuid", "subgid"):
        try:
            text = (Path(host.etc_root) / file).read_text()
        except OSError:
            text = ""
        counts[file] = _subid_count(text, who)
    return counts


def check_subids(config: Config, host: Host, who: Who) -> RootlessPrerequisiteError | None:
    counts = subid_counts(host, who)
    missing = [f"{host.etc_root}/{file}" for file, count in counts.items() if count == 0]
    if not missing:
        return None
    name = who.name or str(who.uid)
    return _fail(
        "subuid/subgid", f"no entry for {who} in {' and '.join(missing)}: the user namespace"
        " needs subordinate uids and gids", "none",
        f"add '{name}:100000:65536' to /etc/subuid and /etc/subgid (the rootless image has"
        " them for user rootless, uid 1000), or run the container as that user",
    )


def check_userns_clone(config: Config, host: Host, who: Who) -> RootlessPrerequisiteError | None:
    value = _read_sysctl(host, "kernel.unprivileged_userns_clone")
    if value is None or value == "1":
        return None
    return _fail(
        "kernel.unprivileged_userns_clone", "unprivileged users may not create user namespaces"
        f" (kernel.unprivileged_userns_clone is {value})", value,
        "on the host: sysctl -w kernel.unprivileged_userns_clone=1 (it cannot be changed from"
        " inside a container)",
    )


def check_max_user_namespaces(
    config: Config, host: Host, who: Who
) -> RootlessPrerequisiteError | None:
    value = _read_sysctl(host, "user.max_user_namespaces")
    if value is None or value != "0":
        return None
    return _fail(
        "user.max_user_namespaces", "no user namespace may be created"
        " (user.max_user_namespaces is 0)", value,
        "on the host: sysctl -w user.max_user_namespaces=28633 (or any sufficiently large"
        " value; it cannot be raised from inside a container)",
    )


def check_apparmor_userns(
    config: Config, host: Host, who: Who
) -> RootlessPrerequisiteError | None:
    value = _read_sysctl(host, "kernel.apparmor_restrict_unprivileged_userns")
    if value is None or value == "0":
        return None
    return _fail(
        "kernel.apparmor_restrict_unprivileged_userns", "AppArmor lets only programs with a"
        " profile allowing it create user namespaces"
        f" (kernel.apparmor_restrict_unprivileged_userns is {value}, as on Ubuntu 24.04+)",
        value,
        "on the host: sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or load an"
        " AppArmor profile with 'userns,' for rootlesskit (Docker's rootless documentation"
        " has one), or run this container with --security-opt apparmor=unconfined",
    )


def _writable_folder(prerequisite: str, folder: Path, what: str, remedy: str,
                     mode: int = 0o755) -> RootlessPrerequisiteError | None:
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=mode)
    except OSError as exc:
        return _fail(prerequisite, f"cannot create {what} {folder}: {exc.strerror or exc}",
                     "not creatable", remedy)
    if os.access(folder, os.W_OK | os.X_OK):
        return None
    return _fail(prerequisite, f"{what} {folder} is not writable by uid {os.geteuid()}",
                 "not writable", remedy)


def check_runtime_dir(config: Config, host: Host, who: Who) -> RootlessPrerequisiteError | None:
    folder = Path(runtime_dir(host.env, who.uid))
    return _writable_folder(
        "XDG_RUNTIME_DIR", folder, "XDG_RUNTIME_DIR", "set XDG_RUNTIME_DIR to a folder the user"
        f" owns (the rootless image makes /run/user 1777, so /run/user/{who.uid} can be"
        " created), or mount a tmpfs there", mode=0o700,
    )


def check_home(config: Config, host: Host, who: Who) -> RootlessPrerequisiteError | None:
    home = home_dir(host.env, who.uid)
    if home is None:
        return _fail("HOME", f"HOME is not set and {who} has no entry in the password database",
                     "unset", "set HOME to a folder the user owns")
    return _writable_folder(
        "HOME", Path(config.dockerd.data_root), "the data root (HOME is " + home + ")",
        "mount a volume the user may write on the data root (the rootless image's VOLUME is"
        " /home/rootless/.local/share/docker), or set HOME or --dockerd-data-root elsewhere",
    )


def check_tun(config: Config, host: Host, who: Who) -> RootlessPrerequisiteError | None:
    net = resolve_net(config.rootless.net, path=host.path)
    if net not in TAP_DRIVERS:
        return None
    tun = Path(host.dev_root) / "net" / "tun"
    if not tun.exists():
        return _fail(f"/dev/net/tun ({net})", f"{tun} does not exist: --net={net} needs a TAP"
                     " device", "missing",
                     "start the container with --device /dev/net/tun (--privileged has it)")
    if os.access(tun, os.R_OK | os.W_OK):
        return None
    mode = oct(tun.stat().st_mode & 0o777)
    return _fail(
        f"/dev/net/tun ({net})", f"{tun} is not readable and writable by {who} (mode {mode}):"
        f" --net={net} opens it inside the user namespace", mode,
        "on the host: chmod 0666 /dev/net/tun (its usual mode), or pass a device with that"
        " mode (--device /dev/net/tun:/dev/net/tun:rw)",
    )


Check = Callable[[Config, Host, Who], RootlessPrerequisiteError | None]
# The entrypoint's order first, then ours: the first failure is the one reported by `run`.
CHECKS: tuple[Check, ...] = (
    check_rootlesskit, check_subids, check_userns_clone, check_max_user_namespaces,
    check_apparmor_userns, check_runtime_dir, check_home, check_uidmap, check_net_driver,
    check_tun,
)


def problems(config: Config, host: Host | None = None,
             who: Who | None = None) -> list[RootlessPrerequisiteError]:
    """Every prerequisite that is missing (none: rootless mode can start)."""
    host, who = host or Host(), who or Who.current()
    return [error for check in CHECKS if (error := check(config, host, who)) is not None]


def require(config: Config, host: Host | None = None, who: Who | None = None) -> None:
    """Raise the first missing prerequisite (exit 2), before anything is started."""
    found = problems(config, host, who)
    if found:
        raise found[0]


def findings(config: Config, host: Host | None = None, who: Who | None = None) -> list[Finding]:
    """For ``check``: each problem as an error, or one line saying all are met."""
    host, who = host or Host(), who or Who.current()
    found = problems(config, host, who)
    result = [
        Finding(topic="rootless", severity=Severity.ERROR, message=error.message,
                remedy=error.remedy, data={"prerequisite": error.prerequisite,
                                           "found": error.found})
        for error in found
    ]
    counts = subid_counts(host, who)
    if all(counts.values()) and min(counts.values()) < RECOMMENDED_SUBIDS:
        result.append(Finding(
            topic="rootless", severity=Severity.WARNING,
            message=f"{who} has only {min(counts.values())} subordinate ids (subuid"
            f" {counts['subuid']}, subgid {counts['subgid']}): images with higher uids fail"
            " to unpack", remedy=f"grant {RECOMMENDED_SUBIDS} in /etc/subuid and /etc/subgid",
            data=counts,
        ))
    if not found:
        result.append(Finding(
            topic="rootless", severity=Severity.OK,
            message=f"rootless mode as {who}: rootlesskit, subordinate ids, user namespaces"
            " and writable folders are in place",
        ))
    return result
