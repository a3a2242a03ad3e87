"""Retry delays: capped exponential backoff with full jitter (pure).

After the ``attempt``-th consecutive transient failure (``attempt`` counts from 0) the
daemon waits ``rng.uniform(0, min(cap_s, initial_s * 2**attempt))`` seconds, the "full
jitter" schedule: the ceiling doubles with each failure up to the cap, and the actual
delay is spread uniformly below it, so that a thousand gateways that lost the network in
the same power cut do not come back in step. There is no attempt limit: the caller
retries forever.

The randomness is a parameter (anything with ``uniform(a, b)``, e.g. ``random.Random``),
so the schedule is tested without sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Backoff", "UniformSource", "backoff_ceiling_s", "backoff_delay_s"]

# 2.0 ** 1024 overflows a float; any exponent past this is "the cap" anyway.
_MAX_EXPONENT = 1000


class UniformSource(Protocol):
    """A source of uniform random numbers (``random.Random`` is one)."""

    def uniform(self, a: float, b: float) -> float:
        """A number N with ``a <= N <= b``."""
        ...


def backoff_ceiling_s(attempt: int, initial_s: float, cap_s: float) -> float:
    """The longest delay after failure ``attempt`` (0-based): ``min(cap, initial * 2**attempt)``.

    ``ValueError`` for a negative attempt or a negative/not-finite initial or cap.
    """
    _check(attempt, initial_s, cap_s)
    exponent = min(attempt, _MAX_EXPONENT)
    return min(cap_s, initial_s * 2.0**exponent)


def backoff_delay_s(attempt: int, initial_s: float, cap_s: float, rng: UniformSource) -> float:
    """A full-jitter delay after failure number ``attempt``: uniform in [0, ceiling]."""
    ceiling = backoff_ceiling_s(attempt, initial_s, cap_s)
    delay = rng.uniform(0.0, ceiling)
    # uniform() may round a hair past its bounds; the contract is [0, ceiling]
    return min(max(delay, 0.0), ceiling)


@dataclass(frozen=True)
class Backoff:
    """A backoff schedule: ``initial_s`` first ceiling, ``cap_s`` largest ceiling."""

    initial_s: float
    cap_s: float

    def __post_init__(self) -> None:
        _check(0, self.initial_s, self.cap_s)

    def ceiling_s(self, attempt: int) -> float:
        """See :func:`backoff_ceiling_s`."""
        return backoff_ceiling_s(attempt, self.initial_s, self.cap_s)

    def delay_s(self, attempt: int, rng: UniformSource) -> float:
        """See :func:`backoff_delay_s`."""
        return backoff_delay_s(attempt, self.initial_s, self.cap_s, rng)


def _check(attempt: int, initial_s: float, cap_s: float) -> None:
    if attempt < 0:
        raise ValueError(f"backoff attempt must be >= 0, got {attempt}")
    for name, value in (("initial", initial_s), ("cap", cap_s)):
        if not (0.0 <= value < float("inf")):
            raise ValueError(f"backoff {name} must be a finite number >= 0, got {value!r}")
