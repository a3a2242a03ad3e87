"""Checks of what a client sends: Content-Type, JSON bodies, string fields, paging parameters.

Bodies are parsed with :mod:`json` and checked by hand (no model layer on the
hot path); every refusal is a 400 or 415 :class:`~edge_provision.lab.http.errors.ApiError`
that names the field and says what to send.
"""

from __future__ import annotations

import json

from edge_provision.lab.http.errors import ApiError, fail
from edge_provision.lab.http.messages import JSON, Request

__all__ = [
    "DEFAULT_PAGE_LIMIT",
    "MAX_PAGE_LIMIT",
    "MAX_STRING_CHARS",
    "check_json_content_type",
    "optional",
    "page",
    "parse_object",
    "required",
]

MAX_STRING_CHARS = 1024
"""Longest external_id, external_key, name or thing_id accepted."""

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


def optional(obj: dict[str, object], name: str, max_chars: int = MAX_STRING_CHARS) -> str | None:
    """Field ``name`` as a non-empty string; None if absent, null or empty."""
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
    return value


def required(obj: dict[str, object], name: str, max_chars: int = MAX_STRING_CHARS) -> str:
    """Field ``name`` as a non-empty string; 400 if it is missing or empty."""
    value = optional(obj, name, max_chars)
    if value is None:
        state = "missing" if name not in obj else f"empty ({_type_name(obj[name])})"
        fail(400, f"field '{name}' is {state}; it is required and must be a non-empty string")
    return value


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
