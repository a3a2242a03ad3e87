"""When each simulated gateway powers on: all at once, or a linear ramp.

A morning rollout is either a power cut ending (every gateway at the same moment,
``ramp_s = 0``) or an installation wave (gateways coming up evenly over ``ramp_s``
seconds: gateway ``i`` of ``n`` at ``i * ramp_s / n``). Offsets are seconds from the
start of the run, in real time (the time scale applies to retry delays only).
"""

from __future__ import annotations

import math

__all__ = ["arrival_offsets"]


def arrival_offsets(count: int, ramp_s: float) -> tuple[float, ...]:
    """The power-on time of each of ``count`` gateways, in seconds from the start."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if not math.isfinite(ramp_s) or ramp_s < 0:
        raise ValueError(f"the ramp must be a finite number of seconds >= 0, got {ramp_s!r}")
    if ramp_s == 0 or count == 0:
        return (0.0,) * count
    step = ramp_s / count
    return tuple(i * step for i in range(count))
