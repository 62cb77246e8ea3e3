"""Tests for supervisor.logs: dockerd's line parser, re-emission through structlog, set-up."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from structlog.testing import capture_logs

from supervisor.logs import DockerdLine, configure, emit_dockerd_line, parse_dockerd_line

pytestmark = pytest.mark.unit

TIME = 'time="2024-05-01T10:00:00.123456789Z"'


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure() changes process-wide state; put it back after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


# Parsing ----------------------------------------------------------------------------


def test_logrus_line_with_quoted_message_and_fields() -> None:
    """A logrus line gives level, message and the other fields, without time."""
    line = f'{TIME} level=info msg="API listen on /var/run/docker.sock" module=api proto=unix\n'
    parsed = parse_dockerd_line(line)
    assert parsed == DockerdLine(
        level="info",
        message="API listen on /var/run/docker.sock",
        fields={"module": "api", "proto": "unix"},
        structured=True,
    )


def test_logrus_quoted_values_with_escapes() -> None:
    """Escaped quotes, backslashes, newlines and tabs inside quoted values are decoded."""
    line = (
        f'{TIME} level=error msg="failed to \\"start\\" daemon:\\n\\tline two" '
        'path="C:\\\\dir\\\\" error="open /x: no such file"'
    )
    parsed = parse_dockerd_line(line)
    assert parsed.message == 'failed to "start" daemon:\n\tline two'
    assert parsed.fields == {"path": "C:\\dir\\", "error": "open /x: no such file"}


def test_logrus_key_value_inside_quoted_message_is_not_a_field() -> None:
    """`key=value` text inside a quoted message stays part of the message."""
    parsed = parse_dockerd_line(f'{TIME} level=info msg="set level=debug for x=1" y=2')
    assert parsed.message == "set level=debug for x=1"
    assert parsed.fields == {"y": "2"}


def test_logrus_unquoted_message_and_dotted_keys() -> None:
    """Unquoted values and dotted keys (container.id) are parsed."""
    parsed = parse_dockerd_line(f"{TIME} level=debug msg=hello container.id=abc123 empty=")
    assert parsed.message == "hello"
    assert parsed.fields == {"container.id": "abc123", "empty": ""}


@pytest.mark.parametrize(
    ("level", "mapped"),
    [
        ("trace", "debug"),
        ("debug", "debug"),
        ("info", "info"),
        ("warn", "warning"),
        ("warning", "warning"),
        ("error", "error"),
        ("fatal", "critical"),
        ("panic", "critical"),
        ("WARNING", "warning"),
        ("bogus", "info"),
    ],
)
def test_level_mapping(level: str, mapped: str) -> None:
    """logrus levels map onto ours: trace->debug, warn->warning, fatal/panic->critical."""
    assert parse_dockerd_line(f'{TIME} level={level} msg="x"').level == mapped


@pytest.mark.parametrize(
    "line",
    [
        "Error starting daemon: pid file found, ensure docker is not running\n",
        "unable to configure the Docker daemon with file /etc/docker/daemon.json\r\n",
        "time is not a logrus line",
        "  indented plain text",
    ],
)
def test_plain_lines_kept_whole_at_info(line: str) -> None:
    """A line that is not logrus is kept as its message at info, without the line ending."""
    parsed = parse_dockerd_line(line)
    assert parsed.level == "info"
    assert parsed.message == line.rstrip("\r\n")
    assert parsed.fields == {}
    assert parsed.structured is False


@pytest.mark.parametrize("line", ["", "\n", "\r\n"])
def test_empty_lines(line: str) -> None:
    """Empty lines parse to an empty plain message."""
    parsed = parse_dockerd_line(line)
    assert parsed.message == ""
    assert parsed.fields == {}
    assert parsed.structured is False


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (f'{TIME} level=error msg="something"', True),
        (f'{TIME} level=fatal msg="something"', True),
        (f'{TIME} level=warning msg="failed but only a warning"', False),
        (f'{TIME} level=info msg="error in text, level info"', False),
        ("failed to start daemon: invalid argument", True),
        ("Error starting daemon: x", True),
        ("unknown flag: --bogus", True),
        ("can't create unix socket", True),
        ("permission denied", True),
        ("API listen on /var/run/docker.sock", False),
        ("errors are fine as a word part: terrorist", False),
    ],
)
def test_looks_like_error(line: str, error: bool) -> None:
    """Structured lines are errors by level; plain lines by error words."""
    assert parse_dockerd_line(line).looks_like_error is error


# Re-emission -------------------------------------------------------------------------


def test_emit_through_structlog_with_source_and_prefixed_fields() -> None:
    """Emitted lines carry source=dockerd, the mapped level and dockerd_-prefixed fields."""
    line = f'{TIME} level=warning msg="low disk" container.id=abc source=daemon event=x'
    with capture_logs() as captured:
        emit_dockerd_line(structlog.get_logger(), parse_dockerd_line(line))
    assert captured == [
        {
            "event": "low disk",
            "log_level": "warning",
            "source": "dockerd",
            "dockerd_container_id": "abc",
            "dockerd_source": "daemon",
            "dockerd_event": "x",
        }
    ]


def test_emit_keeps_order_and_levels() -> None:
    """A run of lines is emitted in order, each at its own level (fatal as critical)."""
    lines = [
        f'{TIME} level=debug msg="one"',
        "two",
        f'{TIME} level=fatal msg="three"',
        f'{TIME} level=trace msg="four"',
    ]
    with capture_logs() as captured:
        logger = structlog.get_logger()
        for line in lines:
            emit_dockerd_line(logger, parse_dockerd_line(line))
    assert [(e["event"], e["log_level"]) for e in captured] == [
        ("one", "debug"),
        ("two", "info"),
        ("three", "critical"),
        ("four", "debug"),
    ]
    assert all(e["source"] == "dockerd" for e in captured)


# configure() -------------------------------------------------------------------------


def test_configure_json_when_not_a_terminal() -> None:
    """format=auto on a non-terminal stream writes one JSON object per event."""
    out = io.StringIO()
    configure(format="auto", level="info", stream=out)
    structlog.get_logger().info("dockerd_started", pid=42)
    record = json.loads(out.getvalue().strip())
    assert record["event"] == "dockerd_started"
    assert record["pid"] == 42
    assert record["level"] == "info"
    assert record["timestamp"].endswith("Z")


def test_configure_console_on_a_terminal() -> None:
    """format=auto on a terminal writes readable text, not JSON."""
    out = FakeTty()
    configure(format="auto", level="info", stream=out)
    structlog.get_logger().info("dockerd_started", pid=42)
    text = out.getvalue()
    assert "dockerd_started" in text
    assert "42" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_configure_forced_console_without_terminal() -> None:
    """format=console gives readable text (without colour codes) even when piped."""
    out = io.StringIO()
    configure(format="console", level="info", stream=out)
    structlog.get_logger().warning("cert_rotated", cert="server")
    text = out.getvalue()
    assert "cert_rotated" in text
    assert "cert=server" in text
    assert "\x1b[" not in text


def test_configure_forced_json_on_terminal() -> None:
    """format=json gives JSON even on a terminal."""
    out = FakeTty()
    configure(format="json", level="info", stream=out)
    structlog.get_logger().info("x_happened")
    assert json.loads(out.getvalue())["event"] == "x_happened"


def test_configure_level_filters() -> None:
    """Events below the configured level are dropped."""
    out = io.StringIO()
    configure(format="json", level="warning", stream=out)
    log = structlog.get_logger()
    log.info("dropped")
    log.debug("dropped_too")
    log.error("kept")
    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events == ["kept"]


def test_go_quoted_escapes_decoded() -> None:
    """logrus quotes values with Go's %q: \\r, \\xNN and \\uNNNN escapes are decoded."""
    parsed = parse_dockerd_line(f'{TIME} level=info msg="a\\rb \\x1b[0m c\\u200bd"')
    assert parsed.message == "a\rb \x1b[0m c\u200bd"
