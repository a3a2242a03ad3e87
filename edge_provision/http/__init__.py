"""The one place that talks HTTP: session, timeouts, TLS, auth header forms, size cap, errors.

Every platform client (``edge_provision.platform``) goes through :class:`HttpClient`.
It owns one ``requests`` transport adapter (connection pools; no ``Session``: no
cookies, no per-request merging of settings) and turns everything that can go wrong
on the wire into the error classes of :mod:`edge_provision.errors`, in one place
(:func:`error_for_status` for answers, :func:`error_for_exception` for failures
to get one):

=====================================================  =========================
what happened                                          raised
=====================================================  =========================
no complete answer by the deadline (see below)         ``ServiceUnavailable``
                                                       (``Reason.DEADLINE``)
connection refused/reset, timeout, truncated body      ``ServiceUnavailable``
429, 5xx (``retry_after_s`` from ``Retry-After``)      ``ServiceUnavailable``
401, 403                                               ``Unauthorized``
409                                                    ``AlreadyProvisioned``
other 4xx                                              ``Rejected``
TLS: server certificate not trusted (the reason in      ``Unauthorized``
full: self-signed, unknown issuer, name mismatch...),  (``Reason.UNTRUSTED``)
client cert refused
TLS: plain HTTP port spoken to with https://           ``Rejected``
other TLS failures (handshake cut short)               ``ServiceUnavailable``
not the protocol's answer: a body over the size cap,   ``BadReply`` (transient:
not JSON where JSON is due (``HttpResponse.json``),    a captive portal, a proxy)
undecodable, a redirect to another host
a redirect on the same host, unexpected 1xx/2xx        ``ProtocolError``
a credential or header value no header can carry       ``ConfigError``
(line break, control character, leading space)
=====================================================  =========================

Every request has a deadline for the whole of it -- connect, headers and body --
``request_deadline_s`` from its start, or the deadline of the run it is part of
(:func:`edge_provision.deadline.limit`) when that comes sooner. The per-operation
timeouts (``connect_timeout_s``, ``read_timeout_s``) are cut to the time left, and a
request still going at its deadline has its connection shut down (:mod:`._abort`): a
server that drips one byte at a time cannot hold a command.

Request bodies are JSON with ``Content-Type: application/json`` exactly (Mainflux
Provision and Certs answer 415 to anything else, even ``; charset=utf-8``).
Nothing here logs a header value or a body.
"""

from __future__ import annotations

import enum
import json
import logging
import ssl
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Callable, Literal
from urllib.parse import quote, urljoin, urlsplit

import requests
import requests.utils
import urllib3
from requests.structures import CaseInsensitiveDict

from edge_provision import __version__
from edge_provision.deadline import Deadline
from edge_provision.deadline import current as run_deadline
from edge_provision.errors import (
    BadReply,
    ConfigError,
    EdgeProvisionError,
    ProtocolError,
)
from edge_provision.http._abort import Guard
from edge_provision.http._adapter import Adapter
from edge_provision.http._errors import (
    JSON_CONTENT_TYPE,
    error_for_exception,
    error_for_status,
    error_text,
    parse_retry_after,
)

__all__ = [
    "DEFAULT_USER_AGENT",
    "JSON_CONTENT_TYPE",
    "AuthKind",
    "AuthScheme",
    "Credential",
    "HttpClient",
    "HttpResponse",
    "auth_headers",
    "error_for_status",
    "parse_retry_after",
    "path_segment",
]

logger = logging.getLogger(__name__)


def _quiet_cut_headers(record: logging.LogRecord) -> bool:
    """Drop urllib3's warning (with a traceback) about headers it could not parse: a reply
    cut mid-headers (by the deadline, or on the way) is reported as our own error."""
    return not str(record.msg).startswith("Failed to parse headers")


logging.getLogger("urllib3.connection").addFilter(_quiet_cut_headers)

DEFAULT_USER_AGENT = f"edge-provision/{__version__}"

AuthKind = Literal["user", "thing"]

_MODERN_PREFIX: dict[str, str] = {"user": "Bearer ", "thing": "Thing "}
_FALLBACK_STATUSES = frozenset({401, 403, 404})
_CHUNK = 65_536


class AuthScheme(str, enum.Enum):
    """How a token or key is put into the ``Authorization`` header.

    ``MODERN``: ``Bearer <token>`` / ``Thing <key>`` (Mainflux >= 0.13, Magistrala).
    ``BARE``: the value alone (Mainflux 0.12.x and the 2022 Agent).
    ``AUTO``: modern first; on 401/403/404 retry once bare, and keep whichever
    worked for the lifetime of the :class:`HttpClient`.
    """

    AUTO = "auto"
    MODERN = "modern"
    BARE = "bare"


@dataclass(frozen=True)
class Credential:
    """A secret and what it is (a user token/API key, or a thing/external key)."""

    kind: AuthKind
    secret: str = field(repr=False)


def path_segment(value: str, what: str = "a path segment") -> str:
    """``value`` percent-encoded as exactly one URL path segment (every client uses this).

    Everything but unreserved characters, ``:`` and ``@`` is encoded (``/``, ``?``, ``#``,
    ``%``, spaces, non-ASCII). ``''``, ``'.'`` and ``'..'`` are refused with a
    :class:`ConfigError`: no encoding carries them (servers resolve ``%2E`` like ``.``), and
    ``..`` would address another resource.
    """
    if value in ("", ".", ".."):
        raise ConfigError(
            f"{what} {value!r} cannot be one URL path segment: it must not be empty, '.' or '..'"
        )
    return quote(value, safe=":@")


def auth_headers(kind: AuthKind, secret: str, scheme: AuthScheme) -> dict[str, str]:
    """The ``Authorization`` header for ``secret`` (``AUTO`` gives the modern form)."""
    if kind not in _MODERN_PREFIX:
        raise ValueError(f"auth kind must be 'user' or 'thing', not {kind!r}")
    if scheme is AuthScheme.BARE:
        return {"Authorization": secret}
    return {"Authorization": _MODERN_PREFIX[kind] + secret}


@dataclass(frozen=True)
class HttpResponse:
    """A complete answer (body read in full, within the size cap)."""

    status: int
    headers: Mapping[str, str]
    body: bytes = field(repr=False)
    url: str

    def header(self, name: str) -> str | None:
        """One header value, looked up case-insensitively."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None

    def json(self) -> object:
        """The body parsed as JSON; :class:`BadReply` (transient) if it is not JSON."""
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise self.not_the_answer("JSON") from exc

    @property
    def is_html(self) -> bool:
        """Whether the reply says it is an HTML page (what captive portals and proxies serve)."""
        return "html" in (self.header("Content-Type") or "").lower()

    def not_the_answer(self, wanted: str) -> BadReply:
        """The error for a body that is not ``wanted``: most likely not the platform's answer.

        An HTML page is what a captive portal or a proxy serves; JSON that does not parse
        was cut short on the way. The body itself is never quoted (it may hold secrets).
        """
        content_type = self.header("Content-Type")
        if self.is_html:
            cause = ("an HTML page: a captive portal, a proxy or a login page answered instead "
                     "of the platform")  # fmt: skip
        else:
            cause = "cut short on the way, or not the platform's answer"
        return BadReply(
            f"{self.url}: the HTTP {self.status} reply is not {wanted} ({len(self.body)} bytes, "
            f"Content-Type {content_type!r}): {cause}",
            hint="check the network between this gateway and the platform (captive portal, "
                 "proxy) and that the URL points at the service; the daemon retries",
        )

    def json_object(self) -> dict[str, object]:
        """The body parsed as a JSON object; :class:`ProtocolError` otherwise."""
        value = self.json()
        if not isinstance(value, dict):
            raise ProtocolError(f"{self.url}: expected a JSON object, got {type(value).__name__}")
        return value

    @property
    def error_text(self) -> str | None:
        """The server's ``{"error": "..."}`` text, if the body carries one."""
        return error_text(self.body)


def _check_file(path: Path | None, what: str) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: {what} not found (or not a file)")
    return p


class HttpClient:
    """A JSON-over-HTTP(S) client for one base URL (one ``requests`` adapter and its pools).

    Thread-safe for concurrent :meth:`request` calls. Close it (or use ``with``)
    to release pooled connections.
    """

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 15.0,
        request_deadline_s: float = 60.0,
        ca_bundle: Path | None = None,
        client_cert: Path | None = None,
        client_key: Path | None = None,
        insecure: bool = False,
        max_body_bytes: int = 1_048_576,
        user_agent: str = DEFAULT_USER_AGENT,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"{base_url!r}: expected an http:// or https:// URL")
        if parts.query or parts.fragment:
            raise ConfigError(f"{base_url!r}: the base URL must not carry a query or fragment")
        if connect_timeout_s <= 0 or read_timeout_s <= 0 or request_deadline_s <= 0:
            raise ConfigError("HTTP timeouts and deadlines must be positive numbers of seconds")
        if max_body_bytes < 1:
            raise ConfigError("max_body_bytes must be at least 1")
        if (client_cert is None) != (client_key is None) and client_cert is None:
            raise ConfigError("client_key given without client_cert")
        self._base_url = base_url.rstrip("/")
        self._timeout: tuple[float, float] = (float(connect_timeout_s), float(read_timeout_s))
        self._deadline_s = float(request_deadline_s)
        self._max_body = int(max_body_bytes)
        self._schemes: dict[str, AuthScheme] = {}
        self._lock = threading.Lock()
        ca = _check_file(ca_bundle, "CA bundle")
        cert = _check_file(client_cert, "client certificate")
        key = _check_file(client_key, "client key")
        self._validate_tls_files(ca, cert, key)
        # No requests.Session: its per-request merging of settings, cookies and hooks cost
        # more CPU than the rest of a request (~0.4 ms); what it would merge is fixed per
        # client, so it is prepared here once and each request goes to the adapter.
        self._adapter = Adapter()
        self._prefix, self._url_auth = _prepared_prefix(self._base_url)
        headers = requests.utils.default_headers()
        headers["User-Agent"] = user_agent
        self._headers = _prepared_headers(headers)
        # Trust comes from our settings only: REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE are not
        # read (nor ~/.netrc, which would add credentials of its own); proxies from the
        # environment (HTTP(S)_PROXY, NO_PROXY) are looked up once, for the base URL.
        self._proxies = requests.utils.get_environ_proxies(self._base_url)
        self._verify: bool | str = not insecure  # verified unless the explicit lab flag
        if insecure:
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            if parts.scheme == "https":
                logger.warning(
                    "tls verification disabled url=%s (insecure); anyone on the path can "
                    "read and change the traffic",
                    self._base_url,
                )
        elif ca is not None:
            self._verify = str(ca)
        self._cert: str | tuple[str, str] | None = None
        if cert is not None:
            self._cert = (str(cert), str(key)) if key is not None else str(cert)

    @staticmethod
    def _validate_tls_files(ca: Path | None, cert: Path | None, key: Path | None) -> None:
        """Load the TLS files once now so that a bad file is a ConfigError, not a network error."""
        if ca is None and cert is None:
            return
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # no system store: just parse files
        if ca is not None:
            try:
                context.load_verify_locations(cafile=str(ca))
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(f"{ca}: not a usable PEM CA bundle ({exc})") from exc
        if cert is not None:
            try:
                context.load_cert_chain(str(cert), str(key) if key is not None else None)
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(
                    f"{cert}: client certificate/key cannot be loaded or do not match ({exc})"
                ) from exc

    # ------------------------------------------------------------------ basics

    @property
    def base_url(self) -> str:
        """The base URL, without a trailing slash."""
        return self._base_url

    def url_for(self, path: str) -> str:
        """``base_url`` joined with ``path`` (exactly one ``/`` between them)."""
        return f"{self._base_url}/{path.lstrip('/')}"

    def close(self) -> None:
        """Release pooled connections."""
        self._adapter.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def scheme_for(self, kind: AuthKind) -> AuthScheme | None:
        """The header form that worked for ``kind`` under ``AUTO`` (``None``: not known yet)."""
        with self._lock:
            return self._schemes.get(kind)

    def remember_scheme(self, kind: AuthKind, scheme: AuthScheme) -> None:
        """Record that ``scheme`` works for ``kind`` (used by clients that detect it themselves)."""
        if scheme is AuthScheme.AUTO:
            raise ValueError("remember a concrete scheme (MODERN or BARE), not AUTO")
        with self._lock:
            previous = self._schemes.get(kind)
            self._schemes[kind] = scheme
        if previous is not scheme:
            logger.info("auth scheme settled kind=%s scheme=%s", kind, scheme.value)

    # ------------------------------------------------------------------ requests

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: object = None,
        headers: Mapping[str, str] | None = None,
        expected: Collection[int] = (200,),
        auth: Credential | None = None,
        auth_scheme: AuthScheme = AuthScheme.AUTO,
        fallback_if: Callable[[HttpResponse], bool] | None = None,
    ) -> HttpResponse:
        """Send one request; return the answer if its status is in ``expected``.

        ``json_body`` (unless ``None``) is sent as compact UTF-8 JSON with
        ``Content-Type: application/json``. ``auth`` adds the ``Authorization``
        header in the form ``auth_scheme`` asks for (see :class:`AuthScheme`);
        under ``AUTO`` the bare retry happens on 401/403/404, or when
        ``fallback_if`` (if given) says so for the modern answer.
        Any other status raises the error of :func:`error_for_status`; transport
        failures raise ``ServiceUnavailable`` (see the module table).
        """
        method = method.upper()
        payload: bytes | None = None
        if json_body is not None:
            try:
                payload = json.dumps(json_body, separators=(",", ":"), ensure_ascii=False).encode(
                    "utf-8"
                )
            except (TypeError, ValueError) as exc:
                raise ProtocolError(f"request body for {method} {path} is not JSON-able") from exc
        scheme = auth_scheme
        fallback = False
        if auth is not None and auth_scheme is AuthScheme.AUTO:
            known = self.scheme_for(auth.kind)
            scheme = known if known is not None else AuthScheme.MODERN
            fallback = known is None
        response = self._send(method, path, payload, headers, auth, scheme)
        wants_fallback = (
            fallback_if(response)
            if fallback_if is not None
            else response.status in _FALLBACK_STATUSES
        )
        if fallback and auth is not None and wants_fallback:
            logger.info(
                "auth fallback kind=%s from=modern to=bare status=%s url=%s",
                auth.kind,
                response.status,
                response.url,
            )
            retry = self._send(method, path, payload, headers, auth, AuthScheme.BARE)
            if retry.status not in _FALLBACK_STATUSES and retry.status < 400:
                self.remember_scheme(auth.kind, AuthScheme.BARE)
                response = retry
            # else: both forms failed; report the modern answer (the current protocol).
        elif fallback and auth is not None and response.status < 400:
            self.remember_scheme(auth.kind, AuthScheme.MODERN)
        if response.status in expected:
            return response
        raise error_for_status(
            response.status,
            response.body,
            response.url,
            method=method,
            retry_after=response.header("Retry-After"),
        )

    def _send(
        self,
        method: str,
        path: str,
        payload: bytes | None,
        extra_headers: Mapping[str, str] | None,
        auth: Credential | None,
        scheme: AuthScheme,
    ) -> HttpResponse:
        url = self.url_for(path)
        prepared = self._prepare(method, path, payload, extra_headers, auth, scheme)
        started = time.monotonic()
        deadline = Deadline.after(self._deadline_s, "request", "server.request_deadline_s")
        deadline = deadline.sooner(run_deadline())
        if deadline.expired():
            raise deadline.error(f"{method} {url}")
        left = deadline.remaining()
        timeout = (min(self._timeout[0], left), min(self._timeout[1], left))
        with Guard(left) as guard:
            try:
                raw = self._adapter.send(prepared, stream=True, timeout=timeout,
                                         verify=self._verify, cert=self._cert,
                                         proxies=self._proxies)  # fmt: skip
            except Exception as exc:
                translated = self._failure(exc, url, method, timeout, deadline, guard)
                if translated is exc:
                    raise
                logger.debug("http failed method=%s url=%s error=%s", method, url,
                             type(exc).__name__)  # fmt: skip
                raise translated from exc
            try:
                body = self._read_body(raw, url, method, timeout, deadline, guard)
            finally:
                raw.close()
            if guard.fired:  # cut short: what arrived may even parse, but it is not the answer
                raise deadline.error(f"{method} {url}")
        elapsed_ms = (time.monotonic() - started) * 1000.0
        logger.debug(
            "http method=%s url=%s status=%s bytes=%s elapsed_ms=%.1f",
            method,
            url,
            raw.status_code,
            len(body),
            elapsed_ms,
        )
        if 300 <= raw.status_code <= 399:
            raise _redirect_error(method, url, raw.status_code, raw.headers.get("Location"))
        return HttpResponse(status=raw.status_code, headers=raw.headers, body=body, url=url)

    def _prepare(self, method: str, path: str, payload: bytes | None,
                 extra_headers: Mapping[str, str] | None, auth: Credential | None,
                 scheme: AuthScheme) -> requests.PreparedRequest:  # fmt: skip
        """The request as ``requests`` would prepare it (headers checked, body length set),
        from the parts prepared once per client."""
        prepared = requests.PreparedRequest()
        prepared.method = method
        prepared.url = self._prefix + requests.utils.requote_uri(path.lstrip("/"))
        headers = self._headers.copy()
        wanted: dict[str, str] = dict(extra_headers) if extra_headers else {}
        if payload is not None:
            wanted["Content-Type"] = JSON_CONTENT_TYPE
        if auth is not None:
            wanted.update(auth_headers(auth.kind, auth.secret, scheme))
        for name, value in wanted.items():
            try:
                requests.utils.check_header_validity((name, value))
            except requests.exceptions.InvalidHeader:  # its message quotes the value
                raise ConfigError(
                    f"{method} {self.url_for(path)}: the {name} header cannot carry this value "
                    "(it has a line break, another control character or leading whitespace); "
                    "check the setting it comes from (token, key, header)"
                ) from None
            headers[name] = value
        prepared.headers = headers
        prepared.prepare_body(payload, None, None)
        if self._url_auth:  # user:password@ in the base URL: Basic auth, as requests does
            prepared.prepare_auth(None, prepared.url)
        return prepared

    @staticmethod
    def _failure(exc: Exception, url: str, method: str, timeout: tuple[float, float],
                 deadline: Deadline, guard: Guard) -> Exception:  # fmt: skip
        """The error for a request that failed: the deadline's if that is what ended it."""
        if guard.fired or deadline.expired():
            return deadline.error(f"{method} {url}")
        return error_for_exception(exc, url, method, timeout)

    def _read_body(self, raw: requests.Response, url: str, method: str,
                   timeout: tuple[float, float], deadline: Deadline,
                   guard: Guard) -> bytes:  # fmt: skip
        """Read the body within the size cap (streamed; gzip is counted decoded)."""
        declared = raw.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_body:
            raise BadReply(
                f"{method} {url}: response larger than {self._max_body} bytes "
                f"(Content-Length {declared}); not what the platform sends"
            )
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in raw.iter_content(_CHUNK):
                size += len(chunk)
                if size > self._max_body:
                    raise BadReply(
                        f"{method} {url}: response larger than {self._max_body} bytes; not "
                        "what the platform sends"
                    )
                chunks.append(chunk)
        except BadReply:
            raise
        except Exception as exc:
            translated = self._failure(exc, url, method, timeout, deadline, guard)
            if translated is exc:
                raise
            raise translated from exc
        return b"".join(chunks)


def _prepared_prefix(base_url: str) -> tuple[str, bool]:
    """``base_url/`` as ``requests`` prepares a URL (IDNA host, re-quoted), and whether it
    carries credentials; ConfigError if ``requests`` refuses it."""
    probe = requests.PreparedRequest()
    try:
        probe.prepare_url(base_url + "/", None)
    except requests.exceptions.RequestException as exc:
        raise ConfigError(f"{base_url!r}: invalid URL ({exc})") from None
    assert probe.url is not None
    return probe.url, any(requests.utils.get_auth_from_url(probe.url))


def _prepared_headers(headers: Mapping[str, str]) -> CaseInsensitiveDict[str]:
    """``headers`` checked as ``requests`` checks them (no CR/LF, no leading space)."""
    probe = requests.PreparedRequest()
    probe.prepare_headers(headers)
    return probe.headers


def _redirect_error(method: str, url: str, status: int, location: str | None) -> EdgeProvisionError:
    """A redirect to another host is someone else answering (transient); on the same host,
    the configured URL is not the final one (a setting to fix)."""
    target = urljoin(url, location) if location else ""
    if not target or urlsplit(target).netloc.lower() != urlsplit(url).netloc.lower():
        return BadReply(
            f"{method} {url}: HTTP {status}: redirected to another host ({location or 'nowhere'});"
            " a captive portal or a proxy answered instead of the platform"
        )
    return ProtocolError(
        f"{method} {url}: HTTP {status}: redirected to {location}; configure the final URL "
        "(redirects are not followed)"
    )
