"""The ``dind-supervisor`` executable's first instructions.

As a container's PID 1 this process forks the agent before importing
anything else (argparse, the configuration, logging): PID 1 then lives on
as the tiny reaper of ``init.py`` holding only the interpreter, about 10 MB,
while the agent parses the command line, validates the configuration (exit
2 through PID 1 on errors) and runs. In every other case it is ``cli.main``.
"""

from __future__ import annotations

import os
import sys

_OTHER_COMMANDS = ("certs", "status", "wait", "check", "version", "-h", "--help")


def is_run(argv: list[str]) -> bool:
    """``run`` is the default command: anything but another command's name means run."""
    return not argv or argv[0] == "run" or argv[0] not in _OTHER_COMMANDS


def main() -> int:
    argv = sys.argv[1:]
    if os.getpid() == 1 and is_run(argv):
        from supervisor import init

        def agent() -> int:
            from supervisor import cli

            return cli.main(argv, under_init=True)

        return init.run(agent)
    from supervisor import cli

    return cli.main(argv)
