"""Capped exponential backoff with full jitter: tables and properties."""

from __future__ import annotations

import dataclasses
import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_provision.agent.backoff import Backoff, backoff_ceiling_s, backoff_delay_s


class _Fixed:
    """An rng whose uniform() returns a fixed fraction of the range (or a value off it)."""

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction
        self.calls: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.calls.append((a, b))
        return a + (b - a) * self.fraction


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(0, 2.0), (1, 4.0), (2, 8.0), (3, 16.0), (6, 128.0), (7, 256.0), (8, 300.0), (50, 300.0)],
)
def test_ceiling_doubles_until_the_cap(attempt: int, ceiling: float) -> None:
    """The ceiling is initial * 2**attempt, capped (defaults: 2 s initial, 5 min cap)."""
    assert backoff_ceiling_s(attempt, 2.0, 300.0) == ceiling


def test_delay_is_uniform_between_zero_and_the_ceiling() -> None:
    """Full jitter: rng.uniform(0, ceiling), nothing added, nothing floored."""
    rng = _Fixed(1.0)
    assert backoff_delay_s(3, 0.5, 60.0, rng) == 4.0
    assert rng.calls == [(0.0, 4.0)]
    assert backoff_delay_s(3, 0.5, 60.0, _Fixed(0.0)) == 0.0
    assert backoff_delay_s(3, 0.5, 60.0, _Fixed(0.25)) == 1.0


def test_delay_is_clamped_when_the_rng_rounds_past_its_bounds() -> None:
    """uniform() may return a hair outside [a, b]; the delay stays inside."""
    assert backoff_delay_s(0, 1.0, 10.0, _Fixed(1.0000001)) == 1.0
    assert backoff_delay_s(0, 1.0, 10.0, _Fixed(-0.0000001)) == 0.0


def test_huge_attempt_numbers_do_not_overflow() -> None:
    """Retrying forever means attempt numbers far past 1024: still the cap."""
    assert backoff_ceiling_s(10**6, 2.0, 300.0) == 300.0
    assert backoff_delay_s(10**9, 2.0, 300.0, _Fixed(1.0)) == 300.0


@pytest.mark.parametrize(
    ("attempt", "initial", "cap"),
    [(-1, 1.0, 1.0), (0, -1.0, 1.0), (0, 1.0, -2.0), (0, float("inf"), 1.0),
     (0, 1.0, float("nan"))],
)
def test_bad_parameters_are_refused(attempt: int, initial: float, cap: float) -> None:
    """Negative attempts and negative or non-finite durations raise ValueError."""
    with pytest.raises(ValueError, match="backoff"):
        backoff_ceiling_s(attempt, initial, cap)


def test_backoff_value_object() -> None:
    """Backoff bundles the two settings, is frozen and checks them at construction."""
    policy = Backoff(initial_s=0.2, cap_s=1.0)
    assert [policy.ceiling_s(a) for a in range(4)] == [0.2, 0.4, 0.8, 1.0]
    assert policy.delay_s(5, _Fixed(0.5)) == 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.cap_s = 3.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="cap"):
        Backoff(initial_s=1.0, cap_s=-1.0)


@given(
    attempt=st.integers(min_value=0, max_value=5000),
    initial=st.floats(min_value=0.001, max_value=1000.0),
    cap=st.floats(min_value=0.01, max_value=100000.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_delay_never_negative_and_never_above_cap(
    attempt: int, initial: float, cap: float, seed: int
) -> None:
    """Property: 0 <= delay <= ceiling <= cap, for any attempt, settings and seed."""
    delay = backoff_delay_s(attempt, initial, cap, random.Random(seed))
    assert 0.0 <= delay <= backoff_ceiling_s(attempt, initial, cap) <= cap


@given(
    attempt=st.integers(min_value=0, max_value=2000),
    initial=st.floats(min_value=0.001, max_value=1000.0),
    cap=st.floats(min_value=0.01, max_value=100000.0),
)
def test_ceiling_never_shrinks(attempt: int, initial: float, cap: float) -> None:
    """Property: the ceiling (twice the expected delay) is non-decreasing in the attempt."""
    assert backoff_ceiling_s(attempt + 1, initial, cap) >= backoff_ceiling_s(attempt, initial, cap)


def test_delay_grows_in_expectation() -> None:
    """The mean delay doubles per attempt until the cap, and then stays at cap / 2."""
    rng = random.Random(7)
    means = [
        statistics.fmean(backoff_delay_s(a, 1.0, 16.0, rng) for _ in range(4000)) for a in range(7)
    ]
    expected = [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    for mean, want in zip(means, expected):
        assert mean == pytest.approx(want, rel=0.06)
    assert means[0] < means[1] < means[2] < means[3] < means[4]


@given(seed=st.integers(min_value=0, max_value=2**32))
def test_full_jitter_spans_the_whole_range(seed: int) -> None:
    """Property: delays reach both ends of [0, ceiling] (not "equal jitter" from ceiling/2)."""
    rng = random.Random(seed)
    delays = [backoff_delay_s(4, 1.0, 300.0, rng) for _ in range(400)]
    assert min(delays) < 0.1 * 16.0
    assert max(delays) > 0.9 * 16.0
    assert sum(d < 8.0 for d in delays) > 100  # a good share below half the ceiling
