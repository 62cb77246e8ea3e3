"""What the command line asks for, decided before anything heavy is imported.

The image's ENTRYPOINT is ``dind-supervisor run --``, so whatever a user
types after the image name arrives after ``--``. docker:dind's
dockerd-entrypoint.sh gives those words three meanings, and so do we:

- nothing, or a flag first (``IMAGE --debug``): flags for the dockerd the
  agent runs with its own sockets, TLS and paths (``Mode.AGENT``);
- ``dockerd`` first (``IMAGE dockerd --host=unix:///var/run/docker.sock``):
  dockerd with exactly those flags, nothing added, still supervised
  (``Mode.EXACT``), as Actions Runner Controller's sidecar runs it;
- any other word (``IMAGE sh``): that program replaces us as PID 1
  (``Mode.EXEC``), as docker:dind passes it to docker-entrypoint.sh.

Our own commands (``certs``, ``status``, ...) come before ``--``. This
module only classifies; ``entry.py`` acts. Standard library only: it runs
in PID 1 before the fork.
"""

from __future__ import annotations

import enum

COMMANDS = ("run", "certs", "status", "wait", "check", "version")
_HELP = ("-h", "--help")


class Mode(enum.Enum):
    AGENT = "agent"  # the agent adds its sockets, TLS and paths to the user's flags
    EXACT = "exact"  # `dockerd ARGS`: exactly ARGS, supervised
    EXEC = "exec"  # another program replaces us
    COMMAND = "command"  # one of our other commands (certs, status, ...), or help


class Invocation:
    """A value: which mode, our words, the rest.

    A plain class where the package's value objects are dataclasses: PID 1 imports this
    module and lives on, and ``dataclasses`` (with ``inspect``, ``ast``, ``re``...) would
    stay resident there, about 2 MB, and run before the fork.
    """

    __slots__ = ("mode", "own", "rest")

    def __init__(self, *, mode: Mode, own: tuple[str, ...], rest: tuple[str, ...]) -> None:
        self.mode = mode
        self.own = own  # our command and its options (before `--`), `run` made explicit
        self.rest = rest  # dockerd's arguments, or the program to exec with its arguments

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Invocation):
            return NotImplemented
        return (self.mode, self.own, self.rest) == (other.mode, other.own, other.rest)

    def __hash__(self) -> int:
        return hash((self.mode, self.own, self.rest))

    def __repr__(self) -> str:
        return f"Invocation(mode={self.mode}, own={self.own!r}, rest={self.rest!r})"


def classify(argv: list[str] | tuple[str, ...]) -> Invocation:
    """Read ``sys.argv[1:]``: ``run`` is the default command."""
    args = list(argv)
    if "--" in args:
        index = args.index("--")
        own, rest = args[:index], args[index + 1 :]
    else:
        own, rest = args, []
    if not own or (own[0] not in COMMANDS and own[0] not in _HELP):
        own = ["run", *own]
    if own[0] != "run":
        return Invocation(mode=Mode.COMMAND, own=tuple(own), rest=tuple(rest))
    if not rest or rest[0].startswith("-"):
        return Invocation(mode=Mode.AGENT, own=tuple(own), rest=tuple(rest))
    if rest[0] == "dockerd":
        return Invocation(mode=Mode.EXACT, own=tuple(own), rest=tuple(rest[1:]))
    return Invocation(mode=Mode.EXEC, own=tuple(own), rest=tuple(rest))
