"""Client of the Bootstrap service's device endpoints (wire contract sections 2.3, 2.4).

``GET /things/bootstrap/<external_id>`` with ``Authorization: Thing <external_key>``
(bare key for 0.12), and the "secure" variant whose header and body are
AES-CFB encrypted with the deployment-wide key (:mod:`edge_provision.crypto.bootstrap_cipher`).

Both field generations are read: ``mainflux_id``/``mainflux_key``/``mainflux_channels``
(Mainflux) and ``thing_id``/``thing_key``/``channels`` (Magistrala), plus the lab
server's ``extra_things`` extension.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from edge_provision.crypto import bootstrap_cipher
from edge_provision.errors import ConfigError, ProtocolError, Reason, Unauthorized
from edge_provision.http import AuthScheme, Credential, HttpClient, HttpResponse, path_segment
from edge_provision.platform.models import (
    PlatformChannel,
    PlatformThing,
    parse_channel,
    parse_list,
    parse_thing,
)

__all__ = ["BootstrapClient", "BootstrapConfig"]

logger = logging.getLogger(__name__)

# 0.12.x answers a wrong key with 404 and this text (0.13: 403); the secure
# endpoint adds "encrypted" when the header cannot be decrypted to the key.
_WRONG_KEY_TEXT = "for given external key"
_WRONG_ENCRYPTED_KEY_TEXT = "for given encrypted external key"


@dataclass(frozen=True)
class BootstrapConfig:
    """The gateway's bootstrap configuration as the device endpoint returns it."""

    thing_id: str
    thing_key: str = field(repr=False)
    channels: tuple[PlatformChannel, ...] = ()
    content: str = field(default="", repr=False)
    client_cert: str = ""
    client_key: str = field(default="", repr=False)
    ca_cert: str = ""
    extra_things: tuple[PlatformThing, ...] = ()

    def channel_of_type(self, channel_type: str) -> PlatformChannel | None:
        """The first channel whose ``metadata.type`` is ``channel_type`` (never by position)."""
        return next((c for c in self.channels if c.type == channel_type), None)

    def content_json(self) -> dict[str, object]:
        """``content`` parsed (a JSON object string; empty means ``{}``)."""
        if not self.content.strip():
            return {}
        try:
            value = json.loads(self.content)
        except ValueError as exc:
            raise ProtocolError(
                f"bootstrap content of thing {self.thing_id} is not valid JSON "
                f"(line {getattr(exc, 'lineno', '?')}); fix [bootstrap.content] on the platform"
            ) from None
        if not isinstance(value, dict):
            raise ProtocolError(
                f"bootstrap content of thing {self.thing_id} is JSON but not an object"
            )
        return value


class BootstrapClient:
    """Fetch a bootstrap configuration the way a device does."""

    def __init__(
        self,
        http: HttpClient,
        *,
        auth_scheme: AuthScheme = AuthScheme.AUTO,
        encrypt_key: bytes | None = None,
    ) -> None:
        self._http = http
        self._auth_scheme = auth_scheme
        self._encrypt_key = encrypt_key

    def fetch(
        self, external_id: str, external_key: str, *, secure: bool = False
    ) -> BootstrapConfig | None:
        """The configuration for ``external_id``, or ``None`` if the platform has none.

        Raises ``Unauthorized`` when the platform has a configuration but
        ``external_key`` does not match it, ``ProtocolError`` for an unreadable
        answer, ``ServiceUnavailable`` for network and server trouble.
        """
        segment = path_segment(external_id, "external_id")
        if secure:
            if self._encrypt_key is None:
                raise ConfigError(
                    "secure bootstrap needs the deployment's encryption key "
                    "(MF_BOOTSTRAP_ENCRYPT_KEY, hex); set it or use the plain endpoint over TLS"
                )
            path = f"/things/bootstrap/secure/{segment}"
            secret = bootstrap_cipher.encrypt_external_key_header(self._encrypt_key, external_key)
        else:
            path = f"/things/bootstrap/{segment}"
            secret = external_key
        response = self._http.request(
            "GET",
            path,
            expected=(200, 401, 403, 404),
            auth=Credential("thing", secret),
            auth_scheme=self._auth_scheme,
            fallback_if=_header_form_refused,
        )
        if response.status != 200:
            return self._refusal(response, external_id, secure)
        if secure:
            assert self._encrypt_key is not None
            content_type = (response.header("Content-Type") or "").lower()
            if content_type.startswith("text/"):  # a page, not a ciphertext: do not decrypt it
                raise response.not_the_answer("an encrypted bootstrap config")
            plain = bootstrap_cipher.decrypt(self._encrypt_key, response.body)
            config = _config_from(_decrypted_json(plain, response.url), response.url)
        else:
            config = _config_from(response.json(), response.url)
        logger.info(
            "bootstrap config fetched external_id=%s thing_id=%s channels=%s",
            external_id,
            config.thing_id,
            len(config.channels),
        )
        return config

    @staticmethod
    def _refusal(response: HttpResponse, external_id: str, secure: bool) -> None:
        """Turn 401/403/404 into ``None`` (no config) or ``Unauthorized``.

        A config held for another external_key is ``Reason.KEY_MISMATCH``; an encrypted
        key the platform cannot decrypt is ``Reason.CONFIG`` (our encryption key differs).
        """
        text = response.error_text or ""
        said = f" (server said: {text})" if text else ""
        if _WRONG_ENCRYPTED_KEY_TEXT in text:
            raise Unauthorized(
                f"{response.url}: HTTP {response.status}: the platform could not decrypt our "
                f"external_key{said}; the secure-bootstrap encryption key differs from the "
                "platform's MF_BOOTSTRAP_ENCRYPT_KEY",
                reason=Reason.CONFIG,
            )
        if response.status == 403 or _WRONG_KEY_TEXT in text:
            hint = (
                " or the secure-bootstrap encryption key differs from the platform's"
                if secure
                else ""
            )
            raise Unauthorized(
                f"{response.url}: HTTP {response.status}: a bootstrap config exists for "
                f"external_id {external_id!r} but the external_key does not match the one the "
                f"platform has{hint}{said}; fix external_key or have an operator update the "
                "bootstrap config",
                reason=Reason.KEY_MISMATCH,
            )
        if response.status == 401:
            raise Unauthorized(
                f"{response.url}: HTTP 401: the bootstrap service did not accept the "
                f"Authorization header{said}; check the auth scheme (modern 'Thing <key>' "
                "for Mainflux >= 0.13, bare for 0.12)"
            )
        logger.info("bootstrap config not found external_id=%s", external_id)
        return None


def _header_form_refused(response: HttpResponse) -> bool:
    """Whether an answer to the modern header may mean "this server wants the bare form".

    0.13 refuses a bare key with 401; 0.12 compares the whole header value with the
    key, so ``Thing <key>`` gets 404 "...for given (encrypted) external key". A 404
    "failed to read bootstrap configuration" is an unknown external_id under either
    form: retrying would only double the requests of every first-boot lookup.
    """
    if response.status in (401, 403):
        return True
    return response.status == 404 and "for given" in (response.error_text or "")


def _decrypted_json(plain: bytes, url: str) -> object:
    try:
        return json.loads(plain.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError(
            f"{url} reply: the decrypted secure-bootstrap body is not JSON; the encryption "
            "key differs from the platform's MF_BOOTSTRAP_ENCRYPT_KEY"
        ) from None


def _config_from(data: object, url: str) -> BootstrapConfig:
    where = f"{url} reply"
    if not isinstance(data, dict):
        raise ProtocolError(f"{where}: expected a JSON object, got {type(data).__name__}")
    thing_id = _first_str(data, ("mainflux_id", "thing_id"), where, required=True)
    thing_key = _first_str(data, ("mainflux_key", "thing_key"), where, required=True)
    channels_key = "mainflux_channels" if data.get("mainflux_channels") is not None else "channels"
    channels = parse_list(data, channels_key, parse_channel, where)
    extra = parse_list(data, "extra_things", parse_thing, where)
    content = data.get("content")
    if content is None:
        content = ""
    elif isinstance(content, dict):  # tolerate a server that sends the table itself
        content = json.dumps(content, sort_keys=True, separators=(",", ":"))
    elif not isinstance(content, str):
        raise ProtocolError(f"{where}: 'content' must be a JSON string")
    return BootstrapConfig(
        thing_id=thing_id,
        thing_key=thing_key,
        channels=channels,
        content=content,
        client_cert=_first_str(data, ("client_cert",), where, required=False),
        client_key=_first_str(data, ("client_key",), where, required=False),
        ca_cert=_first_str(data, ("ca_cert",), where, required=False),
        extra_things=extra,
    )


def _first_str(
    data: dict[str, object], names: tuple[str, ...], where: str, *, required: bool
) -> str:
    for name in names:
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ProtocolError(f"{where}: {name!r} must be a string")
        if value:
            return value
    if required:
        raise ProtocolError(f"{where}: missing {' or '.join(repr(n) for n in names)}")
    return ""
