"""Logging: structlog set-up and the parser for dockerd's own output.

The agent logs snake_case past-tense events with key/value context, as JSON
when stderr is not a terminal and readable on a terminal. dockerd's lines
(logrus ``time= level= msg=`` or plain text) are re-emitted through the same
logger with ``source=dockerd`` and their level mapped, in the order dockerd
wrote them. This module does not read the pipe; ``dockerd/process.py`` does. structlog is
imported on first use: the launch parses dockerd's argv and lines' shapes
before anything logs.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

_LOGRUS_FIELD = re.compile(r'([A-Za-z_][\w.\-]*)=("(?:[^"\\]|\\.)*"|\S*)')
_LEVELS = {
    "trace": "debug",
    "debug": "debug",
    "info": "info",
    "warn": "warning",
    "warning": "warning",
    "error": "error",
    "fatal": "critical",
    "panic": "critical",
}
_ERROR_WORDS = re.compile(r"\b(error|failed|unknown|invalid|cannot|can't|fatal|denied)\b", re.I)
_NUMERIC_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


@dataclass(frozen=True, slots=True, kw_only=True)
class DockerdLine:
    level: str  # one of debug, info, warning, error, critical
    message: str
    fields: dict[str, str] = field(default_factory=dict)
    structured: bool = False

    @property
    def looks_like_error(self) -> bool:
        if self.structured:
            return self.level in ("error", "critical")
        return bool(_ERROR_WORDS.search(self.message))


_GO_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)")
_GO_SINGLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _go_unescape(match: re.Match[str]) -> str:
    code = match[1]
    if len(code) > 1:  # \xNN, \uNNNN, \UNNNNNNNN
        return chr(int(code[1:], 16))
    return _GO_SINGLE.get(code, code)


def _unquote(value: str) -> str:
    """logrus quotes values with Go's %q: undo its escapes (not Python's: non-ASCII stays)."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return _GO_ESCAPE.sub(_go_unescape, value[1:-1])
    return value


def parse_dockerd_line(line: str) -> DockerdLine:
    """One line of dockerd's output: logrus key=value form when it is one, else plain."""
    text = line.rstrip("\r\n")
    if text.startswith("time=") and " level=" in text:
        fields = {key: _unquote(value) for key, value in _LOGRUS_FIELD.findall(text)}
        level = _LEVELS.get(fields.pop("level", "info").lower(), "info")
        message = fields.pop("msg", "")
        fields.pop("time", None)
        return DockerdLine(level=level, message=message, fields=fields, structured=True)
    return DockerdLine(level="info", message=text)


def emit_dockerd_line(
    logger: Any, parsed: DockerdLine, source: str = "dockerd", *, level: str | None = None,
    **extra: Any,
) -> None:
    """Re-emit a dockerd line (or containerd's: ``source``); its own fields travel along,
    prefixed to avoid clashes.

    ``level`` overrides the line's own (a known failure printed as a plain line);
    ``extra``: what the agent knows of the line (its cause and remedy).
    """
    context = {f"{source}_{key.replace('.', '_')}": value for key, value in parsed.fields.items()}
    getattr(logger, level or parsed.level)(parsed.message, source=source, **context, **extra)


def _keep_given_timestamp(stamper: Any) -> Any:
    """Events logged later than they happened (the launch's) bring their own timestamp."""

    def process(logger: Any, name: str, event: dict[str, Any]) -> dict[str, Any]:
        return event if "timestamp" in event else stamper(logger, name, event)

    return process


def configure(*, format: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Set structlog up once for the process (imported here: the launch runs without it)."""
    import logging

    import structlog

    out = stream or sys.stderr
    use_json = format == "json" or (format == "auto" and not out.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _keep_given_timestamp(structlog.processors.TimeStamper(fmt="iso", utc=True)),
    ]
    if use_json:
        processors += [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=out.isatty()))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_NUMERIC_LEVELS.get(level, 20)),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=logging.WARNING, stream=out)
    # aiohttp logs a traceback for every malformed request; the client already
    # got its 400, and a scanner must not be able to flood the agent's log.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)


def get_logger(**context: Any) -> Any:
    import structlog

    return structlog.get_logger(**context)
