"""dockerd's command line as its flag parser (pflag) reads it, and each flag's daemon.json key.

The one reader of dockerd's arguments: which options are given (so the
agent does not give them twice) and their values (the sockets, paths and
TLS files dockerd will use); which daemon.json key clashes with each flag
(moby's NamedOption names: ``--host`` → ``hosts``); which keys dockerd
accepts (from its ``--help`` and version); its version from
``dockerd --version``. Pure functions over strings: it runs nothing and
does not build the argv (``dockerd/process.py`` does). A leaf module, so
the configuration and the dockerd component can both use it.

pflag accepts ``--name value``, ``--name=value`` and, for one-letter
options, ``-H value``, ``-Hvalue`` and ``-H=value``; boolean flags take no
separate value. The tables hold dockerd 20.10 and 26.1 (moby's cmd/dockerd
and daemon/config); a flag missing from them is read with pflag's default
rule (its own name is its key; a value follows unless written
``--flag=value``), so a newer dockerd's new options still parse.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CONFIG_FILE = Path("/etc/docker/daemon.json")

# Flags whose daemon.json key is not their own name (moby: opts.NamedOption).
NAMED_OPTIONS: Mapping[str, str] = {
    "host": "hosts",
    "label": "labels",
    "registry-mirror": "registry-mirrors",
    "insecure-registry": "insecure-registries",
    "allow-nondistributable-artifacts": "allow-nondistributable-artifacts",
    "storage-opt": "storage-opts",
    "authorization-plugin": "authorization-plugins",
    "exec-opt": "exec-opts",
    "dns-opt": "dns-opts",
    "log-opt": "log-opts",
    "default-ulimit": "default-ulimits",
    "default-network-opt": "default-network-opts",
    "default-address-pool": "default-address-pools",
    "node-generic-resource": "node-generic-resources",
    "cluster-store-opt": "cluster-store-opts",
    "cdi-spec-dir": "cdi-spec-dirs",
    "add-runtime": "runtimes",
}
SHORTHANDS: Mapping[str, str] = {
    "H": "host",
    "D": "debug",
    "l": "log-level",
    "p": "pidfile",
    "G": "group",
    "s": "storage-driver",
    "b": "bridge",
    "g": "graph",
    "r": "restart",
    "v": "version",
    "h": "help",
}
# Flags that take no separate value (`--live-restore`, `--tls=false`); every
# other flag takes the next argument when it has no `=`.
BOOLEAN_FLAGS = frozenset(
    {
        "debug", "validate", "tls", "tlsverify", "live-restore", "experimental", "iptables",
        "ip6tables", "ip-forward", "ip-forward-no-drop", "ip-masq", "ipv6", "icc",
        "userland-proxy", "selinux-enabled", "init", "no-new-privileges", "rootless",
        "raw-logs", "cri-containerd", "restart", "version", "help", "disable-legacy-registry",
        "bridge-accept-fwmark", "userns-remap-enabled",
    }
)  # fmt: skip
# Values that are objects in themselves, not groups of keys to flatten.
FLAT_OPTIONS = frozenset(
    {"cluster-store-opts", "default-network-opts", "log-opts", "runtimes", "default-ulimits",
     "features", "builder"}
)  # fmt: skip
# Keys dockerd accepts without a flag of that name, and keys that merge with their flag.
UNCHECKED_KEYS = frozenset(
    {"features", "builder", "deprecated-key-path", "allow-nondistributable-artifacts"}
)
MERGING_KEYS = frozenset({"runtimes"})
# Flags --help does not list that daemon.json may still hold (checked with
# `dockerd --validate` of 26.1, and 20.10's sources): hidden ones, and until
# 23.0 the deprecated ones that 23.0 removed (26.1 refuses "graph").
HIDDEN_KEYS = frozenset({"restart", "network-diagnostic-port"})
HIDDEN_KEYS_BEFORE_23 = frozenset(
    {"graph", "cluster-store", "cluster-advertise", "cluster-store-opts"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class FlagUse:
    """One option on dockerd's command line, by its long name."""

    name: str  # "host", "tlsverify"
    written: str  # as written: "-H", "--tlsverify=false"
    value: str | None


def parse_flags(args: Iterable[str]) -> list[FlagUse]:
    """The options in dockerd's arguments (without argv[0]), as pflag reads them."""
    items = list(args)
    used: list[FlagUse] = []
    index = 0
    while index < len(items):
        arg = items[index]
        index += 1
        if arg == "--":
            break
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg[2:].partition("=")
        elif arg.startswith("-") and len(arg) > 1:
            name = SHORTHANDS.get(arg[1], arg[1])
            rest = arg[2:]
            eq, value = ("=", rest.removeprefix("=")) if rest else ("", "")
            if rest and name in BOOLEAN_FLAGS:  # -D alone; combined short flags are rare
                eq, value = "", ""
        else:
            continue  # dockerd takes no positional arguments
        if not eq and name not in BOOLEAN_FLAGS and index < len(items):
            value = items[index]
            index += 1
            eq = " "
        used.append(FlagUse(name=name, written=arg.split("=", 1)[0], value=value if eq else None))
    return used


def options_in(args: Iterable[str]) -> frozenset[str]:
    """Long names of the options in ``args``: what the agent adds, or what the user gave."""
    return frozenset(flag.name for flag in parse_flags(args))


def config_file_of(
    argv: Sequence[str], default: Path = DEFAULT_CONFIG_FILE
) -> tuple[Path, bool]:
    """The configuration file dockerd will read, and whether the argv names it.

    ``default``: the file dockerd reads without --config-file (rootless dockerd reads
    ``$XDG_CONFIG_HOME/docker/daemon.json``).
    """
    path, given = default, False
    for flag in parse_flags(argv[1:]):
        if flag.name == "config-file" and flag.value is not None:
            path, given = Path(flag.value), True
    return path, given


def config_key(flag_name: str) -> str:
    """The daemon.json key that clashes with a flag given on the command line."""
    return NAMED_OPTIONS.get(flag_name, flag_name)


_HELP_FLAG = re.compile(r"^\s+(?:-(\w), )?--([a-z0-9][a-z0-9-]*)(?: (\w+))?", re.M)


def known_keys_from_help(help_text: str, version: tuple[int, int] | None) -> frozenset[str]:
    """The daemon.json keys a dockerd accepts, from its ``--help`` and its version."""
    keys: set[str] = set(HIDDEN_KEYS | UNCHECKED_KEYS)
    if version is None or version < (23, 0):
        keys |= HIDDEN_KEYS_BEFORE_23
    for short, name, _kind in _HELP_FLAG.findall(help_text):
        keys.add(name)
        keys.add(NAMED_OPTIONS.get(name, name))
        if short:
            keys.add(short)
    return frozenset(keys)


# Versions -------------------------------------------------------------------------------------


_VERSION = re.compile(r"Docker version (\d+)\.(\d+)")


def parse_dockerd_version(text: str) -> tuple[int, int] | None:
    """(major, minor) from ``dockerd --version`` ("Docker version 26.1.5+dfsg1, build ...")."""
    match = _VERSION.search(text)
    return (int(match[1]), int(match[2])) if match else None


def supports_validate(version: tuple[int, int] | None) -> bool | None:
    """Whether ``--validate`` exists (added in 23.0); None when the version is unknown."""
    return None if version is None else version >= (23, 0)


# Questions the agent asks of the user's arguments -------------------------------------------


def _long_name(option: str) -> str:
    """"--host" -> "host", "-H" -> "host" (through the shorthand table)."""
    if option.startswith("--"):
        return option[2:]
    return SHORTHANDS.get(option[1:], option[1:])


def option_values(args: Sequence[str], *names: str) -> list[str]:
    """Every value given for an option known by any of ``names`` ("--host", "-H"), in order."""
    wanted = {_long_name(name) for name in names}
    return [f.value for f in parse_flags(args) if f.name in wanted and f.value is not None]


def user_sets(args: Sequence[str], *names: str) -> bool:
    """Whether any of ``names`` is given, in any form pflag accepts (with a value or not)."""
    wanted = {_long_name(name) for name in names}
    return any(f.name in wanted for f in parse_flags(args))


def last_value(args: Sequence[str], *names: str) -> str | None:
    """The value dockerd will use for an option given more than once: the last."""
    values = option_values(args, *names)
    return values[-1] if values else None
