"""The one duration grammar of edge-provision: Go's ``time.ParseDuration`` plus two extensions.

Every duration setting of the agent and the lab server and the layout's ``[cert].ttl``
are read by :func:`parse_duration`:

* **Go syntax** (what Mainflux's own services accept): an optional sign, then one or more
  decimal numbers each followed by a unit, e.g. ``"2400h"``, ``"1h30m"``, ``"1.5h"``,
  ``".5m"``, ``"500ms"``; units ``ns``, ``us``, ``µs`` (micro sign), ``μs`` (Greek mu),
  ``ms``, ``s``, ``m``, ``h``; ``"0"`` needs no unit.
* **Extension 1**: the unit ``d`` is 24 hours (``"7d"``, ``"1d12h"``).
* **Extension 2**: a bare number is seconds (``"90"``, ``"1.5"``).
* Spaces around the text are ignored; nothing else is (no inner spaces, no upper case).

Arithmetic is exact (integers, no floats): each term is converted to whole nanoseconds,
dropping a fraction of a nanosecond as Go does. Negative durations are refused (``"-0"``
is zero). This module sets no upper limit; callers compare with theirs: settings have a
maximum each, and a layout refuses more than Go's limit :data:`MAX_NS` (an int64 of
nanoseconds, :data:`MAX_GO_TEXT`, about 292 years). Text longer than
:data:`MAX_TEXT` characters is refused before it is parsed.

:attr:`Duration.go_problem` says why Go would refuse a text this grammar accepts, so a
layout can warn that Mainflux's own provision service would refuse the file.

Standard library only; no ``fractions``/``decimal`` (the daemon imports this at start).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "EXPECTED",
    "MAX_GO_TEXT",
    "MAX_NS",
    "MAX_TEXT",
    "NS_PER_S",
    "Duration",
    "format_duration",
    "parse_duration",
]

NS_PER_S = 10**9
MAX_NS = 2**63 - 1
"""Go's limit: ``time.Duration`` is an int64 of nanoseconds."""
MAX_GO_TEXT = "2562047h47m16.854775807s"
""":data:`MAX_NS` as Go writes it."""
MAX_TEXT = 64
"""Longest duration text read (Go's longest valid duration is 21 characters)."""
EXPECTED = (
    'expected a duration like "2400h" or "90s" '
    "(units ns, us, ms, s, m, h, d; a bare number is seconds)"
)

_UNIT_NS = {
    "ns": 1,
    "us": 10**3,
    "\u00b5s": 10**3,  # micro sign, as Go
    "\u03bcs": 10**3,  # Greek small mu, as Go
    "ms": 10**6,
    "s": NS_PER_S,
    "m": 60 * NS_PER_S,
    "h": 3600 * NS_PER_S,
    "d": 86400 * NS_PER_S,
}
_FORMAT_UNITS = ("d", "h", "m", "s", "ms", "us", "ns")
_TERM = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")
_BARE = re.compile(r"([0-9]*)(?:\.([0-9]*))?")


@dataclass(frozen=True)
class Duration:
    """A parsed duration: the text as written and its exact length in nanoseconds."""

    text: str
    ns: int
    go_problem: str | None = None
    """Why Go's ``time.ParseDuration`` would refuse ``text`` (None: Go accepts it)."""

    @property
    def seconds(self) -> float:
        """The length in seconds (a float: exact to the nanosecond up to about 104 days)."""
        return self.ns / NS_PER_S

    @property
    def whole_seconds(self) -> int:
        """The length in whole seconds, rounded up (so any positive duration gives >= 1)."""
        return -(-self.ns // NS_PER_S)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _term_ns(whole: str, fraction: str, unit_ns: int) -> int:
    """``whole.fraction`` units in whole nanoseconds, the fraction truncated as Go does."""
    ns = int(whole or "0") * unit_ns
    if fraction:
        ns += int(fraction) * unit_ns // 10 ** len(fraction)
    return ns


def parse_duration(text: str) -> Duration:
    """Parse ``text`` in the grammar above; :class:`ValueError` says what is wrong and expected."""
    if not isinstance(text, str):
        raise ValueError(f"{EXPECTED}; got {type(text).__name__}")
    body = text.strip()
    if not body:
        raise ValueError(f"empty duration; {EXPECTED}")
    if len(body) > MAX_TEXT:
        raise ValueError(f"duration text is {len(body)} characters long (at most {MAX_TEXT}); "
                         f"{EXPECTED}")
    negative = body[0] == "-"
    rest = body[1:] if body[0] in "+-" else body
    if not rest:
        raise ValueError(f"invalid duration {_quoted(text)}: a number is missing; {EXPECTED}")
    go_problem = "spaces around the value" if body != text else None
    bare = _BARE.fullmatch(rest)
    if bare and (bare.group(1) or bare.group(2)):
        ns = _term_ns(bare.group(1), bare.group(2) or "", NS_PER_S)
        if rest != "0":
            go_problem = "a number without a unit"
    else:
        ns, unit_problem = _terms_ns(rest, text)
        go_problem = go_problem or unit_problem
    if negative and ns:
        raise ValueError(f"negative duration {_quoted(text)}; {EXPECTED}")
    return Duration(text, ns, go_problem)


def _terms_ns(rest: str, text: str) -> tuple[int, str | None]:
    """Sum the ``<number><unit>`` terms of ``rest``; ValueError for anything else."""
    ns = 0
    go_problem = None
    position = 0
    while position < len(rest):
        term = _TERM.match(rest, position)
        assert term is not None  # every group may be empty, so it always matches
        whole, fraction, unit = term.group(1), term.group(2), term.group(3)
        if not whole and not fraction:
            what = f"no number before {_quoted(unit)}" if unit else "a number is missing"
            raise ValueError(f"invalid duration {_quoted(text)}: {what}; {EXPECTED}")
        if unit not in _UNIT_NS:
            number = term.group(0)[: len(term.group(0)) - len(unit)]
            what = f"unknown unit {_quoted(unit)}" if unit else f"no unit after {number}"
            raise ValueError(f"invalid duration {_quoted(text)}: {what}; {EXPECTED}")
        if unit == "d":
            go_problem = 'the unit "d"'
        ns += _term_ns(whole, fraction or "", _UNIT_NS[unit])
        position = term.end()
    return ns, go_problem


def format_duration(ns: int, *, days: bool = True) -> str:
    """Write ``ns`` nanoseconds compactly: ``"7d"``, ``"1h30m"``, ``"100ms"``, ``"0s"``.

    The result parses back to ``ns``. With ``days=False`` it uses no ``d``, so that Go's
    ``time.ParseDuration`` reads it too (``"168h"``).
    """
    if ns == 0:
        return "0s"
    sign, rest = ("-", -ns) if ns < 0 else ("", ns)
    parts = []
    for unit in _FORMAT_UNITS:
        if unit == "d" and not days:
            continue
        count, rest = divmod(rest, _UNIT_NS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return sign + "".join(parts)
