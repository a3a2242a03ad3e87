"""One MQTT 3.1.1 CONNECT, CONNACK, DISCONNECT over a socket (private to the lab broker).

The lab asks its broker "did you apply the files?" and "drop that session" with it;
paho stays in the agent. :func:`connect_once` returns the CONNACK return code (0
accepted, 4 bad user name or password, 5 not authorised) and raises ``OSError`` when
the broker closes or times out before answering.
"""

from __future__ import annotations

import socket
import ssl
import struct

__all__ = ["ACCEPTED", "connect_once"]

ACCEPTED = 0


def _string(value: str) -> bytes:
    raw = value.encode("utf-8")
    return struct.pack("!H", len(raw)) + raw


def _remaining_length(size: int) -> bytes:
    out = bytearray()
    while True:
        size, digit = divmod(size, 128)
        out.append(digit | (0x80 if size else 0))
        if not size:
            return bytes(out)


def connect_packet(client_id: str, username: str, password: str, keepalive_s: int = 10) -> bytes:
    """CONNECT with a clean session, a user name and a password."""
    variable = _string("MQTT") + bytes([4, 0x80 | 0x40 | 0x02]) + struct.pack("!H", keepalive_s)
    payload = _string(client_id) + _string(username) + _string(password)
    body = variable + payload
    return b"\x10" + _remaining_length(len(body)) + body


def connect_once(host: str, port: int, *, client_id: str, username: str, password: str,
                 tls: ssl.SSLContext | None = None, timeout_s: float = 2.0) -> int:  # fmt: skip
    """Connect, read the CONNACK, disconnect; the CONNACK return code."""
    with socket.create_connection((host, port), timeout=timeout_s) as raw:
        sock: socket.socket = raw
        if tls is not None:
            sock = tls.wrap_socket(raw, server_hostname=host)
        try:
            sock.sendall(connect_packet(client_id, username, password))
            answer = b""
            while len(answer) < 4:
                chunk = sock.recv(4 - len(answer))
                if not chunk:
                    raise ConnectionResetError("the broker closed the connection before CONNACK")
                answer += chunk
            if answer[0] != 0x20 or answer[1] != 2:
                raise ConnectionError(f"not a CONNACK: {answer.hex()}")
            if answer[3] == ACCEPTED:
                sock.sendall(b"\xe0\x00")  # DISCONNECT
            return answer[3]
        finally:
            if sock is not raw:
                sock.close()
