"""Tests for supervisor.dockerd_flags: dockerd's command line, its daemon.json keys, its version."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.dockerd_flags import (
    DEFAULT_CONFIG_FILE,
    config_file_of,
    config_key,
    known_keys_from_help,
    options_in,
    parse_dockerd_version,
    parse_flags,
    supports_validate,
)

pytestmark = pytest.mark.unit

HELP = Path(__file__).parent / "fixtures" / "dockerd_help"
HELP_20 = (HELP / "20.10.txt").read_text()  # `dockerd --help` of 20.10.24
HELP_26 = (HELP / "26.1.txt").read_text()  # `dockerd --help` of 26.1.5


def test_parse_flags_reads_every_form_pflag_accepts() -> None:
    """Long, long=value, short, short-attached and boolean flags are all recognised."""
    used = parse_flags(
        ["--host", "unix:///a", "-Htcp://b", "-H", "c", "--tlsverify", "--data-root=/d", "-D",
         "--log-level", "debug", "-p=/x.pid", "--tls=false"]
    )  # fmt: skip
    assert [(f.name, f.value) for f in used] == [
        ("host", "unix:///a"),
        ("host", "tcp://b"),
        ("host", "c"),
        ("tlsverify", None),
        ("data-root", "/d"),
        ("debug", None),
        ("log-level", "debug"),
        ("pidfile", "/x.pid"),
        ("tls", "false"),
    ]
    assert used[1].written == "-Htcp://b"


def test_unknown_flags_follow_pflags_default_rule() -> None:
    """A flag the tables do not know takes the next argument, as pflag would."""
    assert [(f.name, f.value) for f in parse_flags(["--new-option", "x", "--other=y"])] == [
        ("new-option", "x"),
        ("other", "y"),
    ]


def test_options_in_gives_long_names() -> None:
    """Short and long spellings give the same option names."""
    assert options_in(["-H", "unix:///x", "--tlsverify", "-p", "/p"]) == {
        "host",
        "tlsverify",
        "pidfile",
    }


def test_config_file_default_and_given() -> None:
    """Without --config-file dockerd reads /etc/docker/daemon.json; the last one given wins."""
    assert config_file_of(["dockerd", "--debug"]) == (DEFAULT_CONFIG_FILE, False)
    assert config_file_of(["dockerd", "--config-file", "/a.json", "--config-file=/b.json"]) == (
        Path("/b.json"),
        True,
    )


def test_config_keys_of_named_options() -> None:
    """List and map flags clash with their plural key; others with their own name."""
    assert config_key("host") == "hosts"
    assert config_key("label") == "labels"
    assert config_key("storage-opt") == "storage-opts"
    assert config_key("data-root") == "data-root"


def test_known_keys_come_from_help_and_version() -> None:
    """--help lists the flags; named options add their plural key; 23.0 removed `graph`."""
    keys_20 = known_keys_from_help(HELP_20, (20, 10))
    keys_26 = known_keys_from_help(HELP_26, (26, 1))
    assert {"hosts", "host", "H", "labels", "storage-driver", "oom-score-adjust"} <= keys_20
    assert "graph" in keys_20
    assert "graph" not in keys_26
    assert "oom-score-adjust" not in keys_26  # removed in 25.0: 26.1's --validate refuses it
    assert {"log-format", "http-proxy", "restart", "validate"} <= keys_26


def test_version_detection() -> None:
    """--validate exists from 23.0; the version comes from `dockerd --version`."""
    assert parse_dockerd_version("Docker version 20.10.24+dfsg1, build 5d6db84") == (20, 10)
    assert parse_dockerd_version("Docker version 26.1.5+dfsg1, build 411e817") == (26, 1)
    assert parse_dockerd_version("garbage") is None
    assert supports_validate((20, 10)) is False
    assert supports_validate((23, 0)) is True
    assert supports_validate(None) is None
