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

Besides its class, every error carries three attributes that callers branch on (never
on the message text): ``reason`` (a :class:`Reason`, a class default that the raise site
may refine, e.g. ``Unauthorized(..., reason=Reason.KEY_MISMATCH)``), ``step`` (the
enrollment or renewal step that failed, set by the step runner; ``None`` elsewhere) and
``hint`` (what to do, appended to the message). :attr:`EdgeProvisionError.retry_class`
says whether waiting helps (:class:`RetryClass`): ``transient`` for every class with
exit code 75 (the daemon backs off, capped full jitter), ``needs-person`` for the others
(1, 2, 77: credentials refused, a conflict confirmed by a lookup, invalid settings, a
local store or certificate that is broken). The table is in ``docs/agent.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_NOPERM",
    "EXIT_OK",
    "EXIT_TEMPFAIL",
    "AlreadyProvisioned",
    "BadReply",
    "CertificateError",
    "ConfigError",
    "EdgeProvisionError",
    "IdentityError",
    "LayoutError",
    "LockBusy",
    "MqttAuthError",
    "MqttError",
    "MqttUnavailable",
    "PermanentError",
    "Problem",
    "ProtocolError",
    "ProvisioningError",
    "Reason",
    "Rejected",
    "RetryClass",
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


class Reason(str, Enum):
    """Why an operation failed, as a machine-readable code (``--json``, journal, daemon)."""

    FAILED = "failed"  # nothing more specific is known
    UNAVAILABLE = "unavailable"  # network down, timeout, 429/5xx: the platform is not there now
    REFUSED = "refused"  # a token, key or certificate was refused (401/403, MQTT auth)
    KEY_MISMATCH = "key-mismatch"  # a bootstrap config exists, but for another external_key
    CONFLICT = "conflict"  # already provisioned (409 / "409 Conflict" in an error chain)
    REJECTED = "rejected"  # the request was refused as made (another 4xx)
    PROTOCOL = "protocol"  # an answer that could not be understood
    CONFIG = "config"  # a setting, file or command-line value is wrong
    STORE = "store"  # the local store cannot be read or written
    BUSY = "busy"  # another edge-provision process holds the state lock: wait, never an error
    CERTIFICATE = "certificate"  # a certificate or key is malformed or does not match
    DEADLINE = "deadline"  # a request or a whole run did not finish within its deadline
    BAD_REPLY = "bad-reply"  # not the protocol's answer: HTML, cut short, too big, redirected
    UNTRUSTED = "untrusted"  # the server's TLS certificate failed verification


class RetryClass(str, Enum):
    """What to do about a failure: wait and retry, or wait for a person."""

    TRANSIENT = "transient"
    NEEDS_PERSON = "needs-person"


class EdgeProvisionError(Exception):
    """Base of every error edge-provision raises on purpose.

    ``str(exc)`` is ``"step <step> failed: <message>. What to do: <hint>"``, each part
    present only when set; :attr:`message` is the text the raise site gave.
    """

    exit_code: int = EXIT_FAILED
    retryable: bool = False
    default_reason: ClassVar[Reason] = Reason.FAILED

    def __init__(self, message: str = "", *, reason: Reason | None = None,
                 step: str | None = None, hint: str | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.message = message
        self.reason: Reason = reason if reason is not None else self.default_reason
        self.step: str | None = step
        self.hint: str | None = hint

    def __str__(self) -> str:
        text = self.message
        if self.hint:
            text = f"{text.rstrip('.')}. What to do: {self.hint}"
        return f"step {self.step} failed: {text}" if self.step else text

    @property
    def kind(self) -> str:
        """Stable, machine-readable name of the error class (used in ``--json``)."""
        return type(self).__name__

    @property
    def retry_class(self) -> RetryClass:
        """Transient (back off and retry) or needs a person (retry slowly, say so)."""
        return RetryClass.TRANSIENT if self.retryable else RetryClass.NEEDS_PERSON


class PermanentError(EdgeProvisionError):
    """Retrying will not help; a human has to look at it."""


class TransientError(EdgeProvisionError):
    """A temporary condition (network down, server busy): retry with backoff."""

    exit_code = EXIT_TEMPFAIL
    retryable = True
    default_reason = Reason.UNAVAILABLE

    def __init__(self, message: str = "", *, retry_after_s: float | None = None,
                 reason: Reason | None = None, step: str | None = None,
                 hint: str | None = None) -> None:  # fmt: skip
        super().__init__(message, reason=reason, step=step, hint=hint)
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
    default_reason = Reason.CONFIG

    def __init__(self, problems: str | Problem | Sequence[Problem], *,
                 reason: Reason | None = None) -> None:  # fmt: skip
        if isinstance(problems, str):
            problems = [Problem(problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems), reason=reason)


class LayoutError(ConfigError):
    """A provision layout (Mainflux provision ``config.toml``) is invalid."""


class IdentityError(ConfigError):
    """The gateway identity (external_id / external_key) cannot be determined."""


class ProvisioningError(EdgeProvisionError):
    """The platform did not do what we asked."""


class ServiceUnavailable(ProvisioningError, TransientError):
    """Connection refused, timeout, 429, 5xx: the platform is not reachable now."""


class BadReply(ServiceUnavailable):
    """An answer that is not what the protocol says: an HTML page where JSON was due (a
    captive portal, a proxy's error page), JSON cut short, a body over the size cap, a
    redirect to another host. Usually something between us and the platform: transient.
    """

    default_reason = Reason.BAD_REPLY


class Unauthorized(ProvisioningError, PermanentError):
    """401/403: the token or key was refused."""

    exit_code = EXIT_NOPERM
    default_reason = Reason.REFUSED


class AlreadyProvisioned(ProvisioningError, PermanentError):
    """409: the external_id is already provisioned with other credentials."""

    default_reason = Reason.CONFLICT


class Rejected(ProvisioningError, PermanentError):
    """Another 4xx: the platform refused the request as made."""

    default_reason = Reason.REJECTED


class ProtocolError(ProvisioningError, PermanentError):
    """The reply could not be understood (not JSON, wrong shape, missing fields)."""

    default_reason = Reason.PROTOCOL


class StoreError(PermanentError):
    """The local credential store cannot be read or written."""

    default_reason = Reason.STORE


class LockBusy(TransientError):
    """Another edge-provision process holds the state lock (and did not let go in time).

    Never a failure of this gateway: the other run (a person's ``enroll``, the daemon's
    ``renew``) finishes and the next attempt goes ahead. ``holder`` describes the process
    that holds the lock (pid and command), when it said so in the lock file.
    """

    default_reason = Reason.BUSY

    def __init__(self, message: str, *, holder: str | None = None,
                 retry_after_s: float | None = None) -> None:  # fmt: skip
        super().__init__(message, retry_after_s=retry_after_s)
        self.holder = holder


class CertificateError(PermanentError):
    """A certificate or key is malformed, does not match, or does not chain."""

    default_reason = Reason.CERTIFICATE


class MqttError(EdgeProvisionError):
    """The MQTT broker refused or dropped us for a reason not covered below."""


class MqttAuthError(MqttError, PermanentError):
    """The broker refused the credentials (or closed the connection before CONNACK)."""

    exit_code = EXIT_NOPERM
    default_reason = Reason.REFUSED


class MqttUnavailable(MqttError, TransientError):
    """The broker cannot be reached now."""
