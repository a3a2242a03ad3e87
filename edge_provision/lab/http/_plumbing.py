"""The lab server's HTTP plumbing: request parsing, error answers and the raw fast path."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, MutableMapping
from typing import Callable, NoReturn

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive as StarletteReceive
from starlette.types import Scope as StarletteScope
from starlette.types import Send as StarletteSend

from edge_provision.errors import (
    AlreadyProvisioned,
    CertificateError,
    ConfigError,
    Rejected,
    StoreError,
    Unauthorized,
)
from edge_provision.lab.service import LabService
from edge_provision.metrics import CounterSet

logger = logging.getLogger("edge_provision.lab.http")  # the name it always logged under

MAX_STRING_CHARS = 1024
"""Longest external_id, external_key, name or thing_id accepted."""

_MAX_PAGE_LIMIT = 100
_DEFAULT_PAGE_LIMIT = 10
_JSON = "application/json"
_INTERNAL = b'{"error":"internal error; see server log"}'

_MAPPING_EXAMPLE = '{"external_id": "02:42:ac:11:00:07", "external_key": "secret"}'

Scope = MutableMapping[str, object]
Message = MutableMapping[str, object]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _ApiError(Exception):
    """A request the lab server refuses: status code, message, extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> Response:
    content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return Response(content, status_code=status, media_type=_JSON, headers=headers)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json(status, {"error": message}, headers)


# ------------------------------------------------------------------ request parsing


def _require_json(request: Request) -> None:
    """415 unless the Content-Type is application/json (parameters such as charset allowed)."""
    _check_content_type(request.headers.get("content-type"))


def _check_content_type(value: str | None) -> None:
    if value is None:
        raise _ApiError(415, "missing Content-Type; send 'Content-Type: application/json'")
    if value.split(";", 1)[0].strip().lower() != _JSON:
        raise _ApiError(
            415, f"unsupported Content-Type {value[:100]!r}; send 'Content-Type: application/json'"
        )


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body; 413 as soon as the declared or the streamed size exceeds ``limit``."""
    declared = request.headers.get("content-length")
    too_big = _ApiError(413, f"request body larger than {limit} bytes; send a smaller body")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


class _Disconnected(Exception):
    """The client went away before its request body arrived."""


async def _receive_body(receive: Receive, declared: str | None, limit: int) -> bytes:
    """:func:`_read_body` on the raw ASGI ``receive`` channel."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _ApiError(413, f"request body larger than {limit} bytes; send a smaller body")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise _Disconnected
        chunk = message.get("body", b"")
        assert isinstance(chunk, bytes)
        size += len(chunk)
        if size > limit:
            raise _ApiError(413, f"request body larger than {limit} bytes; send a smaller body")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _parse_object(body: bytes, example: str) -> dict[str, object]:
    """The body as a JSON object, or 400 saying what is wrong with it."""
    if not body.strip():
        raise _ApiError(400, f"request body is empty; send a JSON object like {example}")
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        raise _ApiError(
            400, f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column "
            f"{exc.colno}; send a JSON object like {example}",
        ) from None
    except UnicodeDecodeError:
        raise _ApiError(400, "request body is not UTF-8 text; send UTF-8 encoded JSON") from None
    except (ValueError, RecursionError):
        raise _ApiError(
            400, f"request body is not usable JSON; send a JSON object like {example}"
        ) from None
    if not isinstance(value, dict):
        raise _ApiError(
            400, f"request body must be a JSON object, got {_type_name(value)}; "
            f"send a JSON object like {example}",
        )
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


def _string(obj: dict[str, object], name: str, *, required: bool,
            max_chars: int = MAX_STRING_CHARS) -> str | None:
    """Field ``name`` as a non-empty string (None if optional and absent, null or empty)."""
    value = obj.get(name)
    if value is None or value == "":
        if required:
            state = "missing" if name not in obj else f"empty ({_type_name(value)})"
            raise _ApiError(400, f"field '{name}' is {state}; it is required and must be a "
                                 "non-empty string")  # fmt: skip
        return None
    if not isinstance(value, str):
        raise _ApiError(400, f"field '{name}' must be a string, got {_type_name(value)}")
    if len(value) > max_chars:
        raise _ApiError(400, f"field '{name}' is {len(value)} characters long; "
                             f"at most {max_chars} are accepted")  # fmt: skip
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _ApiError(400, f"field '{name}' contains an invalid \\u escape (a lone "
                             "surrogate); send valid Unicode text") from None  # fmt: skip
    return value


def _required(obj: dict[str, object], name: str, max_chars: int = MAX_STRING_CHARS) -> str:
    value = _string(obj, name, required=True, max_chars=max_chars)
    assert value is not None  # required=True never returns None
    return value


def _page(request: Request) -> tuple[int, int]:
    """``offset`` and ``limit`` query parameters; 400 on anything but small whole numbers."""
    params = request.query_params
    offset = _int_param(params.get("offset"), "offset", 0, 0, 10**12)
    limit = _int_param(params.get("limit"), "limit", _DEFAULT_PAGE_LIMIT, 1, _MAX_PAGE_LIMIT)
    return offset, limit


def _int_param(text: str | None, name: str, default: int, low: int, high: int) -> int:
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 13) or not low <= int(text) <= high:
        raise _ApiError(400, f"query parameter '{name}' must be a whole number from {low} "
                             f"to {high}, got {text[:40]!r}")  # fmt: skip
    return int(text)


def _header(request: Request) -> str | None:
    return request.headers.get("authorization")


# ------------------------------------------------------------- error handling


class _InternalErrors:
    """ASGI middleware: an unexpected exception becomes a logged 500 JSON answer.

    Starlette's own 500 handler re-raises after answering, which makes the
    server log the traceback a second time; this one does not.
    """

    def __init__(self, app: ASGIApp, service: LabService) -> None:
        self._app = app
        self._service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self._app(scope, receive, tracking_send)
        except Exception:
            self._service.internal_errors += 1
            logger.exception("internal error method=%s path=%s", scope.get("method"),
                             scope.get("path"))
            if started:
                raise
            await send({"type": "http.response.start", "status": 500, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_INTERNAL)).encode()),
            ]})
            await send({"type": "http.response.body", "body": _INTERNAL})


_ERROR_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (Unauthorized, 401), (AlreadyProvisioned, 409), (CertificateError, 400),
    (Rejected, 400), (ConfigError, 400), (StoreError, 503),
)


def _error_response(path: str, exc: Exception) -> Response | None:
    """The answer for a refused request or a known service error; None for anything else."""
    if isinstance(exc, _ApiError):
        return _error(exc.status, exc.message, exc.headers)
    status = next((code for cls, code in _ERROR_STATUS if isinstance(exc, cls)), None)
    if status == 401:
        scheme = "Thing" if path.startswith(("/things/bootstrap", "/certs/csr")) else "Bearer"
        return _error(401, str(exc), {"WWW-Authenticate": f'{scheme} realm="edge-provision-lab"'})
    if status == 503:
        logger.error("storage error path=%s error=%s", path, exc)
        return _error(503, "storage unavailable; try again shortly (see the server log)",
                      {"Retry-After": "1"})  # fmt: skip
    return None if status is None else _error(status, str(exc))


def _install_error_handlers(app: FastAPI) -> None:
    async def known_error(request: Request, exc: Exception) -> Response:
        response = _error_response(request.url.path, exc)
        if response is None:  # pragma: no cover - only registered for known classes
            raise exc
        return response

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            message = (f"no such endpoint: {request.method} {request.url.path}; "
                       "see /openapi.json for the API")  # fmt: skip
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            message = f"method {request.method} is not allowed on {request.url.path}; use {allowed}"
        else:
            message = str(exc.detail)
        return _error(exc.status_code, message, dict(exc.headers or {}))

    async def validation_error(request: Request, exc: Exception) -> Response:
        return _error(400, f"invalid request: {exc}")

    known: list[type[Exception]] = [_ApiError, *(cls for cls, _ in _ERROR_STATUS)]
    for exc_class in known:
        app.add_exception_handler(exc_class, known_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)


Endpoint = Callable[[Request], Awaitable[Response]]
RawEndpoint = Callable[[Scope, Receive], Awaitable[tuple[int, bytes]]]
"""A raw hot-path handler: the request in, (status, JSON body) out."""


class _FastPath:
    """Serves the hot device endpoints before FastAPI's middleware stack.

    ``GET``/``HEAD /health`` and ``POST /mapping`` run as raw ASGI handlers
    (headers read from the scope, no Request/Response objects); the two
    bootstrap fetches run the very endpoint functions registered (and
    documented) in FastAPI. Routing, dependency solving and the middleware
    stack are skipped, which more than doubles the request rate. Errors are
    answered as :class:`_InternalErrors` and the exception handlers would.
    """

    _BOOTSTRAP = "/things/bootstrap/"
    _SECURE = "secure/"

    def __init__(self, service: LabService, raw: dict[tuple[object, object], RawEndpoint],
                 bootstrap: Callable[[str, Request], Awaitable[Response]],
                 bootstrap_secure: Callable[[str, Request], Awaitable[Response]]) -> None:
        self._service = service
        self._raw = raw
        self._bootstrap = bootstrap
        self._bootstrap_secure = bootstrap_secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer the request if it is a hot endpoint; False (nothing sent) otherwise."""
        method, path = scope["method"], scope["path"]
        raw = self._raw.get((method, path))
        endpoint = None
        if raw is None:
            if method != "GET" or not isinstance(path, str) or not path.startswith(
                    self._BOOTSTRAP):  # fmt: skip
                return False
            endpoint = self._match_bootstrap(path[len(self._BOOTSTRAP):])
            if endpoint is None:
                return False
        try:
            if raw is not None:
                status, body = await raw(scope, receive)
                await send({"type": "http.response.start", "status": status, "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ]})
                await send({"type": "http.response.body", "body": body})
                return True
            assert endpoint is not None
            response = await endpoint(Request(scope, receive))
        except _Disconnected:
            return True
        except Exception as exc:
            known = _error_response(str(path), exc)
            if known is None:
                self._service.internal_errors += 1
                logger.exception("internal error method=%s path=%s", method, path)
                known = Response(_INTERNAL, status_code=500, media_type=_JSON)
            response = known
        await response(scope, receive, send)
        return True

    def _match_bootstrap(self, rest: str) -> Endpoint | None:
        if rest.startswith(self._SECURE) and "/" not in rest[len(self._SECURE):]:
            external_id, fetch = rest[len(self._SECURE):], self._bootstrap_secure
        elif rest and "/" not in rest:
            external_id, fetch = rest, self._bootstrap
        else:
            return None
        if not external_id:
            return None

        async def endpoint(request: Request) -> Response:
            return await fetch(external_id, request)

        return endpoint


class _LabApp(FastAPI):
    """FastAPI whose hot device endpoints are answered by :class:`_FastPath` first."""

    fast_path: _FastPath | None = None

    counters: CounterSet | None = None

    async def __call__(self, scope: StarletteScope, receive: StarletteReceive,
                       send: StarletteSend) -> None:
        counters = self.counters
        if counters is not None and scope["type"] == "http":
            inner = send

            async def counting_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    counters.inc("http_requests_total", status=str(message["status"]))
                await inner(message)

            send = counting_send
        fast = self.fast_path
        if fast is not None and scope["type"] == "http" and await fast(scope, receive, send):
            return
        await super().__call__(scope, receive, send)


def _mapping_handler(service: LabService, limit: int) -> RawEndpoint:
    """Raw ``POST /mapping``: the same checks, in the same order, as the FastAPI route."""

    async def handle(scope: Scope, receive: Receive) -> tuple[int, bytes]:
        auth = content_type = length = None
        headers = scope["headers"]
        assert isinstance(headers, list)
        for name, value in headers:  # first occurrence wins, as in Starlette
            if name == b"authorization":
                auth = value.decode("latin-1") if auth is None else auth
            elif name == b"content-type":
                content_type = value.decode("latin-1") if content_type is None else content_type
            elif name == b"content-length":
                length = value.decode("latin-1") if length is None else length
        service.check_operator(auth, for_mapping=True)
        _check_content_type(content_type)
        obj = _parse_object(await _receive_body(receive, length, limit), _MAPPING_EXAMPLE)
        return 201, await _provision(service, obj)

    return handle


async def _provision(service: LabService, obj: dict[str, object]) -> bytes:
    """Validate a parsed /mapping body, provision, render the 201 body."""
    external_id = _required(obj, "external_id")
    external_key = _required(obj, "external_key")
    name = _string(obj, "name", required=False)
    body = await service.provision(external_id, external_key, name)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _fail(status: int, message: str) -> NoReturn:
    raise _ApiError(status, message)
