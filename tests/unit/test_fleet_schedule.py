"""Arrival patterns and the retry policy of simulated gateways (pure)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_provision.agent.backoff import Backoff
from edge_provision.errors import Rejected, ServiceUnavailable
from edge_provision.fleet.arrival import arrival_offsets
from edge_provision.fleet.retry import RetryPolicy


def test_all_at_once() -> None:
    """A ramp of 0 powers every gateway on at the start."""
    assert arrival_offsets(4, 0) == (0.0, 0.0, 0.0, 0.0)


def test_linear_ramp() -> None:
    """Gateway i of n arrives at i * ramp / n."""
    assert arrival_offsets(4, 2.0) == (0.0, 0.5, 1.0, 1.5)
    assert arrival_offsets(0, 5.0) == ()


@pytest.mark.parametrize("ramp", [-1.0, math.inf, math.nan])
def test_bad_ramp(ramp: float) -> None:
    """A negative or infinite ramp is refused with the value in the message."""
    with pytest.raises(ValueError, match="ramp"):
        arrival_offsets(3, ramp)


@given(failures=st.integers(1, 60), scale=st.floats(0, 10), seed=st.integers(0, 2**32))
def test_delay_is_the_daemons_scaled(failures: int, scale: float, seed: int) -> None:
    """A retry delay is the daemon's full-jitter delay times the time scale, never above it."""
    backoff = Backoff(2.0, 300.0)
    policy = RetryPolicy(backoff, time_scale=scale)
    delay = policy.delay_s(failures, random.Random(seed))
    assert 0 <= delay <= backoff.ceiling_s(failures - 1) * scale
    assert delay == backoff.delay_s(failures - 1, random.Random(seed)) * scale


def test_retry_after_is_honoured_and_scaled() -> None:
    """A server's Retry-After is a floor for the delay (scaled like the rest)."""
    policy = RetryPolicy(Backoff(0.001, 0.001), time_scale=0.5)
    assert policy.delay_s(1, random.Random(1), retry_after_s=4.0) == 2.0


def test_only_transient_errors_are_retried_within_the_limit() -> None:
    """ServiceUnavailable is retried up to max_attempts; a rejection never."""
    policy = RetryPolicy(Backoff(1, 10), max_attempts=3)
    assert policy.should_retry(ServiceUnavailable("down"), 1)
    assert policy.should_retry(ServiceUnavailable("down"), 2)
    assert not policy.should_retry(ServiceUnavailable("down"), 3)
    assert not policy.should_retry(Rejected("no"), 1)


@pytest.mark.parametrize(("scale", "attempts"), [(-1.0, 3), (math.inf, 3), (1.0, 0)])
def test_bad_policy(scale: float, attempts: int) -> None:
    """A negative or infinite scale, or no attempt at all, is refused."""
    with pytest.raises(ValueError):
        RetryPolicy(Backoff(1, 10), time_scale=scale, max_attempts=attempts)
