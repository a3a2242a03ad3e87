"""How HTTP answers and transport failures become edge-provision errors (the one table).

Used by :mod:`edge_provision.http` only; :func:`error_for_status` and
:func:`parse_retry_after` are re-exported there.
"""

from __future__ import annotations

import email.utils
import errno
import html
import http.client
import json
import math
import re
import socket
import ssl
from datetime import datetime, timezone
from typing import Any, Union
from urllib.parse import urlsplit

import requests

from edge_provision.errors import (
    AlreadyProvisioned,
    BadReply,
    ConfigError,
    ProtocolError,
    ProvisioningError,
    Reason,
    Rejected,
    ServiceUnavailable,
    Unauthorized,
)

__all__ = ["error_for_exception", "error_for_status", "error_text", "parse_retry_after"]

JSON_CONTENT_TYPE = "application/json"
Timeout = Union[float, tuple[float, float]]

_RETRY_AFTER_CAP_S = 86_400.0
_MAX_ERROR_BODY = 65_536
_SNIPPET_CHARS = 160
_EMPTY_400_HINT = (
    "the server rejected the request without a reason (empty 400 body); "
    "check external_id/external_key and Content-Type"
)


def error_text(body: bytes) -> str | None:
    if not body or len(body) > _MAX_ERROR_BODY:
        return None
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if isinstance(value, dict):
        text = value.get("error") or value.get("detail") or value.get("message")
        if isinstance(text, str) and text.strip():
            return text.strip()
    return None


_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->|<[^>]*>", re.IGNORECASE | re.DOTALL)


def _snippet(body: bytes) -> str | None:
    """A short printable excerpt of a non-JSON error body (``404 page not found``); of an
    HTML page (a proxy's or a captive portal's error page) its text without the markup."""
    try:
        text = body[: _SNIPPET_CHARS * 16].decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    if not text or text[0] in "{[":
        return None
    if text[0] == "<":
        text = html.unescape(_TAG.sub(" ", text))
    text = " ".join(text.split())
    if not text:
        return None
    if not text.isprintable():
        return None
    return text[:_SNIPPET_CHARS] + ("..." if len(text) > _SNIPPET_CHARS else "")


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP-date).

    Returns ``None`` for a missing or unparsable value; never negative; capped at one day.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:  # Python < 3.10 returns None for garbage
            return None  # type: ignore[unreachable]
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return min(max(seconds, 0.0), _RETRY_AFTER_CAP_S)


def error_for_status(
    status: int,
    body: bytes,
    url: str,
    *,
    method: str = "",
    retry_after: str | None = None,
) -> ProvisioningError:
    """The error for an HTTP answer we did not expect -- the one status table."""
    where = f"{method} {url}".strip()
    server = error_text(body)
    detail = f"server said: {server}" if server else None
    if detail is None and body:
        text = _snippet(body)
        detail = f"server said: {text}" if text else f"{len(body)}-byte body"
    suffix = f" ({detail})" if detail else ""
    if status == 501:  # no retry makes a server implement what it does not
        return Rejected(
            f"{where}: HTTP 501: the server does not implement this request{suffix}; check "
            "that the URL points at the provisioning/bootstrap service (and its port)"
        )
    if status == 429 or 500 <= status <= 599:
        wait = parse_retry_after(retry_after)
        reason = "rate limited (429)" if status == 429 else f"server error {status}"
        hint = f"; retry after {wait:g} s" if wait is not None else "; try again later"
        return ServiceUnavailable(
            f"{where}: HTTP {status}: {reason}{suffix}{hint}", retry_after_s=wait
        )
    if status in (401, 403):
        return Unauthorized(
            f"{where}: HTTP {status}: credentials refused{suffix}; check the token or key "
            "and the Authorization form (auth scheme modern 'Bearer'/'Thing' or bare)"
        )
    if status == 409:
        return AlreadyProvisioned(f"{where}: HTTP 409: already exists{suffix}")
    if status == 400 and not body.strip():
        return Rejected(f"{where}: HTTP 400: {_EMPTY_400_HINT}")
    if status == 415:
        return Rejected(
            f"{where}: HTTP 415: unsupported content type{suffix}; the server wants exactly "
            f"'Content-Type: {JSON_CONTENT_TYPE}'"
        )
    if status == 404:
        return Rejected(f"{where}: HTTP 404: not found{suffix}; check the server URL and path")
    if 400 <= status <= 499:
        return Rejected(f"{where}: HTTP {status}: request refused{suffix}")
    return ProtocolError(f"{where}: unexpected HTTP {status}{suffix}")


def error_for_exception(exc: Exception, url: str, method: str, timeout: Timeout) -> Exception:
    """Translate a ``requests``/``urllib3`` failure into our error (the one exception table)."""
    where = f"{method} {url}"
    if isinstance(exc, requests.exceptions.SSLError):
        return _tls_error(exc, where)
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return ServiceUnavailable(f"{where}: no connection within {_connect(timeout):g} s")
    if isinstance(exc, requests.exceptions.Timeout):  # ReadTimeout
        return ServiceUnavailable(
            f"{where}: no answer within {_read(timeout):g} s (read timeout); the server may "
            "still have processed the request"
        )
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return ServiceUnavailable(
            f"{where}: the connection broke while reading the reply (incomplete body)"
        )
    if isinstance(exc, requests.exceptions.ContentDecodingError):
        return BadReply(f"{where}: the reply body could not be decoded ({_short(str(exc))})")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return ServiceUnavailable(f"{where}: {_unreachable(exc, url)}")
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema)):
        return ConfigError(f"{where}: invalid URL ({_short(str(exc))})")
    if isinstance(exc, (requests.exceptions.RequestException, OSError)):
        return ServiceUnavailable(f"{where}: request failed ({_short(str(exc))})")
    return exc


_NAME_MISMATCH = frozenset({62, 64})  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
_TRUST_HINT = (
    "trust the platform's CA: --ca-bundle, EDGE_PROVISION_CA_BUNDLE or server.ca_bundle in the "
    "config file (REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE are not read), or fix the server "
    "certificate"
)


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception under it (requests and urllib3 nest them in ``args``,
    ``reason``, ``__cause__`` and ``__context__``), each once, outermost first."""
    found: list[BaseException] = []
    pending: list[object] = [exc]
    seen: set[int] = set()
    while pending:
        item = pending.pop(0)
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        found.append(item)
        pending += [*item.args, getattr(item, "reason", None), item.__cause__, item.__context__]
    return found


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The :class:`ssl.SSLError` under a requests/urllib3 error (a verification error first)."""
    causes = _causes(exc)
    verify = [c for c in causes if isinstance(c, ssl.SSLCertVerificationError)]
    if verify:
        return verify[0]
    return next((c for c in causes if isinstance(c, ssl.SSLError)), None)


# what a failed connect or a broken connection means, for the people who read it
_SOCKET_REASONS = {
    errno.ECONNREFUSED: "connection refused (nothing listens there)",
    errno.ECONNRESET: "the connection was reset by the server or by something on the way",
    errno.ECONNABORTED: "the connection was aborted",
    errno.EPIPE: "the connection was closed while we were sending",
    errno.ENETUNREACH: "network unreachable (no route from this machine; is it online?)",
    errno.EHOSTUNREACH: "no route to the host (is it up, is a firewall in the way?)",
    errno.ETIMEDOUT: "the connection timed out",
    errno.EADDRNOTAVAIL: "the address cannot be used from this machine",
}
_REFUSED_HINT = "; check the host and port in the URL and that the server runs"
_BROKEN = frozenset({errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE})


def _socket_cause(exc: BaseException) -> OSError | None:
    """The socket error under ``exc``: a failed name lookup, or an OS error with an errno."""
    return next((c for c in _causes(exc) if isinstance(c, socket.gaierror)
                 or (isinstance(c, OSError) and c.errno is not None)), None)  # fmt: skip


def _socket_reason(cause: OSError) -> str:
    return _SOCKET_REASONS.get(cause.errno or 0) or cause.strerror or str(cause)


def _connection(cause: BaseException) -> Any:
    """The connection a urllib3 connect error names (``conn`` in urllib3 2, ``pool`` in
    1.26), if it has a host and a port."""
    conn = getattr(cause, "conn", None) or getattr(cause, "pool", None)
    ok = getattr(conn, "host", None) and getattr(conn, "port", None)
    return conn if ok else None


def _unreachable(exc: requests.exceptions.ConnectionError, url: str) -> str:
    """``cannot reach the server at host:port: <reason in words>`` (or that the connection
    was lost, or closed without an answer, or that the proxy cannot be reached) from the
    socket error under ``exc``. urllib3's own wording ("Max retries exceeded …
    NewConnectionError") says nothing a technician can act on and pushed the reason out
    of the message."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = None
    address = f"{parts.hostname}:{port}" if parts.hostname and port else url
    cause = _socket_cause(exc)
    if isinstance(exc, requests.exceptions.ProxyError):
        # the failed connection is the proxy's: name it, and where it comes from
        proxy = next((f"{conn.host}:{conn.port}" for conn in map(_connection, _causes(exc))
                      if conn is not None), "the proxy")
        if isinstance(cause, socket.gaierror):
            reason = f"its host name does not resolve ({cause.strerror or cause})"
        else:
            reason = _socket_reason(cause) if cause is not None else _short(str(exc))
        return (f"cannot reach the proxy {proxy} (for {address}): {reason}; the proxy comes "
                "from HTTP_PROXY/HTTPS_PROXY/ALL_PROXY in the environment (NO_PROXY exempts "
                "hosts)")
    if any(isinstance(c, http.client.RemoteDisconnected) for c in _causes(exc)):
        return (f"the server at {address} closed the connection without an answer "
                "(it may have been restarting, or something on the way cut it)")
    if isinstance(cause, socket.gaierror):
        return (f"cannot reach the server: the host name {parts.hostname!r} does not resolve "
                f"({cause.strerror or cause}); check the URL and this machine's DNS")
    if cause is None:
        return f"cannot reach the server at {address} ({_short(str(exc))})"
    if cause.errno in _BROKEN:
        return f"lost the connection to the server at {address}: {_socket_reason(cause)}"
    hint = _REFUSED_HINT if cause.errno == errno.ECONNREFUSED else ""
    return f"cannot reach the server at {address}: {_socket_reason(cause)}{hint}"


def _tls_error(exc: requests.exceptions.SSLError, where: str) -> ProvisioningError:
    """What went wrong in the TLS handshake, with OpenSSL's reason in full."""
    cause = _ssl_cause(exc)
    if isinstance(cause, ssl.SSLCertVerificationError):
        reason = cause.verify_message or "certificate verify failed"
        if cause.verify_code in _NAME_MISMATCH or "mismatch" in reason.lower():
            return Unauthorized(
                f"{where}: TLS: the server certificate is not trusted for this host: {reason}",
                reason=Reason.UNTRUSTED,
                hint="put the host name (or address) the certificate was issued for in the URL, "
                     "or have the server certificate issued for the one in the URL",
            )
        return Unauthorized(
            f"{where}: TLS: the server certificate is not trusted: {reason} "
            f"(verify error {cause.verify_code})",
            reason=Reason.UNTRUSTED, hint=_TRUST_HINT,
        )
    detail = " ".join(str(cause if cause is not None else exc).split())
    upper = detail.upper()
    if "CERTIFICATE_VERIFY_FAILED" in upper:
        return Unauthorized(f"{where}: TLS: the server certificate is not trusted ({detail})",
                            reason=Reason.UNTRUSTED, hint=_TRUST_HINT)  # fmt: skip
    if "ALERT" in upper and ("CERTIFICATE" in upper or "UNKNOWN CA" in upper):
        return Unauthorized(
            f"{where}: TLS: the server refused our client certificate ({detail}); "
            "check client_cert/client_key and that the server trusts their CA"
        )
    if "WRONG_VERSION_NUMBER" in upper or "RECORD LAYER FAILURE" in upper:
        return Rejected(
            f"{where}: TLS handshake failed ({detail}); the port probably speaks "
            "plain HTTP: use an http:// URL"
        )
    return ServiceUnavailable(f"{where}: TLS handshake failed ({detail})")


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _connect(timeout: Timeout) -> float:
    return timeout[0] if isinstance(timeout, tuple) else timeout


def _read(timeout: Timeout) -> float:
    return timeout[1] if isinstance(timeout, tuple) else timeout
