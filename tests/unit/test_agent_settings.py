"""Tests for supervisor.agent_settings: the /status `settings` object, both ways."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supervisor import config
from supervisor.agent_settings import (
    AGENT_SOURCE,
    agent_config,
    read_settings,
    settings_document,
)
from supervisor.config import Config
from supervisor.errors import ConfigError

pytestmark = pytest.mark.unit


def _through_json(document: object) -> object:
    return json.loads(json.dumps(document))


def test_document_has_every_setting_as_plain_json() -> None:
    """Every (section, key) of config.describe() is there, with JSON-native values."""
    document = settings_document(Config())
    assert {(s, k) for s, k, _d, _h in config.describe()} == {
        (section, key) for section, table in document.items() for key in table
    }
    assert document["dockerd"]["data_root"] == "/var/lib/docker"
    assert document["dockerd"]["args"] == []
    assert document["liveness"]["interval"] == 5.0
    assert document["policy"]["mode"] is None
    assert _through_json(document) == document


def test_round_trip_gives_the_agent_configuration(tmp_path: Path) -> None:
    """A non-default agent configuration survives settings_document -> JSON -> agent_config."""
    running = config.load(
        env={"DOCKER_TLS_CERTDIR": str(tmp_path), "DOCKER_TLS_SAN": "DNS:ci IP:10.1.2.3"},
        flags={("restart", "backoff_max"): "1m", ("policy", "mode"): "strict",
               ("policy", "dockerd_rlimits"): {"nofile": "4096:8192"},
               ("http", "listen"): "[::1]:9400"},
        dockerd_args=["--mtu", "1400", "--debug"],
    )
    document = {"settings": _through_json(settings_document(running))}
    merged = agent_config(Config(), document)
    assert merged.config == running
    assert merged.settings.complete
    assert merged.overridden == {}


def test_exact_arguments_round_trip() -> None:
    """An agent running `dockerd ARGS` exactly: its socket and flags come back the same."""
    running = config.load(env={}, dockerd_args=["-H", "unix:///run/d.sock"], exact_args=True)
    merged = agent_config(Config(), {"settings": _through_json(settings_document(running))})
    assert merged.config == running
    assert merged.config.dockerd.host == "unix:///run/d.sock"


def test_older_agent_gives_what_its_other_keys_show() -> None:
    """No `settings` object: TLS (on or off), the data root, the policy mode and rootless
    mode still count."""
    on = read_settings({"tls": {"enabled": True, "certdir": "/certs"},
                        "data_root": {"path": "/data"}, "policy": {"mode": "strict"}})
    assert not on.complete
    assert on.values == {("tls", "certdir"): "/certs", ("dockerd", "data_root"): "/data",
                         ("policy", "mode"): "strict"}
    off = read_settings({"tls": {"enabled": False}, "rootless": {"enabled": False}})
    assert off.values == {("tls", "certdir"): "", ("rootless", "enabled"): "false"}


def test_older_agent_keeps_the_rest_of_this_shell() -> None:
    """Partial settings: the agent's TLS replaces this shell's, other keys stay this shell's."""
    local = config.load(env={"DOCKER_TLS_CERTDIR": ""}, flags={("log", "level"): "debug"})
    merged = agent_config(local, {"tls": {"enabled": True, "certdir": "/certs"}})
    assert merged.config.log.level == "debug"
    # The caller's own DOCKER_TLS_CERTDIR (set, empty) is a choice: it wins, and is named.
    assert merged.config.tls.certdir == ""
    assert merged.overridden == {"tls.certdir": "environment DOCKER_TLS_CERTDIR"}
    unset = agent_config(Config(), {"tls": {"enabled": True, "certdir": "/certs"}})
    assert unset.config.tls_enabled
    assert unset.config.tls.certdir == "/certs"


def test_unknown_sections_keys_and_junk_are_ignored() -> None:
    """A newer agent's extra sections or keys, or a malformed object, do not break check."""
    values = read_settings({"settings": {"future": {"x": 1}, "dockerd": {"nope": 1, "mtu": 1400},
                                         "tls": "not a table"}}).values
    assert values == {("dockerd", "mtu"): 1400}
    assert read_settings({"tls": "junk", "data_root": None, "policy": {"mode": 3}}).values == {}


def test_invalid_agent_value_names_the_agent_as_source() -> None:
    """A value this version refuses is a ConfigError whose source is the running agent."""
    with pytest.raises(ConfigError) as caught:
        agent_config(Config(), {"settings": {"log": {"level": "chatty"}}})
    assert caught.value.source == AGENT_SOURCE
    assert caught.value.key == "log.level"
    assert caught.value.remedy


def test_what_load_derives_is_not_the_callers_choice() -> None:
    """A value config.load derived by itself (rootless defaults for a non-root caller) does
    not override the agent's: only flags, variables and the file do."""
    local = config.load(env={"HOME": "/home/u", "XDG_RUNTIME_DIR": "/run/user/1000"}, euid=1000)
    assert local.sources["rootless.enabled"].startswith("auto")
    agent = config.load(env={}, euid=0)
    merged = agent_config(local, {"settings": settings_document(agent)})
    assert merged.config.rootless.enabled == agent.rootless.enabled
    assert merged.overridden == {}


def test_rootless_agent_round_trip() -> None:
    """A rootless agent's settings (its paths under HOME) come back as they are, whoever asks."""
    running = config.load(env={"HOME": "/home/u", "XDG_RUNTIME_DIR": "/run/user/1000"}, euid=1000)
    assert running.rootless_on
    merged = agent_config(Config(), {"settings": _through_json(settings_document(running))})
    assert merged.config == running
