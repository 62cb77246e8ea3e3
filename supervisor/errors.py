"""The agent's error hierarchy: one base, a few precise subclasses with fields.

Every error carries what failed, the values involved and what the user can do
(``remedy``), and the exit code the command line returns for it. Raising and
explaining happen where the failure is found; ``cli.main`` only prints and
exits.
"""

from __future__ import annotations

from typing import ClassVar

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class SupervisorError(Exception):
    """Base of every error the agent reports to its user."""

    exit_code: ClassVar[int] = EXIT_FAILURE

    def __init__(self, message: str, *, remedy: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.remedy = remedy

    def __str__(self) -> str:
        if self.remedy:
            return f"{self.message}; {self.remedy}"
        return self.message


class ConfigError(SupervisorError):
    """A configuration value (file, environment or flag) that cannot be used."""

    exit_code = EXIT_USAGE

    def __init__(
        self,
        *,
        key: str,
        value: object,
        source: str,
        reason: str,
        remedy: str | None = None,
    ) -> None:
        self.key = key
        self.value = value
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {key}={value!r}: {reason}", remedy=remedy)


class PolicyError(SupervisorError):
    """The kernel refused part of the resource policy (strict mode), or it is invalid."""

    exit_code = EXIT_USAGE

    def __init__(
        self,
        message: str,
        *,
        resource: str,
        requested: object,
        limit: object = None,
        cause: str = "",
        remedy: str | None = None,
    ) -> None:
        self.resource = resource
        self.requested = requested
        self.limit = limit
        self.cause = cause
        super().__init__(message, remedy=remedy)


class CertificateError(SupervisorError):
    """A certificate, key or certificate folder that cannot be used as it is."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, path: str, remedy: str | None = None) -> None:
        self.path = path
        super().__init__(message, remedy=remedy)


class DataRootError(SupervisorError):
    """The data root cannot be used (permissions, full disk, unusable filesystem)."""

    exit_code = EXIT_USAGE

    def __init__(
        self, message: str, *, path: str, remedy: str | None = None, no_space: bool = False
    ) -> None:
        self.path = path
        self.no_space = no_space  # a write failed with ENOSPC (or EDQUOT)
        super().__init__(message, remedy=remedy)


class DataRootFullError(DataRootError):
    """The data root's filesystem has too little room to start dockerd on."""

    def __init__(
        self, *, path: str, free_bytes: int, free_inodes: int, min_free: int,
        min_free_inodes: int, shortage: str, remedy: str,
    ) -> None:
        self.free_bytes = free_bytes
        self.free_inodes = free_inodes
        self.min_free = min_free
        self.min_free_inodes = min_free_inodes
        super().__init__(
            f"data root {path} is (nearly) full: {shortage}; dockerd is not started (its"
            " containerd would time out writing its metadata, and nothing else could free it)",
            path=path,
            remedy=remedy,
        )


class DataRootLockedError(DataRootError):
    """Another agent or dockerd holds the data root."""

    def __init__(
        self, *, path: str, holder_pid: int | None, holder_host: str, since: str
    ) -> None:
        self.holder_pid = holder_pid
        self.holder_host = holder_host
        self.since = since
        who = f"pid {holder_pid}" if holder_pid else "an unknown pid"
        super().__init__(
            f"data root {path} is in use by {who} on host {holder_host!r} since {since}",
            path=path,
            remedy="stop that daemon first, or give this one its own --dockerd-data-root"
            " (one daemon per data root: two corrupt it)",
        )


class PreparationError(SupervisorError):
    """A container preparation step (cgroups, mounts, iptables) that dockerd needs failed."""

    def __init__(self, message: str, *, step: str, remedy: str | None = None) -> None:
        self.step = step
        super().__init__(message, remedy=remedy)


class DockerdGaveUp(SupervisorError):
    """dockerd kept failing to start or to stay up; the agent stops trying."""

    def __init__(
        self,
        *,
        failures: int,
        window: float,
        last_error: str | None,
        crashes: bool = False,
        remedy: str | None = None,
    ) -> None:
        self.failures = failures
        self.window = window
        self.last_error = last_error
        self.crashes = crashes
        what = "crashed after becoming ready" if crashes else "failed to start"
        detail = f": last error from dockerd: {last_error}" if last_error else ""
        super().__init__(
            f"dockerd {what} {failures} times within {window:g} s, giving up{detail}",
            remedy=remedy or "fix the cause above (dockerd flags after --, the data root, the"
            " host's kernel features) and start again",
        )


class DockerdRefusedConfiguration(SupervisorError):
    """dockerd exited at its start naming its flags or daemon.json: no restart can help."""

    exit_code = EXIT_USAGE

    def __init__(self, *, line: str, cause: str | None, remedy: str | None) -> None:
        self.line = line
        self.cause = cause
        detail = f" ({cause})" if cause else ""
        super().__init__(
            f'dockerd refused its configuration and exited: "{line}"{detail}; not restarting'
            " it, since a restart reads the same configuration",
            remedy=remedy or "correct dockerd's arguments (after --) or its daemon.json",
        )


class RootlessPrerequisiteError(SupervisorError):
    """Rootless mode cannot start: one of its prerequisites (rootlesskit, subuid entries,
    user namespaces, writable folders) is missing."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, prerequisite: str, found: str, remedy: str) -> None:
        self.prerequisite = prerequisite
        self.found = found
        super().__init__(f"rootless mode: {message}", remedy=remedy)


def unwrap(exc: BaseException) -> BaseException:
    """The one error inside task-group wrappers, so that it is reported as itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def describe(exc: BaseException) -> str:
    """``Type: message`` of the real cause; several causes (a group) are all named."""
    exc = unwrap(exc)
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"
