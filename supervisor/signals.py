"""The agent's signals: one pure table of what each means, and the part that receives them.

PID 1 forwards TERM, INT, QUIT, HUP, USR1 and USR2 to the agent. They stay
blocked in the agent (a forked child inherits PID 1's mask) until the
receiver is installed, then ``SignalReceiver`` unblocks them: one that
arrived during start-up is delivered then, none is lost.
"""

from __future__ import annotations

import enum
import signal
from collections.abc import Callable, Mapping

import anyio
from anyio.abc import TaskStatus

from supervisor.init import HANDLED


class SignalAction(enum.Enum):
    STOP = "stop"  # graceful stop of dockerd, then exit 0
    FORWARD = "forward"  # pass on to dockerd (HUP: reload daemon.json; USR1: stack dump)
    LOG_STATUS = "log_status"


SIGNAL_ACTIONS: Mapping[signal.Signals, SignalAction] = {
    signal.SIGTERM: SignalAction.STOP,
    signal.SIGINT: SignalAction.STOP,
    signal.SIGQUIT: SignalAction.STOP,
    signal.SIGHUP: SignalAction.FORWARD,
    signal.SIGUSR1: SignalAction.FORWARD,
    signal.SIGUSR2: SignalAction.LOG_STATUS,
}


def signal_action(signum: int) -> SignalAction | None:
    try:
        return SIGNAL_ACTIONS.get(signal.Signals(signum))
    except ValueError:
        return None


class SignalReceiver:
    """Receives the signals and hands each to ``handle``; unblocks them once it can."""

    def __init__(self, handle: Callable[[int], None]) -> None:
        self._handle = handle

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with anyio.open_signal_receiver(*SIGNAL_ACTIONS) as signals:
            # Handlers are installed: what waited blocked is delivered now, in order.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
            task_status.started()
            async for signum in signals:
                self._handle(signum)
