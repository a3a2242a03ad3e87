"""The one TOML front end: read, parse, find lines, report syntax errors.

The agent's ``config.toml`` (:mod:`edge_provision.settings`) and Mainflux provision
layouts (:mod:`edge_provision.layout`, and the lab server's ``[server]`` keys) are read
here, the same way:

* :func:`load` reads a file as UTF-8 (every way that fails is one clear message) and
  :func:`loads` parses text with ``tomllib`` (``tomli`` below Python 3.11);
* a syntax error becomes one :class:`~edge_provision.errors.Problem` with the source,
  line and column (an error "at end of document" points at the last line), raised as the
  caller's error class (``ConfigError`` for settings, ``LayoutError`` for layouts);
* :class:`LineIndex` maps dotted paths (``server.url``, ``things[1].metadata.type``) to
  line numbers, so that every later problem can name its line too.

Standard library only (plus :mod:`edge_provision.errors` and :mod:`edge_provision.fileio`).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from edge_provision import fileio
from edge_provision.errors import ConfigError, Problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

__all__ = ["LineIndex", "TomlDocument", "load", "loads", "syntax_problem"]

_AT_LINE = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_AT_END = re.compile(r"\s*\(at end of document\)\s*$")
_BARE_OR_QUOTED = r"""(?:[A-Za-z0-9_-]+|"[^"\n]*"|'[^'\n]*')"""
_DOTTED = rf"{_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*"
_HEADER = re.compile(rf"^\s*(\[\[?)\s*({_DOTTED})\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(rf"^\s*({_DOTTED})\s*=")
_PART = re.compile(_BARE_OR_QUOTED)
_LAST_SEGMENT = re.compile(r"(?:\.[^.\[\]]*|\[\d+\])$")


class LineIndex:
    """Best-effort map from dotted paths (``things[1].name``) to line numbers.

    Scans table headers and ``key =`` lines (bare, quoted and dotted keys), skipping the
    inside of multi-line strings; ``[[array]]`` headers are numbered so that the Nth
    ``[[things]]`` maps to ``things[N-1]`` (nested arrays of tables restart with their
    parent). A path not found falls back to its nearest parent
    (``things[1].metadata.x`` -> ``things[1].metadata`` -> ``things[1]`` ...).
    """

    def __init__(self, text: str) -> None:
        self._lines: dict[str, int] = {}
        counts: dict[str, int] = {}
        table = ""
        in_string = ""
        for number, line in enumerate(text.splitlines(), start=1):
            if in_string:
                if line.count(in_string) % 2 == 1:
                    in_string = ""
                continue
            header = _HEADER.match(line)
            if header:
                parts = _split(header.group(2))
                raw = ".".join(parts)
                if header.group(1) == "[[":
                    counts[raw] = counts.get(raw, 0) + 1
                    for key in [k for k in counts if k.startswith(raw + ".")]:
                        del counts[key]
                table = _resolve(parts, counts)
                self._lines.setdefault(table, number)
                continue
            assignment = _KEY.match(line)
            if assignment:
                path = ".".join(p for p in (table, ".".join(_split(assignment.group(1)))) if p)
                self._lines.setdefault(path, number)
                rest = line[assignment.end() :]
                for quote in ('"""', "'''"):
                    if rest.count(quote) % 2 == 1:
                        in_string = quote
                        break

    def line(self, path: str) -> int | None:
        """Line of ``path`` or of its nearest parent found in the text; None if none."""
        while path:
            if path in self._lines:
                return self._lines[path]
            shorter = _LAST_SEGMENT.sub("", path)
            if shorter == path:
                break
            path = shorter
        return None


def _split(dotted: str) -> list[str]:
    """Split a TOML dotted key into its parts, without quotes."""
    return [p[1:-1] if p[:1] in "\"'" else p for p in _PART.findall(dotted)]


def _resolve(parts: list[str], counts: dict[str, int]) -> str:
    """Turn header parts into a path, adding ``[n]`` for arrays of tables."""
    segments = []
    for i, part in enumerate(parts):
        raw = ".".join(parts[: i + 1])
        segment = f"{part}[{counts[raw] - 1}]" if raw in counts else part
        segments.append(segment)
    return ".".join(segments)


@dataclass(frozen=True)
class TomlDocument:
    """A parsed TOML text with where it came from and its line index."""

    doc: dict[str, object]
    text: str
    source: str
    lines: LineIndex

    def line(self, path: str) -> int | None:
        """Line of the dotted ``path`` (or its nearest parent); None if not in the text."""
        return self.lines.line(path)


def syntax_problem(exc: ValueError, text: str, source: str) -> Problem:
    """The :class:`Problem` of a TOML syntax error (a ``TOMLDecodeError``) with its place.

    Uses the error's ``msg``/``lineno``/``colno``/``pos`` attributes where the parser has
    them (Python >= 3.14, tomli >= 2.1), else the "(at line L, column C)" suffix.
    """
    message = getattr(exc, "msg", None)
    pos = getattr(exc, "pos", None)
    line: int | None
    column: int | None
    if isinstance(message, str) and isinstance(pos, int):
        at_end = pos >= len(text)
        line, column = getattr(exc, "lineno", None), getattr(exc, "colno", None)
    else:
        message, line, column = str(exc), None, None
        found = _AT_LINE.search(message)
        at_end = found is None and _AT_END.search(message) is not None
        if found:
            line, column = int(found.group(1)), int(found.group(2))
            message = message[: found.start()]
        message = _AT_END.sub("", message)
    if at_end:
        message += " at the end of the file"
        line, column = max(1, len(text.splitlines())), None
    return Problem(
        f"invalid TOML: {message}; fix the syntax there (see https://toml.io)",
        source=source,
        line=line,
        column=column,
    )


def loads(text: str, source: str, error: type[ConfigError] = ConfigError) -> TomlDocument:
    """Parse ``text``; a syntax error raises ``error`` with one located :class:`Problem`."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error([syntax_problem(exc, text, source)]) from None
    return TomlDocument(doc, text, source, LineIndex(text))


def load(path: Path, what: str, error: type[ConfigError] = ConfigError) -> TomlDocument:
    """Read ``path`` as UTF-8 and parse it; ``what`` names the file in messages."""
    try:
        text = fileio.read_text(path, what)
    except ValueError as exc:
        raise error(str(exc)) from None
    return loads(text, str(path), error)
