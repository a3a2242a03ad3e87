"""The lab server's error answers: one table from exception to status, one 500 answer.

Every answer that is not a success is ``{"error": "<what was wrong and what to
do>"}`` with ``Content-Type: application/json``. A handler refuses a request by
raising :class:`ApiError` (or calling :func:`fail`); the service raises
:mod:`edge_provision.errors` classes; :func:`error_reply` turns both into the
answer. Anything else is a bug: :data:`INTERNAL_ERROR`, and the traceback goes
to the log.
"""

from __future__ import annotations

import logging
import math
from typing import NoReturn

from edge_provision.errors import (
    AlreadyProvisioned,
    CertificateError,
    ConfigError,
    Rejected,
    ServiceUnavailable,
    StoreError,
    Unauthorized,
)
from edge_provision.lab.http.messages import JSON, Reply, TooLarge, json_reply

__all__ = ["ERROR_STATUS", "INTERNAL_ERROR", "ApiError", "error_reply", "fail"]

logger = logging.getLogger("edge_provision.lab.http")

INTERNAL_ERROR = Reply(500, b'{"error":"internal error; see server log"}', JSON)
"""The answer to a bug (the traceback is logged, never sent)."""

_REALM = 'realm="edge-provision-lab"'
_THING_PATHS = ("/things/bootstrap", "/certs/csr")  # credentials are thing or external keys


class ApiError(Exception):
    """A request the lab server refuses: status code, message, extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def fail(status: int, message: str) -> NoReturn:
    """Refuse the request with ``status`` and ``message``."""
    raise ApiError(status, message)


ERROR_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (Unauthorized, 401), (AlreadyProvisioned, 409), (TooLarge, 413), (CertificateError, 400),
    (Rejected, 400), (ConfigError, 400), (StoreError, 503), (ServiceUnavailable, 503),
)  # fmt: skip
"""Known exceptions and their status codes (first match wins)."""


def error_reply(exc: Exception, path: str) -> Reply | None:
    """The answer to a refused request or a known error; None for anything else (a bug)."""
    if isinstance(exc, ApiError):
        return json_reply(exc.status, {"error": exc.message}, exc.headers)
    status = next((code for cls, code in ERROR_STATUS if isinstance(exc, cls)), None)
    if status is None:
        return None
    if status == 401:
        scheme = "Thing" if path.startswith(_THING_PATHS) else "Bearer"
        return json_reply(401, {"error": str(exc)}, {"WWW-Authenticate": f"{scheme} {_REALM}"})
    if isinstance(exc, ServiceUnavailable):  # the platform behind the lab (its message says)
        wait = max(1, math.ceil(exc.retry_after_s or 1))
        return json_reply(503, {"error": str(exc)}, {"Retry-After": str(wait)})
    if status == 503:
        logger.error("storage error path=%s error=%s", path, exc)
        return json_reply(503, {"error": "storage unavailable; try again shortly (see the "
                                         "server log)"}, {"Retry-After": "1"})  # fmt: skip
    return json_reply(status, {"error": str(exc)})
