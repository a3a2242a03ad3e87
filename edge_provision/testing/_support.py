"""The throwaway CA and the small polling helpers of :mod:`edge_provision.testing`."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable, TypeVar

from edge_provision import fileio
from edge_provision.net import free_port

__all__ = ["ThrowawayCA", "free_port", "wait_for"]

T = TypeVar("T")


class ThrowawayCA:
    """A :class:`~edge_provision.crypto.pki.LocalCA` living in ``directory/ca`` for one test."""

    def __init__(self, directory: Path) -> None:
        from edge_provision.crypto.pki import LocalCA  # only tests pay for cryptography here

        self.directory = Path(directory)
        self._ca = LocalCA.load_or_create(self.directory / "ca", common_name="throwaway test CA")
        self._count = 0
        self._lock = threading.Lock()

    @property
    def cert_pem(self) -> str:
        """The CA certificate (PEM)."""
        return self._ca.cert_pem

    @property
    def ca_path(self) -> Path:
        """Path of the CA certificate file (use as a CA bundle)."""
        return self.directory / "ca" / "ca.crt"

    def issue_client(self, cn: str, ttl_s: int = 3600) -> tuple[str, str]:
        """A client certificate (clientAuth) for ``cn``: ``(cert_pem, key_pem)``."""
        issued, key_pem = self._ca.issue(common_name=cn, key_type="ec", key_bits=None, ttl_s=ttl_s)
        return issued.cert_pem, key_pem

    def write_client(self, cn: str, ttl_s: int = 3600) -> tuple[Path, Path]:
        """Like :meth:`issue_client` but written to files: ``(cert_path, key_path)``."""
        cert_pem, key_pem = self.issue_client(cn, ttl_s)
        return self._write(f"client-{cn}", cert_pem, key_pem)

    def issue_server(
        self, hostnames: list[str] | tuple[str, ...] = ("127.0.0.1", "localhost"), ttl_s: int = 3600
    ) -> tuple[Path, Path]:
        """A TLS server certificate for ``hostnames``, written out: ``(cert_path, key_path)``."""
        issued, key_pem = self._ca.issue_server_cert(list(hostnames), ttl_s)
        return self._write("server", issued.cert_pem, key_pem)

    def _write(self, stem: str, cert_pem: str, key_pem: str) -> tuple[Path, Path]:
        with self._lock:
            self._count += 1
            n = self._count
        out = fileio.ensure_private_dir(self.directory / "issued")
        cert_path = out / f"{stem}-{n}.crt"
        key_path = out / f"{stem}-{n}.key"
        fileio.atomic_write(cert_path, cert_pem, mode=fileio.PUBLIC_MODE)
        fileio.atomic_write(key_path, key_pem, mode=fileio.SECRET_MODE)
        return cert_path, key_path


def wait_for(
    predicate: Callable[[], T],
    timeout_s: float = 5.0,
    *,
    interval_s: float = 0.02,
    what: str = "condition",
) -> T:
    """Poll ``predicate`` until it returns something truthy; return that value.

    Raises ``TimeoutError`` naming ``what`` after ``timeout_s`` seconds. The
    predicate is called at least once and at most ``timeout_s / interval_s + 2`` times.
    """
    deadline = time.monotonic() + timeout_s
    max_calls = int(timeout_s / max(interval_s, 0.001)) + 2
    for _ in range(max_calls):
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(interval_s, remaining))
    raise TimeoutError(f"{what} not met within {timeout_s:g} s")
