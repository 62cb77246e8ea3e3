"""Reading dockerd's own command-line flags the way its flag parser (pflag) reads them.

The one scanner of dockerd arguments: which options the user gave after
``--`` (so the agent does not give them twice) and their values (the
sockets, paths and TLS files dockerd will use). pflag accepts ``--name
value``, ``--name=value`` and, for one-letter options, ``-H value``,
``-Hvalue`` and ``-H=value``. A leaf module: it imports nothing of ours, so
configuration and the dockerd component can both use it.
"""

from __future__ import annotations

from collections.abc import Sequence


def _value_of(arg: str, following: str | None, name: str) -> tuple[bool, str | None]:
    """(matched, value) for one argument against one option name."""
    if arg == name:
        return True, following
    if arg.startswith(name + "="):
        return True, arg.split("=", 1)[1]
    if len(name) == 2 and name.startswith("-") and arg.startswith(name) and len(arg) > 2:
        return True, arg[2:]
    return False, None


def option_values(args: Sequence[str], *names: str) -> list[str]:
    """Every value given for an option known by any of ``names``, in order."""
    values: list[str] = []
    for index, arg in enumerate(args):
        following = args[index + 1] if index + 1 < len(args) else None
        for name in names:
            matched, value = _value_of(arg, following, name)
            if matched:
                if value is not None:
                    values.append(value)
                break
    return values


def user_sets(args: Sequence[str], *names: str) -> bool:
    """Whether any of ``names`` appears, in any form pflag accepts (value or not)."""
    return any(_value_of(arg, None, name)[0] for arg in args for name in names)


def last_value(args: Sequence[str], *names: str) -> str | None:
    """The value dockerd will use for an option given more than once: the last."""
    values = option_values(args, *names)
    return values[-1] if values else None
