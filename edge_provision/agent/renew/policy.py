"""When to renew a certificate (pure: standard library and the time helpers, no I/O).

Policy, for a certificate valid from ``not_before`` to ``not_after`` (lifetime ``L``):

1. The base time is ``not_after - renew_before_s`` when ``renew_before_s`` is set;
   otherwise ``not_before + 2/3 L`` (``1/2 L`` when ``L`` is under 10 days, so short
   lab certificates leave room for a few retries).
2. A random jitter in ``[0, jitter_s]`` (default ``min(5% L, 1 h)``) is *subtracted*,
   so that a fleet issued in the same minute does not renew in the same second.
   The randomness comes from the caller's ``rng``; callers seed it with the
   certificate serial (``random.Random(serial)``), so the schedule of one certificate
   is the same after every restart.
3. The result is never later than ``not_after - safety_margin_s`` (default
   ``min(10% L, 1 h)``) and never earlier than ``not_before``. When the margin is
   larger than the lifetime the answer is ``not_before`` (renew at once).

Exactly one number is drawn from ``rng`` per call, whatever the settings, so the
time is monotone in ``renew_before_s`` for equally seeded generators.

What the gateway does next (:func:`next_action`): ``renew`` at the earliest renewal
time of its certificates; without certificates ``check`` its credentials every
:data:`CHECK_INTERVAL`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Optional

from edge_provision.clock import later

__all__ = [
    "CHECK_INTERVAL",
    "SHORT_LIFETIME_S",
    "NextAction",
    "RenewalPolicy",
    "earliest_renewal",
    "next_action",
    "renewal_due",
    "renewal_time",
]

CHECK_INTERVAL = timedelta(hours=24)
"""How often a gateway without certificates checks its credentials."""

SHORT_LIFETIME_S = 10 * 86_400.0
"""Lifetimes under this renew at 1/2 instead of 2/3."""

_MAX_DEFAULT_S = 3_600.0


@dataclass(frozen=True)
class RenewalPolicy:
    """Knobs of the schedule; ``None`` means the documented default."""

    renew_before_s: float | None = None
    jitter_s: float | None = None
    safety_margin_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("renew_before_s", "jitter_s", "safety_margin_s"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _lifetime_s(not_before: datetime, not_after: datetime) -> float:
    return (not_after - not_before).total_seconds()


def renewal_time(
    not_before: datetime, not_after: datetime, policy: RenewalPolicy, rng: random.Random
) -> datetime:
    """The moment to renew a certificate valid from ``not_before`` to ``not_after``."""
    draw = rng.random()  # always exactly one draw (see module docstring)
    lifetime = _lifetime_s(not_before, not_after)
    if lifetime <= 0:
        return not_before
    margin = (
        min(0.1 * lifetime, _MAX_DEFAULT_S)
        if policy.safety_margin_s is None
        else policy.safety_margin_s
    )
    jitter = min(0.05 * lifetime, _MAX_DEFAULT_S) if policy.jitter_s is None else policy.jitter_s
    if policy.renew_before_s is not None:
        offset = lifetime - policy.renew_before_s
    else:
        offset = lifetime * (0.5 if lifetime < SHORT_LIFETIME_S else 2.0 / 3.0)
    offset -= draw * jitter
    offset = min(offset, lifetime - margin)
    offset = max(offset, 0.0)
    return not_before + timedelta(seconds=offset)


def renewal_due(
    not_before: datetime,
    not_after: datetime,
    now: datetime,
    policy: RenewalPolicy,
    rng: random.Random,
) -> bool:
    """Whether ``now`` is at or past :func:`renewal_time`."""
    return now >= renewal_time(not_before, not_after, policy, rng)


def earliest_renewal(
    certificates: Iterable[tuple[str, datetime, datetime]], policy: RenewalPolicy
) -> datetime | None:
    """The earliest renewal time of ``(serial, not_before, not_after)`` triples, or None.

    Each certificate's generator is ``random.Random(serial)``, as every caller does.
    """
    times = [
        renewal_time(nb, na, policy, random.Random(serial))
        for serial, nb, na in certificates
    ]
    return min(times) if times else None


@dataclass(frozen=True)
class NextAction:
    """What to do next and when; ``renewal_at`` is set when that is a renewal."""

    action: str  # "renew" | "check"
    at: datetime
    renewal_at: Optional[datetime] = None


def next_action(
    certificates: Iterable[tuple[str, datetime, datetime]], policy: RenewalPolicy,
    now: datetime,
) -> NextAction:
    """``renew`` at the :func:`earliest_renewal` of ``certificates``, else ``check`` later."""
    when = earliest_renewal(certificates, policy)
    if when is None:
        return NextAction("check", later(now, CHECK_INTERVAL.total_seconds()))
    return NextAction("renew", when, when)
