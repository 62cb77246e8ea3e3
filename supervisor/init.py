"""PID 1: forward signals to the agent, reap every orphan, exit with the agent's code.

Deliberately tiny, synchronous, and free of third-party imports: it blocks
the signals it handles, forks the agent, and loops on sigtimedwait. The agent
(a child) never calls waitpid(-1), so asyncio keeps its children's exit
statuses; this process reaps everything else (containerd-shims that outlive a
dockerd restart, double-forked helpers).

Exit status: the agent's exit code, or 128+N when the agent died of signal N.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable

FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
_HANDLED = (*FORWARDED, signal.SIGCHLD)
# Wake up now and then even without signals, so a lost SIGCHLD (coalesced
# while we were busy) can never leave a zombie for long.
_POLL_SECONDS = 1.0


def exit_status(wait_status: int) -> int:
    """Shell convention: the exit code, or 128+N for death by signal N."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.waitstatus_to_exitcode(wait_status)


def reap(agent_pid: int) -> int | None:
    """Reap every exited child; return the agent's wait status if it was among them."""
    agent_status: int | None = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return agent_status
        if pid == 0:
            return agent_status
        if pid == agent_pid:
            agent_status = status


def run(agent: Callable[[], int]) -> int:
    """Fork ``agent`` as a child, supervise it as PID 1, return the exit status."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
    pid = os.fork()
    if pid == 0:  # the agent
        try:
            # Its own process group, so a terminal's ^C reaches it once (through us).
            os.setpgid(0, 0)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED)
            code = agent()
        except SystemExit as exc:
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:  # last resort in a forked child
            import traceback

            print("dind-supervisor: agent crashed:", file=sys.stderr)
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    return supervise(pid)


def supervise(agent_pid: int) -> int:
    """The PID 1 loop; returns once the agent has exited."""
    while True:
        info = signal.sigtimedwait(_HANDLED, _POLL_SECONDS)
        if info is not None and info.si_signo != signal.SIGCHLD:
            with contextlib.suppress(ProcessLookupError):
                os.kill(agent_pid, info.si_signo)
            continue
        status = reap(agent_pid)
        if status is not None:
            # The kernel kills the rest of the namespace when PID 1 exits;
            # reap what is already dead so nothing is left as a zombie meanwhile.
            reap(agent_pid)
            return exit_status(status)


def is_subreaper() -> bool:
    """True when this process adopts its orphaned descendants (PR_SET_CHILD_SUBREAPER)."""
    import ctypes

    pr_get_child_subreaper = 37
    libc = ctypes.CDLL(None, use_errno=True)
    value = ctypes.c_int(0)
    if libc.prctl(pr_get_child_subreaper, ctypes.byref(value), 0, 0, 0) != 0:
        return False
    return value.value != 0
