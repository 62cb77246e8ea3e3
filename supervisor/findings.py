"""Findings: what a preflight step saw, how bad it is, and what to do about it.

Preparation, policy and data-root checks each return findings; ``check``
prints them, ``run`` logs them and /status exposes them. This module owns the
value type only, not any check.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Severity(enum.IntEnum):
    """Ordered so that ``max()`` of a list gives the worst finding."""

    OK = 0
    INFO = 1
    WARNING = 2
    ERROR = 3  # dockerd will not work (or not safely) until this is fixed

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One observation: ``topic`` groups it (e.g. ``dataroot``, ``policy``)."""

    topic: str
    severity: Severity
    message: str
    remedy: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "severity": str(self.severity),
            "message": self.message,
            "remedy": self.remedy,
            "data": self.data,
        }
