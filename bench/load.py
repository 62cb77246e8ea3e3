"""Benchmarks of what the agent costs and how it holds under load.

Owns: certificate issuance (ECDSA P-256 against RSA-4096, in process),
footprint (RSS of PID 1 + agent, idle CPU), /metrics scrape latency at 0 and
N containers and under wrk load, and reaping of many orphans by PID 1.
Every loop and wait is bounded. Does not own the sandbox harness or the
report.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bench.probes import (
    CLK_TCK,
    Workspace,
    cpu_ticks,
    percentile,
    pss_bytes,
    rss_bytes,
    wait_ping,
)
from tests.integration.sandbox import REPO, Sandbox, busybox_rootfs_tar, poll

TLS_ENV = {"DOCKER_TLS_CERTDIR": "/certs"}
ENDPOINT = "http://127.0.0.1:9324"
_WARMUP = 10  # GETs before the timed ones (first connection, lazy imports)
# Entering the mount namespace resets the working directory to its root.
INSIDE_ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def cert_issuance(runs: int) -> dict[str, list[float]]:
    """Seconds for a full CA + server + client set, ECDSA P-256 and RSA-4096 interleaved."""
    from supervisor.tls import certs
    from supervisor.tls.issue import KeyType
    from supervisor.tls.model import CertSpec
    from supervisor.tls.san import default_sans

    sans = default_sans(hostnames=["bench"], proc_root=Path("/proc"))
    found: dict[str, list[float]] = {"ecdsa-p256": [], "rsa-4096": []}
    for _ in range(runs):
        for key_type in (KeyType.ECDSA_P256, KeyType.RSA_4096):
            with tempfile.TemporaryDirectory(prefix="dind-bench-certs-") as tmp:
                started = time.perf_counter()
                certs.ensure(Path(tmp) / "certs", CertSpec(key_type=key_type), sans,
                             dt.datetime.now(dt.UTC))
                found[key_type.value].append(time.perf_counter() - started)
    return found


@dataclass(slots=True, kw_only=True)
class Scrape:
    p50: float
    p99: float
    count: int
    errors: int
    body_bytes: int
    # The agent's own CPU per scrape (utime+stime delta / GETs): unlike the
    # latency, it does not grow when other users load the machine.
    cpu_per_scrape: float


@dataclass(slots=True, kw_only=True)
class WrkResult:
    p50: float
    p99: float
    requests_per_second: float
    requests: int
    errors: int
    duration: float
    connections: int


@dataclass(slots=True, kw_only=True)
class Load:
    rss_pid1: int = 0
    rss_agent: int = 0
    rss_dockerd: int = 0
    pss_pid1_agent: int = 0
    rss_agent_loaded: int = 0
    idle_seconds: float = 0.0
    idle_cpu_percent: float = 0.0
    containers: int = 0
    scrape_empty: Scrape | None = None
    scrape_full: Scrape | None = None
    wrk: WrkResult | None = None
    reap: list[float] = field(default_factory=list)
    # Until every orphan had exited (kernel work), the rest being PID 1's lag.
    reap_exited: list[float] = field(default_factory=list)
    orphans: int = 0


def _scrape(box: Sandbox, count: int, agent: int) -> Scrape:
    ticks = cpu_ticks(agent)
    out = box.nsenter(sys.executable, "-m", "bench.inside", "scrape", "--url",
                      f"{ENDPOINT}/metrics", "--count", str(count), "--warmup", str(_WARMUP),
                      timeout=300, env=INSIDE_ENV)
    if out.returncode != 0:
        raise RuntimeError(f"scraper failed: {out.stderr}")
    used = (cpu_ticks(agent) - ticks) / CLK_TCK
    data = json.loads(out.stdout)
    latencies = data["latencies"]
    requests = len(latencies) + len(data["errors"]) + _WARMUP
    return Scrape(p50=percentile(latencies, 50), p99=percentile(latencies, 99),
                  count=len(latencies), errors=len(data["errors"]), body_bytes=data["bytes"],
                  cpu_per_scrape=used / requests)


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _duration(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"wrk latency {text!r} not understood")
    return float(match[1]) * _UNITS[match[2]]


def parse_wrk(output: str, duration: float, connections: int) -> WrkResult:
    """The parts of `wrk --latency` output the table needs."""
    def latency(pct: str) -> float:
        match = re.search(rf"^\s*{pct}%\s+(\S+)", output, re.M)
        if not match:
            raise ValueError(f"no {pct}% line in wrk output:\n{output}")
        return _duration(match[1])

    requests = re.search(r"(\d+) requests in", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    errors = sum(int(n) for n in re.findall(
        r"(?:connect|read|write|timeout) (\d+)", output.split("Socket errors:", 1)[-1]
    )) if "Socket errors:" in output else 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(
        p50=latency("50"), p99=latency("99"),
        requests_per_second=float(rate[1]) if rate else 0.0,
        requests=int(requests[1]) if requests else 0,
        errors=errors + (int(non2xx[1]) if non2xx else 0),
        duration=duration, connections=connections,
    )


def _wrk(box: Sandbox, duration: float, connections: int) -> WrkResult:
    out = box.nsenter("wrk", "-t2", f"-c{connections}", f"-d{int(duration)}s", "--latency",
                      "--timeout", "5s", f"{ENDPOINT}/metrics", timeout=duration + 60)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr}{out.stdout}")
    return parse_wrk(out.stdout, duration, connections)


def _create_containers(box: Sandbox, count: int) -> None:
    def create(index: int) -> None:
        box.docker("create", "--network", "none", "--name", f"c{index}", "busybox:test", "true")

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(create, range(count)))

    def counted() -> bool:
        created = box.metric("dind_containers", {"state": "created"})
        return created is not None and created >= count

    poll(counted, timeout=120, interval=0.5, what=f"dind_containers{{state=created}} = {count}")


def _reap_once(box: Sandbox, count: int) -> tuple[float, float]:
    """Orphan ``count`` processes to PID 1 and end them at once; seconds until all reaped."""
    out = box.nsenter(sys.executable, "-m", "bench.inside", "orphans", "--count", str(count),
                      timeout=180, env=INSIDE_ENV)
    if out.returncode != 0:
        raise RuntimeError(f"orphan maker failed: {out.stderr}")
    data = json.loads(out.stdout)
    if data["adopted"] != count or data["left"] != 0:
        raise RuntimeError(f"orphans not all adopted and reaped: {data}")
    return float(data["seconds"]), float(data["exited_seconds"])


def footprint_and_load(
    space: Workspace, *, idle: float, scrapes: int, containers: int,
    wrk_seconds: float, wrk_connections: int, orphans: int, reap_runs: int,
) -> Load:
    """One agent with TLS on and default settings: idle, scraped, loaded, then orphans."""
    result = Load(containers=containers, orphans=orphans)
    box = space.ours("load", env=TLS_ENV)
    try:
        box.start()
        wait_ping(box.socket, timeout=90)
        box.wait_ready(timeout=60)
        assert box.pid1 is not None
        agent = box.agent_pid()
        assert agent is not None, box.log_tail()
        dockerd = box.dockerd_pid() or 0
        pids = (box.pid1, agent)
        ticks = sum(cpu_ticks(pid) for pid in pids)
        started = time.monotonic()
        time.sleep(idle)  # deliberate: the idle period is the measurement
        result.idle_seconds = time.monotonic() - started
        used = (sum(cpu_ticks(pid) for pid in pids) - ticks) / CLK_TCK
        result.idle_cpu_percent = 100.0 * used / result.idle_seconds
        result.rss_pid1, result.rss_agent = rss_bytes(box.pid1), rss_bytes(agent)
        result.rss_dockerd = rss_bytes(dockerd)
        result.pss_pid1_agent = pss_bytes(box.pid1) + pss_bytes(agent)
        result.scrape_empty = _scrape(box, scrapes, agent)
        box.docker("import", str(busybox_rootfs_tar(box.root)), "busybox:test")
        _create_containers(box, containers)
        result.scrape_full = _scrape(box, scrapes, agent)
        result.wrk = _wrk(box, wrk_seconds, wrk_connections)
        result.rss_agent_loaded = rss_bytes(agent)
        for _ in range(reap_runs):
            total, exited = _reap_once(box, orphans)
            result.reap.append(total)
            result.reap_exited.append(exited)
    finally:
        space.close(box)
    return result
