"""The transport adapter of one :class:`~edge_provision.http.HttpClient` (private to ``http``).

``requests``' ``HTTPAdapter`` with the connections of :mod:`._abort` (a request's
deadline can cut them), and two things it would otherwise redo for every request of
a client that talks to one host with fixed settings: choosing the connection pool
(proxy selection and URL parsing, ~15% of a request's instructions) and reading the
cookies of the answer (nobody here keeps them). Behaviour is ``HTTPAdapter``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import requests
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers, urldefragauth
from urllib3.connectionpool import ConnectionPool

from edge_provision.http._abort import DeadlineAdapter

__all__ = ["Adapter"]

_PoolKey = tuple[str, object, object, tuple[tuple[str, str], ...]]


def _origin(url: str) -> str:
    """``scheme://netloc`` of a prepared URL (what decides the pool and the proxy)."""
    return "/".join(url.split("/", 3)[:3])


class Adapter(DeadlineAdapter):
    """See the module docstring; safe for concurrent requests (as ``HTTPAdapter``)."""

    def __init__(self) -> None:
        super().__init__()
        self._pools: dict[_PoolKey, ConnectionPool] = {}
        self._direct: dict[tuple[str, tuple[tuple[str, str], ...]], bool] = {}

    @staticmethod
    def _key(url: str, verify: object, cert: object,
             proxies: Optional[Mapping[str, str]]) -> _PoolKey:  # fmt: skip
        return _origin(url), verify, cert, tuple(sorted(proxies.items())) if proxies else ()

    def get_connection_with_tls_context(
        self, request: requests.PreparedRequest, verify: Any,
        proxies: Optional[Mapping[str, str]] = None, cert: Any = None,
    ) -> ConnectionPool:  # fmt: skip
        """The pool ``HTTPAdapter`` picks, looked up once per origin and settings."""
        assert request.url is not None
        key = self._key(request.url, verify, cert, proxies)
        pool = self._pools.get(key)
        if pool is None or getattr(pool, "pool", None) is None:  # first use, or closed
            pool = super().get_connection_with_tls_context(request, verify, proxies, cert)
            self._pools[key] = pool
        return pool

    def request_url(self, request: requests.PreparedRequest,
                    proxies: Optional[Mapping[str, str]]) -> str:  # fmt: skip
        """The path (the full URL through an HTTP proxy), as ``HTTPAdapter`` says."""
        assert request.url is not None
        key = (_origin(request.url), tuple(sorted(proxies.items())) if proxies else ())
        direct = self._direct.get(key)
        if direct is None:
            direct = super().request_url(request, proxies) == request.path_url
            self._direct[key] = direct
        return request.path_url if direct else urldefragauth(request.url)

    def build_response(self, req: requests.PreparedRequest, resp: Any) -> requests.Response:
        """``HTTPAdapter.build_response`` without reading cookies into a jar."""
        response = requests.Response()
        response.status_code = resp.status
        response.headers = CaseInsensitiveDict(resp.headers)
        response.encoding = get_encoding_from_headers(response.headers)
        response.raw = resp
        response.reason = resp.reason
        response.url = req.url.decode("utf-8") if isinstance(req.url, bytes) else str(req.url)
        response.request = req
        response.connection = self
        return response

    def close(self) -> None:
        self._pools.clear()
        super().close()
