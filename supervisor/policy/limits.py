"""Every Linux resource limit: number, docker name, unit, and how values are written.

Owns the RLIMIT table (type numbers 0..15 as runc prints them in
"error setting rlimit type N"), the value syntax shared by the configuration
and /proc/<pid>/limits, and nothing that touches the kernel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The kernel's RLIM64_INFINITY. Kept as a plain int so that "unlimited"
# compares above every finite limit without special cases; converted to the
# C library's value only where a syscall is made.
INFINITY = 2**64 - 1

# Highest value fs.nr_open accepts (INT_MAX rounded down to a multiple of
# BITS_PER_LONG): no nofile limit can ever exceed it.
NR_OPEN_MAX = 1073741816


@dataclass(frozen=True, slots=True, kw_only=True)
class Rlimit:
    """One resource limit as the kernel numbers it and docker names it."""

    number: int
    name: str  # as in `docker run --ulimit NAME=...`
    unit: str
    label: str  # the row title in /proc/<pid>/limits
    may_be_unlimited: bool = True

    @property
    def constant(self) -> str:
        return f"RLIMIT_{self.name.upper()}"

    def describe(self) -> str:
        """``RLIMIT_NOFILE (rlimit type 7)``: how runc's number reads to a person."""
        return f"{self.constant} (rlimit type {self.number})"


RLIMITS: tuple[Rlimit, ...] = (
    Rlimit(number=0, name="cpu", unit="seconds", label="Max cpu time"),
    Rlimit(number=1, name="fsize", unit="bytes", label="Max file size"),
    Rlimit(number=2, name="data", unit="bytes", label="Max data size"),
    Rlimit(number=3, name="stack", unit="bytes", label="Max stack size"),
    Rlimit(number=4, name="core", unit="bytes", label="Max core file size"),
    Rlimit(number=5, name="rss", unit="bytes", label="Max resident set"),
    Rlimit(number=6, name="nproc", unit="processes", label="Max processes"),
    # The kernel refuses an infinite nofile (EPERM): it is capped by fs.nr_open.
    Rlimit(
        number=7, name="nofile", unit="files", label="Max open files", may_be_unlimited=False
    ),
    Rlimit(number=8, name="memlock", unit="bytes", label="Max locked memory"),
    Rlimit(number=9, name="as", unit="bytes", label="Max address space"),
    Rlimit(number=10, name="locks", unit="locks", label="Max file locks"),
    Rlimit(number=11, name="sigpending", unit="signals", label="Max pending signals"),
    Rlimit(number=12, name="msgqueue", unit="bytes", label="Max msgqueue size"),
    Rlimit(number=13, name="nice", unit="nice ceiling (20 - value)", label="Max nice priority"),
    Rlimit(number=14, name="rtprio", unit="priority", label="Max realtime priority"),
    Rlimit(number=15, name="rttime", unit="microseconds", label="Max realtime timeout"),
)

BY_NAME: dict[str, Rlimit] = {r.name: r for r in RLIMITS}
BY_NUMBER: dict[int, Rlimit] = {r.number: r for r in RLIMITS}
BY_LABEL: dict[str, Rlimit] = {r.label: r for r in RLIMITS}
NOFILE = BY_NAME["nofile"]


def lookup(name_or_number: str | int) -> Rlimit | None:
    """Find a limit by docker name, RLIMIT_ constant, or type number."""
    if isinstance(name_or_number, int):
        return BY_NUMBER.get(name_or_number)
    key = name_or_number.strip().lower()
    key = key.removeprefix("rlimit_")
    if key.isdigit():
        return BY_NUMBER.get(int(key))
    return BY_NAME.get(key)


def parse_value(text: str | int) -> int:
    """One limit value: a number, ``unlimited``/``infinity``, or -1 (docker's unlimited).

    Raises ValueError with a reason a person can act on.
    """
    if isinstance(text, bool):
        raise ValueError("expected a number or 'unlimited', not a boolean")
    if isinstance(text, int):
        number = text
    else:
        word = text.strip().lower()
        if word in ("unlimited", "infinity", "-1"):
            return INFINITY
        if not re.fullmatch(r"\d+", word):
            raise ValueError(f"{text!r} is not a number, -1 or 'unlimited'")
        number = int(word)
    if number == -1:
        return INFINITY
    if number < 0:
        raise ValueError(f"{number} is negative (only -1, meaning unlimited, is allowed)")
    if number >= INFINITY:
        return INFINITY
    return number


def parse_pair(text: str | int) -> tuple[int, int]:
    """``SOFT:HARD`` or a single value used for both, as `docker run --ulimit` takes."""
    if isinstance(text, str) and ":" in text:
        soft_text, _, hard_text = text.partition(":")
        return parse_value(soft_text), parse_value(hard_text)
    value = parse_value(text)
    return value, value


def format_value(value: int) -> str:
    return "unlimited" if value >= INFINITY else str(value)


def format_pair(soft: int, hard: int) -> str:
    return f"{format_value(soft)}:{format_value(hard)}"


_LIMITS_ROW = re.compile(r"^(?P<label>Max [a-z ]+?)\s{2,}(?P<soft>\S+)\s+(?P<hard>\S+)")


def parse_proc_limits(text: str) -> dict[int, tuple[int, int]]:
    """Parse /proc/<pid>/limits into ``{type number: (soft, hard)}``.

    Rows the table does not know (a future kernel's) are skipped, not fatal.
    """
    limits: dict[int, tuple[int, int]] = {}
    for line in text.splitlines():
        match = _LIMITS_ROW.match(line)
        if match is None:
            continue
        rlimit = BY_LABEL.get(match["label"])
        if rlimit is None:
            continue
        try:
            limits[rlimit.number] = (parse_value(match["soft"]), parse_value(match["hard"]))
        except ValueError:
            continue
    return limits
