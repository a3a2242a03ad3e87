"""What the operator-side clients (Things, Bootstrap configs) share: one authenticated call.

Private to :mod:`edge_provision.platform`. :class:`OperatorCalls` sends one request
with the current user token (an API key, or a login that it renews once when the
platform refuses an expired token), reports every answer to an optional
observer as ``(service, endpoint, status)`` -- ``status`` is the HTTP status, or
``"error"`` when no answer came -- and turns unexpected statuses into the error
classes of :mod:`edge_provision.errors` through :func:`edge_provision.http.error_for_status`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Callable, Generic, Protocol, TypeVar
from urllib.parse import urlencode

from edge_provision.errors import EdgeProvisionError, ProtocolError
from edge_provision.http import (
    AuthScheme,
    Credential,
    HttpClient,
    HttpResponse,
    error_for_status,
    path_segment,
)

__all__ = [
    "ERROR_STATUS", "Observer", "OperatorCalls", "OperatorClient", "Page", "TokenSource",
    "page_of", "query", "seg",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

Observer = Callable[[str, str, str], None]
"""Called with (service, endpoint, status) after every request, e.g. for a metrics counter."""

ERROR_STATUS = "error"
"""The ``status`` an observer sees when no HTTP answer came (connection refused, dropped...)."""

_ANY_STATUS = range(100, 600)
_REFUSED = (401, 403)


class TokenSource(Protocol):
    """Where user tokens come from: a fixed API key, or a login session."""

    def token(self) -> str:
        """The token to send now."""
        ...

    def renew(self, stale: str) -> str | None:
        """A new token after ``stale`` was refused; None if this source cannot renew."""
        ...


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing: ``items`` from ``offset``, at most ``limit``, of ``total``."""

    total: int
    offset: int
    limit: int
    items: tuple[T, ...]


def seg(value: str) -> str:
    """``value`` escaped as one URL path segment (:func:`edge_provision.http.path_segment`)."""
    return path_segment(value, "id")


def query(params: Mapping[str, object]) -> str:
    """``?a=b&...`` of the non-None ``params`` (objects as compact JSON), or ``""``."""
    pairs = []
    for name, value in params.items():
        if value is None:
            continue
        text = json.dumps(value, separators=(",", ":")) if isinstance(value, dict) else str(value)
        pairs.append((name, text))
    return "?" + urlencode(pairs) if pairs else ""


def _int(data: Mapping[str, object], name: str, where: str) -> int:
    value = data.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"{where}: {name!r} must be an integer")
    return value


def page_of(response: HttpResponse, list_name: str,
            parse: Callable[[object, str], T]) -> Page[T]:
    """Read ``{total, offset, limit, <list_name>: [...]}``."""
    where = f"{response.url} reply"
    data = response.json_object()
    raw = data.get(list_name)
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise ProtocolError(f"{where}: {list_name!r} is not a list")
    return Page(
        total=_int(data, "total", where),
        offset=_int(data, "offset", where),
        limit=_int(data, "limit", where),
        items=tuple(parse(item, f"{where}.{list_name}[{n}]") for n, item in enumerate(raw)),
    )


class OperatorCalls:
    """Authenticated, observed requests to one operator-side service."""

    def __init__(self, http: HttpClient, service: str, tokens: TokenSource, *,
                 auth_scheme: AuthScheme = AuthScheme.AUTO,
                 observer: Observer | None = None) -> None:
        self.http = http
        self.service = service
        self._tokens = tokens
        self._scheme = auth_scheme
        self._observer = observer

    def call(self, method: str, path: str, endpoint: str, *, json_body: object = None,
             expected: Collection[int] = (200,)) -> HttpResponse:
        """Send one request (again once with a renewed token if the token was refused).

        ``endpoint`` is the label the observer gets (``"GET /things/{id}"``). Returns
        the answer when its status is in ``expected``; raises the error of
        :func:`~edge_provision.http.error_for_status` otherwise.
        """
        token = self._tokens.token()
        response = self._send(method, path, endpoint, json_body, token)
        if response.status in _REFUSED:
            fresh = self._tokens.renew(token)
            if fresh is not None and fresh != token:
                logger.info("token refused, retrying with a renewed one service=%s endpoint=%s",
                            self.service, endpoint)
                response = self._send(method, path, endpoint, json_body, fresh)
        if response.status in expected:
            return response
        raise error_for_status(response.status, response.body, response.url, method=method,
                               retry_after=response.header("Retry-After"))

    def _send(self, method: str, path: str, endpoint: str, json_body: object,
              token: str) -> HttpResponse:
        try:
            response = self.http.request(
                method, path, json_body=json_body, expected=_ANY_STATUS,
                auth=Credential("user", token), auth_scheme=self._scheme,
                fallback_if=lambda r: r.status in _REFUSED,
            )
        except EdgeProvisionError:
            self._observe(endpoint, ERROR_STATUS)
            raise
        self._observe(endpoint, str(response.status))
        return response

    def _observe(self, endpoint: str, status: str) -> None:
        if self._observer is not None:
            try:
                self._observer(self.service, endpoint, status)
            except Exception:  # a counter's bug must not fail the call
                logger.exception("request observer failed service=%s", self.service)


class OperatorClient:
    """Base of the operator-side clients: one service URL, a token source, an observer."""

    SERVICE = ""

    def __init__(self, http: HttpClient, tokens: TokenSource, *,
                 auth_scheme: AuthScheme = AuthScheme.AUTO,
                 observer: Observer | None = None) -> None:
        self._calls = OperatorCalls(http, self.SERVICE, tokens, auth_scheme=auth_scheme,
                                    observer=observer)

    @property
    def base_url(self) -> str:
        """The service URL."""
        return self._calls.http.base_url
