"""Renders the /status document as the readable summary of ``dind-supervisor status``."""

from __future__ import annotations

import datetime as dt
from typing import Any


def _when(timestamp: object) -> str:
    if not isinstance(timestamp, int | float):
        return "-"
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render(document: dict[str, Any]) -> str:
    lines: list[str] = []
    agent = document.get("agent", {})
    lines.append(f"agent    {agent.get('version', '?')} pid {agent.get('pid', '?')},"
                 f" up since {_when(agent.get('started_at'))}")
    d = document.get("dockerd", {})
    restarts = d.get("restarts") or {}
    restart_text = ", ".join(f"{k} {v}" for k, v in sorted(restarts.items())) or "none"
    lines.append(f"dockerd  {d.get('state', '?')} (pid {d.get('pid') or '-'}),"
                 f" since {_when(d.get('since'))}")
    lines.append(f"         restarts: {restart_text}; last exit code: "
                 f"{d.get('last_exit_code') if d.get('last_exit_code') is not None else '-'}")
    if d.get("last_error"):
        lines.append(f"         last error: {d['last_error']}")
    for cert in document.get("tls", {}).get("certificates", []):
        lines.append(f"tls      {cert.get('name')}: not after {cert.get('not_after')},"
                     f" {cert.get('days_left')} days left")
    policy = document.get("policy")
    if policy:
        for item in policy.get("deviations", []):
            lines.append(f"policy   {item}")
    data_root = document.get("data_root")
    if data_root:
        lines.append(
            f"data     {data_root.get('path')}: {data_root.get('fstype')},"
            f" persistent {data_root.get('persistent')},"
            f" storage driver {data_root.get('storage_driver') or '-'},"
            f" {data_root.get('used_percent', '-')}% used"
        )
    containers = document.get("containers")
    if containers:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(containers.items()) if v)
        lines.append(f"containers {counts or 'none'}")
    return "\n".join(lines)
