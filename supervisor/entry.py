"""The ``dind-supervisor`` executable's first instructions.

The command line is classified first (``invocation.classify``, standard
library only): another program asked for after ``--`` is exec'd at once, as
docker:dind does. As a container's PID 1 the ``run`` command then forks the
agent before importing anything else (argparse, the configuration, logging):
PID 1 lives on as the tiny reaper of ``init.py`` holding only the
interpreter, about 10 MB, while the agent parses the command line, validates
the configuration (exit 2 through PID 1 on errors) and runs. In every other
case it is ``cli.main``.
"""

from __future__ import annotations

import os
import sys

from supervisor.invocation import Mode, classify


def main() -> int:
    invocation = classify(sys.argv[1:])
    if invocation.mode is Mode.EXEC:
        from supervisor.passthrough import exec_program

        exec_program(list(invocation.rest))
    if os.getpid() == 1 and invocation.mode in (Mode.AGENT, Mode.EXACT):
        from supervisor import init

        def agent() -> int:
            from supervisor import cli

            return cli.main_invocation(invocation, under_init=True)

        return init.run(agent)
    if os.getpid() == 1:
        # `certs`, `check`, ... as PID 1: a short-lived command that ^C should stop.
        import signal

        from supervisor.init import WOKEN

        signal.pthread_sigmask(signal.SIG_UNBLOCK, WOKEN)
    from supervisor import cli

    return cli.main_invocation(invocation)
