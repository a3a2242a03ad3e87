"""Mainflux secure-bootstrap encryption: AES-CFB with 128-bit feedback.

The scheme is exactly the one of the Mainflux bootstrap service (0.12.x - 0.13.0,
unchanged in Magistrala v0.14; wire contract section 2.4):

* the key is ``MF_BOOTSTRAP_ENCRYPT_KEY`` hex-decoded (16, 24 or 32 bytes);
* a message is ``IV (16 random bytes) || AES-CFB128(key, IV, plaintext)``, with
  no padding and no MAC (Go ``cipher.NewCFBEncrypter``; **not** CFB8);
* the request header is ``Authorization: Thing <hex(message of external_key)>``,
  the response body is the raw binary message of the bootstrap JSON document.

This is obfuscation, not security: the key is shared by the whole deployment
and has a public default, CFB without a MAC is malleable and a captured header
can be replayed forever. Use TLS for confidentiality.
"""

from __future__ import annotations

import binascii
import importlib
import os
from typing import Callable, cast

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.modes import ModeWithInitializationVector

from edge_provision.errors import ConfigError, ProtocolError

__all__ = [
    "DEFAULT_ENCRYPT_KEY_HEX",
    "IV_SIZE",
    "decrypt",
    "decrypt_external_key_header",
    "encrypt",
    "encrypt_external_key_header",
    "parse_encrypt_key",
]

DEFAULT_ENCRYPT_KEY_HEX = "12345678910111213141516171819202"
"""Upstream default of ``MF_BOOTSTRAP_ENCRYPT_KEY`` (public: change it in production)."""

IV_SIZE = 16
"""AES block size; every message starts with an IV of this many bytes."""

_KEY_SIZES = (16, 24, 32)
_ENV_NAME = "MF_BOOTSTRAP_ENCRYPT_KEY"


def _load_cfb() -> Callable[[bytes], ModeWithInitializationVector]:
    """Find the CFB (128-bit feedback) mode class without a deprecation warning.

    cryptography >= 47 keeps it in the ``decrepit`` namespace; older releases only
    in ``primitives.ciphers.modes`` (where newer ones warn, then remove it).
    """
    for module_name in (
        "cryptography.hazmat.decrepit.ciphers.modes",
        "cryptography.hazmat.primitives.ciphers.modes",
    ):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        cfb = getattr(module, "CFB", None)
        if cfb is not None:
            return cast("Callable[[bytes], ModeWithInitializationVector]", cfb)
    raise ImportError("cryptography offers no AES-CFB mode")  # pragma: no cover


_CFB = _load_cfb()


def parse_encrypt_key(hex_text: str) -> bytes:
    """Decode ``MF_BOOTSTRAP_ENCRYPT_KEY`` (32, 48 or 64 hex characters) into an AES key.

    Surrounding whitespace (a trailing newline from a key file) is ignored.
    Raises :class:`ConfigError`; the message never contains the key itself.
    """
    text = hex_text.strip()
    if len(text) not in (2 * n for n in _KEY_SIZES):
        raise ConfigError(
            f"{_ENV_NAME}: expected 32, 48 or 64 hex characters (AES-128/192/256), "
            f"got {len(text)} characters"
        )
    try:
        return binascii.unhexlify(text.encode("ascii"))
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise ConfigError(
            f"{_ENV_NAME}: not valid hex; use only the characters 0-9 and a-f "
            "(e.g. generate one with: openssl rand -hex 16)"
        ) from None


def _check_key(key: bytes) -> None:
    if len(key) not in _KEY_SIZES:
        raise ConfigError(
            f"bootstrap encryption key: expected 16, 24 or 32 bytes (AES-128/192/256), "
            f"got {len(key)} bytes; decode it with parse_encrypt_key()"
        )


def encrypt(key: bytes, plaintext: bytes, iv: bytes | None = None) -> bytes:
    """Return ``iv || AES-CFB128(key, iv, plaintext)``; a random IV unless one is given.

    Pass ``iv`` only for test vectors: reusing an IV with the same key leaks the
    XOR of the plaintexts. Raises :class:`ConfigError` for a bad key length and
    :class:`ProtocolError` for an IV that is not 16 bytes.
    """
    _check_key(key)
    if iv is None:
        iv = os.urandom(IV_SIZE)
    elif len(iv) != IV_SIZE:
        raise ProtocolError(f"AES-CFB IV must be {IV_SIZE} bytes, got {len(iv)}")
    encryptor = Cipher(algorithms.AES(key), _CFB(iv)).encryptor()
    return iv + encryptor.update(plaintext) + encryptor.finalize()


def decrypt(key: bytes, blob: bytes) -> bytes:
    """Split off the 16-byte IV of ``blob`` and decrypt the rest.

    Raises :class:`ProtocolError` if ``blob`` is shorter than an IV. There is no
    MAC, so a wrong key yields garbage rather than an error: callers check the
    result (parse the JSON, compare the external key).
    """
    _check_key(key)
    if len(blob) < IV_SIZE:
        raise ProtocolError(
            f"encrypted bootstrap message too short: {len(blob)} bytes, expected at least "
            f"{IV_SIZE} (the IV); is the server using the secure bootstrap endpoint?"
        )
    iv, body = bytes(blob[:IV_SIZE]), bytes(blob[IV_SIZE:])
    decryptor = Cipher(algorithms.AES(key), _CFB(iv)).decryptor()
    return decryptor.update(body) + decryptor.finalize()


def encrypt_external_key_header(key: bytes, external_key: str) -> str:
    """Return the lower-case hex token for ``Authorization: Thing <token>`` (no prefix)."""
    return encrypt(key, external_key.encode("utf-8")).hex()


def decrypt_external_key_header(key: bytes, hex_text: str) -> str:
    """Decrypt the hex token of a secure ``Authorization: Thing <token>`` header.

    Upper- or lower-case hex is accepted (as upstream). Raises
    :class:`ProtocolError` if the token is not hex, too short, or does not
    decrypt to UTF-8 text.
    """
    text = hex_text.strip()
    try:
        blob = binascii.unhexlify(text.encode("ascii"))
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise ProtocolError(
            "encrypted external key is not valid hex (expected hex of IV || ciphertext)"
        ) from None
    plaintext = decrypt(key, blob)
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(
            "encrypted external key does not decrypt to UTF-8 text; "
            "the client probably uses another MF_BOOTSTRAP_ENCRYPT_KEY"
        ) from None
