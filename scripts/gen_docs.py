#!/usr/bin/env python3
"""Generate the contract's tables in docs/ from the code that defines them.

Each table sits between two markers in its document:

    <!-- BEGIN GENERATED: NAME (scripts/gen_docs.py; do not edit by hand) -->
    ...
    <!-- END GENERATED: NAME -->

and is rendered from its source of truth: the metrics from
``supervisor.metrics.CATALOGUE``, the settings from ``config.describe()``,
the commands from ``cli.build_parser()``, the exit codes from the constants
in ``errors.py``, ``init.py`` and ``spawn_wrapper.py`` and the error classes,
the endpoints from the routes ``http.build_app`` registers. The prose around
the markers is written by hand. Run after changing any of them:

    .venv/bin/python scripts/gen_docs.py          # rewrite the blocks
    .venv/bin/python scripts/gen_docs.py --check  # exit 1 if one is stale

tests/unit/test_docs.py fails when a committed block is not this output.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from supervisor import cli, config, errors, init, metrics, spawn_wrapper  # noqa: E402

DOCS = REPO / "docs"
_BEGIN = "<!-- BEGIN GENERATED: {name} (scripts/gen_docs.py; do not edit by hand) -->"
_END = "<!-- END GENERATED: {name} -->"


def _cell(text: object) -> str:
    """Table-safe: pipes escaped, whitespace runs collapsed."""
    return re.sub(r"\s+", " ", str(text)).replace("|", "\\|").strip()


def _table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> list[str]:
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return lines


# Metrics -------------------------------------------------------------------------

_KIND_TEXT = {
    "counter": "counter",
    "gauge": "gauge",
    "histogram": "histogram (`_bucket{le}`, `_sum`, `_count`)",
    "info": "info (a gauge of value 1)",
}


def metrics_table() -> list[str]:
    """Every family of CATALOGUE, in its order, as exposed on /metrics."""
    rows = []
    for spec in metrics.CATALOGUE:
        labels = ", ".join(f"`{label}`" for label in spec.labels) or "—"
        rows.append((f"`{spec.name}`", _KIND_TEXT[spec.kind], labels, spec.help))
    return _table(("metric", "type", "labels", "help"), rows)


def label_values() -> list[str]:
    """The labels whose values are a closed set, each from the code that defines it."""
    from supervisor.containers import KNOWN_STATES
    from supervisor.dockerd.lifecycle import RestartReason, State

    def codes(values: Iterable[str]) -> str:
        return ", ".join(f"`{value}`" for value in values)

    rows = [
        ("`dind_dockerd_state`", "`state`", codes(s.value for s in State)),
        ("`dind_dockerd_restarts_total`", "`reason`", codes(r.value for r in RestartReason)),
        ("`dind_containers`", "`state`", codes(KNOWN_STATES)),
        ("`dind_rlimit`, `dind_rlimit_errors_total`, `dind_policy_errors_total`", "`resource`",
         codes(metrics.RLIMIT_NAMES) + " (and `oom_score_adj` in `dind_policy_errors_total`)"),
    ]
    return _table(("metric", "label", "values"), rows)


# Settings --------------------------------------------------------------------------


def settings_table() -> list[str]:
    rows = []
    for section, key, _default, help_text in config.describe():
        shown = config.shown_default(section, key)
        rows.append((
            f"`{section}.{key}`",
            f"`{config.flag_name(section, key)}`",
            f"`{config.ENV_PREFIX}{section.upper()}_{key.upper()}`",
            f"`{shown}`" if shown else "—",
            help_text,
        ))
    return _table(("setting", "flag", "variable", "default", "meaning"), rows)


# What each docker:dind variable means to us; which setting it sets is asked of
# config.load itself (below), so the table cannot name the wrong key.
_DIND_VARIABLES = {
    "DOCKER_TLS_CERTDIR": ("/certs", "the certificate folder; empty (or unset): no TLS"),
    "DOCKER_TLS_SAN": ("DNS:ci", "extra subject alternative names for dockerd's certificate"),
    "DOCKER_HOST": ("unix:///run/d.sock",
                    "the socket dockerd serves, only when it is a `unix://` URL (any other"
                    " value is ignored with a note, as docker:dind ignores it)"),
    config.CONFIG_ENV: (None, "the TOML file, when `--config` is not given"),
}


# A valid value for each rootless setting such a variable may set, to ask config.load.
_ROOTLESS_SAMPLES = {"net": "slirp4netns", "mtu": "1400", "flags": "--debug"}


def variables_table() -> list[str]:
    rows = []
    variables = dict(_DIND_VARIABLES)
    # docker:dind-rootless's own variables: config.py's table, each meaning the
    # setting's own help text.
    helps = {f"{s}.{k}": h for s, k, _d, h in config.describe()}
    for name, key in config._ROOTLESSKIT_VARIABLES.items():
        variables[name] = (_ROOTLESS_SAMPLES.get(key, "x"),
                           f"docker:dind-rootless: {helps[f'rootless.{key}']}")
    for name, (sample, meaning) in variables.items():
        if sample is None:
            setting = "(the file)"
        else:
            loaded = config.load(env={name: sample})
            keys = sorted(k for k, source in loaded.sources.items() if name in source)
            if not keys:
                raise SystemExit(f"gen_docs: {name} no longer sets any setting")
            setting = ", ".join(f"`{key}`" for key in keys)
        rows.append((f"`{name}`", setting, meaning))
    return _table(("variable", "setting", "meaning"), rows)


# Commands ---------------------------------------------------------------------------

# What the parser cannot say: `run` takes dockerd's arguments after `--`
# (supervisor/invocation.py splits them off before argparse sees the line).
_USAGE_TAIL = {"run": " [-- DOCKERD_ARGS...]"}


def _subparsers(parser: argparse.ArgumentParser) -> tuple[dict[str, argparse.ArgumentParser],
                                                          dict[str, str]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            return dict(action.choices), helps
    raise SystemExit("gen_docs: the parser has no subcommands")


def _is_setting(action: argparse.Action) -> bool:
    return action.dest.startswith("setting:")


def _option_text(action: argparse.Action) -> str:
    if not action.option_strings:
        return "|".join(str(c) for c in action.choices or ()) or action.dest.upper()
    name = max(action.option_strings, key=len)
    if action.nargs == 0:
        return name
    return f"{name} {action.metavar or action.dest.upper()}"


def commands() -> list[str]:
    parser = cli.build_parser()
    subparsers, helps = _subparsers(parser)
    lines: list[str] = []
    for name, sub in subparsers.items():
        actions = [a for a in sub._actions
                   if not isinstance(a, argparse._HelpAction) and not _is_setting(a)]
        has_settings = any(_is_setting(a) for a in sub._actions)
        usage = " ".join(
            _option_text(a) if not a.option_strings else f"[{_option_text(a)}]" for a in actions
        )
        if has_settings:
            usage = f"[SETTING FLAGS] {usage}".strip()
        lines.append(f"### `{name}`")
        lines.append("")
        lines.append(f"`dind-supervisor {name}{' ' + usage if usage else ''}"
                     f"{_USAGE_TAIL.get(name, '')}`: {helps.get(name, '')}.")
        lines.append("")
        rows = [(f"`{_option_text(a)}`", (a.help or "—").replace("%%", "%")) for a in actions]
        if has_settings:
            rows.append(("`--SECTION-KEY VALUE`", "one flag per setting (table below)"))
        if rows:
            lines += _table(("argument", "meaning"), rows)
            lines.append("")
    return lines[:-1] if lines and lines[-1] == "" else lines


# Exit codes -------------------------------------------------------------------------


def exit_codes() -> list[str]:
    rows = [
        (errors.EXIT_OK, "`errors.EXIT_OK`",
         "`run`: dockerd was stopped on request (TERM, INT, QUIT, the stop file). Other"
         " commands: success (`wait`: dockerd is ready; `check`: no error finding)."),
        (errors.EXIT_FAILURE, "`errors.EXIT_FAILURE`",
         "`run`: gave up (dockerd kept failing to start, or kept crashing) or a fatal runtime"
         " error. `status`: the agent could not be reached. `wait`: the timeout passed, dockerd"
         " not ready or the agent unreachable (the message says which). `check`: an error"
         " finding, or the agent named with `--socket` could not be reached."),
        (init.EXIT_GAVE_UP, "`init.EXIT_GAVE_UP`",
         "As PID 1: the agent died more than `agent.restart_limit` times within"
         " `agent.restart_window`; dockerd was stopped gracefully."),
        (errors.EXIT_USAGE, "`errors.EXIT_USAGE`",
         "Usage or configuration error, before anything was started (see the errors below)."),
        (init.EXIT_CRASHED, "`init.EXIT_CRASHED`",
         "The agent crashed (a bug). Under our PID 1 a new agent takes over instead, so a"
         " container sees it only if that keeps happening; seen directly when the agent is"
         " not PID 1's child (under systemd, whose unit restarts it)."),
        ("128+N", "—", "Ended by signal N (e.g. 137 for SIGKILL)."),
    ]
    lines = _table(("code", "constant", "meaning"), [(f"`{c}`", k, m) for c, k, m in rows])
    lines += ["", "Errors and the exit code `run` (and the other commands) return for each:", ""]
    classes = _error_classes(errors.SupervisorError)
    lines += _table(("error", "exit code", "what"), [
        (f"`{cls.__name__}`", f"`{cls.exit_code}`", (cls.__doc__ or "").strip().split("\n\n")[0])
        for cls in classes
    ])
    lines += ["", "dockerd's exit code, as `/status` (`dockerd.last_exit_code`) and"
              " `dind_dockerd_last_exit_code` report it, has three values of ours, from the exec"
              " wrapper that applies the policy before dockerd runs:", ""]
    lines += _table(("code", "constant", "meaning"), [
        (f"`{spawn_wrapper.EXIT_REFUSED}`", "`spawn_wrapper.EXIT_REFUSED`",
         "strict policy: the kernel refused a limit, dockerd was not run"),
        (f"`{spawn_wrapper.EXIT_CANNOT_RUN}`", "`spawn_wrapper.EXIT_CANNOT_RUN`",
         "the dockerd binary exists but cannot be executed"),
        (f"`{spawn_wrapper.EXIT_NOT_FOUND}`", "`spawn_wrapper.EXIT_NOT_FOUND`",
         "the dockerd binary was not found"),
    ])
    return lines


def _error_classes(base: type[errors.SupervisorError]) -> list[type[errors.SupervisorError]]:
    """``base`` and every subclass in the package, depth first, siblings by name.

    Every module is imported first: a subclass exists only once its module is
    loaded, and the table must not depend on what happened to be imported."""
    _import_everything()
    found = [base]
    for sub in sorted(base.__subclasses__(), key=lambda cls: cls.__name__):
        if sub.__module__.startswith("supervisor."):
            found += _error_classes(sub)
    return found


def _import_everything() -> None:
    import importlib
    import pkgutil

    import supervisor

    for module in pkgutil.walk_packages(supervisor.__path__, "supervisor."):
        if not module.name.endswith("__main__"):  # it runs the command line on import
            importlib.import_module(module.name)


# Endpoints --------------------------------------------------------------------------

_ROUTES = {
    "/metrics": "Prometheus text format, the agent's own registry ([metrics.md](metrics.md));"
                " no Docker API call on a scrape.",
    "/healthz": "`200 ok` while the agent's event loop runs (a liveness probe).",
    "/readyz": "`200` when dockerd is ready (`dockerd.state` is `running`), else `503`"
               " (a readiness probe; `dind-supervisor wait` polls it).",
    "/status": "The JSON document of [status.md](status.md); `dind-supervisor status` renders"
               " it.",
}


def endpoints() -> list[str]:
    from supervisor.http import build_app

    app = build_app(metrics=metrics.Metrics(), is_ready=lambda: False, status=dict)
    rows = []
    for route in app.router.routes():
        if route.method == "HEAD":
            continue  # aiohttp adds one beside every GET
        path = route.resource.canonical if route.resource else "?"
        if path not in _ROUTES:
            raise SystemExit(f"gen_docs: describe the new route {route.method} {path}")
        rows.append((f"`{route.method} {path}`", _ROUTES[path]))
    return _table(("request", "answer"), rows)


# The documents -----------------------------------------------------------------------

BLOCKS: dict[str, dict[str, Callable[[], list[str]]]] = {
    "metrics.md": {"metrics": metrics_table, "label-values": label_values},
    "contract.md": {
        "commands": commands,
        "exit-codes": exit_codes,
        "settings": settings_table,
        "dind-variables": variables_table,
        "endpoints": endpoints,
    },
}


def render(text: str, blocks: dict[str, Callable[[], list[str]]], *, where: str) -> str:
    """``text`` with every named block replaced by its fresh rendering."""
    for name, make in blocks.items():
        begin, end = _BEGIN.format(name=name), _END.format(name=name)
        if text.count(begin) != 1 or text.count(end) != 1:
            raise SystemExit(f"gen_docs: {where} needs exactly one {begin} ... {end}")
        head, rest = text.split(begin, 1)
        _old, tail = rest.split(end, 1)
        text = head + begin + "\n" + "\n".join(make()) + "\n" + end + tail
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if a block is stale")
    args = parser.parse_args(argv)
    stale = []
    for name, blocks in BLOCKS.items():
        path = DOCS / name
        current = path.read_text()
        fresh = render(current, blocks, where=str(path))
        if fresh != current:
            stale.append(path)
            if not args.check:
                path.write_text(fresh)
    if args.check and stale:
        for path in stale:
            sys.stderr.write(f"{path} is stale: run scripts/gen_docs.py\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
