"""The running agent's effective settings, as ``check`` takes them from its /status.

``check`` run next to a running agent (inside its container, or on the host
with ``--socket``) must judge what that agent runs with, not what the
caller's shell happens to hold: a shell without DOCKER_TLS_CERTDIR would
otherwise report "TLS is off" next to an agent serving TLS.

Both ends of that exchange live here:

- ``settings_document(config)``: what the agent publishes under the /status
  key ``settings`` (``SETTINGS_KEY``): every setting of ``config.describe()``
  as ``{section: {key: value}}`` in plain JSON (paths as strings, durations
  in seconds, ``dockerd.args`` as a list, unset policy values as null);
- ``agent_config(local, document)``: the configuration ``check`` uses. The
  agent's values, with the caller's own explicit choices on top (a flag of
  ``check``, a DIND_SUPERVISOR_* or docker:dind variable set in the
  caller's environment, ``--config``), so ``VAR=x dind-supervisor check``
  still asks "what if". An agent whose /status has no ``settings`` object
  yet still gives what other keys show: ``tls.enabled``/``tls.certdir``,
  ``data_root.path``, ``policy.mode`` and ``rootless.enabled``.

This module neither fetches the document (``agent_client``) nor runs checks
(``doctor``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor import config
from supervisor.errors import ConfigError

SETTINGS_KEY = "settings"
AGENT_SOURCE = "the running agent's settings (/status)"
# How config.load names a source the caller set on purpose.
_CHOICES = ("environment", "flag ", "config file")
_NOT_ROOT = 65534  # nobody


def _plain(value: object) -> object:
    """A setting's value as JSON holds it (and as ``config.load`` takes it back)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def settings_document(cfg: config.Config) -> dict[str, dict[str, Any]]:
    """The agent's effective settings for /status' ``settings`` key."""
    document: dict[str, dict[str, Any]] = {}
    for section in config.SECTIONS:
        values = getattr(cfg, section)
        document[section] = {
            f.name: _plain(getattr(values, f.name)) for f in dataclasses.fields(values)
        }
    return document


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSettings:
    """What one /status document says of the agent's settings."""

    values: dict[tuple[str, str], object]
    complete: bool  # from ``settings``; False: pieced together from other keys


def read_settings(document: Mapping[str, Any]) -> AgentSettings:
    """The settings in ``document``; tolerant of older agents and of stray keys."""
    published = document.get(SETTINGS_KEY)
    if isinstance(published, Mapping):
        values: dict[tuple[str, str], object] = {}
        for section, table in published.items():
            if section not in config.SECTIONS or not isinstance(table, Mapping):
                continue  # a newer agent's section: nothing here would read it
            known = config.section_fields(section)
            for key, value in table.items():
                # An unset policy value is null: the default applies, as in the agent.
                if key in known and value is not None:
                    values[section, key] = value
        return AgentSettings(values=values, complete=True)
    values = {}
    tls = document.get("tls")
    if isinstance(tls, Mapping) and isinstance(tls.get("enabled"), bool):
        certdir = tls.get("certdir") if tls["enabled"] else ""
        if isinstance(certdir, str):
            values["tls", "certdir"] = certdir
    data_root = document.get("data_root")
    if isinstance(data_root, Mapping) and isinstance(data_root.get("path"), str):
        values["dockerd", "data_root"] = data_root["path"]
    policy = document.get("policy")
    if isinstance(policy, Mapping) and isinstance(policy.get("mode"), str):
        values["policy", "mode"] = policy["mode"]
    rootless = document.get("rootless")
    if isinstance(rootless, Mapping) and isinstance(rootless.get("enabled"), bool):
        values["rootless", "enabled"] = "true" if rootless["enabled"] else "false"
    return AgentSettings(values=values, complete=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Merged:
    """The configuration ``check`` uses, and what the caller overrode (key -> source)."""

    config: config.Config
    overridden: dict[str, str]
    settings: AgentSettings


def agent_config(local: config.Config, document: Mapping[str, Any]) -> Merged:
    """The agent's settings from ``document``, with the caller's own choices on top.

    Raises ConfigError naming the agent as the source when a value it reports
    is not valid here (an agent of another version).
    """
    settings = read_settings(document)
    # Keys the caller chose on purpose (a flag, a variable, the file), with where from;
    # not what config.load derived by itself (rootless mode's defaults for this uid).
    chosen = {key: source for key, source in local.sources.items()
              if source.startswith(_CHOICES)}
    values: dict[tuple[str, str], object] = {}
    if not settings.complete:
        # Only a few keys come from the agent; the rest stay as this shell has them.
        for section, key, _default, _help in config.describe():
            values[section, key] = _plain(getattr(getattr(local, section), key))
    overridden: dict[str, str] = {}
    for (section, key), value in settings.values.items():
        name = f"{section}.{key}"
        if name in chosen:
            if _plain(getattr(getattr(local, section), key)) != value:
                overridden[name] = chosen[name]
            continue
        values[section, key] = value
    for name in chosen:
        section, _, key = name.partition(".")
        if key in config.section_fields(section):
            values[section, key] = _plain(getattr(getattr(local, section), key))
    # config.load judges rootless mode against the agent's user, not the caller's
    # (root, asking a rootless agent through nsenter): an agent whose settings say
    # rootless runs as some uid other than 0. Which one changes nothing here: every
    # path it would derive from it comes with the settings.
    rootless = values.get(("rootless", "enabled")) == "true"
    try:
        merged = config.load(env={}, flags=values, euid=_NOT_ROOT if rootless else 0)
    except ConfigError as exc:
        raise ConfigError(
            key=exc.key, value=exc.value, source=AGENT_SOURCE, reason=exc.reason,
            remedy="use a dind-supervisor of the agent's version for `check`",
        ) from None
    return Merged(config=merged, overridden=overridden, settings=settings)
