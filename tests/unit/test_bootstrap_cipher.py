"""Tests for the Mainflux secure-bootstrap AES-CFB128 scheme (contract section 2.4)."""

from __future__ import annotations

import importlib
import json
import warnings

import pytest

from edge_provision.crypto.bootstrap_cipher import (
    DEFAULT_ENCRYPT_KEY_HEX,
    decrypt,
    decrypt_external_key_header,
    encrypt,
    encrypt_external_key_header,
    parse_encrypt_key,
)
from edge_provision.errors import ConfigError, ProtocolError

VECTOR_IV = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
VECTOR_KEY_CT = "000102030405060708090a0b0c0d0e0f34f219d04dd1fab8c9807564ddf859"
VECTOR_JSON = '{"mainflux_id":"t1","mainflux_key":"k1","mainflux_channels":[{"id":"c1"}]}'
VECTOR_JSON_CT = (
    "000102030405060708090a0b0c0d0e0f22a959d45ccbf9a6d2994620d2bf1a67ac0b16574a2758625cde53d2"
    "9b33dd97d4fc71fc20de1036a02ebcebbffce5c8d30adb987e80cbad3d734d78474384bbe7719de1909680a3"
    "c9b3"
)


@pytest.fixture
def key() -> bytes:
    """The upstream default MF_BOOTSTRAP_ENCRYPT_KEY, decoded."""
    return parse_encrypt_key(DEFAULT_ENCRYPT_KEY_HEX)


def test_default_key_decodes_to_sixteen_bytes(key: bytes) -> None:
    """The default key is the 16 bytes 12 34 56 78 91 01 ... 92 02 (AES-128)."""
    assert key == bytes.fromhex("12345678910111213141516171819202")
    assert len(key) == 16


def test_external_key_vector(key: bytes) -> None:
    """'my-external-key' with the fixed IV gives the contract's cipher text."""
    assert encrypt(key, b"my-external-key", VECTOR_IV).hex() == VECTOR_KEY_CT


def test_external_key_vector_decrypts(key: bytes) -> None:
    """The contract's header token decrypts back to 'my-external-key'."""
    assert decrypt_external_key_header(key, VECTOR_KEY_CT) == "my-external-key"
    assert decrypt_external_key_header(key, VECTOR_KEY_CT.upper()) == "my-external-key"


def test_json_vector(key: bytes) -> None:
    """The bootstrap JSON with the fixed IV gives the contract's raw response body."""
    blob = encrypt(key, VECTOR_JSON.encode(), VECTOR_IV)
    assert blob.hex() == VECTOR_JSON_CT
    assert json.loads(decrypt(key, bytes.fromhex(VECTOR_JSON_CT)))["mainflux_id"] == "t1"


@pytest.mark.parametrize("hex_len", [32, 48, 64])
def test_round_trip_every_key_size(hex_len: int) -> None:
    """AES-128/192/256 keys all encrypt and decrypt back, with IV prefix and no padding."""
    key = parse_encrypt_key("ab" * (hex_len // 2))
    assert len(key) == hex_len // 2
    plaintext = b"x" * 37
    blob = encrypt(key, plaintext)
    assert len(blob) == 16 + len(plaintext)
    assert decrypt(key, blob) == plaintext


def test_random_iv_differs_each_time(key: bytes) -> None:
    """Without an explicit IV two encryptions of the same text differ."""
    assert encrypt(key, b"same") != encrypt(key, b"same")


def test_empty_plaintext(key: bytes) -> None:
    """An empty plaintext is just the IV, and a bare IV decrypts to nothing."""
    blob = encrypt(key, b"", VECTOR_IV)
    assert blob == VECTOR_IV
    assert decrypt(key, blob) == b""


def test_wrong_key_gives_garbage_not_error(key: bytes) -> None:
    """CFB has no MAC: a different key decrypts to different bytes without raising."""
    other = parse_encrypt_key("00" * 16)
    assert decrypt(other, encrypt(key, b"my-external-key")) != b"my-external-key"


@pytest.mark.parametrize("text", ["", "1234", "1" * 31, "1" * 33, "1" * 63, "1" * 128])
def test_parse_key_wrong_length(text: str) -> None:
    """Keys that are not 32/48/64 hex characters are refused with the count in the message."""
    with pytest.raises(ConfigError) as info:
        parse_encrypt_key(text)
    message = str(info.value)
    assert message.startswith("MF_BOOTSTRAP_ENCRYPT_KEY: expected 32, 48 or 64 hex characters")
    assert f"got {len(text)} characters" in message


def test_parse_key_not_hex() -> None:
    """A key of the right length with non-hex characters is refused without echoing it."""
    secret = "zz345678910111213141516171819202"
    with pytest.raises(ConfigError) as info:
        parse_encrypt_key(secret)
    assert "not valid hex" in str(info.value)
    assert secret not in str(info.value)


def test_parse_key_non_ascii() -> None:
    """Non-ASCII characters in the key are a ConfigError, not a UnicodeError."""
    with pytest.raises(ConfigError, match="not valid hex"):
        parse_encrypt_key("é" * 32)


def test_parse_key_strips_whitespace() -> None:
    """A trailing newline (key read from a file) is ignored; upper-case hex is fine."""
    assert parse_encrypt_key(DEFAULT_ENCRYPT_KEY_HEX.upper() + "\n") == bytes.fromhex(
        DEFAULT_ENCRYPT_KEY_HEX
    )


def test_bad_raw_key_length() -> None:
    """encrypt/decrypt with a raw key of the wrong size raise ConfigError."""
    with pytest.raises(ConfigError, match="16, 24 or 32 bytes"):
        encrypt(b"short", b"data")
    with pytest.raises(ConfigError, match="16, 24 or 32 bytes"):
        decrypt(b"short", bytes(32))


def test_bad_iv_length(key: bytes) -> None:
    """An explicit IV that is not 16 bytes is refused."""
    with pytest.raises(ProtocolError, match="16 bytes"):
        encrypt(key, b"data", b"\x00" * 8)


@pytest.mark.parametrize("size", [0, 1, 15])
def test_decrypt_too_short(key: bytes, size: int) -> None:
    """A blob shorter than the IV is a ProtocolError."""
    with pytest.raises(ProtocolError, match="too short"):
        decrypt(key, bytes(size))


def test_header_round_trip(key: bytes) -> None:
    """encrypt_external_key_header output is lower-case hex that decrypts back."""
    token = encrypt_external_key_header(key, "clé-ünïcode")
    assert token == token.lower()
    assert len(token) == 2 * (16 + len("clé-ünïcode".encode()))
    assert decrypt_external_key_header(key, token) == "clé-ünïcode"


@pytest.mark.parametrize("token", ["not-hex", "abc", "0g" * 20, "ü" * 40])
def test_header_bad_hex(key: bytes, token: str) -> None:
    """A header token that is not hex is a ProtocolError."""
    with pytest.raises(ProtocolError, match="not valid hex"):
        decrypt_external_key_header(key, token)


def test_header_too_short(key: bytes) -> None:
    """A hex header shorter than an IV is a ProtocolError."""
    with pytest.raises(ProtocolError, match="too short"):
        decrypt_external_key_header(key, "00" * 10)


def test_header_bad_utf8(key: bytes) -> None:
    """A header that decrypts to bytes that are not UTF-8 is a ProtocolError."""
    token = encrypt(key, b"\xff\xfe\xfd", VECTOR_IV).hex()
    with pytest.raises(ProtocolError, match="UTF-8"):
        decrypt_external_key_header(key, token)


def test_import_emits_no_warning(key: bytes) -> None:
    """Loading the module and encrypting use the non-deprecated CFB import."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.reload(importlib.import_module("edge_provision.crypto.bootstrap_cipher"))
        module.decrypt(key, module.encrypt(key, b"quiet"))
    assert [str(w.message) for w in caught] == []
