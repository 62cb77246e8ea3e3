"""Small, bounded measuring tools the scenarios share.

Owns: the dockerd /_ping over a unix socket, /proc readers for RSS and CPU
ticks (each taking its /proc root), sandbox start/teardown with a bounded
wait for the namespace to empty, and the summary statistics. Does not own
any scenario or the report.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.clientloop import exchange_ping
from tests.integration.sandbox import REPO, Sandbox, poll

PROC = Path("/proc")
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The agent runs as an installed package would (`pip install .`, as the image does):
# the development venv's editable install adds a hook (.pth) to every interpreter's
# start, about 10 ms and 2 MB that no installed copy has. `-S` leaves site out, `-P` the
# working directory, and PYTHONPATH gives the same modules: the checkout and the venv's
# site-packages.
INSTALLED_ENV = {"PYTHONPATH": os.pathsep.join((str(REPO), sysconfig.get_paths()["purelib"]))}


def agent_command(agent_args: Sequence[str] = (),
                  dockerd_args: Sequence[str] = ("--bridge=none",)) -> list[str]:
    """`dind-supervisor run` as the image runs it (default log level)."""
    return [sys.executable, "-S", "-P", "-m", "supervisor", "run", *agent_args, "--",
            *dockerd_args]


def ping(sock: Path, *, timeout: float = 1.0) -> bool:
    """One GET /_ping on dockerd's unix socket: True when it answers 200 OK."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(str(sock))
            data = exchange_ping(conn, limit=4096)
    except OSError:
        return False
    return data.startswith(b"HTTP/1.") and b" 200 " in data.split(b"\r\n", 1)[0]


def wait_ping(sock: Path, *, timeout: float, interval: float = 0.005) -> float:
    """Poll /_ping until it answers; return time.monotonic() of the first success."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ping(sock, timeout=0.5):
            return time.monotonic()
        time.sleep(interval)
    raise TimeoutError(f"dockerd on {sock} did not answer /_ping within {timeout} s")


def rss_bytes(pid: int, proc: Path = PROC) -> int:
    """Resident set size of ``pid`` (VmRSS), 0 when it has gone."""
    with contextlib.suppress(OSError):
        for line in (proc / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_ticks(pid: int, proc: Path = PROC) -> int:
    """utime + stime of ``pid`` in clock ticks."""
    stat = (proc / str(pid) / "stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime is field 14, stime field 15.
    return int(fields[11]) + int(fields[12])


def pss_bytes(pid: int, proc: Path = PROC) -> int:
    """Proportional set size: shared pages split among their users (PID 1 and the agent
    share what was loaded before the fork, which RSS counts twice)."""
    with contextlib.suppress(OSError):
        for line in (proc / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    """Median and range of a few runs of one figure."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 of 200 samples is the 198th)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


class Workspace:
    """Temporary roots for sandboxes, removed at the end whatever happened."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="dind-bench-"))
        self._count = 0
        self.live: list[Sandbox] = []

    def root(self, name: str) -> Path:
        self._count += 1
        path = self.base / f"{self._count:03d}-{name}"
        path.mkdir()
        return path

    def sandbox(self, name: str, **kwargs: Any) -> Sandbox:
        root = kwargs.pop("root", None) or self.root(name)
        box = Sandbox(root, **kwargs)
        self.live.append(box)
        return box

    def ours(self, name: str, *, env: dict[str, str] | None = None,
             agent_args: Sequence[str] = (), **kwargs: Any) -> Sandbox:
        """A sandbox running our agent, installed-style (see ``INSTALLED_ENV``)."""
        return self.sandbox(name, command=agent_command(agent_args),
                            env={**INSTALLED_ENV, **(env or {})}, **kwargs)

    def stop(self, box: Sandbox) -> None:
        """Stop as `docker stop` would (TERM to PID 1, bounded), then close it."""
        if box.alive:
            box.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                box.wait(timeout=30)
        self.close(box)

    def close(self, box: Sandbox) -> None:
        """Kill the namespace and wait (bounded) until the kernel has emptied it."""
        box.destroy()
        with contextlib.suppress(TimeoutError):
            poll(lambda: not box.ns_processes(), timeout=30, interval=0.1,
                 what=f"an empty namespace for {box.root}")
        if box in self.live:
            self.live.remove(box)

    def cleanup(self) -> None:
        for box in list(self.live):
            self.close(box)
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def workspace() -> Iterator[Workspace]:
    space = Workspace()
    try:
        yield space
    finally:
        space.cleanup()


def timed(func: Callable[[], object]) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started
