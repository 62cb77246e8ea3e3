"""Renders the /status document (docs/status.md) as the readable summary of ``status``.

Owns the text layout only: one labelled line per area, continuation lines
indented under it. Does not fetch the document (cli.py does) nor define its
schema (docs/status.md). Tolerates missing keys and ``null`` values, since an
agent that is starting, or an older or newer one, may not fill every part.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

_LABEL = 11  # width of the label column: "containers " is the longest
_SEVERE = ("warning", "error")


def _line(label: str, text: str) -> str:
    return f"{label:<{_LABEL}}{text}".rstrip()


def _when(value: object) -> str:
    """Unix seconds or an ISO 8601 string, as 'YYYY-MM-DD HH:MM:SS UTC'; '-' when absent."""
    if isinstance(value, bool) or value is None:
        return "-"
    try:
        if isinstance(value, int | float):
            moment = dt.datetime.fromtimestamp(value, tz=dt.UTC)
        elif isinstance(value, str):
            moment = dt.datetime.fromisoformat(value).astimezone(dt.UTC)
        else:
            return "-"
    except (ValueError, OverflowError, OSError):
        return str(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _bytes(value: object) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(amount) < 1024 or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def _counts(mapping: object) -> str:
    if not isinstance(mapping, Mapping):
        return "-"
    parts = [f"{key} {value}" for key, value in sorted(mapping.items()) if value]
    return ", ".join(parts) or "none"


def _agent(doc: Mapping[str, Any]) -> list[str]:
    agent = doc.get("agent") or {}
    role = ", PID 1 init" if agent.get("under_init") else ""
    return [_line("agent", f"{agent.get('version', '?')} (pid {agent.get('pid', '?')}{role}),"
                           f" up since {_when(agent.get('started_at'))}")]


def _dockerd(doc: Mapping[str, Any]) -> list[str]:
    d = doc.get("dockerd") or {}
    exit_code = d.get("last_exit_code")
    lines = [
        _line("dockerd", f"{d.get('state', '?')} (pid {d.get('pid') or '-'}),"
                         f" {'ready' if d.get('ready') else 'not ready'},"
                         f" since {_when(d.get('since'))}"),
        _line("", f"restarts: {_counts(d.get('restarts'))};"
                  f" last exit code: {'-' if exit_code is None else exit_code}"),
    ]
    failure = d.get("last_failure") or {}
    if d.get("last_error"):
        quoted = str(d["last_error"]).replace("\n", " ")
        lines.append(_line("", f"last error: {quoted}"))
        if failure.get("cause"):
            lines.append(_line("", f"  cause: {failure['cause']}"))
        if failure.get("remedy"):
            lines.append(_line("", f"  remedy: {failure['remedy']}"))
    if d.get("client_handshake_failures"):
        lines.append(_line("", "client TLS handshakes failed (the clients' problem): "
                               f"{_counts(d['client_handshake_failures'])}"))
    return lines


def _containerd(doc: Mapping[str, Any]) -> list[str]:
    c = doc.get("containerd")
    if not isinstance(c, Mapping):
        return []  # an agent from before containerd was reported
    up = {True: "answering", False: "NOT answering", None: "not probed yet"}.get(c.get("up"), "?")
    last = c.get("last_signal") or c.get("last_exit_code")
    return [_line("containerd", f"{up} (pid {c.get('pid') or '-'}, run by"
                                f" {c.get('managed_by', '?')}), since {_when(c.get('since'))}"),
            _line("", f"restarts: {c.get('restarts', 0)};"
                      f" last exit: {'-' if last is None else last}")]


def _rootless(doc: Mapping[str, Any]) -> list[str]:
    rootless = doc.get("rootless") or {}
    if not rootless.get("enabled"):
        return []  # root mode: nothing worth a line
    pids = rootless.get("pids") or {}
    cgroups = rootless.get("cgroups") or {}
    limits = "apply" if cgroups.get("limits_apply") else "NOT applied"
    return [
        _line("rootless", f"through {rootless.get('rootlesskit', '?')}"
                          f" (pid {pids.get('rootlesskit') or '-'}, dockerd's own"
                          f" {pids.get('dockerd') or '-'}), net {rootless.get('net', '?')},"
                          f" published {', '.join(rootless.get('published') or []) or '-'}"),
        _line("", f"nested --memory/--pids-limit/--cpus: {limits}"
                  f" ({cgroups.get('reason', '?')})"),
    ]


def _tls(doc: Mapping[str, Any]) -> list[str]:
    tls = doc.get("tls") or {}
    if not tls.get("enabled"):
        return [_line("tls", "off (DOCKER_TLS_CERTDIR is empty)")]
    managed = " (user-managed: verified, never written)" if tls.get("user_managed") else ""
    lines = [_line("tls", f"{tls.get('certdir', '?')}{managed},"
                          f" next rotation {_when(tls.get('next_rotation'))}")]
    if tls.get("rotation_failures"):
        lines.append(_line("", f"rotation failures: {tls['rotation_failures']}"))
    for cert in tls.get("certificates") or []:
        days = cert.get("days_left")
        days_text = f"{days:.1f} days left" if isinstance(days, int | float) else "? days left"
        lines.append(_line("", f"{cert.get('name', '?')}: not after"
                               f" {_when(cert.get('not_after'))} ({days_text})"))
    return lines


def _policy(doc: Mapping[str, Any]) -> list[str]:
    policy = doc.get("policy")
    if not policy:
        return []
    oom = policy.get("oom_score_adj") or {}
    oom_text = ", ".join(
        f"{name} {value:g}" if isinstance(value, int | float) else f"{name} {value}"
        for name, value in sorted(oom.items())
    ) or "-"
    lines = [_line("policy", f"{policy.get('mode', '?')}; oom_score_adj: {oom_text}")]
    if policy.get("runtime_errors"):
        lines.append(_line("", f"rlimit errors seen in dockerd's output: "
                               f"{policy['runtime_errors']}"))
        last = policy.get("last_runtime_error") or {}
        if last.get("message"):
            container = last.get("container_id")
            which = f" (container {str(container)[:12]})" if container else ""
            lines.append(_line("", f"  last{which}: {last['message']}"))
        if last.get("remedy"):
            lines.append(_line("", f"  remedy: {last['remedy']}"))
    lines.extend(_line("", f"not applied: {item}") for item in policy.get("deviations") or [])
    return lines


def _data_root(doc: Mapping[str, Any]) -> list[str]:
    data = doc.get("data_root")
    if not data:
        return []
    persistent = {True: "persistent", False: "NOT persistent", None: "persistence unknown"}
    used = data.get("used_percent")
    lines = [
        _line("data root", f"{data.get('path', '?')}: {data.get('fstype') or '?'},"
                           f" {persistent.get(data.get('persistent'), '?')},"
                           f" storage driver {data.get('storage_driver') or '-'}"),
        _line("", f"{'-' if used is None else used}% used, {_bytes(data.get('free_bytes'))}"
                  f" free, {data.get('free_inodes', '-')} inodes free"),
    ]
    gc = data.get("gc") or {}
    if gc.get("runs"):
        lines.append(_line("", f"gc: {gc['runs']} runs reclaimed"
                               f" {_bytes(gc.get('reclaimed_bytes'))}"))
    lines.extend(_findings(data.get("findings")))
    return lines


def _findings(findings: object) -> list[str]:
    lines = []
    for finding in findings if isinstance(findings, list) else []:
        if finding.get("severity") in _SEVERE:
            lines.append(_line("", f"{finding['severity']}: {finding.get('message')}"))
            if finding.get("remedy"):
                lines.append(_line("", f"  remedy: {finding['remedy']}"))
    return lines


def _prepare(doc: Mapping[str, Any]) -> list[str]:
    prepare = doc.get("prepare")
    if not prepare:
        return [_line("prepare", "not run (not PID 1, or turned off)")]
    steps = prepare.get("steps") or {}
    outcomes = ", ".join(f"{name} {step.get('outcome', '?')}" for name, step in steps.items())
    backend = prepare.get("iptables_backend")
    lines = [_line("prepare", f"{outcomes or '-'}"
                              f"{f'; iptables {backend}' if backend else ''}"
                              f"{' (dry run)' if prepare.get('dry_run') else ''}")]
    for step in steps.values():
        lines.extend(_findings(step.get("findings")))
    return lines


def _containers(doc: Mapping[str, Any]) -> list[str]:
    if "containers" not in doc:
        return []
    return [_line("containers", _counts(doc.get("containers")))]


def render(document: Mapping[str, Any]) -> str:
    """The summary, one area per labelled line; never raises on a partial document."""
    lines: list[str] = []
    for part in (_agent, _dockerd, _containerd, _rootless, _tls, _policy, _data_root, _prepare,
                 _containers):
        lines.extend(part(document))
    return "\n".join(lines)
