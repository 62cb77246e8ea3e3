"""Where the agent's memory and start-up CPU go, measured in fresh interpreters.

Owns two profiles, each run as the agent runs (installed-style: ``-S -P`` and
PYTHONPATH, see ``probes.INSTALLED_ENV``):

- ``memory_ladder``: the agent's imports in the order it makes them, VmRSS
  after each step. A module shared by two steps is counted in the first, so
  the steps add up to what the agent holds before it runs anything; the live
  agent's RSS beyond that is its run-time state (event loop, buffers, metric
  values, thread stacks).
- ``start_cost``: CPU time (``time.process_time``) of what runs before the
  launch: PID 1's imports (before the fork), the agent's imports, and its
  command line and configuration. CPU time, unlike the wall clock, hardly
  moves with other users' load.

Does not own any sandbox or the report.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.probes import INSTALLED_ENV

# (label, modules imported at that step), in the agent's order.
LADDER: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("PID 1: supervisor.entry, supervisor.init (kept by PID 1 after the fork)",
     ("supervisor.entry", "supervisor.init")),
    ("command line, configuration, launch (supervisor.cli, supervisor.run)",
     ("supervisor.cli", "supervisor.run")),
    ("anyio (with its asyncio backend)", ("anyio", "anyio._backends._asyncio")),
    ("structlog", ("structlog",)),
    ("prometheus_client", ("prometheus_client",)),
    ("aiohttp (client: multidict, yarl, ssl, ...)", ("aiohttp",)),
    ("aiohttp.web (the endpoint's server)", ("aiohttp.web",)),
    ("aiodocker", ("aiodocker",)),
    ("the agent's own parts (supervisor.app, supervisor.tls.service)",
     ("supervisor.app", "supervisor.tls.service")),
)
# Loaded only by the certificate worker (a short-lived process), shown for comparison.
WORKER_ONLY = ("cryptography.x509", "supervisor.tls.certs")

# Nothing imported before the first figure (json or importlib would bring re and enum):
# the steps come as arguments, one a step, modules separated by commas.
_LADDER_CODE = """
import sys
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) * 1024
out = [rss()]
for step in sys.argv[1:]:
    for module in step.split(','):
        __import__(module)
    out.append(rss())
print(' '.join(str(n) for n in out))
"""

_COST_CODE = """
import os, time
t0 = time.process_time()
import supervisor.entry, supervisor.init
t1 = time.process_time()
os.environ.setdefault("DOCKER_TLS_CERTDIR", "/certs")
from supervisor import cli
import supervisor.run
t2 = time.process_time()
marks = []
def stop_here(cfg, policy, under_init=False):
    marks.append(time.process_time())
    return 0
supervisor.run.run_agent = stop_here
from supervisor.invocation import classify
cli.main_invocation(classify(["run", "--", "--bridge=none"]), under_init=True)
print(t1 - t0, t2 - t1, marks[0] - t2)
"""


def _python(code: str, *args: str) -> str:
    """Run ``code`` in a fresh installed-style interpreter; its stdout."""
    out = subprocess.run([sys.executable, "-S", "-P", "-c", code, *args], cwd="/",
                         env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **INSTALLED_ENV},
                         capture_output=True, text=True, timeout=120, check=True)
    return out.stdout


@dataclass(slots=True, kw_only=True)
class Ladder:
    interpreter: int = 0  # bytes, a bare interpreter
    steps: list[tuple[str, int]] = field(default_factory=list)  # (label, bytes added)
    total: int = 0  # everything the ladder imported
    worker_only: int = 0  # bytes cryptography would add on top


def memory_ladder(runs: int = 3) -> Ladder:
    """Median of ``runs`` fresh interpreters for each figure."""
    steps = [",".join(modules) for _label, modules in LADDER]
    samples = [[int(n) for n in _python(_LADDER_CODE, *steps, ",".join(WORKER_ONLY)).split()]
               for _ in range(runs)]
    column = [int(statistics.median(s[i] for s in samples)) for i in range(len(steps) + 2)]
    ladder = Ladder(interpreter=column[0], total=column[-2],
                    worker_only=column[-1] - column[-2])
    for index, (label, _modules) in enumerate(LADDER):
        ladder.steps.append((label, column[index + 1] - column[index]))
    return ladder


@dataclass(slots=True, kw_only=True)
class StartCost:
    """Median CPU seconds of each part of the start before the launch."""

    pid1_imports: float
    agent_imports: float
    command_line: float
    runs: int


def start_cost(runs: int = 10) -> StartCost:
    samples = [[float(x) for x in _python(_COST_CODE).split()] for _ in range(runs)]

    def median(index: int) -> float:
        return statistics.median(s[index] for s in samples)

    return StartCost(pid1_imports=median(0), agent_imports=median(1), command_line=median(2),
                     runs=runs)


def ladder_lines(ladder: Ladder, live_agent: int, live_pid1: int) -> list[str]:
    """'Where each MB goes', for the report (MB = 10^6 bytes, as in the table)."""
    mb = 1_000_000
    lines = [f"- the interpreter (`python -S`, nothing imported): {ladder.interpreter / mb:.1f} MB"]
    lines += [f"- + {label}: {added / mb:+.1f} MB" for label, added in ladder.steps]
    lines.append(f"- = everything the agent imports: {ladder.total / mb:.1f} MB; the live agent"
                 f" holds {live_agent / mb:.1f} MB, so {(live_agent - ladder.total) / mb:+.1f} MB"
                 " is its run-time state (event loop, buffers, metric values, thread stacks)")
    pid1 = ladder.interpreter + ladder.steps[0][1]
    lines.append(f"- PID 1: {live_pid1 / mb:.1f} MB live ({pid1 / mb:.1f} MB interpreter and its"
                 " modules); the agent's RSS counts those pages again (shared since the fork)")
    lines.append(f"- not in the agent: cryptography ({', '.join(WORKER_ONLY)}) would add"
                 f" {ladder.worker_only / mb:+.1f} MB; only the short-lived certificate worker"
                 " loads it")
    return lines


def cost_lines(cost: StartCost) -> list[str]:
    ms = 1000
    total = cost.pid1_imports + cost.agent_imports + cost.command_line
    return [f"- CPU before the launch (median of {cost.runs} fresh interpreters):"
            f" {total * ms:.0f} ms = PID 1's imports {cost.pid1_imports * ms:.0f} ms (before"
            f" the fork) + the agent's imports {cost.agent_imports * ms:.0f} ms + command line"
            f" and configuration {cost.command_line * ms:.1f} ms"]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.costs``: both profiles, printed."""
    del argv
    ladder = memory_ladder()
    for line in ladder_lines(ladder, live_agent=ladder.total, live_pid1=0):
        print(line)
    for line in cost_lines(start_cost()):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
