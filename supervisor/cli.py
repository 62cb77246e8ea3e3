"""The command line: run, certs, status, wait, check, version.

Parsing and loading configuration stay light (no anyio, aiohttp or
cryptography imports) because, as PID 1, this process forks the agent and
then lives on as a tiny reaper: whatever it imported stays resident.
Exit codes: 0 clean stop, 1 gave up or fatal error, 2 usage or
configuration error, 128+N when ended by signal N.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from supervisor import __version__, config
from supervisor.errors import EXIT_FAILURE, EXIT_USAGE, ConfigError, SupervisorError
from supervisor.invocation import COMMANDS, Invocation, Mode, classify

if TYPE_CHECKING:
    import argparse

    # The parsed options: argparse's, or the empty set of a bare `run` (see _parse).
    Args = argparse.Namespace | SimpleNamespace

__all__ = ["COMMANDS", "main", "main_invocation"]


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    import argparse

    for section in config.SECTIONS:
        group = parser.add_argument_group(f"[{section}] settings")
        for key, f in config.section_fields(section).items():
            kind = config.field_type(section, key)
            dest = f"setting:{section}:{key}"
            help_text = f.metadata.get("help", "")
            default = config.shown_default(section, key)
            if default:
                # argparse expands %-escapes in help texts.
                help_text += f" (default: {default})".replace("%", "%%")
            if kind is bool:
                group.add_argument(
                    config.flag_name(section, key),
                    dest=dest,
                    action=argparse.BooleanOptionalAction,
                    default=None,
                    help=help_text,
                )
            else:
                group.add_argument(
                    config.flag_name(section, key),
                    dest=dest,
                    default=None,
                    metavar=config.metavar(section, key),
                    help=help_text,
                )


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, default=None, help="TOML file (default: $DIND_SUPERVISOR_CONFIG)"
    )


def _endpoint_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--socket",
        default=None,
        metavar="PATH",
        help="the agent's unix socket (default: [http] socket when it exists, else TCP)",
    )
    parser.add_argument(
        "--url", default=None, help="the agent's TCP endpoint (default from [http] listen)"
    )


def build_parser() -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(
        prog="dind-supervisor",
        description="Init and supervisor for Docker-in-Docker. Arguments after `--` go to dockerd.",
    )
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the agent and dockerd (the default command)")
    _common(run)
    _add_setting_flags(run)

    certs = sub.add_parser("certs", help="issue, show or rotate dockerd's TLS certificates")
    certs.add_argument("action", choices=("generate", "show", "rotate"))
    certs.add_argument("--certdir", type=Path, default=None, help="default: DOCKER_TLS_CERTDIR")
    certs.add_argument("--json", action="store_true", help="machine-readable output")
    _common(certs)

    status = sub.add_parser("status", help="ask the running agent how dockerd is doing")
    status.add_argument("--json", action="store_true", help="the /status document, as JSON")
    _endpoint_options(status)
    _common(status)

    wait = sub.add_parser(
        "wait", help="exit 0 once dockerd is ready; 1 on timeout (not ready, or unreachable)"
    )
    wait.add_argument(
        "--timeout", type=float, default=60.0, metavar="SECONDS", help="default 60"
    )
    _endpoint_options(wait)
    _common(wait)

    check = sub.add_parser("check", help="preflight doctor: findings with severity and remedy")
    check.add_argument("--json", action="store_true", help="the findings, as a JSON list")
    check.add_argument(
        "--socket",
        default=None,
        metavar="PATH",
        help="the running agent's unix socket: check with its settings, in its namespaces"
        " (default: [http] socket, when it exists)",
    )
    _common(check)
    _add_setting_flags(check)

    sub.add_parser("version", help="print the version")
    return parser


def load_config(
    args: Args,
    dockerd_args: Sequence[str] = (),
    *,
    exact: bool = False,
) -> config.Config:
    flags: dict[tuple[str, str], object] = {}
    for dest, value in vars(args).items():
        if dest.startswith("setting:") and value is not None:
            _, section, key = dest.split(":")
            flags[section, key] = value
    return config.load(
        env=os.environ,
        config_file=args.config,
        flags=flags,
        dockerd_args=dockerd_args,
        exact_args=exact,
    )


def main(argv: Sequence[str] | None = None, *, under_init: bool = False) -> int:
    """The command line of ``dind-supervisor`` (``sys.argv[1:]`` by default)."""
    invocation = classify(list(sys.argv[1:] if argv is None else argv))
    return main_invocation(invocation, under_init=under_init)


def main_invocation(invocation: Invocation, *, under_init: bool = False) -> int:
    """``under_init``: this process is the agent forked by our PID 1 (see entry.py)."""
    if invocation.mode is Mode.EXEC:
        from supervisor.passthrough import exec_program

        exec_program(list(invocation.rest))
    if invocation.mode is Mode.COMMAND:
        # Commands print their results on stdout; any log line goes to stderr.
        from supervisor import logs

        logs.configure(format="console", level="warning", stream=sys.stderr)
    try:
        args = _parse(invocation)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if args.command == "version":
            print(f"dind-supervisor {__version__}")
            return 0
        if args.command == "run":
            cfg = load_config(args, invocation.rest, exact=invocation.mode is Mode.EXACT)
            return _run(cfg, under_init=under_init)
        if args.command in ("status", "wait", "certs", "check"):
            cfg = load_config(args)
            for _event, message in cfg.notices:
                print(f"dind-supervisor: note: {message}", file=sys.stderr)
            if args.command == "certs":
                return _certs(args, cfg)
            if args.command == "check":
                return _check(args, cfg, invocation.own)
            return _query(args, cfg)
    except SupervisorError as exc:
        _print_error(exc)
        return exc.exit_code
    except Exception as exc:  # a bug: one line saying what failed, the traceback on request
        _print_crash(args.command, exc)
        return EXIT_FAILURE
    build_parser().print_help()
    return EXIT_USAGE


def _parse(invocation: Invocation) -> Args:
    """Our own options; ``run`` alone (the image's ENTRYPOINT) has none to read.

    Building the parser (every setting a flag, twice) is ~15 ms of CPU on the
    path to dockerd's spawn, so a bare ``run`` skips it: its settings come from
    the defaults, the file and the environment, exactly as parsing would give.
    """
    if invocation.own == ("run",):
        return SimpleNamespace(command="run", config=None)
    return build_parser().parse_args(list(invocation.own))


def _print_error(exc: SupervisorError) -> None:
    label = "configuration error" if isinstance(exc, ConfigError) else "error"
    print(f"dind-supervisor: {label}: {exc.message}", file=sys.stderr)
    if exc.remedy:
        print(f"dind-supervisor: remedy: {exc.remedy}", file=sys.stderr)


def _print_crash(command: str, exc: Exception) -> None:
    print(f"dind-supervisor: error: `{command}` failed unexpectedly: {type(exc).__name__}:"
          f" {exc}", file=sys.stderr)
    print("dind-supervisor: remedy: this is a bug, please report it with this message"
          " (DIND_SUPERVISOR_LOG_LEVEL=debug adds the traceback)", file=sys.stderr)
    if os.environ.get(f"{config.ENV_PREFIX}LOG_LEVEL") == "debug":
        import traceback

        traceback.print_exception(exc, file=sys.stderr)


def _run(cfg: config.Config, *, under_init: bool = False) -> int:
    from supervisor import init
    from supervisor.policy.spec import policy_from_config

    # Part of the configuration: refused here like any other bad value (exit 2).
    policy = policy_from_config(cfg)

    def agent(under_init: bool = False) -> int:
        # Logging is set up by the agent after dockerd's spawn: structlog is a heavy import.
        from supervisor.run import run_agent

        return run_agent(cfg, policy, under_init=under_init)

    if under_init:
        return agent(under_init=True)
    if not init.is_subreaper():
        print(
            "dind-supervisor: warning: not PID 1 and not a subreaper: orphaned processes"
            " (containerd-shims after a dockerd restart) are reaped by whoever is PID 1",
            file=sys.stderr,
        )
    return agent()


def agent_url(cfg: config.Config, override: str | None) -> str:
    """The agent's TCP URL (see ``agent_client.agent_url``)."""
    from supervisor import agent_client

    return agent_client.agent_url(cfg, override)


def _query(args: Args, cfg: config.Config) -> int:
    from supervisor import agent_client

    def candidates() -> list[agent_client.Endpoint]:
        # Decided again at every probe: the agent's socket appears once it starts.
        return agent_client.endpoints(cfg, url=args.url, socket_path=args.socket)

    if args.command == "wait":
        from supervisor.waiting import ready_once, wait_until_ready

        first = candidates()  # a bad --url or an endpoint turned off: exit 2 at once
        return wait_until_ready(
            lambda seconds: ready_once(first if args.url else candidates(), seconds),
            timeout=args.timeout,
        )
    try:
        answer = agent_client.ask(candidates(), "/status", timeout=5)
    except agent_client.Unreachable as exc:
        print(f"dind-supervisor: {exc.describe()}", file=sys.stderr)
        print(f"dind-supervisor: remedy: {agent_client.REMEDY}", file=sys.stderr)
        return EXIT_FAILURE
    document = answer.document()
    if document is None:
        print(f"dind-supervisor: the agent at {answer.endpoint} answered /status with"
              f" {answer.status} and no JSON object: is that the agent's endpoint?",
              file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(document, indent=2, sort_keys=True))
    else:
        from supervisor.status_text import render

        print(render(document))
    return 0 if answer.status == 200 else EXIT_FAILURE


def _certs(args: Args, cfg: config.Config) -> int:
    from supervisor.tls.commands import run_certs_command

    certdir = args.certdir or (Path(cfg.tls.certdir) if cfg.tls.certdir else None)
    return run_certs_command(args.action, certdir=certdir, cfg=cfg, as_json=args.json)


def _check(args: Args, cfg: config.Config, own: Sequence[str]) -> int:
    from supervisor import doctor
    from supervisor.agent_client import REMEDY, Unreachable

    try:
        effective = doctor.effective_config(cfg, socket_path=args.socket)
    except Unreachable as exc:
        # Named on purpose (--socket, http.socket): checking something else instead
        # would answer a question nobody asked.
        print(f"dind-supervisor: {exc.describe()}", file=sys.stderr)
        print(f"dind-supervisor: remedy: {REMEDY}", file=sys.stderr)
        return EXIT_FAILURE
    if effective.enter_pid is not None:
        return doctor.check_inside(effective.enter_pid, own, effective.inner_socket)
    return doctor.run_check(effective.config, as_json=args.json, notes=effective.notes)


def settings_table() -> list[dict[str, Any]]:
    """Every setting with its flag, variable and default, for writing documentation."""
    rows = []
    for section, key, default, help_text in config.describe():
        if dataclasses.is_dataclass(default):
            continue
        rows.append(
            {
                "key": f"{section}.{key}",
                "flag": config.flag_name(section, key),
                "env": f"{config.ENV_PREFIX}{section.upper()}_{key.upper()}",
                "default": default,
                "help": help_text,
            }
        )
    return rows
