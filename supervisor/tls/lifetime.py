"""When a certificate is due for renewal: pure functions of its validity window.

Owns: the renewal-time rule (a fraction of the lifetime plus a bounded
jitter, as cert-manager and smallstep do) and the per-certificate random
source that makes that jitter stable across restarts. Does not own files,
issuance, or scheduling (rotation.py turns these times into a schedule).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

DEFAULT_FRACTION = 2 / 3
# +-5 % of the lifetime: for a 30-day leaf, renewal falls between day 18.5
# and day 21.5, which spreads a fleet of agents started together (a CI pool)
# without ever renewing in the last quarter of a certificate's life.
DEFAULT_JITTER = 0.05


def check_aware(now: datetime, what: str = "now") -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {now.isoformat()}")


def renewal_time(
    not_before: datetime,
    not_after: datetime,
    *,
    fraction: float = DEFAULT_FRACTION,
    jitter: float = DEFAULT_JITTER,
    rng: random.Random | None = None,
) -> datetime:
    """``not_before + lifetime * (fraction +- jitter)``, clamped to the validity window.

    ``rng`` decides the jitter; None uses the system's randomness. certs.py
    passes ``rng_for_serial(serial)`` so that a certificate's renewal time is
    the same whenever it is computed (restarts do not move it).
    """
    check_aware(not_before, "not_before")
    check_aware(not_after, "not_after")
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be between 0 and 1, got {fraction}")
    if not 0 <= jitter < min(fraction, 1 - fraction):
        raise ValueError(f"jitter must be >= 0 and < min(fraction, 1 - fraction), got {jitter}")
    lifetime = not_after - not_before
    if lifetime <= timedelta(0):
        return not_before
    source = rng if rng is not None else random.SystemRandom()
    offset = source.uniform(-jitter, jitter) if jitter else 0.0
    return not_before + lifetime * (fraction + offset)


def rng_for_serial(serial: int) -> random.Random:
    """A random source seeded by a certificate serial (not for secrets)."""
    return random.Random(serial)  # noqa: S311 - jitter only, no secret


def days_left(not_after: datetime, now: datetime) -> float:
    return (not_after - now).total_seconds() / 86400
