"""What the lab broker reads: password file, ACL, mosquitto.conf (pure renderers).

Private to :mod:`edge_provision.lab.mosquitto`. Password hash, as ``mosquitto_passwd``
writes it: ``$7$<iterations>$<b64 salt>$<b64 PBKDF2-SHA512>``.

The ACL has ONE line per channel of a thing: ``topic readwrite channels/<id>/messages/#``
(in MQTT and in mosquitto's matcher ``a/#`` also matches ``a``). mosquitto 2.0 finds the
user of each ``topic`` line by walking the list of users read so far, so a reload costs
about (lines per thing + 1) x things^2 / 2 steps: fewer lines per thing is the one lever
(``docs/benchmarks.md``, "Lab broker").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "ADMIN_USER",
    "PROBE_USER",
    "check_password",
    "hash_password",
    "render_acl",
    "render_config",
    "render_password_file",
]

ADMIN_USER = "edge-provision-admin"
"""Reads and writes every channel (the lab's own tools); its password is in ``admin-password``."""
PROBE_USER = "edge-provision-probe"
"""No ACL at all: the lab connects as it to check that the broker applied the files."""

_ITERATIONS = 101  # mosquitto_passwd's default for $7$
_SALT_BYTES = 12
_HASH_BYTES = 64


def hash_password(password: str, *, salt: bytes | None = None,
                  iterations: int = _ITERATIONS) -> str:  # fmt: skip
    """mosquitto's ``$7$`` hash of ``password`` (PBKDF2-HMAC-SHA512, 64 bytes)."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, _HASH_BYTES)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(hashed: str, password: str) -> bool:
    """Whether ``hashed`` (a ``$7$`` entry) is the hash of ``password``."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7" or not parts[2].isdigit():
        return False
    try:
        salt = base64.b64decode(parts[3], validate=True)
        want = base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    got = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, int(parts[2]), len(want))
    return hmac.compare_digest(got, want)


def render_password_file(entries: Mapping[str, str]) -> str:
    """``user:hash`` lines, sorted by user (``entries`` maps user -> ``$7$`` hash)."""
    for user in entries:
        if not user or ":" in user or any(ch.isspace() for ch in user):
            raise ValueError(f"user name {user!r} cannot be written to a mosquitto password file")
    return "".join(f"{user}:{entries[user]}\n" for user in sorted(entries))


def render_acl(grants: Mapping[str, Sequence[str]], admin: str | None = ADMIN_USER) -> str:
    """The ACL: each user may read/write only on the channels it is connected to."""
    lines = ["# written by edge-provision serve --mqtt; changes are overwritten"]
    if admin:
        lines += [f"user {admin}", "topic readwrite channels/#"]
    for user in sorted(grants):
        channels = sorted(set(grants[user]))
        if channels:
            lines.append(f"user {user}")
            lines += [f"topic readwrite channels/{channel}/messages/#" for channel in channels]
    return "\n".join(lines) + "\n"


def render_config(directory: Path, *, host: str, port: int, tls_port: int | None,
                  require_cert: bool, cafile: Path, user: str | None) -> str:  # fmt: skip
    """mosquitto.conf for a lab broker whose files live in ``directory``.

    With client certificates required, the certificate is the identity on the TLS
    listener (``use_identity_as_username``: user = CN = thing id, no password).
    """
    lines = [
        "# written by edge-provision serve --mqtt",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {directory / 'passwd'}",
        f"acl_file {directory / 'acl'}",
        "persistence false",
        "set_tcp_nodelay true",  # deliveries go out at once, not after the peer's ACK
        f"log_dest file {directory / 'mosquitto.log'}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
    ]
    if user:
        lines.append(f"user {user}")
    lines += ["", f"listener {port} {host}"]
    if tls_port is not None:
        lines += [
            "", f"listener {tls_port} {host}",
            f"cafile {cafile}",
            f"certfile {directory / 'server.crt'}",
            f"keyfile {directory / 'server.key'}",
        ]  # fmt: skip
        if require_cert:
            lines += ["require_certificate true", "use_identity_as_username true",
                      f"crlfile {directory / 'crl.pem'}"]  # fmt: skip
    return "\n".join(lines) + "\n"
