"""``python bench/launcher.py -- dockerd ARGS``: bare dockerd as a container's PID 1, restarted.

The comparison for the client-call rows: what a user gets from a plain
entrypoint plus "restart dockerd when it exits" (a shell loop, a process
manager). dockerd binds its own sockets, so while it is down, calls are
refused. As PID 1 it reaps every child; when dockerd exits it is started
again at once; TERM, INT or QUIT to the launcher is passed to dockerd and
the launcher exits once dockerd has. Standard library only; every wait is
bounded by the signals it takes. Each start and exit is one line on stdout.
"""

from __future__ import annotations

import os
import signal
import sys

STOPS = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT}
HANDLED = (*STOPS, signal.SIGCHLD)
MAX_STARTS = 1000  # a bound, far above what a benchmark asks for


def _spawn(argv: list[str]) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            os.execvp(argv[0], argv)  # noqa: S606 (dockerd, by design)
        finally:
            os._exit(127)
    print(f"launcher: dockerd started, pid {pid}", flush=True)
    return pid


def main() -> int:
    argv = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
    if not argv:
        print("usage: launcher.py -- dockerd ARGS", file=sys.stderr)
        return 2
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    dockerd, starts, stopping = _spawn(argv), 1, False
    while True:
        info = signal.sigtimedwait(HANDLED, 1.0)
        if info is not None and info.si_signo in STOPS:
            stopping = True
            os.kill(dockerd, info.si_signo)
        while True:  # reap every child, dockerd among them
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid != dockerd:
                continue
            print(f"launcher: dockerd {pid} exited ({status:#x})", flush=True)
            if stopping or starts >= MAX_STARTS:
                return os.waitstatus_to_exitcode(status) if not stopping else 0
            # No delay: restarted at once, as the agent restarts a dockerd that was healthy.
            dockerd, starts = _spawn(argv), starts + 1


if __name__ == "__main__":
    sys.exit(main())
