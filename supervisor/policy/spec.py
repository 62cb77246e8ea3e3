"""The requested resource policy: its value types, defaults and parsing from configuration.

Owns what the user asks for ([policy] in TOML, or DIND_SUPERVISOR_POLICY_* strings)
and its validation; not what the kernel grants (plan.py) nor applying it (apply.py).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace

from supervisor.config import Config, PolicyConfig
from supervisor.errors import ConfigError
from supervisor.policy.limits import (
    BY_NAME,
    INFINITY,
    NOFILE,
    NR_OPEN_MAX,
    RLIMITS,
    Rlimit,
    format_pair,
    format_value,
    lookup,
    parse_pair,
)

OOM_SCORE_ADJ_MIN = -1000
OOM_SCORE_ADJ_MAX = 1000
INHERIT = "inherit"  # config word: leave this setting as the process inherits it
HARD = "hard"  # config word for an rlimit: soft and hard at the hard limit the process has

PROCESSES = ("init", "agent", "dockerd")


class Mode(enum.StrEnum):
    STRICT = "strict"  # any deviation stops the agent before dockerd runs (exit 2)
    BEST_EFFORT = "best-effort"  # apply what the kernel allows, warn once, count


@dataclass(frozen=True, slots=True, kw_only=True)
class RlimitRequest:
    """Soft and hard value wanted for one limit (INFINITY = unlimited)."""

    rlimit: Rlimit
    soft: int
    hard: int
    # "as high as this process may go": soft raised to the hard limit it has, which is
    # not a shortfall to report (what an unprivileged user can do, see ROOTLESS_POLICY).
    up_to_hard: bool = False

    def __str__(self) -> str:
        if self.up_to_hard:
            return f"{self.rlimit.name}={HARD}"
        return f"{self.rlimit.name}={format_pair(self.soft, self.hard)}"


def _request(name: str, soft: int, hard: int) -> RlimitRequest:
    return RlimitRequest(rlimit=BY_NAME[name], soft=soft, hard=hard)


def _up_to_hard(name: str) -> RlimitRequest:
    return RlimitRequest(rlimit=BY_NAME[name], soft=INFINITY, hard=INFINITY, up_to_hard=True)


# As docker.service: LimitNOFILE=infinity (which systemd turns into fs.nr_open,
# 1048576 by default: nofile cannot be unlimited), LimitNPROC/LimitCORE=infinity.
DEFAULT_DOCKERD_RLIMITS: tuple[RlimitRequest, ...] = (  # by type number, as parsing sorts
    _request("core", INFINITY, INFINITY),
    _request("nproc", INFINITY, INFINITY),
    _request("nofile", 1048576, 1048576),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """oom_score_adj (None = inherit) and rlimits for PID 1, the agent and dockerd.

    Defaults: dockerd -500 as docker.service; the agent and our init lower, so
    the OOM killer takes a container (0) first, dockerd later, the agent last.
    """

    mode: Mode = Mode.BEST_EFFORT
    init_oom_score_adj: int | None = -999
    agent_oom_score_adj: int | None = -900
    dockerd_oom_score_adj: int | None = -500
    agent_rlimits: tuple[RlimitRequest, ...] = ()
    dockerd_rlimits: tuple[RlimitRequest, ...] = DEFAULT_DOCKERD_RLIMITS

    def oom_score_adj(self, process: str) -> int | None:
        return {
            "init": self.init_oom_score_adj,
            "agent": self.agent_oom_score_adj,
            "dockerd": self.dockerd_oom_score_adj,
        }[process]

    def rlimits(self, process: str) -> tuple[RlimitRequest, ...]:
        return {"init": (), "agent": self.agent_rlimits, "dockerd": self.dockerd_rlimits}[
            process
        ]


DEFAULT_POLICY = Policy()

# Rootless mode: what an unprivileged user can set. oom_score_adj can only be
# raised, and raising dockerd's would make it a likelier OOM victim than its
# containers, so all three are inherited; rlimits go up to the hard limit the
# container was given (raising a hard limit needs CAP_SYS_RESOURCE).
ROOTLESS_POLICY = Policy(
    init_oom_score_adj=None,
    agent_oom_score_adj=None,
    dockerd_oom_score_adj=None,
    dockerd_rlimits=(_up_to_hard("core"), _up_to_hard("nproc"), _up_to_hard("nofile")),
)

_KEYS = (
    "mode",
    "init_oom_score_adj",
    "agent_oom_score_adj",
    "dockerd_oom_score_adj",
    "agent_rlimits",
    "dockerd_rlimits",
)


def parse_policy(
    mapping: Mapping[str, object],
    source: str,
    *,
    base: Policy = DEFAULT_POLICY,
    check: bool = True,
) -> Policy:
    """Read a [policy] table (TOML values, or strings from the environment) over ``base``.

    rlimit tables merge per resource over ``base`` (``inherit`` drops one; the
    string ``inherit`` for a whole table drops them all). ``check=False`` skips
    the rules between keys (check_policy), for a caller that merges several
    layers key by key and checks once at the end: an intermediate state (agent
    raised, dockerd not yet) must not be judged.
    Raises ConfigError naming the key, the value and the source.
    """
    policy = base
    for key, value in mapping.items():
        full_key = f"policy.{key}"
        if key not in _KEYS:
            raise ConfigError(
                key=full_key,
                value=value,
                source=source,
                reason="unknown key",
                remedy=f"use one of: {', '.join(_KEYS)}",
            )
        if key == "mode":
            policy = replace(policy, mode=_parse_mode(value, full_key, source))
        elif key == "init_oom_score_adj":
            policy = replace(policy, init_oom_score_adj=_parse_oom(value, full_key, source))
        elif key == "agent_oom_score_adj":
            policy = replace(policy, agent_oom_score_adj=_parse_oom(value, full_key, source))
        elif key == "dockerd_oom_score_adj":
            policy = replace(policy, dockerd_oom_score_adj=_parse_oom(value, full_key, source))
        elif key == "agent_rlimits":
            merged = _parse_rlimits(value, full_key, source, policy.agent_rlimits)
            policy = replace(policy, agent_rlimits=merged)
        else:
            merged = _parse_rlimits(value, full_key, source, policy.dockerd_rlimits)
            policy = replace(policy, dockerd_rlimits=merged)
    if check:
        check_policy(policy, {key: source for key in mapping})
    return policy


def policy_from_config(config: Config) -> Policy:
    """The [policy] settings parsed, each key with its own source; raises ConfigError."""
    values = {
        f.name: value
        for f in dataclasses.fields(PolicyConfig)
        if (value := getattr(config.policy, f.name)) is not None
    }
    sources = {key: config.sources.get(f"policy.{key}", "default") for key in values}
    return resolve_policy(values, sources,
                          base=ROOTLESS_POLICY if config.rootless_on else DEFAULT_POLICY)


def resolve_policy(
    values: Mapping[str, object], sources: Mapping[str, str], *, base: Policy = DEFAULT_POLICY
) -> Policy:
    """The policy from merged layers: ``values`` by key, each key's origin in ``sources``.

    Every key is parsed with its own source, then the rules between keys are
    checked once on the result, so the order in which keys are given does not
    matter (``agent_oom_score_adj = 50`` with ``dockerd_oom_score_adj = 100``).
    """
    policy = base
    for key, value in values.items():
        policy = parse_policy(
            {key: value}, sources.get(key, "default"), base=policy, check=False
        )
    check_policy(policy, sources)
    return policy


def check_policy(policy: Policy, sources: Mapping[str, str]) -> None:
    """The rules between keys; ``sources`` names where each key that was set came from.

    A conflict is reported on a key that was set (not on a default), with that
    key's source.
    """
    _check_order(policy, sources)
    _check_agent_caps_dockerd(policy, sources)


def _source(keys: tuple[str, ...], sources: Mapping[str, str]) -> str:
    """Where the first of ``keys`` that was set came from (a conflict may involve a default)."""
    return next((sources[key] for key in keys if key in sources), "default")


def _parse_mode(value: object, key: str, source: str) -> Mode:
    text = str(value).strip().lower().replace("_", "-")
    try:
        return Mode(text)
    except ValueError:
        raise ConfigError(
            key=key,
            value=value,
            source=source,
            reason="unknown mode",
            remedy="use 'strict' (refuse to start when the kernel says no) or 'best-effort'",
        ) from None


def _parse_oom(value: object, key: str, source: str) -> int | None:
    if isinstance(value, str) and value.strip().lower() == INHERIT:
        return None
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            number = None
    if number is None:
        raise ConfigError(
            key=key,
            value=value,
            source=source,
            reason="not an integer",
            remedy=f"use an integer from {OOM_SCORE_ADJ_MIN} to {OOM_SCORE_ADJ_MAX},"
            f" or '{INHERIT}'",
        )
    if not OOM_SCORE_ADJ_MIN <= number <= OOM_SCORE_ADJ_MAX:
        raise ConfigError(
            key=key,
            value=value,
            source=source,
            reason=f"out of range {OOM_SCORE_ADJ_MIN}..{OOM_SCORE_ADJ_MAX}",
            remedy="-1000 exempts a process from the OOM killer, 1000 makes it the first"
            " victim; pick a value in between",
        )
    return number


def _split_rlimit_string(value: str, key: str, source: str) -> dict[str, object]:
    """``nofile=1048576:1048576,nproc=unlimited`` (an environment variable's form)."""
    table: dict[str, object] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        name, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(
                key=key,
                value=value,
                source=source,
                reason=f"{item.strip()!r} is not NAME=VALUE",
                remedy="write e.g. nofile=1048576:1048576,nproc=unlimited",
            )
        name = name.strip()
        if name in table:
            raise ConfigError(
                key=f"{key}.{name}",
                value=value,
                source=source,
                reason="given twice",
                remedy="give each resource once",
            )
        table[name] = text.strip()
    return table


def _parse_rlimits(
    value: object, key: str, source: str, current: tuple[RlimitRequest, ...]
) -> tuple[RlimitRequest, ...]:
    if isinstance(value, str) and value.strip().lower() == INHERIT:
        return ()  # the whole table: set no rlimit at all
    if isinstance(value, str):
        table: Mapping[str, object] = _split_rlimit_string(value, key, source)
    elif isinstance(value, Mapping):
        table = value
    else:
        raise ConfigError(
            key=key,
            value=value,
            source=source,
            reason="expected a table of NAME = \"SOFT:HARD\"",
            remedy='write e.g. {nofile = "1048576", nproc = "unlimited"}',
        )
    merged = {r.rlimit.number: r for r in current}
    for name, raw in table.items():
        item_key = f"{key}.{name}"
        rlimit = lookup(str(name))
        if rlimit is None:
            raise ConfigError(
                key=item_key,
                value=raw,
                source=source,
                reason=f"unknown resource {name!r}",
                remedy="use one of: " + ", ".join(r.name for r in RLIMITS),
            )
        if isinstance(raw, str) and raw.strip().lower() == INHERIT:
            merged.pop(rlimit.number, None)
            continue
        if isinstance(raw, str) and raw.strip().lower() == HARD:
            merged[rlimit.number] = _up_to_hard(rlimit.name)
            continue
        if not isinstance(raw, str | int) or isinstance(raw, bool):
            raise ConfigError(
                key=item_key,
                value=raw,
                source=source,
                reason="expected a number, 'unlimited', 'hard' or \"SOFT:HARD\"",
                remedy=f'write e.g. {rlimit.name} = "1024:4096"',
            )
        merged[rlimit.number] = _parse_request(rlimit, raw, item_key, source)
    return tuple(merged[n] for n in sorted(merged))


def _parse_request(rlimit: Rlimit, raw: str | int, key: str, source: str) -> RlimitRequest:
    try:
        soft, hard = parse_pair(raw)
    except ValueError as exc:
        raise ConfigError(
            key=key,
            value=raw,
            source=source,
            reason=str(exc),
            remedy=f"use a number of {rlimit.unit}, 'unlimited' (or -1), or \"SOFT:HARD\"",
        ) from None
    if soft > hard:
        raise ConfigError(
            key=key,
            value=raw,
            source=source,
            reason=f"soft limit {format_value(soft)} is above hard limit {format_value(hard)}",
            remedy="the soft limit must not exceed the hard limit; write SOFT:HARD with"
            " SOFT <= HARD",
        )
    if not rlimit.may_be_unlimited and hard >= INFINITY:
        raise ConfigError(
            key=key,
            value=raw,
            source=source,
            reason="nofile cannot be unlimited: the kernel caps it at fs.nr_open",
            remedy="write a number, e.g. 1048576 (fs.nr_open's default, what"
            " docker.service's LimitNOFILE=infinity gives)",
        )
    if rlimit is NOFILE and hard > NR_OPEN_MAX:
        raise ConfigError(
            key=key,
            value=raw,
            source=source,
            reason=f"above {NR_OPEN_MAX}, the largest fs.nr_open any kernel accepts",
            remedy="write 1048576 or another value the host's fs.nr_open allows",
        )
    return RlimitRequest(rlimit=rlimit, soft=soft, hard=hard)


def _check_order(policy: Policy, sources: Mapping[str, str]) -> None:
    """PID 1 <= agent <= dockerd: the OOM killer must take dockerd before the agent."""
    previous: tuple[str, int] | None = None
    for process in PROCESSES:
        value = policy.oom_score_adj(process)
        if value is None:
            continue
        if previous is not None and value < previous[1]:
            earlier = f"{previous[0]}_oom_score_adj"
            raise ConfigError(
                key=f"policy.{process}_oom_score_adj",
                value=value,
                source=_source((f"{process}_oom_score_adj", earlier), sources),
                reason=f"below policy.{earlier} ({previous[1]}): the OOM"
                f" killer would take the {previous[0]} before the {process}",
                remedy="keep init <= agent <= dockerd <= 0 (containers default to 0)",
            )
        previous = (process, value)


def _check_agent_caps_dockerd(policy: Policy, sources: Mapping[str, str]) -> None:
    """dockerd is the agent's child: it cannot get a hard limit above the agent's."""
    dockerd = {r.rlimit.number: r for r in policy.dockerd_rlimits}
    for request in policy.agent_rlimits:
        wanted = dockerd.get(request.rlimit.number)
        # "up to the hard limit" follows whatever hard limit the agent ends up with.
        if wanted is not None and not wanted.up_to_hard and request.hard < wanted.hard:
            raise ConfigError(
                key=f"policy.agent_rlimits.{request.rlimit.name}",
                value=format_pair(request.soft, request.hard),
                source=_source(("agent_rlimits", "dockerd_rlimits"), sources),
                reason=f"hard limit below dockerd's ({format_pair(wanted.soft, wanted.hard)}):"
                " dockerd inherits the agent's hard limit and could not raise it again",
                remedy="give the agent a hard limit at least as high as dockerd's, or lower"
                f" policy.dockerd_rlimits.{request.rlimit.name}",
            )
