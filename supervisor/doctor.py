"""``dind-supervisor check``: the preflight doctor.

Gathers the findings of every preflight area (resource policy, data root,
container preparation, TLS) without changing anything, prints each with its
severity and remedy, and exits 1 when one of them would break dockerd.

Next to a running agent, the checks use that agent's settings
(``effective_config``): it is asked over its unix socket (``--socket``, or
``http.socket`` when that exists), and when it lives in other namespaces
than the caller (the quick start, seen from the host), the check is run
there (``check_inside``), since the data root and certificates it names are
only visible there. A ``settings`` finding says where the settings came from.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from supervisor import policy
from supervisor.checks import check_data_root, check_preparation, check_tls_files
from supervisor.config import Config
from supervisor.dockerd.failures import INSTALL_DOCKERD
from supervisor.findings import Finding, Severity
from supervisor.policy.plan import plan
from supervisor.policy.spec import policy_from_config

if TYPE_CHECKING:
    from supervisor.agent_settings import Merged

Check = Callable[[Config], list[Finding]]


def check_dockerd_binary(config: Config) -> list[Finding]:
    path = shutil.which(config.dockerd.binary)
    if path is None:
        return [
            Finding(
                topic="dockerd",
                severity=Severity.ERROR,
                message=f"dockerd executable {config.dockerd.binary!r} not found on PATH",
                remedy=INSTALL_DOCKERD,
            )
        ]
    return [
        Finding(
            topic="dockerd",
            severity=Severity.OK,
            message=f"dockerd executable: {path}",
            data={"path": path},
        )
    ]


def check_daemon_json(config: Config) -> list[Finding]:
    """daemon.json as ``run`` checks it before dockerd's spawn, and ``dockerd --validate``
    where this dockerd has it (23+)."""
    from supervisor.dockerd import daemonjson
    from supervisor.dockerd.process import config_view
    from supervisor.dockerd_flags import config_file_of, parse_dockerd_version, supports_validate

    view = config_view(config, os.environ)
    path = config_file_of(view.argv, view.default_file)[0]
    if not path.exists():
        return [Finding(topic=daemonjson.TOPIC, severity=Severity.OK,
                        message=f"no {path}: dockerd runs with its defaults and the agent's flags")]
    version = None
    binary = shutil.which(config.dockerd.binary)
    if binary is not None:
        try:
            answer = subprocess.run([binary, "--version"], capture_output=True, text=True,
                                    timeout=10, check=False)
            version = parse_dockerd_version(answer.stdout)
        except (OSError, subprocess.TimeoutExpired):
            version = None
    findings = daemonjson.check_daemon_json(
        view.argv, agent_options=view.agent_options, version=version,
        default_file=view.default_file,
    )
    if binary is not None and supports_validate(version) and not any(
        f.severity >= Severity.ERROR for f in findings
    ):
        findings += daemonjson.validate_with_dockerd(daemonjson.for_validation(view.argv)) or []
    return findings or [Finding(topic=daemonjson.TOPIC, severity=Severity.OK,
                                message=f"{path}: dockerd can use it with the agent's flags")]


def foreign_proc(proc_root: str = "/proc") -> Finding | None:
    """A /proc of another pid namespace: ``nsenter -m`` without ``-p`` into a container
    shows the container's /proc, where this process (and so /proc/self) does not exist."""
    if os.path.exists(os.path.join(proc_root, "self")):
        return None
    return Finding(
        topic="check",
        severity=Severity.WARNING,
        message=f"{proc_root} belongs to another pid namespace than this process (entered with"
        " `nsenter -m` but without `-p`?): what reads this process's own /proc entries (the"
        " resource policy, the data root's mount, the container preparation) is not checked",
        remedy="enter the pid namespace too (`nsenter -t PID -m -n -p`, or `-a`), or run"
        " `docker exec CONTAINER dind-supervisor check`",
        data={"proc_root": proc_root},
    )


def check_resource_policy(config: Config, proc_root: str = "/proc") -> list[Finding]:
    """What this container received (policy.inspect), then whether [policy] fits in it.

    A deviation is an ERROR in strict mode (``run`` would exit 2), a WARNING in
    best-effort (``run`` clamps and goes on).
    """
    findings = policy.inspect(proc_root)
    wanted = policy_from_config(config)
    planned = plan(wanted, policy.read_facts(proc_root), check=False)
    strict = wanted.mode is policy.Mode.STRICT
    for deviation in planned.deviations:
        outcome = "run refuses to start (strict mode)" if strict else (
            f"run applies {deviation.applied} instead (best-effort)"
        )
        findings.append(
            Finding(
                topic="policy",
                severity=Severity.ERROR if strict else Severity.WARNING,
                message=f"{deviation.message}; {outcome}",
                remedy=deviation.remedy,
                data=deviation.as_event(),
            )
        )
    if not planned.deviations:
        findings.append(
            Finding(
                topic="policy",
                severity=Severity.OK,
                message=f"the configured policy ({wanted.mode}) can be applied as asked",
            )
        )
    return findings


def check_rootless(config: Config) -> list[Finding]:
    """Rootless mode only: its prerequisites, nested cgroup limits, socket activation."""
    if not config.rootless_on:
        return []
    from supervisor.rootless import cgroups, prereqs

    return [
        *prereqs.findings(config),
        cgroups.detect().finding(),
        Finding(
            topic="rootless", severity=Severity.INFO,
            message="socket activation is off in rootless mode: rootlesskit does not pass the"
            " agent's held sockets on to dockerd, so clients are refused while dockerd restarts",
        ),
    ]


CHECKS: list[Check] = [
    check_rootless,
    check_dockerd_binary,
    check_daemon_json,
    check_resource_policy,
    check_data_root,
    check_preparation,
    check_tls_files,
]


# Checks that read this process's own /proc entries (/proc/self/limits, .../mountinfo).
NEEDS_OWN_PROC = frozenset({"check_resource_policy", "check_data_root", "check_preparation"})


def gather(config: Config, checks: list[Check] | None = None) -> list[Finding]:
    """Every check's findings; one that breaks becomes an error finding of its own, so the
    others are still reported (and no traceback is the only output)."""
    findings: list[Finding] = []
    foreign = foreign_proc()
    if foreign is not None:
        findings.append(foreign)
    for check in checks or CHECKS:
        if foreign is not None and getattr(check, "__name__", "") in NEEDS_OWN_PROC:
            continue
        try:
            findings.extend(check(config))
        except Exception as exc:  # a bug in one check must not hide what the others found
            topic = getattr(check, "__name__", "check").removeprefix("check_")
            findings.append(Finding(
                topic=topic,
                severity=Severity.ERROR,
                message=f"the {topic} check could not finish: {type(exc).__name__}: {exc}",
                remedy="the other findings stand; please report this with the message",
                data={"error": type(exc).__name__},
            ))
    return findings


def render(findings: list[Finding]) -> str:
    lines = []
    for finding in findings:
        lines.append(f"[{finding.severity!s:7}] {finding.topic}: {finding.message}")
        if finding.remedy and finding.severity >= Severity.WARNING:
            lines.append(f"          remedy: {finding.remedy}")
    return "\n".join(lines)


def run_check(config: Config, *, as_json: bool, notes: Sequence[Finding] = ()) -> int:
    findings = [*notes, *gather(config)]
    if as_json:
        print(json.dumps([f.as_dict() for f in findings], indent=2, default=str))
    else:
        print(render(findings))
    worst = max((f.severity for f in findings), default=Severity.OK)
    return 1 if worst >= Severity.ERROR else 0


# The running agent's settings -------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Effective:
    """The configuration to check with, and a finding saying where it came from.

    ``enter_pid``: the agent runs in another mount namespace; check there instead,
    asking it again at ``inner_socket`` (its own path for the socket).
    """

    config: Config
    notes: list[Finding] = field(default_factory=list)
    enter_pid: int | None = None
    inner_socket: str = ""


def _settings_note(message: str) -> Finding:
    return Finding(topic="settings", severity=Severity.INFO, message=message)


def _mount_namespace(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def _elsewhere(pid: int) -> bool:
    """The process runs in another mount namespace (False when that cannot be told)."""
    theirs = _mount_namespace(pid)
    return theirs is not None and theirs != _mount_namespace("self")


def effective_config(
    local: Config,
    *,
    socket_path: str | None,
    elsewhere: Callable[[int], bool] = _elsewhere,
) -> Effective:
    """Ask the running agent for its settings; raises Unreachable when one was named
    (``--socket``, or ``http.socket`` set on purpose) and does not answer."""
    from supervisor import agent_client, agent_settings

    explicit = bool(socket_path) or "http.socket" in local.sources
    path = socket_path or local.http.socket
    if not path:
        return Effective(config=local, notes=[_settings_note(
            "this shell's configuration (http.socket is empty, so no running agent is asked)"
        )])
    if not explicit and not os.path.exists(path):
        return Effective(config=local, notes=[_settings_note(
            f"this shell's configuration (no running agent: no socket at {path})"
        )])
    endpoint = agent_client.Endpoint(socket_path=path)
    try:
        answer = agent_client.ask([endpoint], "/status", timeout=5)
    except agent_client.Unreachable as exc:
        if explicit:
            raise
        return Effective(config=local, notes=[_settings_note(
            f"this shell's configuration ({exc.describe()})"
        )])
    document = answer.document()
    if document is None:
        if explicit:
            raise agent_client.Unreachable(
                [(endpoint, f"answered /status with {answer.status} and no JSON object")]
            )
        return Effective(config=local, notes=[_settings_note(
            f"this shell's configuration ({endpoint} did not answer /status with JSON)"
        )])
    entered = os.environ.get(_ENTERED_ENV) == "1"
    if answer.peer_pid is not None and not entered and elsewhere(answer.peer_pid):
        published = agent_settings.read_settings(document).values.get(("http", "socket"))
        inner = published if isinstance(published, str) and published else _DEFAULT_SOCKET
        return Effective(config=local, enter_pid=answer.peer_pid, inner_socket=inner)
    merged = agent_settings.agent_config(local, document)
    return Effective(config=merged.config, notes=[_settings_note(_describe(
        merged, endpoint=str(endpoint), pid=answer.peer_pid
    ))])


_DEFAULT_SOCKET = Config().http.socket
# Set for the check run inside the agent's namespaces, which must never enter again: with
# a /proc that is not its pid namespace's, the peer's pid would name some other process.
# The leading underscore keeps it out of the DIND_SUPERVISOR_* settings, which refuse
# unknown names.
_ENTERED_ENV = "_DIND_SUPERVISOR_CHECK_ENTERED"


def _describe(merged: Merged, *, endpoint: str, pid: int | None) -> str:
    cfg = merged.config
    who = f"the running agent (pid {pid})" if pid else "the running agent"
    tls = f"TLS on ({cfg.tls.certdir})" if cfg.tls_enabled else "TLS off"
    text = (f"from {who} at {endpoint}: {tls}, data root {cfg.dockerd.data_root},"
            f" policy {cfg.policy.mode or 'best-effort'}")
    if not merged.settings.complete:
        text += ("; its /status has no `settings` object, so only TLS, the data root, the"
                 " policy mode and rootless mode come from it, the rest from this shell")
    if merged.overridden:
        mine = ", ".join(f"{key} ({source})" for key, source in sorted(merged.overridden.items()))
        text += f"; this shell's own choice kept for {mine}"
    return text


def check_inside(
    pid: int,
    own: Sequence[str],
    inner_socket: str,
    *,
    call: Callable[[list[str], dict[str, str]], int] = lambda command, env: subprocess.call(
        command, env=env
    ),
) -> int:
    """Run this same ``check`` in the namespaces of process ``pid`` (root only), where the
    agent's paths mean what they say; returns its exit code."""
    from supervisor.errors import EXIT_FAILURE

    python = sys.executable
    root = f"/proc/{pid}/root"
    if not os.path.exists(root + python):
        print(f"dind-supervisor: the agent (pid {pid}) runs in another mount namespace, where"
              f" this Python ({python}) does not exist", file=sys.stderr)
        print("dind-supervisor: remedy: run `dind-supervisor check` where the agent runs"
              " (e.g. docker exec CONTAINER dind-supervisor check)", file=sys.stderr)
        return EXIT_FAILURE
    cwd = os.getcwd()
    workdir = cwd if os.path.isdir(root + cwd) else "/"
    command = [
        "nsenter", f"--target={pid}", "--mount", "--pid", "--net", f"--wd={workdir}", "--",
        python, "-m", "supervisor", *own, "--socket", inner_socket,
    ]
    print(f"dind-supervisor: note: the agent (pid {pid}) runs in another mount namespace, where"
          f" its data root and certificates are: checking there (nsenter --target {pid})",
          file=sys.stderr)
    return call(command, {**os.environ, _ENTERED_ENV: "1"})
