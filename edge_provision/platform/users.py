"""The Users service login and the user-token sources of the operator-side clients.

``POST /tokens {"email", "password"}`` answers 201 ``{"token": "<JWT>"}`` (wire
contract 4.1; 0.12.1 refuses wrong credentials with 403, 0.13 with 401). Login
tokens expire (``MF_AUTH_LOGIN_TOKEN_DURATION``, 10 h by default), so a
:class:`LoginSession` logs in again shortly before the token's ``exp`` claim and
whenever the platform refuses the token; an API key (:class:`ApiKey`, upstream's
``MF_PROVISION_API_KEY``) is used as it is. Upstream's Provision 0.12.1/0.13.0
posts the login to the Things URL and so cannot log in at all; here the Users
URL (``MF_PROVISION_USERS_LOCATION``) is used.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from typing import Callable

from edge_provision.errors import EdgeProvisionError, ProtocolError, Unauthorized
from edge_provision.http import HttpClient, error_for_status
from edge_provision.platform._operator import ERROR_STATUS, Observer

__all__ = ["ApiKey", "LoginSession", "UsersClient", "token_expiry"]

logger = logging.getLogger(__name__)

SERVICE = "users"
_ENDPOINT = "POST /tokens"
_MAX_MARGIN_S = 60.0


def token_expiry(token: str) -> tuple[float, float] | None:
    """``(iat, exp)`` of a JWT (read, not verified), or None if it is not one or has no exp."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        return None
    if not isinstance(claims, dict):
        return None
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, (int, float)) or isinstance(exp, bool):
        return None
    if not isinstance(iat, (int, float)) or isinstance(iat, bool):
        iat = exp
    return float(iat), float(exp)


class UsersClient:
    """``POST /tokens`` of the Users service."""

    def __init__(self, http: HttpClient, *, observer: Observer | None = None) -> None:
        self._http = http
        self._observer = observer

    def login(self, email: str, password: str) -> str:
        """A login token for ``email``; ``Unauthorized`` if the platform refuses the password."""
        if not email or not password:
            raise ValueError("email and password must both be non-empty")
        try:
            response = self._http.request(
                "POST", "/tokens", json_body={"email": email, "password": password},
                expected=range(100, 600),
            )
        except EdgeProvisionError:
            self._observe(ERROR_STATUS)
            raise
        self._observe(str(response.status))
        if response.status in (400, 401, 403, 404):
            said = f" (server said: {response.error_text})" if response.error_text else ""
            raise Unauthorized(
                f"{response.url}: HTTP {response.status}: login refused for user {email!r}"
                f"{said}; check MF_PROVISION_USER / MF_PROVISION_PASS and that "
                "MF_PROVISION_USERS_LOCATION is the Users service"
            )
        if response.status not in (200, 201):
            raise error_for_status(response.status, response.body, response.url, method="POST",
                                   retry_after=response.header("Retry-After"))
        token = response.json_object().get("token")
        if not isinstance(token, str) or not token:
            raise ProtocolError(f"{response.url} reply: no 'token' string in the login answer")
        logger.info("logged in user=%s url=%s", email, self._http.base_url)
        return token

    def _observe(self, status: str) -> None:
        if self._observer is not None:
            try:
                self._observer(SERVICE, _ENDPOINT, status)
            except Exception:
                logger.exception("request observer failed service=%s", SERVICE)


class ApiKey:
    """A fixed user token or API key; never renewed."""

    def __init__(self, key: str) -> None:
        if not key:
            raise ValueError("the API key must not be empty")
        self._key = key

    def __repr__(self) -> str:
        return "ApiKey(<redacted>)"

    def token(self) -> str:
        """The key."""
        return self._key

    def renew(self, stale: str) -> str | None:
        """An API key cannot be renewed."""
        return None


class LoginSession:
    """A login token kept fresh: renewed before its ``exp`` and after a refusal.

    Thread-safe; concurrent callers share one login. The token is renewed when
    less than ``min(60 s, a tenth of its lifetime)`` remains (by ``clock``).
    """

    def __init__(self, users: UsersClient, email: str, password: str, *,
                 clock: Callable[[], float] = time.time) -> None:
        if not email or not password:
            raise ValueError("email and password must both be non-empty")
        self._users = users
        self._email = email
        self._password = password
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._renew_at: float | None = None
        self.logins = 0
        """How many times this session logged in."""

    def __repr__(self) -> str:
        return f"LoginSession(email={self._email!r})"

    def token(self) -> str:
        """The current token, logging in first if there is none or it is about to expire."""
        with self._lock:
            if self._token is None or (
                self._renew_at is not None and self._clock() >= self._renew_at
            ):
                return self._login()
            return self._token

    def renew(self, stale: str) -> str | None:
        """Log in again, unless another caller already replaced ``stale``."""
        with self._lock:
            if self._token is not None and self._token != stale:
                return self._token
            return self._login()

    def _login(self) -> str:
        token = self._users.login(self._email, self._password)
        self.logins += 1
        self._token = token
        window = token_expiry(token)
        if window is None:
            self._renew_at = None
        else:
            issued, expires = window
            margin = min(_MAX_MARGIN_S, max(expires - issued, 0.0) / 10)
            self._renew_at = expires - margin
        return token
