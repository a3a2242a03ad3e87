"""Parsing and checking of ``Authorization`` headers for the lab server (pure).

Mainflux changed its header forms between releases (wire contract section 0):
0.12.x took the bare value (``Authorization: <token>``), 0.13 wants
``Bearer <token>`` for users and ``Thing <key>`` for devices, and the Provision
README talks about ``Token``/``ApiKey``. The lab server accepts all of them: the
scheme word is matched case-insensitively and may be followed by one or more
spaces or tabs. Credentials never contain whitespace, so a value with an
unknown scheme word (``Basic abc``) is refused instead of being guessed at.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Collection

__all__ = [
    "THING_SCHEMES",
    "USER_SCHEMES",
    "AuthOutcome",
    "check_token",
    "extract_credential",
    "secrets_equal",
]

USER_SCHEMES: frozenset[str] = frozenset({"bearer", "token", "apikey"})
"""Scheme words accepted before an operator token (lower case)."""

THING_SCHEMES: frozenset[str] = frozenset({"thing"})
"""Scheme words accepted before a thing key or an external key (lower case)."""

_WHITESPACE = " \t"


class AuthOutcome(enum.Enum):
    """Result of checking a request's ``Authorization`` header against a token."""

    OK = "ok"
    MISSING = "missing"      # no header (or an empty one) where one is required
    MALFORMED = "malformed"  # a header we cannot read (unknown scheme, scheme without value)
    WRONG = "wrong"          # a well-formed header carrying the wrong credential


def extract_credential(header: str | None, schemes: Collection[str]) -> str | None:
    """Return the credential carried by ``header``, or ``None`` if there is none.

    ``schemes`` are lower-case scheme words. ``"Bearer  abc"``, ``"bearer abc"``
    and the bare ``"abc"`` all give ``"abc"``; ``""``, ``"Bearer"`` (scheme
    without a value) and ``"Basic abc"`` (a scheme not in ``schemes``) give ``None``.
    """
    if header is None:
        return None
    value = header.strip(_WHITESPACE)
    if not value:
        return None
    cut = _first_whitespace(value)
    if cut < 0:
        return None if value.lower() in schemes else value
    scheme, rest = value[:cut], value[cut:].strip(_WHITESPACE)
    if scheme.lower() not in schemes or not rest or _first_whitespace(rest) >= 0:
        return None
    return rest


def _first_whitespace(value: str) -> int:
    """Index of the first space or tab in ``value``, -1 if there is none."""
    positions = [i for i in (value.find(" "), value.find("\t")) if i >= 0]
    return min(positions) if positions else -1


def secrets_equal(presented: str, expected: str) -> bool:
    """Compare two secrets in constant time (for equal lengths)."""
    return hmac.compare_digest(presented.encode("utf-8", "surrogatepass"),
                               expected.encode("utf-8", "surrogatepass"))


def check_token(header: str | None, expected: str, *, header_required: bool) -> AuthOutcome:
    """Check an operator ``Authorization`` header against the configured token.

    A header that is present always has to carry ``expected``. Without a header
    the request passes only when ``header_required`` is false (the operator
    configured the token, as with ``MF_PROVISION_API_KEY`` upstream).
    """
    if header is None or not header.strip(_WHITESPACE):
        return AuthOutcome.MISSING if header_required else AuthOutcome.OK
    credential = extract_credential(header, USER_SCHEMES)
    if credential is None:
        return AuthOutcome.MALFORMED
    return AuthOutcome.OK if secrets_equal(credential, expected) else AuthOutcome.WRONG

