"""``python -m bench.signal_window [RUNS]``: how long a container's PID 1 runs before our code
blocks its signals (the window in which the kernel drops a `docker stop`).

Each run starts the entry point as PID 1 of a new pid namespace under strace and
measures from its execve to the rt_sigprocmask that blocks TERM, INT, QUIT, HUP,
USR1, USR2 and CHLD (supervisor/__init__.py). strace slows system calls, so the
figures are an upper bound. Needs root (namespaces) and strace.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_BLOCK = "SIG_BLOCK, [HUP INT QUIT USR1 USR2 TERM CHLD]"
VENV = Path(sys.executable).parent


def window_ms(command: list[str]) -> float:
    with tempfile.TemporaryDirectory() as folder:
        trace = Path(folder) / "trace"
        subprocess.run(["strace", "-f", "-ttt", "-e", "trace=execve,rt_sigprocmask", "-o",
                        str(trace), "unshare", "--pid", "--fork", "--mount-proc", *command],
                       capture_output=True, check=False, timeout=60)
        exec_at = blocked_at = None
        for line in trace.read_text().splitlines():
            _pid, stamp, call = line.split(None, 2)
            if exec_at is None and call.startswith("execve(") and command[0] in call:
                exec_at = float(stamp)
            if blocked_at is None and _BLOCK in call:
                blocked_at = float(stamp)
    if exec_at is None or blocked_at is None:
        raise RuntimeError(f"no execve or no block seen for {command}")
    return (blocked_at - exec_at) * 1000


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 9
    entries = {
        "dind-supervisor (console script)": [str(VENV / "dind-supervisor"), "--version"],
        "python -m supervisor": [sys.executable, "-m", "supervisor", "--version"],
    }
    print("| entry point | median | min | max | runs |")
    print("| --- | --- | --- | --- | --- |")
    for name, command in entries.items():
        figures = [window_ms(command) for _ in range(runs)]
        print(f"| {name} | {statistics.median(figures):.1f} ms | {min(figures):.1f} ms"
              f" | {max(figures):.1f} ms | {runs} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
