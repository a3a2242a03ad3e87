"""One error hierarchy for the whole project.

Each class says what the caller has to do about it: ``exit_code`` is what the CLI
exits with, ``retryable`` tells the daemon whether to back off and try again or to
wait for a human. Foreign exceptions (requests, sqlite3, OSError, paho return codes)
are translated into these once, at the adapter that caught them (``raise X from e``).

Exit codes (documented in the README):

====  ==========================================================================
0     success
1     the operation failed and retrying will not help (rejected, protocol, store)
2     usage or configuration error: fix the command line, a file or a variable
75    temporary failure (EX_TEMPFAIL): network or server down, try again later
77    credentials refused (EX_NOPERM): a token, key or certificate must be fixed
====  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_NOPERM",
    "EXIT_OK",
    "EXIT_TEMPFAIL",
    "AlreadyProvisioned",
    "CertificateError",
    "ConfigError",
    "EdgeProvisionError",
    "IdentityError",
    "LayoutError",
    "MqttAuthError",
    "MqttError",
    "MqttUnavailable",
    "PermanentError",
    "Problem",
    "ProtocolError",
    "ProvisioningError",
    "Rejected",
    "ServiceUnavailable",
    "StoreError",
    "TransientError",
    "Unauthorized",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_TEMPFAIL = 75
EXIT_NOPERM = 77


class EdgeProvisionError(Exception):
    """Base of every error edge-provision raises on purpose."""

    exit_code: int = EXIT_FAILED
    retryable: bool = False

    @property
    def kind(self) -> str:
        """Stable, machine-readable name of the error class (used in ``--json``)."""
        return type(self).__name__


class PermanentError(EdgeProvisionError):
    """Retrying will not help; a human has to look at it."""


class TransientError(EdgeProvisionError):
    """A temporary condition (network down, server busy): retry with backoff."""

    exit_code = EXIT_TEMPFAIL
    retryable = True

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where (file, line, dotted path) and what."""

    message: str
    path: str = ""
    source: str = ""
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        parts = [p for p in (where, self.path) if p]
        prefix = ": ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message


class ConfigError(PermanentError):
    """A setting, file or command-line value is wrong. Fix it and run again.

    Carries one :class:`Problem` per thing wrong, so that all of them can be
    reported at once.
    """

    exit_code = EXIT_CONFIG

    def __init__(self, problems: str | Problem | Sequence[Problem]) -> None:
        if isinstance(problems, str):
            problems = [Problem(problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class LayoutError(ConfigError):
    """A provision layout (Mainflux provision ``config.toml``) is invalid."""


class IdentityError(ConfigError):
    """The gateway identity (external_id / external_key) cannot be determined."""


class ProvisioningError(EdgeProvisionError):
    """The platform did not do what we asked."""


class ServiceUnavailable(ProvisioningError, TransientError):
    """Connection refused, timeout, 429, 5xx: the platform is not reachable now."""


class Unauthorized(ProvisioningError, PermanentError):
    """401/403: the token or key was refused."""

    exit_code = EXIT_NOPERM


class AlreadyProvisioned(ProvisioningError, PermanentError):
    """409: the external_id is already provisioned with other credentials."""


class Rejected(ProvisioningError, PermanentError):
    """Another 4xx: the platform refused the request as made."""


class ProtocolError(ProvisioningError, PermanentError):
    """The reply could not be understood (not JSON, wrong shape, missing fields)."""


class StoreError(PermanentError):
    """The local credential store cannot be read or written."""


class CertificateError(PermanentError):
    """A certificate or key is malformed, does not match, or does not chain."""


class MqttError(EdgeProvisionError):
    """The MQTT broker refused or dropped us for a reason not covered below."""


class MqttAuthError(MqttError, PermanentError):
    """The broker refused the credentials (or closed the connection before CONNACK)."""

    exit_code = EXIT_NOPERM


class MqttUnavailable(MqttError, TransientError):
    """The broker cannot be reached now."""
