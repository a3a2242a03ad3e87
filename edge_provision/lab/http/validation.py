"""Checks of what a client sends: Content-Type, JSON bodies, string fields, paging parameters.

Bodies are parsed with :mod:`json` and checked by hand (no model layer on the
hot path); every refusal is a 400 or 415 :class:`~edge_provision.lab.http.errors.ApiError`
that names the field and says what to send.
"""

from __future__ import annotations

import json
import re

from edge_provision.lab.http.errors import ApiError, fail
from edge_provision.lab.http.messages import JSON, Request

__all__ = [
    "CONTROL_CHARS",
    "CONTROL_CHARS_BUT_LINE_BREAKS",
    "DEFAULT_PAGE_LIMIT",
    "DOT_SEGMENTS",
    "KEY_CHARS",
    "MAX_PAGE_LIMIT",
    "MAX_STRING_CHARS",
    "check_external_id",
    "check_external_key",
    "check_json_content_type",
    "optional",
    "optional_whole_number",
    "page",
    "parse_object",
    "required",
]

MAX_STRING_CHARS = 1024
"""Longest external_id, external_key, name or thing_id accepted."""

CONTROL_CHARS = r"\u0000-\u001f\u007f"
"""Control characters refused in ids, keys and names (a regex class body, for the document)."""
CONTROL_CHARS_BUT_LINE_BREAKS = r"\u0000-\u0009\u000b\u000c\u000e-\u001f\u007f"
"""The same, CR and LF allowed (a PEM text)."""
KEY_CHARS = r"!-~\u0080-\u00ff"
"""What an external_key may hold: Latin-1 (a header carries it) without spaces or controls."""
_CONTROL = re.compile(f"[{CONTROL_CHARS}]")
_CONTROL_BUT_LINE_BREAKS = re.compile(f"[{CONTROL_CHARS_BUT_LINE_BREAKS}]")
_NOT_A_KEY_CHAR = re.compile(f"[^{KEY_CHARS}]")
DOT_SEGMENTS = (".", "..")
"""external_ids an HTTP client removes from a path."""

MAX_PAGE_LIMIT = 100
DEFAULT_PAGE_LIMIT = 10
_MAX_OFFSET = 10**12


def check_json_content_type(request: Request) -> None:
    """415 unless the Content-Type is application/json (parameters such as charset allowed)."""
    value = request.header("content-type")
    if value is None:
        fail(415, "missing Content-Type; send 'Content-Type: application/json'")
    if value.split(";", 1)[0].strip().lower() != JSON:
        fail(415, f"unsupported Content-Type {value[:100]!r}; send 'Content-Type: "
                  "application/json'")  # fmt: skip


def parse_object(body: bytes, example: str) -> dict[str, object]:
    """The body as a JSON object, or 400 saying what is wrong with it."""
    if not body.strip():
        fail(400, f"request body is empty; send a JSON object like {example}")
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column "
            f"{exc.colno}; send a JSON object like {example}",
        ) from None
    except UnicodeDecodeError:
        raise ApiError(400, "request body is not UTF-8 text; send UTF-8 encoded JSON") from None
    except (ValueError, RecursionError):
        raise ApiError(
            400, f"request body is not usable JSON; send a JSON object like {example}"
        ) from None
    if not isinstance(value, dict):
        fail(400, f"request body must be a JSON object, got {_type_name(value)}; "
                  f"send a JSON object like {example}")  # fmt: skip
    return value


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def optional(obj: dict[str, object], name: str, max_chars: int = MAX_STRING_CHARS, *,
             line_breaks: bool = False) -> str | None:  # fmt: skip
    """Field ``name`` as a non-empty string; None if absent, null or empty.

    Control characters (U+0000-U+001F, U+007F) are refused; with ``line_breaks``
    (a PEM text) CR and LF are allowed.
    """
    value = obj.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        fail(400, f"field '{name}' must be a string, got {_type_name(value)}")
    if len(value) > max_chars:
        fail(400, f"field '{name}' is {len(value)} characters long; at most {max_chars} "
                  "are accepted")  # fmt: skip
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        fail(400, f"field '{name}' contains an invalid \\u escape (a lone surrogate); "
                  "send valid Unicode text")  # fmt: skip
    control = (_CONTROL_BUT_LINE_BREAKS if line_breaks else _CONTROL).search(value)
    if control is not None:
        allowed = " other than line breaks" if line_breaks else ""
        fail(400, f"field '{name}' contains the control character {_at(control)}; control "
                  f"characters{allowed} (U+0000-U+001F, U+007F) are not accepted")  # fmt: skip
    return value


def optional_whole_number(obj: dict[str, object], name: str, unit: str, *,
                          minimum: int) -> int | None:  # fmt: skip
    """Field ``name`` as a whole number >= ``minimum`` (``5`` or ``5.0``, as JSON Schema's
    integer); None if absent or null."""
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        fail(400, f"field '{name}' must be a whole number of {unit} >= {minimum}, "
                  f"got {value!r:.40}")  # fmt: skip
    return value


def required(obj: dict[str, object], name: str, max_chars: int = MAX_STRING_CHARS, *,
             line_breaks: bool = False) -> str:  # fmt: skip
    """Field ``name`` as a non-empty string; 400 if it is missing or empty."""
    value = optional(obj, name, max_chars, line_breaks=line_breaks)
    if value is None:
        state = "missing" if name not in obj else f"empty ({_type_name(obj[name])})"
        fail(400, f"field '{name}' is {state}; it is required and must be a non-empty string")
    return value


def _at(match: re.Match[str]) -> str:
    """``U+XXXX at position N`` of a character found in a field (never the character)."""
    return f"U+{ord(match.group()):04X} at position {match.start()}"


def check_external_id(value: str) -> None:
    """400 unless a device can fetch ``/things/bootstrap/<value>`` (one path segment)."""
    slash = value.find("/")
    if slash >= 0:
        fail(400, f"field 'external_id' contains '/' at position {slash}; the gateway fetches "
                  "its configuration at /things/bootstrap/<external_id>, one path segment, "
                  "which cannot hold a '/'; choose an external_id without it (a MAC address "
                  "such as 02:42:ac:11:00:07 is usual)")  # fmt: skip
    if value in DOT_SEGMENTS:
        fail(400, f"field 'external_id' is '{value}', a dot segment that HTTP clients remove "
                  "from the path /things/bootstrap/<external_id>; choose another external_id")


def check_external_key(value: str) -> None:
    """400 unless a device can send ``value`` in ``Authorization: Thing <value>``."""
    found = _NOT_A_KEY_CHAR.search(value)  # controls were refused before
    if found is None:
        return
    if found.group() == " ":
        fail(400, f"field 'external_key' contains a space ({_at(found)}); the gateway sends "
                  "its key in the Authorization header ('Thing <external_key>'), where a "
                  "space ends it, so it could never bootstrap; choose a key without spaces")
    fail(400, f"field 'external_key' contains {_at(found)}, outside Latin-1 (U+0000-U+00FF); "
              "the gateway sends its key in the Authorization header, which carries Latin-1 "
              "only, so it could never bootstrap; choose a key of ASCII letters, digits and "
              "punctuation")  # fmt: skip


def page(request: Request) -> tuple[int, int]:
    """``offset`` and ``limit`` query parameters; 400 on anything but small whole numbers."""
    offset = _int_param(request.query("offset"), "offset", 0, 0, _MAX_OFFSET)
    limit = _int_param(request.query("limit"), "limit", DEFAULT_PAGE_LIMIT, 1, MAX_PAGE_LIMIT)
    return offset, limit


def _int_param(text: str | None, name: str, default: int, low: int, high: int) -> int:
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 13) or not low <= int(text) <= high:
        fail(400, f"query parameter '{name}' must be a whole number from {low} to {high}, "
                  f"got {text[:40]!r}")  # fmt: skip
    return int(text)
