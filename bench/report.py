"""The benchmark report: machine description, the table with goals, and the plot.

Owns: formatting figures (median and min-max), judging each against its goal
(reported, never asserted), the markdown written to bench/RESULTS.md, the
time-to-ready plot, and the import-time profile of the agent. Does not own
any measurement.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.probes import INSTALLED_ENV
from bench.ready import ReadyTimes


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    figure: str
    ours: str
    comparison: str
    relation: str
    goal: str
    met: bool | None  # None: no goal for this row


def fmt_runs(values: Sequence[float], unit: str = "s", scale: float = 1.0, digits: int = 2) -> str:
    """'1.23 s (1.10-1.40, n=5)': the median, then the range of the runs."""
    if not values:
        return "n/a"
    vals = [v * scale for v in values]
    median = statistics.median(vals)
    if len(vals) == 1:
        return f"{median:.{digits}f} {unit} (n=1)"
    low, high = min(vals), max(vals)
    return f"{median:.{digits}f} {unit} ({low:.{digits}f}-{high:.{digits}f}, n={len(vals)})"


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _cmd(*argv: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except OSError as exc:
        return f"unavailable ({exc})"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


def machine(proc: Path = Path("/proc")) -> dict[str, str]:
    """What the figures were measured on."""
    meminfo = (proc / "meminfo").read_text()
    total_kb = int(re.search(r"MemTotal:\s+(\d+)", meminfo)[1])  # type: ignore[index]
    cpu = re.search(r"model name\s*:\s*(.+)", (proc / "cpuinfo").read_text())
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu[1].strip() if cpu else platform.machine(),
        "memory": f"{total_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "dockerd": _cmd("dockerd", "--version"),
        "python": sys.version.split()[0],
        "wrk": _cmd("wrk", "--version").split(" [")[0],
        "load average at start": " ".join((proc / "loadavg").read_text().split()[:3]),
    }


IMPORTS = ("structlog", "anyio", "prometheus_client", "cryptography.x509", "aiohttp",
           "aiohttp.web", "aiodocker", "supervisor.cli", "supervisor.app")
# VmRSS, not ru_maxrss: Linux carries the peak across exec, so a child of a
# big benchmark process would start with the parent's peak.
_MEASURE = ("import time; t = time.perf_counter(); import {0}; s = time.perf_counter() - t; "
            "print(s, [x.split()[1] for x in open('/proc/self/status') "
            "if x.startswith('VmRSS')][0])")


def import_profile(modules: Sequence[str] = IMPORTS, repeat: int = 3) -> list[str]:
    """Import time and RSS of each module alone in a fresh interpreter (median)."""
    lines = []
    base = _import_cost("sys", repeat)[1]
    for module in modules:
        seconds, rss_kb = _import_cost(module, repeat)
        lines.append(f"- `{module}`: {seconds * 1000:.0f} ms, +{(rss_kb - base) / 1024:.1f} MB "
                     "RSS over a bare interpreter")
    lines.append(f"- (bare interpreter: {base / 1024:.1f} MB RSS)")
    return lines


def _import_cost(module: str, repeat: int) -> tuple[float, int]:
    times, peaks = [], []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-S", "-P", "-c", _MEASURE.format(module)],
                             capture_output=True, text=True, timeout=60, check=True, cwd="/",
                             env={"PATH": os.environ.get("PATH", ""), **INSTALLED_ENV})
        seconds, peak = out.stdout.split()
        times.append(float(seconds))
        peaks.append(int(peak))
    return statistics.median(times), int(statistics.median(peaks))


_PHASES = (
    ("agent", "agent_started: interpreter, PID 1's imports, the fork, the agent's imports and"
     " configuration"),
    ("certs", "certificates ready (issued on a first start; their record read on a restart)"),
    ("containerd", "containerd answering (the agent runs it; started and awaited before"
     " dockerd)"),
    ("dockerd_spawned", "dockerd spawned (the launch done: lock, policy, preparation, sockets,"
     " containerd)"),
    ("answered", "first `GET /_ping` answered"),
    ("dockerd_ready", "dockerd ready in the agent's own view (its imports, READY=1, the"
     " TLS handshake)"),
)


def phase_lines(times: ReadyTimes) -> list[str]:
    """Median offsets of our milestones (from the agent's log) and bare dockerd's answer."""
    lines = [f"- every variant: the sandbox itself (`unshare`, three bind mounts, lo up,"
             f" `exec true`): {fmt_runs(times.sandbox_start, 'ms', 1000, 0)}"]
    for variant, title in (("ours_tls_first", "First start, TLS on, empty certdir"),
                           ("ours_tls_restart", "Restart on existing certificates and data"
                            " root")):
        lines += ["", f"{title} (seconds after `unshare`):", ""]
        for key, label in _PHASES:
            vals = [p[key] for p in times.phases.get(variant, []) if key in p]
            if vals:
                lines.append(f"- ours, {label}: {fmt_runs(vals)}")
        bare = times.runs.get("bare_first" if "first" in variant else "bare_restart", [])
        lines.append(f"- bare dockerd, first `GET /_ping` answered: {fmt_runs(bare)}")
    return lines


def markdown(
    rows: Sequence[Row], info: dict[str, str], *, mode: str, notes: Sequence[str],
    profile: Sequence[str],
) -> str:
    out = [
        "# Benchmark results",
        "",
        f"Generated by `python -m bench.run{' --quick' if mode == 'quick' else ''}` "
        f"({mode} mode). Figures are medians with the min-max of the runs in brackets; "
        "every comparison is from the same run, interleaved. Goals are reported, not asserted.",
        "",
        "## Machine",
        "",
        *[f"- {key}: {value}" for key, value in info.items()],
        "",
        "## Figures",
        "",
        "| Figure | Ours | Comparison | Relation | Goal | Goal met |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        met = "—" if row.met is None else ("yes" if row.met else "**no**")
        out.append(f"| {row.figure} | {row.ours} | {row.comparison} | {row.relation} | "
                   f"{row.goal} | {met} |")
    out += ["", "## Notes", "", *notes, "", "## Where the time goes", "", *profile, ""]
    return "\n".join(out)


def plot(times: ReadyTimes, path: Path) -> None:
    """Time to ready of each run, ours against bare dockerd."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {
        "ours_tls_first": "ours, TLS, first start (issues certs)",
        "ours_tls_restart": "ours, TLS, restart (certs exist)",
        "ours_notls_first": "ours, no TLS, first start",
        "bare_first": "bare dockerd, first start",
        "bare_restart": "bare dockerd, restart",
    }
    styles = {"ours": "-o", "bare": "--s"}
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for key, label in labels.items():
        values = times.runs.get(key, [])
        if values:
            ax.plot(range(1, len(values) + 1), values, styles[key.split("_")[0]], label=label)
    ax.set_xlabel("run (interleaved: ours and bare in each run)")
    ax.set_ylabel("seconds from unshare to first /_ping")
    ax.set_title("Time to ready: dind-supervisor vs bare dockerd")
    ax.set_ylim(bottom=0)
    ax.set_xticks(range(1, 1 + max((len(v) for v in times.runs.values()), default=1)))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
