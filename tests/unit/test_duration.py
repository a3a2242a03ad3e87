"""Tests for edge_provision.duration: the one Go-duration grammar (+ d, + bare seconds)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_provision.duration import (
    MAX_GO_TEXT,
    MAX_NS,
    MAX_TEXT,
    NS_PER_S,
    format_duration,
    parse_duration,
)

S = NS_PER_S


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2400h", 2400 * 3600 * S),
        ("90s", 90 * S),
        ("1h30m", 5400 * S),
        ("1.5h", 5400 * S),
        ("2h45m30.5s", 9930 * S + S // 2),
        ("500ms", S // 2),
        ("1ns", 1),
        ("1500us", 1_500_000),
        ("2000\u00b5s", 2_000_000),
        ("2000\u03bcs", 2_000_000),
        (".5m", 30 * S),
        ("1.s", S),
        ("+10s", 10 * S),
        ("0", 0),
        ("-0", 0),
        ("0s", 0),
        ("1s1s", 2 * S),
        (MAX_GO_TEXT, MAX_NS),
    ],
)
def test_go_syntax_is_read_exactly_and_go_accepts_it(text: str, ns: int) -> None:
    """Every form Go's time.ParseDuration accepts gives the exact nanoseconds, no Go problem."""
    duration = parse_duration(text)
    assert duration.ns == ns
    assert duration.go_problem is None
    assert duration.text == text


@pytest.mark.parametrize(
    ("text", "ns", "go_problem"),
    [
        ("7d", 7 * 86400 * S, 'the unit "d"'),
        ("1d12h", 36 * 3600 * S, 'the unit "d"'),
        ("90", 90 * S, "a number without a unit"),
        ("1.5", S + S // 2, "a number without a unit"),
        (".25", S // 4, "a number without a unit"),
        (" 8760h ", 8760 * 3600 * S, "spaces around the value"),
    ],
)
def test_extensions_are_read_and_say_why_go_refuses_them(
    text: str, ns: int, go_problem: str
) -> None:
    """``d``, bare seconds and surrounding spaces are accepted, marked as not Go."""
    duration = parse_duration(text)
    assert duration.ns == ns
    assert duration.go_problem == go_problem


def test_fractions_are_exact_and_truncated_per_term_like_go() -> None:
    """0.1s + 0.2s is exactly 300ms (no float drift); a fraction of a nanosecond is dropped."""
    assert parse_duration("0.1s0.2s").ns == 300_000_000
    assert parse_duration("1.9ns").ns == 1
    assert parse_duration("0.000000001s").ns == 1
    assert parse_duration("0.0000000019s").ns == 1
    assert parse_duration("1.000000001h").ns == 3600 * S + 3600


def test_no_upper_limit_in_the_grammar_itself() -> None:
    """Values beyond Go's int64 are parsed exactly; each caller applies its own maximum."""
    assert parse_duration("100000000h").ns == 100_000_000 * 3600 * S > MAX_NS


def test_whole_seconds_round_up_and_seconds_are_floats() -> None:
    """whole_seconds rounds up (any positive duration is >= 1 s); seconds is a float."""
    assert parse_duration("1ns").whole_seconds == 1
    assert parse_duration("3000ms").whole_seconds == 3
    assert parse_duration("3001ms").whole_seconds == 4
    assert parse_duration("0").whole_seconds == 0
    assert parse_duration("500ms").seconds == 0.5


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty duration"),
        ("   ", "empty duration"),
        ("+", "a number is missing"),
        ("-1h", 'negative duration "-1h"'),
        ("-5", "negative duration"),
        ("10 days", 'unknown unit " days"'),
        ("1H", 'unknown unit "H"'),
        ("1h30", "no unit after 30"),
        ("1.2.3s", "no unit after 1.2"),
        ("h", 'no number before "h"'),
        (".s", 'no number before "s"'),
        ("abc", 'no number before "abc"'),
        ("1e3", 'unknown unit "e"'),
        ("\u0663s", 'no number before "\u0663s"'),  # Arabic-Indic digit three
        ("1" * (MAX_TEXT + 1) + "s", f"at most {MAX_TEXT}"),
    ],
)
def test_invalid_text_says_what_is_wrong_and_what_is_expected(text: str, fragment: str) -> None:
    """Each bad text raises ValueError naming the fault and showing the expected form."""
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert fragment in str(info.value)
    assert 'expected a duration like "2400h" or "90s"' in str(info.value)


def test_non_text_is_refused() -> None:
    """A number object is not duration text (callers convert numbers themselves)."""
    with pytest.raises(ValueError, match="got int"):
        parse_duration(90)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ns", "text", "go_text"),
    [
        (0, "0s", "0s"),
        (7 * 86400 * S, "7d", "168h"),
        (5400 * S, "1h30m", "1h30m"),
        (S // 10, "100ms", "100ms"),
        (S + 1, "1s1ns", "1s1ns"),
        (365 * 86400 * S, "365d", "8760h"),
    ],
)
def test_format_duration_is_compact(ns: int, text: str, go_text: str) -> None:
    """Durations are written with the largest units first, without zero parts."""
    assert format_duration(ns) == text
    assert format_duration(ns, days=False) == go_text


@given(st.integers(min_value=0, max_value=MAX_NS))
def test_format_then_parse_gives_the_same_nanoseconds(ns: int) -> None:
    """format_duration's output parses back exactly; without days Go accepts it too."""
    assert parse_duration(format_duration(ns)).ns == ns
    go = parse_duration(format_duration(ns, days=False))
    assert go.ns == ns
    assert go.go_problem is None
