"""dockerd's configuration file (daemon.json), checked before dockerd is spawned.

Owns reading the file that dockerd's argv points at (``--config-file``,
default /etc/docker/daemon.json) and finding what dockerd would refuse, so a
configuration error ends the agent at once with exit 2 and a precise message
instead of five failed starts: a file that cannot be read (an absent default
file is fine: dockerd ignores it), JSON syntax errors with their line and
column, a top level that is not an object, keys that clash with options on the
command line (dockerd's "the following directives are specified both as a flag
and in the configuration file"), and, when the caller knows which keys this
dockerd accepts (``flags.known_keys_from_help``), keys it does not know. It also runs
``dockerd --validate`` (dockerd 23 and later) and turns its answer into the
same findings. It does not build the argv (``process.py``), parse it
(``flags.py``) or decide
what to do with the findings (the caller raises or logs them).

How dockerd matches keys to flags (moby's daemon/config, the same in 20.10 and
26.1): the file's nested objects are flattened one level (except log-opts,
runtimes, default-ulimits, features, builder and a few more, which are values
in themselves); a key clashes with a flag given on the command line when it is
the flag's long or short name, or, for list and map flags, the option's plural
name (``--host``/``-H`` → ``hosts``, ``--label`` → ``labels``,
``--storage-opt`` → ``storage-opts``...). ``runtimes`` merges instead of
clashing.
"""

from __future__ import annotations

import codecs
import json
import subprocess
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from supervisor.dockerd_flags import (
    DEFAULT_CONFIG_FILE,
    FLAT_OPTIONS,
    MERGING_KEYS,
    SHORTHANDS,
    UNCHECKED_KEYS,
    FlagUse,
    config_file_of,
    config_key,
    last_value,
    parse_flags,
    supports_validate,
)
from supervisor.errors import ConfigError
from supervisor.findings import Finding, Severity

TOPIC = "daemon_json"
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_MAX_SIZE = 1024 * 1024  # dockerd reads any size; a config file over 1 MiB is a mistake


class DaemonJsonSyntaxError(ConfigError):
    """daemon.json is not valid JSON: where, and the line as written."""

    def __init__(
        self, *, path: str, line: int, column: int, line_text: str, reason: str, remedy: str
    ) -> None:
        self.path = path
        self.line = line
        self.column = column
        self.line_text = line_text
        super().__init__(
            key="(syntax)",
            value=line_text,
            source=f"{path}:{line}:{column}",
            reason=reason,
            remedy=remedy,
        )


# The file -----------------------------------------------------------------------------------


def flatten(document: Mapping[str, Any]) -> dict[str, Any]:
    """The keys dockerd considers set: nested objects are opened one level."""
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, dict) and key not in FLAT_OPTIONS:
            flat.update(value)
        else:
            flat[key] = value
    return flat


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python accepts NaN/Infinity; Go does not


def _syntax_error(path: Path, text: str, exc: json.JSONDecodeError) -> DaemonJsonSyntaxError:
    lines = text.splitlines() or [""]
    line_text = lines[min(exc.lineno, len(lines)) - 1]
    hint = ""
    if exc.msg.startswith("Expecting property name") and line_text.rstrip().endswith("}"):
        hint = " (a comma before a closing brace is not allowed in JSON)"
    elif exc.msg.startswith("Expecting property name") or exc.msg.startswith("Expecting value"):
        previous = lines[exc.lineno - 2].rstrip() if exc.lineno >= 2 else ""
        if previous.endswith(","):
            hint = " (JSON allows no comma after the last item)"
    return DaemonJsonSyntaxError(
        path=str(path),
        line=exc.lineno,
        column=exc.colno,
        line_text=line_text,
        reason=f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}{hint}",
        remedy=f"fix line {exc.lineno} of {path} (`python3 -m json.tool {path}` shows the"
        " same position), or remove the file to run dockerd with its defaults",
    )


def read_daemon_json(path: Path, *, given: bool) -> dict[str, Any] | None:
    """The file's top-level object; None when the default file is absent or empty.

    Raises ConfigError (or DaemonJsonSyntaxError) for what dockerd would refuse.
    """
    source = str(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_SIZE + 1)
    except FileNotFoundError:
        if not given:
            return None  # dockerd starts with its defaults
        raise ConfigError(
            key="--config-file",
            value=source,
            source="dockerd arguments",
            reason="the file does not exist (dockerd only ignores a missing default file)",
            remedy=f"create {path} (it may hold just {{}}) or drop --config-file",
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            key="(file)",
            value=source,
            source=source,
            reason="is a directory, not a file",
            remedy="point --config-file at the JSON file itself (e.g. /etc/docker/daemon.json)",
        ) from None
    except PermissionError as exc:
        raise ConfigError(
            key="(file)",
            value=source,
            source=source,
            reason=f"cannot be read: {exc.strerror}",
            remedy=f"make {path} readable by the agent's user (dockerd reads it as root), or"
            " mount it read-only into the container with the right owner",
        ) from None
    except OSError as exc:
        raise ConfigError(
            key="(file)", value=source, source=source, reason=f"cannot be read: {exc.strerror}"
        ) from None
    if len(raw) > _MAX_SIZE:
        raise ConfigError(key="(file)", value=source, source=source, reason="is larger than 1 MiB")
    # dockerd 26.1 decodes a byte order mark (UTF-8 or UTF-16, as Windows
    # editors write them); 20.10 refuses it. Reading it here keeps the checks
    # going; collect_errors reports it.
    encoding = "utf-8"
    for bom, name in _BOMS:
        if raw.startswith(bom):
            raw, encoding = raw[len(bom) :], name
            break
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ConfigError(
            key="(file)",
            value=source,
            source=source,
            reason=f"is not UTF-8 text (invalid byte at offset {exc.start})",
            remedy=f"save {path} as UTF-8",
        ) from None
    if not text.strip():
        return None  # no settings (collect_errors tells which dockerd refuses it)
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise _syntax_error(path, text, exc) from None
    except ValueError as exc:
        raise ConfigError(key="(value)", value=source, source=source, reason=str(exc)) from None
    if not isinstance(document, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
            type(document), "a number"
        )
        raise ConfigError(
            key="(top level)",
            value=document,
            source=source,
            reason=f"is {kind}; dockerd needs a JSON object",
            remedy='write the settings as one object, e.g. {"storage-driver": "overlay2"}',
        )
    return document


def _has_bom(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(3)
    except OSError:
        return False
    return head.startswith(tuple(bom for bom, _name in _BOMS))


# Clashes -----------------------------------------------------------------------------------


_AGENT_REMEDIES: Mapping[str, str] = {
    "hosts": "the agent passes dockerd's sockets itself (--host); remove `hosts` from {path}"
    " and give your listeners as dockerd arguments instead (`IMAGE -H tcp://0.0.0.0:2376`"
    " or `IMAGE dockerd -H ...`): they replace the agent's TCP listeners, its unix socket stays",
    "tls": "the agent sets dockerd's TLS itself from its certificate folder"
    " (DOCKER_TLS_CERTDIR); remove `{key}` from {path}. To run without TLS set"
    " DOCKER_TLS_CERTDIR to empty; to use your own certificates put them in"
    " $DOCKER_TLS_CERTDIR/server/{{ca,cert,key}}.pem",
    "data-root": "the agent passes --data-root itself; remove `data-root` from {path} and set"
    " DIND_SUPERVISOR_DOCKERD_DATA_ROOT, or give --data-root=... as a dockerd argument",
    "exec-root": "the agent passes --exec-root itself; remove `exec-root` from {path} and set"
    " DIND_SUPERVISOR_DOCKERD_EXEC_ROOT, or give --exec-root=... as a dockerd argument",
    "pidfile": "the agent passes --pidfile itself; remove `pidfile` from {path} and set"
    " DIND_SUPERVISOR_DOCKERD_PIDFILE, or give --pidfile=... as a dockerd argument",
    "live-restore": "the agent passes --live-restore itself; remove `live-restore` from"
    " {path}, or set DIND_SUPERVISOR_DOCKERD_LIVE_RESTORE=false to leave it to daemon.json",
    "mtu": "the agent passes --mtu (detected from the default route) itself; remove `mtu` from"
    " {path}, or set DIND_SUPERVISOR_DOCKERD_MTU, or give --mtu=N as a dockerd argument",
}
_TLS_KEYS = frozenset({"tls", "tlsverify", "tlscacert", "tlscert", "tlskey"})


def _clash_remedy(key: str, flag: FlagUse, path: Path, by_agent: bool) -> str:
    if by_agent:
        template = _AGENT_REMEDIES.get("tls" if key in _TLS_KEYS else key)
        if template:
            return template.format(key=key, path=path)
        return (
            f"the agent passes {flag.written} itself; remove `{key}` from {path}, or give"
            f" {flag.written}=... as a dockerd argument (the agent then leaves it to you)"
        )
    return (
        f"{flag.written} is also among the dockerd arguments; keep one: remove `{key}` from"
        f" {path} or drop {flag.written} from the arguments"
    )


def find_clashes(
    keys: Mapping[str, Any],
    flags: Iterable[FlagUse],
    *,
    path: Path,
    agent_options: Collection[str] = frozenset(),
) -> list[ConfigError]:
    """Keys of the (flattened) file that dockerd will refuse as also given as a flag."""
    errors: list[ConfigError] = []
    seen: set[str] = set()
    for flag in flags:
        short = next((s for s, name in SHORTHANDS.items() if name == flag.name), None)
        key = next(
            (k for k in (config_key(flag.name), short) if k and k in keys and k not in seen),
            None,
        )
        if key is None or key in MERGING_KEYS:
            continue
        seen.add(key)
        by_agent = flag.name in {name.lstrip("-") for name in agent_options}
        who = "the agent" if by_agent else "the dockerd arguments"
        errors.append(
            ConfigError(
                key=key,
                value=keys[key],
                source=str(path),
                reason=f"is also given on dockerd's command line by {who}"
                f" ({flag.written}{'' if flag.value is None else ' ' + flag.value});"
                " dockerd refuses a directive specified both as a flag and in the file",
                remedy=_clash_remedy(key, flag, path, by_agent),
            )
        )
    return errors


# The check ---------------------------------------------------------------------------------


def _finding(error: ConfigError, path: Path) -> Finding:
    data: dict[str, Any] = {"path": str(path), "key": error.key}
    if isinstance(error, DaemonJsonSyntaxError):
        data.update(path=error.path, line=error.line, column=error.column, text=error.line_text)
    return Finding(
        topic=TOPIC,
        severity=Severity.ERROR,
        message=f"{error.source}: {error.key}: {error.reason}",
        remedy=error.remedy,
        data=data,
    )


def collect_errors(
    argv: Sequence[str],
    *,
    agent_options: Collection[str] = frozenset(),
    known_keys: Collection[str] | None = None,
    version: tuple[int, int] | None = None,
    default_file: Path = DEFAULT_CONFIG_FILE,
) -> tuple[list[ConfigError], list[Finding]]:
    """Errors dockerd would refuse to start with, and warnings, for this argv's file.

    ``version`` (``parse_dockerd_version``) decides what differs between
    dockerd versions: 20.10 refuses an empty file and a byte order mark, 26.1
    takes both; unknown, they are warnings.
    """
    path, given = config_file_of(argv, default_file)
    try:
        document = read_daemon_json(path, given=given)
    except ConfigError as error:
        return [error], []
    errors: list[ConfigError] = []
    warnings: list[Finding] = []
    before_23 = version is not None and version < (23, 0)
    if document is None and path.exists():
        _by_version(
            errors,
            warnings,
            path,
            before_23=before_23,
            certain_after=version is not None and version >= (26, 1),
            reason='is empty: dockerd 20.10 refuses that ("EOF"), dockerd 26.1 reads it as'
            " no settings",
            remedy=f"write {{}} into {path}, or remove it",
        )
    if document is None:
        return errors, warnings
    if _has_bom(path):
        _by_version(
            errors,
            warnings,
            path,
            before_23=before_23,
            certain_after=version is not None and version >= (26, 1),
            reason='starts with a byte order mark: dockerd 20.10 refuses that ("invalid'
            " character 'ï' looking for beginning of value\"), dockerd 26.1 reads it",
            remedy=f"save {path} as UTF-8 without a byte order mark",
        )
    keys = flatten(document)
    if known_keys is not None:
        unknown = sorted(k for k in keys if k not in known_keys and k not in UNCHECKED_KEYS)
        for key in unknown:
            close = _closest(key, known_keys)
            errors.append(
                ConfigError(
                    key=key,
                    value=keys[key],
                    source=str(path),
                    reason="is not an option this dockerd knows (it refuses such a file)",
                    remedy=(f"did you mean `{close}`? " if close else "")
                    + f"remove or rename `{key}` in {path} (`dockerd --help` lists the"
                    " options; the file uses their long names)",
                )
            )
    errors += find_clashes(keys, parse_flags(argv[1:]), path=path, agent_options=agent_options)
    driver = storage_driver_error(keys, argv, path=path, version=version)
    if driver is not None:
        errors.append(driver)
    return errors, warnings


# Storage drivers ---------------------------------------------------------------------------

# The graph drivers of dockerd 20.10 and later, and the major that removed some of them
# (moby 24.0 removed aufs and the legacy overlay, 25.0 devicemapper).
STORAGE_DRIVERS = frozenset({"overlay2", "fuse-overlayfs", "btrfs", "zfs", "vfs"})
REMOVED_DRIVERS = {"aufs": 24, "overlay": 24, "devicemapper": 25}


def storage_driver_error(
    keys: Mapping[str, Any], argv: Sequence[str], *, path: Path,
    version: tuple[int, int] | None = None,
) -> ConfigError | None:
    """A storage driver no dockerd of this version has (it would exit at once, saying only
    "driver not supported"). Not judged when dockerd may take other names: graph driver
    plugins (experimental) and the containerd image store's snapshotters."""
    in_file = "storage-driver" in keys
    value = keys.get("storage-driver") if in_file else last_value(argv[1:], "--storage-driver",
                                                                  "-s")
    if not isinstance(value, str) or not value:
        return None
    features = keys.get("features")
    if keys.get("experimental") is True or (
        isinstance(features, dict) and features.get("containerd-snapshotter") is True
    ):
        return None
    removed_in = REMOVED_DRIVERS.get(value)
    if value in STORAGE_DRIVERS or (
        removed_in is not None and (version is None or version[0] < removed_in)
    ):
        return None
    known = ", ".join(sorted(STORAGE_DRIVERS))
    why = (f"was removed in dockerd {removed_in}.0" if removed_in is not None
           else "is not a storage driver dockerd has")
    return ConfigError(
        key="storage-driver" if in_file else "--storage-driver",
        value=value,
        source=str(path) if in_file else "dockerd arguments",
        reason=f"{why} (it has {known}); dockerd would exit with 'driver not supported'",
        remedy="use overlay2 (vfs where overlay2 cannot run: slow but works anywhere), or remove"
        " the setting and let dockerd choose",
    )


def _by_version(
    errors: list[ConfigError],
    warnings: list[Finding],
    path: Path,
    *,
    before_23: bool,
    certain_after: bool,
    reason: str,
    remedy: str,
) -> None:
    """An error for a dockerd known to refuse, nothing for one known to accept, else a warning."""
    if before_23:
        errors.append(
            ConfigError(
                key="(file)", value=str(path), source=str(path), reason=reason, remedy=remedy
            )
        )
    elif not certain_after:
        warnings.append(
            Finding(
                topic=TOPIC,
                severity=Severity.WARNING,
                message=f"{path} {reason}",
                remedy=remedy,
                data={"path": str(path)},
            )
        )


def _closest(key: str, known: Collection[str]) -> str | None:
    import difflib

    matches = difflib.get_close_matches(key, list(known), n=1, cutoff=0.8)
    return matches[0] if matches else None


def check_daemon_json(
    argv: Sequence[str],
    *,
    agent_options: Collection[str] = frozenset(),
    known_keys: Collection[str] | None = None,
    version: tuple[int, int] | None = None,
    default_file: Path = DEFAULT_CONFIG_FILE,
) -> list[Finding]:
    """Findings about the configuration file of ``argv`` (for ``check`` and /status)."""
    errors, warnings = collect_errors(
        argv, agent_options=agent_options, known_keys=known_keys, version=version,
        default_file=default_file,
    )
    path = config_file_of(argv, default_file)[0]
    return [_finding(error, path) for error in errors] + warnings


def require_usable_daemon_json(
    argv: Sequence[str],
    *,
    agent_options: Collection[str] = frozenset(),
    known_keys: Collection[str] | None = None,
    version: tuple[int, int] | None = None,
    default_file: Path = DEFAULT_CONFIG_FILE,
) -> list[Finding]:
    """Raise the first error dockerd would stop at (exit 2); return the warnings."""
    errors, warnings = collect_errors(
        argv, agent_options=agent_options, known_keys=known_keys, version=version,
        default_file=default_file,
    )
    if errors:
        raise errors[0]
    return warnings


# dockerd --validate ------------------------------------------------------------------------

Runner = Callable[[Sequence[str]], tuple[int, str]]


def _run(argv: Sequence[str]) -> tuple[int, str]:
    done = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        check=False,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def validate_with_dockerd(argv: Sequence[str], *, run: Runner = _run) -> list[Finding] | None:
    """``dockerd --validate`` with the same arguments; None when this dockerd lacks it.

    Blocking (dockerd answers in well under a second without starting
    anything); call it from a worker thread in async code.
    """
    from supervisor.dockerd.failures import explain

    code, output = run([argv[0], "--validate", *argv[1:]])
    if "unknown flag: --validate" in output:
        return None  # dockerd before 23.0
    if code == 0:
        return []
    findings = []
    for line in output.splitlines():
        text = line.strip()
        if not text or text.startswith("See '"):
            continue
        explanation = explain(text)
        findings.append(
            Finding(
                topic=TOPIC,
                severity=Severity.ERROR,
                message=explanation.cause if explanation else text,
                remedy=explanation.remedy if explanation else None,
                data={"line": text, **(explanation.details if explanation else {})},
            )
        )
    if not findings:
        findings.append(
            Finding(
                topic=TOPIC,
                severity=Severity.ERROR,
                message=f"dockerd --validate failed with exit code {code} and no message",
            )
        )
    return findings


# Before dockerd's spawn ----------------------------------------------------------------------

# Flags left out of `dockerd --validate` at the launch: the certificate files may not be
# issued yet (26.1's --validate loads them), and clashes with them are found above.
_NOT_VALIDATED = frozenset({"tls", "tlsverify", "tlscacert", "tlscert", "tlskey"})


def for_validation(argv: Sequence[str]) -> list[str]:
    """dockerd's argv without the TLS file flags, for ``dockerd --validate``."""
    kept = [argv[0]]
    for flag in parse_flags(argv[1:]):
        if flag.name in _NOT_VALIDATED:
            continue
        kept.append(f"{flag.written}={flag.value}" if flag.value is not None else flag.written)
    return kept


def preflight(
    argv: Sequence[str],
    *,
    agent_options: Collection[str] = frozenset(),
    version: tuple[int, int] | None = None,
    default_file: Path = DEFAULT_CONFIG_FILE,
    run: Runner = _run,
) -> list[Finding]:
    """What dockerd would refuse in its configuration, before it is spawned.

    Raises the first error as ConfigError (exit 2): the file's syntax, its top
    level, keys that clash with dockerd's flags, an unknown storage driver;
    then, where dockerd has it (23+) and the file exists, ``dockerd
    --validate`` (blocking, well under a second). Returns the warnings.
    """
    warnings = require_usable_daemon_json(
        argv, agent_options=agent_options, version=version, default_file=default_file
    )
    path, _given = config_file_of(argv, default_file)
    if not supports_validate(version) or not path.is_file():
        return warnings
    found = validate_with_dockerd(for_validation(argv), run=run) or []
    errors = [f for f in found if f.severity is Severity.ERROR]
    if errors:
        first = errors[0]
        line = first.data.get("line") if first.data else None
        raise ConfigError(
            key="(dockerd --validate)",
            value=str(path),
            source=str(path),
            reason=first.message + (f' (dockerd said: "{line}")' if line else ""),
            remedy=first.remedy,
        )
    return warnings
