"""How one setting is declared, converted and found: :class:`Field`, :class:`FieldKind`.

Private to :mod:`edge_provision.settings` (which re-exports :class:`Field` and
:class:`FieldKind`). Each kind has one converter in :data:`_CONVERTERS`; a converter
turns a raw value (text from a flag, the environment or a secret file, or a TOML value)
into the field's type, or raises :class:`ValueError` saying what was expected. Number
and duration kinds check the field's bounds there, so a bad value is a
:class:`~edge_provision.errors.ConfigError` naming its source at load time.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from edge_provision import fileio
from edge_provision.duration import NS_PER_S, format_duration, parse_duration
from edge_provision.errors import Problem
from edge_provision.tomlfile import TomlDocument

__all__ = ["Field", "FieldKind", "resolve_one"]

_TRUE = {"1", "t", "true", "yes", "y", "on"}
_FALSE = {"0", "f", "false", "no", "n", "off"}
_MAX_FILE_MODE = 0o777
_INTEGER = re.compile(r"-?[0-9]{1,4000}")  # int() refuses more than 4300 digits


class FieldKind(enum.Enum):
    """The type of a setting and so how its raw value is read."""

    STR = "str"
    INT = "int"
    FLOAT = "float"
    """A number (of seconds, bytes ...); TOML numbers or decimal text."""
    BOOL = "bool"
    URL = "url"
    PATH = "path"
    DURATION = "duration"
    """Seconds, read with the duration grammar of :mod:`edge_provision.duration`."""
    CHOICE = "choice"
    LIST = "list"
    FILE_MODE = "file_mode"
    """An octal permission mode written as text (``"0640"``), read as an int."""


_EMPTY_IS_A_VALUE = frozenset((FieldKind.STR, FieldKind.LIST))


@dataclass(frozen=True)
class Field:
    """How one setting is found, parsed and shown.

    ``minimum``/``maximum`` bound the number kinds (seconds for durations); every
    number and duration setting has both.
    """

    name: str
    kind: FieldKind
    default: object
    env: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    flag: str | None = None
    secret: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    help: str = ""

    def show(self, value: object) -> str:
        """``value`` written as this setting's users write it (``7d``, ``0640``, ``300``)."""
        if self.kind is FieldKind.DURATION and isinstance(value, (int, float)):
            return format_duration(round(value * NS_PER_S))
        if self.kind is FieldKind.FILE_MODE and isinstance(value, int):
            return f"{value:04o}"
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)


def _fmt(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _check_range(spec: Field, value: float, shown: str) -> None:
    """ValueError naming the bound if ``value`` is outside the field's range."""
    if spec.minimum is not None and value < spec.minimum:
        raise ValueError(f"must be at least {spec.show(spec.minimum)}, got {shown}")
    if spec.maximum is not None and value > spec.maximum:
        raise ValueError(f"must be at most {spec.show(spec.maximum)}, got {shown}")


def _to_bool(spec: Field, raw: object, from_text: bool) -> object:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and from_text:
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    raise ValueError(f"expected true or false, got {_fmt(raw)}")


def _to_int(spec: Field, raw: object, from_text: bool) -> object:
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str) and _INTEGER.fullmatch(raw.strip()):
        value = int(raw.strip())
    else:
        raise ValueError(f"expected an integer, got {_fmt(raw)}")
    _check_range(spec, value, str(value))
    return value


def _number(raw: object, what: str) -> float:
    """A finite number from a TOML/flag number or decimal text; ValueError otherwise."""
    value: float | None = None
    try:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            value = float(raw)
        elif isinstance(raw, str):
            value = float(raw.strip())
    except (ValueError, OverflowError):  # not a number; an int beyond a float's range
        value = None
    if value is None or not math.isfinite(value):
        raise ValueError(f"expected {what}, got {_fmt(raw)}")
    return value


def _to_float(spec: Field, raw: object, from_text: bool) -> object:
    value = _number(raw, "a finite number")
    _check_range(spec, value, raw.strip() if isinstance(raw, str) else f"{value:g}")
    return value


def _to_duration(spec: Field, raw: object, from_text: bool) -> object:
    if isinstance(raw, str):
        duration = parse_duration(raw)
        value, shown = duration.ns / NS_PER_S, raw.strip()
    else:
        value = _number(raw, 'a duration like "90s" or a number of seconds')
        shown = f"{value:g}s"
    _check_range(spec, value, shown)
    return value


def _to_list(spec: Field, raw: object, from_text: bool) -> object:
    if isinstance(raw, str):
        parts = [p.strip() for p in raw.split(";")] if from_text else [raw]
        return tuple(p for p in parts if p)
    if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
        return tuple(raw)
    raise ValueError(f"expected a list of strings, got {_fmt(raw)}")


def _text(raw: object) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"expected a string, got {_fmt(raw)}")
    return raw


def _to_str(spec: Field, raw: object, from_text: bool) -> object:
    return _text(raw)


def _to_path(spec: Field, raw: object, from_text: bool) -> object:
    if not _text(raw).strip():
        raise ValueError("expected a path, got an empty string")
    return Path(_text(raw)).expanduser()


def _to_url(spec: Field, raw: object, from_text: bool) -> object:
    text = _text(raw).strip()
    url = urlsplit(text)
    if url.scheme not in ("http", "https") or not url.netloc:
        raise ValueError(f"expected an http(s) URL like http://127.0.0.1:8190, got {_fmt(raw)}")
    return text.rstrip("/")


def _to_choice(spec: Field, raw: object, from_text: bool) -> object:
    low = _text(raw).strip().lower()
    if low not in spec.choices:
        raise ValueError(f"expected one of {', '.join(spec.choices)}, got {_fmt(raw)}")
    return low


def _to_file_mode(spec: Field, raw: object, from_text: bool) -> object:
    """Octal text (``"0640"``, ``"640"``, ``"0o640"``); an int only from a flag.

    A TOML integer is refused: ``mode = 640`` would be decimal (0o1200), not 0640.
    """
    if isinstance(raw, int) and not isinstance(raw, bool) and from_text:
        mode = raw
    elif isinstance(raw, str):
        digits = raw.strip().lower().removeprefix("0o")
        if not digits or len(digits) > 4 or any(c not in "01234567" for c in digits):
            raise ValueError(f'expected an octal file mode like "0640", got {_fmt(raw)}')
        mode = int(digits, 8)
    else:
        raise ValueError(f'expected an octal file mode as a string like "0640", got {_fmt(raw)}')
    if not 0 <= mode <= _MAX_FILE_MODE:
        raise ValueError(f"must be an octal mode from 0000 to 0777, got {_fmt(raw)}")
    return mode


_CONVERTERS: dict[FieldKind, Callable[[Field, object, bool], object]] = {
    FieldKind.STR: _to_str,
    FieldKind.INT: _to_int,
    FieldKind.FLOAT: _to_float,
    FieldKind.BOOL: _to_bool,
    FieldKind.URL: _to_url,
    FieldKind.PATH: _to_path,
    FieldKind.DURATION: _to_duration,
    FieldKind.CHOICE: _to_choice,
    FieldKind.LIST: _to_list,
    FieldKind.FILE_MODE: _to_file_mode,
}


def convert(spec: Field, raw: object, from_text: bool) -> object:
    """Turn a raw value (text, or a TOML value) into the field's type; ValueError says why."""
    return _CONVERTERS[spec.kind](spec, raw, from_text)


def _lookup(doc: Mapping[str, object], dotted: str) -> tuple[bool, object]:
    node: object = doc
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _read_secret_file(path_text: str) -> str:
    return fileio.read_text(Path(path_text).expanduser(), "secret file").rstrip("\r\n")


def _from_flags(
    spec: Field, flags: Mapping[str, object], problems: list[Problem]
) -> tuple[object, str | None]:
    flag_value = flags.get(spec.name)
    if flag_value is None or flag_value == ():
        return None, None
    label = f"flag {spec.flag or '--' + spec.name.replace('_', '-')}"
    try:
        raw_flag = str(flag_value) if isinstance(flag_value, Path) else flag_value
        return convert(spec, raw_flag, True), label
    except ValueError as exc:
        problems.append(Problem(str(exc), source=label))
        return None, label


def _from_env(
    spec: Field, env: Mapping[str, str], problems: list[Problem]
) -> tuple[object, str | None]:
    for name in spec.env:
        for var, is_file in ((name, False), (name + "_FILE", True))[: 2 if spec.secret else 1]:
            raw = env.get(var, "")
            if raw == "":
                continue
            label = f"env {var}"
            try:
                return convert(spec, _read_secret_file(raw) if is_file else raw, True), label
            except ValueError as exc:
                problems.append(Problem(str(exc), source=label))
                return None, label
    return None, None


def _from_file(
    spec: Field, document: TomlDocument, problems: list[Problem]
) -> tuple[object, str | None]:
    for key in spec.keys:
        for k, is_file in ((key, False), (key + "_file", True))[: 2 if spec.secret else 1]:
            found, raw_value = _lookup(document.doc, k)
            if not found:
                continue
            line = document.line(k)
            label = f"{document.source}:{line} {k}" if line else f"{document.source} {k}"
            if raw_value == "" and spec.kind not in _EMPTY_IS_A_VALUE:
                return None, None  # upstream writes "" for "unset" everywhere
            try:
                if is_file:
                    if not isinstance(raw_value, str):
                        raise ValueError(f"expected a path, got {_fmt(raw_value)}")
                    raw_value = _read_secret_file(raw_value)
                return convert(spec, raw_value, is_file), label
            except ValueError as exc:
                problems.append(Problem(str(exc), path=k, source=document.source, line=line))
                return None, label
    return None, None


def resolve_one(
    spec: Field,
    flags: Mapping[str, object],
    env: Mapping[str, str],
    document: TomlDocument | None,
    problems: list[Problem],
) -> tuple[object, str | None]:
    """The value of ``spec`` and its source label, flag > env > file; (None, None) if unset.

    A bad value appends a :class:`Problem` naming its source and returns its label with
    the value None.
    """
    value, source = _from_flags(spec, flags, problems)
    if source is None:
        value, source = _from_env(spec, env, problems)
    if source is None and document is not None:
        value, source = _from_file(spec, document, problems)
    return value, source
