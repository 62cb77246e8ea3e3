"""The exec wrapper that gives dockerd its rlimits, oom_score_adj and sockets before its first
instruction.

Run as ``python -I -S -c <this file's text> process=NAME mode=MODE [rlimit=N:SOFT:HARD]...
[oom_score_adj=V] [unset=VAR]... [listen=FD[:NAME]]... -- PROGRAM ARGS...``: it sets
the values on itself, then execs PROGRAM, which (with its children: containerd,
shims, containers) inherits them. ``listen=`` descriptors (the agent's held
sockets) are moved to fds 3.. and announced with LISTEN_FDS, LISTEN_PID (the
pid PROGRAM will have: exec keeps it) and LISTEN_FDNAMES, the way systemd
activates a service. Every signal is unblocked: the agent may spawn while its
own signals are still held. Owns only that; supervisor.policy decides the
values and builds the command line (wrap_argv). Self-contained on purpose:
under -I -S it sees no site-packages, so it imports nothing but the standard
library's builtins.

A refusal is printed on stderr as one line starting with PREFIX, which
supervisor.policy.explain recognises in dockerd's output. best-effort goes on
and execs; strict exits EXIT_REFUSED without running PROGRAM.
"""

from __future__ import annotations

import fcntl as _fcntl
import os
import resource
import sys

# `signal` imports enum, functools and collections: about 9 ms of a 15 ms start
# here. `_signal` is built in and already loaded; mypy reads the typed module.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
else:
    import _signal

PREFIX = "dind-supervisor policy: "
EXIT_REFUSED = 2
EXIT_CANNOT_RUN = 126
EXIT_NOT_FOUND = 127
RLIMIT_CONSTANTS = (
    "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CORE", "RLIMIT_RSS",
    "RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_MEMLOCK", "RLIMIT_AS", "RLIMIT_LOCKS",
    "RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_RTPRIO", "RLIMIT_RTTIME",
)  # fmt: skip


def _say(text: str) -> None:
    print(PREFIX + text, file=sys.stderr, flush=True)


def _value(text: str) -> int:
    return resource.RLIM_INFINITY if text == "unlimited" else int(text)


def _refused(what: str, process: str, error: OSError, strict: bool) -> None:
    outcome = "not starting it (strict mode)" if strict else "continuing (best-effort)"
    reason = f"{error.strerror or error} (errno {error.errno})"
    _say(f"refused: cannot set {what} of {process}: {reason}; {outcome}")


def _activate(listen: list[tuple[int, str]]) -> None:
    """Move the sockets to 3.. (out of each other's way first) and announce them."""
    high = [(_fcntl.fcntl(fd, _fcntl.F_DUPFD_CLOEXEC, 256), name) for fd, name in listen]
    for fd, _name in listen:
        if fd >= 3 + len(listen):
            os.close(fd)
    for index, (fd, _name) in enumerate(high):
        os.dup2(fd, 3 + index)  # the copy at 3.. is inheritable, the high one is not
        os.close(fd)
    os.environ["LISTEN_FDS"] = str(len(listen))
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.environ["LISTEN_FDNAMES"] = ":".join(name for _fd, name in listen)


def main(args: list[str]) -> int:
    split = args.index("--")
    options, program = args[:split], args[split + 1 :]
    process, strict, refused = "the process", False, False
    listen: list[tuple[int, str]] = []
    for option in options:
        name, _, value = option.partition("=")
        if name == "listen":
            number, _, label = value.partition(":")
            listen.append((int(number), label or "listener"))
        elif name == "process":
            process = value
        elif name == "mode":
            strict = value == "strict"
        elif name == "unset":
            # Python's C-locale coercion (PEP 538) may have added it; the program
            # must see the environment the agent gave, not ours.
            os.environ.pop(value, None)
        elif name == "rlimit":
            number, soft, hard = value.split(":")
            what = f"{RLIMIT_CONSTANTS[int(number)]} (rlimit type {number}) to {soft}:{hard}"
            try:
                resource.prlimit(0, int(number), (_value(soft), _value(hard)))
            except ValueError:  # EINVAL: soft above hard; the plan never asks for it
                _refused(what, process, OSError(22, "Invalid argument"), strict)
                refused = True
            except OSError as error:
                _refused(what, process, error, strict)
                refused = True
        elif name == "oom_score_adj":
            try:
                with open("/proc/self/oom_score_adj", "w") as file:
                    file.write(value)
            except OSError as error:
                _refused(f"oom_score_adj to {value}", process, error, strict)
                refused = True
    if refused and strict:
        return EXIT_REFUSED
    if listen:
        _activate(listen)
    # Python ignores these two; ignored signals survive exec, and dockerd must
    # start with default dispositions as it would without us. A blocked mask
    # survives exec too.
    for signum in (_signal.SIGPIPE, _signal.SIGXFSZ):
        _signal.signal(signum, _signal.SIG_DFL)
    _signal.pthread_sigmask(_signal.SIG_SETMASK, ())
    try:
        os.execvp(program[0], program)  # noqa: S606 - exec without a shell is the point
    except OSError as error:
        _say(f"cannot run {program[0]}: {error.strerror or error}")
        return EXIT_NOT_FOUND if isinstance(error, FileNotFoundError) else EXIT_CANNOT_RUN
    return EXIT_CANNOT_RUN  # not reached: execvp returns only by raising


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
