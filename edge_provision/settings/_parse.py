"""Parsing helpers behind :mod:`edge_provision.settings`: values, TOML files, lines.

Private: :mod:`edge_provision.settings` is the public face (it re-exports
:class:`Field` and :func:`parse_duration_s`).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from edge_provision import fileio
from edge_provision.errors import ConfigError, Problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

__all__ = ["Field", "FileDoc", "parse_duration_s", "read_toml", "resolve_one"]

_TRUE = {"1", "t", "true", "yes", "y", "on"}
_FALSE = {"0", "f", "false", "no", "n", "off"}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}

@dataclass(frozen=True)
class Field:
    """How one setting is found, parsed and shown."""

    name: str
    kind: str  # str | int | float | bool | url | path | duration | choice | list
    default: object
    env: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    flag: str | None = None
    secret: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    help: str = ""


def _fmt(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def parse_duration_s(text: str) -> float:
    """Parse ``"90"``, ``"90s"``, ``"5m"``, ``"1h30m"``, ``"2400h"``, ``"500ms"`` to seconds."""
    raw = text.strip()
    m = _DURATION_RE.match(raw)
    if m:
        return float(m.group(1)) * _UNIT_S[m.group(2) or "s"]
    pos = 0
    total = 0.0
    for part in _DURATION_PART_RE.finditer(raw):
        if part.start() != pos:
            break
        total += float(part.group(1)) * _UNIT_S[part.group(2)]
        pos = part.end()
    if pos == 0 or pos != len(raw):
        raise ValueError(
            f'expected a duration like "90s", "5m", "1h30m" or "2400h", got {_fmt(text)}'
        )
    return total


def _convert(spec: Field, raw: object, from_text: bool) -> object:
    """Turn a raw value (env text, or a TOML value) into the field's type; ValueError says why."""
    kind = spec.kind
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and from_text:
            low = raw.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
        raise ValueError(f"expected true or false, got {_fmt(raw)}")
    if kind == "int":
        if isinstance(raw, bool):
            raise ValueError(f"expected an integer, got {_fmt(raw)}")
        if isinstance(raw, int):
            value: float = raw
        elif isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
            value = int(raw.strip())
        else:
            raise ValueError(f"expected an integer, got {_fmt(raw)}")
        _check_range(spec, value)
        return int(value)
    if kind in ("float", "duration"):
        if isinstance(raw, bool):
            raise ValueError(f"expected a number of seconds, got {_fmt(raw)}")
        if isinstance(raw, (int, float)):
            value = float(raw)
        elif isinstance(raw, str):
            if kind == "duration":
                value = parse_duration_s(raw)
            else:
                try:
                    value = float(raw.strip())
                except ValueError:
                    raise ValueError(f"expected a number, got {_fmt(raw)}") from None
        else:
            raise ValueError(f"expected a number of seconds, got {_fmt(raw)}")
        _check_range(spec, value)
        return value
    if kind == "list":
        if isinstance(raw, str):
            parts = [p.strip() for p in raw.split(";")] if from_text else [raw]
            return tuple(p for p in parts if p)
        if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
            return tuple(raw)
        raise ValueError(f"expected a list of strings, got {_fmt(raw)}")
    if not isinstance(raw, str):
        raise ValueError(f"expected a string, got {_fmt(raw)}")
    if kind == "path":
        if not raw.strip():
            raise ValueError("expected a path, got an empty string")
        return Path(raw).expanduser()
    if kind == "url":
        url = urlsplit(raw.strip())
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ValueError(
                f"expected an http(s) URL like http://127.0.0.1:8190, got {_fmt(raw)}"
            )
        return raw.strip().rstrip("/")
    if kind == "choice":
        low = raw.strip().lower()
        if low not in spec.choices:
            raise ValueError(f"expected one of {', '.join(spec.choices)}, got {_fmt(raw)}")
        return low
    return raw


def _check_range(spec: Field, value: float) -> None:
    if spec.minimum is not None and value < spec.minimum:
        raise ValueError(f"must be at least {spec.minimum:g}, got {value:g}")
    if spec.maximum is not None and value > spec.maximum:
        raise ValueError(f"must be at most {spec.maximum:g}, got {value:g}")


def _key_line(text: str, dotted: str) -> int | None:
    """Best-effort line number of ``section.key = ...`` in TOML ``text``."""
    section, _, key = dotted.rpartition(".")
    current = ""
    header = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    assign = re.compile(r"^\s*(\"?)([A-Za-z0-9_\-]+)\1\s*=")
    for lineno, line in enumerate(text.splitlines(), start=1):
        hm = header.match(line)
        if hm:
            current = hm.group(1).replace(" ", "")
            continue
        am = assign.match(line)
        if am and am.group(2) == key and current == section:
            return lineno
    return None


def _lookup(doc: Mapping[str, object], dotted: str) -> tuple[bool, object]:
    node: object = doc
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


class FileDoc:
    """A parsed TOML config file with its text (for line numbers)."""

    def __init__(self, path: Path | None, doc: Mapping[str, object], text: str) -> None:
        self.path = path
        self.doc = doc
        self.text = text

    def where(self, key: str) -> tuple[str, int | None]:
        return (str(self.path) if self.path else "<config>"), _key_line(self.text, key)


def read_toml(path: Path, what: str) -> FileDoc:
    try:
        text = fileio.read_text(path, what)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError(
            Problem(
                f"invalid TOML: {msg}",
                source=str(path),
                line=int(m.group(1)) if m else None,
                column=int(m.group(2)) if m else None,
            )
        ) from None
    return FileDoc(path, doc, text)


def _read_secret_file(path_text: str) -> str:
    try:
        return fileio.read_text(Path(path_text).expanduser(), "secret file").rstrip("\r\n")
    except ValueError as exc:
        raise ValueError(str(exc)) from None



def resolve_one(
    spec: Field,
    flags: Mapping[str, object],
    env: Mapping[str, str],
    filedoc: FileDoc | None,
    problems: list[Problem],
) -> tuple[object, str | None]:
    flag_value = flags.get(spec.name)
    if flag_value is not None and flag_value != ():
        label = f"flag {spec.flag or '--' + spec.name.replace('_', '-')}"
        try:
            raw_flag = str(flag_value) if isinstance(flag_value, Path) else flag_value
            return _convert(spec, raw_flag, True), label
        except ValueError as exc:
            problems.append(Problem(str(exc), source=label))
            return None, label
    for name in spec.env:
        candidates = [(name, False)]
        if spec.secret:
            candidates.append((name + "_FILE", True))
        for var, is_file in candidates:
            raw = env.get(var, "")
            if raw == "":
                continue
            label = f"env {var}"
            try:
                text = _read_secret_file(raw) if is_file else raw
                return _convert(spec, text, True), label
            except ValueError as exc:
                problems.append(Problem(str(exc), source=label))
                return None, label
    if filedoc is not None:
        for key in spec.keys:
            candidates2 = [(key, False)]
            if spec.secret:
                candidates2.append((key + "_file", True))
            for k, is_file in candidates2:
                found, raw_value = _lookup(filedoc.doc, k)
                if not found:
                    continue
                src, line = filedoc.where(k)
                label = f"{src}:{line} {k}" if line else f"{src} {k}"
                if raw_value == "" and spec.kind not in ("str", "list"):
                    return None, None  # upstream writes "" for "unset" everywhere
                try:
                    if is_file:
                        if not isinstance(raw_value, str):
                            raise ValueError(f"expected a path, got {_fmt(raw_value)}")
                        raw_value = _read_secret_file(raw_value)
                    return _convert(spec, raw_value, is_file), label
                except ValueError as exc:
                    problems.append(Problem(str(exc), path=k, source=src, line=line))
                    return None, label
    return None, None


