"""Why one dockerd process failed: the line that explains it, among all it printed.

Owns ``Diagnosis``: it reads every line of one dockerd process (with the
table of ``failures.py``) and, when the process is gone, names the line that
explains its end (``Failure``), or none. It decides nothing about restarts
and reads no files; the Daemon asks it at each exit and adds what it knows
from outside (a data root found full by statvfs).

How the line is chosen:
- a client's failed TLS handshake and a container's runc error are never
  dockerd's failure (they are counted or decoded elsewhere);
- a line the table marks fatal wins, a specific one (a daemon.json clash, a
  pid file) over a generic one ("failed to start daemon: ...", "timeout
  waiting for containerd"), the first of each kind: later ones tend to be
  consequences;
- before dockerd was ready, an error line the table does not know (or a
  known line that is not fatal) is quoted verbatim, the last one winning;
- a line that says why a generic failure happened ("no space left on
  device", "Failed to GetDriver graph ... driver=bogus") explains it better
  than the generic line, which is kept as ``final_line``;
- once dockerd is ready, what it printed while starting is forgotten
  (warnings that every start prints do not explain a later crash), and only
  fatal lines count from then on: a container's error logged by dockerd
  is not dockerd's.

Some messages span two lines ("... (exit status 4)", "See 'dockerd
--help'."); such a second line is joined to the line before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from supervisor.dockerd import failures
from supervisor.dockerd.failures import Category, Explanation
from supervisor.logs import DockerdLine

# Fatal lines that say only that something failed; a specific line before them says why.
_GENERIC = frozenset({
    "failed_to_start", "storage_driver_not_supported", "containerd_timeout",
    "containerd_no_plugins", "containerd_start", "usage_continuation",
})  # fmt: skip
# Lines that explain a generic failure better than its own line (which kinds they explain).
_EXPLAINS: dict[str, frozenset[Category]] = {
    "no_space": frozenset(Category),
    "storage_driver_unknown": frozenset({Category.STORAGE, Category.UNKNOWN}),
    "overlay_mount": frozenset({Category.STORAGE, Category.UNKNOWN}),
}
_NOT_DOCKERDS = frozenset({Category.CLIENT_HANDSHAKE, Category.RUNTIME})
DISK_FULL_RULE = "disk_full"


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """The line that explains a dockerd's end, and what the table says of it."""

    line: str  # verbatim (a two-line message joined with a newline)
    explanation: Explanation | None  # None: a line the table does not know
    final_line: str | None = None  # dockerd's own last words, when another line explains them

    @property
    def category(self) -> str:
        return self.explanation.category.value if self.explanation else Category.UNKNOWN.value

    @property
    def cause(self) -> str | None:
        return self.explanation.cause if self.explanation else None

    @property
    def remedy(self) -> str | None:
        return self.explanation.remedy if self.explanation else None

    @property
    def permanent(self) -> bool:
        """No restart can fix it: dockerd's flags or daemon.json, which stay as they are."""
        e = self.explanation
        return e is not None and e.fatal and e.category is Category.CONFIG

    def sentence(self) -> str:
        """The line quoted, then its cause: for the give-up message."""
        quoted = f'"{self.line}"'
        return f"{quoted} ({self.cause})" if self.cause else quoted

    def as_status(self) -> dict[str, Any]:
        e = self.explanation
        return {
            "line": self.line,
            "rule": e.rule if e else None,
            "category": self.category,
            "cause": self.cause,
            "remedy": self.remedy,
            "final_line": self.final_line,
        }


def quote(parsed: DockerdLine, text: str) -> str:
    """A line as worth quoting: logrus lines by their message and error field."""
    if not parsed.structured:
        return text.rstrip("\r\n")
    error = parsed.fields.get("error")
    return f"{parsed.message}: {error}" if error else parsed.message


def disk_full(line: str | None, where: str) -> Failure:
    """A failure on a data root that statvfs shows full, whatever dockerd said of it."""
    return Failure(
        line=line or "(dockerd printed no error line)",
        explanation=Explanation(
            rule=DISK_FULL_RULE,
            category=Category.DISK,
            cause=f"the data root's filesystem is full ({where})",
            remedy="free space on it (`docker system prune`, remove unused volumes) or give"
            " it more room; [dataroot] gc_enabled prunes while dockerd runs",
            fatal=True,
        ),
    )


@dataclass(slots=True)
class _Seen:
    line: str
    explanation: Explanation | None
    rank: int


class Diagnosis:
    """The lines of one dockerd process that may explain its end."""

    def __init__(self) -> None:
        self._best: _Seen | None = None
        self._support: dict[str, _Seen] = {}
        self._last: _Seen | None = None  # the last line kept, for a continuation
        self._ready = False

    def ready(self) -> None:
        """dockerd became ready: what it printed while starting explains nothing later."""
        self._ready = True
        self._best = self._last = None
        self._support.clear()

    def add(self, parsed: DockerdLine, text: str) -> Explanation | None:
        """Read one line (``text`` as printed); returns what the table says of it."""
        if failures.is_continuation(text):
            if self._last is not None:
                self._last.line = f"{self._last.line}\n{text}"
            return None
        explanation = failures.explain(parsed)
        self._last = None
        if explanation is not None and explanation.category in _NOT_DOCKERDS:
            return explanation
        line = quote(parsed, text)
        if explanation is not None and explanation.rule in _EXPLAINS:
            self._support.setdefault(explanation.rule, _Seen(line, explanation, 1))
        rank = self._rank(parsed, explanation)
        if rank is None:
            return explanation
        seen = _Seen(line, explanation, rank)
        best = self._best
        if best is None or rank > best.rank or (rank == best.rank and rank < 2):
            self._best = seen
        self._last = seen
        return explanation

    def _rank(self, parsed: DockerdLine, explanation: Explanation | None) -> int | None:
        if explanation is not None and explanation.fatal:
            return 2 if explanation.rule in _GENERIC or (
                explanation.category is Category.UNKNOWN) else 3
        if parsed.structured and parsed.level == "critical":
            return 2  # logrus fatal/panic: dockerd ends with it
        if self._ready:
            return None
        if explanation is not None or parsed.looks_like_error:
            return 1
        return None

    def failure(self, *, disk_full_at: str | None = None) -> Failure | None:
        """The line that explains the end; ``disk_full_at``: statvfs found the data root
        full (a sentence with its figures), which explains any failure not specific."""
        best = self._best
        specific = best is not None and best.rank >= 3
        if not specific:
            category = (best.explanation.category if best and best.explanation
                        else Category.UNKNOWN)
            for rule, explained_kinds in _EXPLAINS.items():
                support = self._support.get(rule)
                if support is not None and category in explained_kinds:
                    return Failure(line=support.line, explanation=support.explanation,
                                   final_line=best.line if best else None)
            if disk_full_at is not None:
                return disk_full(best.line if best else None, disk_full_at)
        if best is None:
            return None
        return Failure(line=best.line, explanation=best.explanation)
