"""Client of the Provision service: ``POST /mapping`` (wire contract section 1).

Mainflux 0.12/0.13 report most failures of the provisioning run as **201
Created** with ``{"things": null, "channels": null, "error": "<chain>"}``; this
client turns those into the right error class. Magistrala-style proper 4xx/5xx
answers are mapped by :mod:`edge_provision.http`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from edge_provision.errors import (
    AlreadyProvisioned,
    ProtocolError,
    ProvisioningError,
    Rejected,
    ServiceUnavailable,
    Unauthorized,
)
from edge_provision.http import AuthScheme, Credential, HttpClient, HttpResponse
from edge_provision.platform.models import (
    PlatformChannel,
    PlatformThing,
    parse_channel,
    parse_list,
    parse_thing,
)

__all__ = ["MappingResult", "ProvisionClient", "classify_mapping_error"]

logger = logging.getLogger(__name__)

_MAPPING_PATH = "/mapping"
_AUTH_MARKERS = (
    "401",
    "403 forbidden",
    "missing credentials",
    "failed to create access token",
    "unauthorized",
)
_TRANSIENT_MARKERS = (
    "connection refused",
    "i/o timeout",
    "context deadline exceeded",
    "500 internal server error",
    "502 bad gateway",
    "503 service unavailable",
    "504 gateway timeout",
)


@dataclass(frozen=True)
class MappingResult:
    """What one successful ``POST /mapping`` created."""

    things: tuple[PlatformThing, ...]
    channels: tuple[PlatformChannel, ...]
    whitelisted: tuple[str, ...] = ()
    client_certs: dict[str, str] = field(default_factory=dict)
    client_keys: dict[str, str] = field(default_factory=dict, repr=False)
    ca_cert: str | None = None

    def channel_of_type(self, channel_type: str) -> PlatformChannel | None:
        """The first channel whose ``metadata.type`` is ``channel_type``."""
        return next((c for c in self.channels if c.type == channel_type), None)


def classify_mapping_error(text: str, external_id: str, url: str) -> ProvisioningError:
    """The error for a ``/mapping`` run that failed with upstream error chain ``text``."""
    lower = text.lower()
    if "409 conflict" in lower or "entity already exists" in lower:
        return AlreadyProvisioned(
            f"external_id {external_id!r} already provisioned on the platform ({url}: "
            f"{text}); fetch its bootstrap config with the same external_key, or have an "
            "operator delete the bootstrap config before mapping it again"
        )
    if any(marker in lower for marker in _AUTH_MARKERS):
        return Unauthorized(
            f"{url}: the platform could not authenticate the provisioning run ({text}); "
            "check the token (or the Provision service's MF_PROVISION_API_KEY / user and "
            "password)"
        )
    if any(marker in lower for marker in _TRANSIENT_MARKERS):
        return ServiceUnavailable(f"{url}: a platform service is not reachable now ({text})")
    return Rejected(f"{url}: the platform refused to provision {external_id!r}: {text}")


class ProvisionClient:
    """``POST /mapping`` against a Mainflux-compatible Provision service.

    ``token`` is a user token or API key; ``None`` sends no ``Authorization``
    header at all (the service then uses its own configured credentials).
    """

    def __init__(
        self,
        http: HttpClient,
        *,
        token: str | None,
        auth_scheme: AuthScheme = AuthScheme.AUTO,
    ) -> None:
        self._http = http
        self._token = token or None
        self._auth_scheme = auth_scheme

    def create_mapping(
        self, external_id: str, external_key: str, name: str | None = None
    ) -> MappingResult:
        """Provision ``external_id``; return what the platform created.

        Raises ``AlreadyProvisioned`` (409 / "409 Conflict" in the error chain),
        ``Unauthorized``, ``Rejected``, ``ServiceUnavailable`` or ``ProtocolError``.
        After a failure, leftovers may exist on the platform (contract section 1.6).
        """
        if not external_id or not external_key:
            raise Rejected("external_id and external_key must both be non-empty")
        body: dict[str, object] = {"external_id": external_id, "external_key": external_key}
        if name:
            body["name"] = name
        logger.info("mapping request external_id=%s url=%s", external_id, self._http.base_url)
        credential = Credential("user", self._token) if self._token else None
        known = self._http.scheme_for("user")
        probing = credential is not None and self._auth_scheme is AuthScheme.AUTO and known is None
        scheme = self._auth_scheme
        if scheme is AuthScheme.AUTO:
            scheme = known or AuthScheme.MODERN
        try:
            result = self._attempt(body, credential, scheme, external_id)
        except Unauthorized as first:
            if not probing:
                raise
            # 0.12 passes the header value on as the token, so "Bearer X" fails in
            # Things (201 + "... 401 Unauthorized"); the bare value is the 0.12 form.
            logger.info("auth fallback kind=user from=modern to=bare path=%s", _MAPPING_PATH)
            try:
                result = self._attempt(body, credential, AuthScheme.BARE, external_id)
            except Unauthorized:
                raise first from None  # both forms refused: report the current protocol's answer
            self._http.remember_scheme("user", AuthScheme.BARE)
        else:
            if probing:
                self._http.remember_scheme("user", AuthScheme.MODERN)
        logger.info(
            "mapping created external_id=%s things=%s channels=%s",
            external_id,
            len(result.things),
            len(result.channels),
        )
        return result

    def _attempt(
        self,
        body: dict[str, object],
        credential: Credential | None,
        scheme: AuthScheme,
        external_id: str,
    ) -> MappingResult:
        """One ``POST /mapping`` with a concrete header form; raise on any failure."""
        response = self._http.request(
            "POST",
            _MAPPING_PATH,
            json_body=body,
            expected=(200, 201),
            auth=credential,
            auth_scheme=scheme,
        )
        error = _failure_text(response)
        if error is not None:
            raise classify_mapping_error(error, external_id, response.url)
        return _parse_result(response)


def _failure_text(response: HttpResponse) -> str | None:
    """The upstream error chain of a 201-with-error answer, else ``None``."""
    data = response.json_object()
    error = data.get("error")
    if isinstance(error, str) and error.strip():
        return error.strip()
    if error not in (None, ""):
        return str(error)
    return None


def _parse_result(response: HttpResponse) -> MappingResult:
    where = f"{response.url} reply"
    data = response.json_object()
    if data.get("things") is None:
        raise ProtocolError(
            f"{where}: 'things' is null without an error message; the provisioning run "
            "failed for an unknown reason"
        )
    things = parse_list(data, "things", parse_thing, where)
    if not things:
        raise ProtocolError(f"{where}: expected a non-empty 'things' list")
    channels = parse_list(data, "channels", parse_channel, where)
    return MappingResult(
        things=things,
        channels=channels,
        whitelisted=_whitelisted(data.get("whitelisted"), where),
        client_certs=_str_map(data.get("client_cert"), "client_cert", where),
        client_keys=_str_map(data.get("client_key"), "client_key", where),
        ca_cert=_optional_str(data.get("ca_cert"), "ca_cert", where),
    )


def _whitelisted(value: object, where: str) -> tuple[str, ...]:
    """``{thing_id: true}`` upstream; a plain list of ids is accepted too."""
    if value is None:
        return ()
    if isinstance(value, dict):
        return tuple(str(k) for k, v in value.items() if v)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ProtocolError(f"{where}: 'whitelisted' is neither an object nor a list of ids")


def _str_map(value: object, name: str, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ProtocolError(f"{where}: {name!r} must map thing ids to PEM strings")
    return {str(k): v for k, v in value.items()}


def _optional_str(value: object, name: str, where: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"{where}: {name!r} must be a string")
    return value
