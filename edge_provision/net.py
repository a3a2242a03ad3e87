"""Small socket helpers shared by the lab server and the test support."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (racy by nature; retry on a clash)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                       socket.SOCK_STREAM) as sock:  # fmt: skip
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
