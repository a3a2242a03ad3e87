"""HTTP messages of the lab server: the ASGI types, one request, one reply, the body reader.

Handlers see a :class:`Request` (method, path, path parameters, headers, query,
body) and return a :class:`Reply` (status, body, content type, extra headers);
:func:`send_reply` writes it in two ASGI messages. Nothing here allocates more
than the request needs: headers and query are parsed on first use.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Mapping, MutableMapping
from typing import Any, Callable, NamedTuple
from urllib.parse import parse_qsl

__all__ = [
    "JSON",
    "ASGIApp",
    "Disconnected",
    "Message",
    "Receive",
    "Reply",
    "Request",
    "Scope",
    "Send",
    "TooLarge",
    "json_reply",
    "read_body",
    "send_reply",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = "application/json"


class Disconnected(Exception):
    """The client went away before its request body arrived (nothing to answer)."""


class TooLarge(Exception):
    """The request body is larger than the limit (declared or streamed)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than {limit} bytes; send a smaller body")
        self.limit = limit


class Reply(NamedTuple):
    """One complete answer: status, body, ``Content-Type`` (None: no body type), headers."""

    status: int
    body: bytes
    content_type: str | None = JSON
    headers: tuple[tuple[str, str], ...] = ()


def json_reply(status: int, body: object, headers: Mapping[str, str] | None = None) -> Reply:
    """``body`` as compact UTF-8 JSON."""
    content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return Reply(status, content, JSON, tuple(headers.items()) if headers else ())


_ENCODED: dict[str, bytes] = {}  # content types seen, encoded once


async def send_reply(send: Send, reply: Reply) -> None:
    """Send ``reply`` (the server drops the body of a HEAD answer)."""
    status, body, content_type, extra = reply
    headers = [(b"content-length", str(len(body)).encode())]
    if content_type is not None:
        encoded = _ENCODED.get(content_type)
        if encoded is None:
            encoded = _ENCODED.setdefault(content_type, content_type.encode("latin-1"))
        headers.append((b"content-type", encoded))
    for name, value in extra:
        headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The request body; :class:`TooLarge` as soon as the declared or streamed size exceeds
    ``limit``, :class:`Disconnected` if the client goes away first."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise Disconnected
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class Request:
    """One HTTP request as a handler sees it."""

    __slots__ = ("_headers", "_query", "_receive", "method", "params", "path", "scope")

    def __init__(self, scope: Scope, receive: Receive, params: Mapping[str, str]) -> None:
        self.scope = scope
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.params = params
        """Path parameters by name (``{external_id}`` of the route's template)."""
        self._receive = receive
        self._headers: dict[bytes, bytes] | None = None
        self._query: dict[str, str] | None = None

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lower case), or None."""
        if self._headers is None:
            # reversed: the first occurrence of a repeated header wins
            self._headers = dict(reversed(self.scope["headers"]))
        value = self._headers.get(name.encode("latin-1"))
        return None if value is None else value.decode("latin-1")

    @property
    def authorization(self) -> str | None:
        """The ``Authorization`` header."""
        return self.header("authorization")

    def query(self, name: str) -> str | None:
        """Query parameter ``name`` (percent-decoded; the last one wins; blank kept)."""
        if self._query is None:
            raw = self.scope.get("query_string", b"").decode("latin-1")
            self._query = dict(parse_qsl(raw, keep_blank_values=True))
        return self._query.get(name)

    async def body(self, limit: int) -> bytes:
        """The whole body, at most ``limit`` bytes (see :func:`read_body`)."""
        return await read_body(self._receive, self.header("content-length"), limit)
