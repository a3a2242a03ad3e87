"""The error hierarchy: reasons, steps, hints and retry classes are attributes, not text."""

from __future__ import annotations

import inspect

import pytest

from edge_provision import errors
from edge_provision.errors import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_NOPERM,
    EXIT_TEMPFAIL,
    AlreadyProvisioned,
    BadReply,
    CertificateError,
    ConfigError,
    EdgeProvisionError,
    IdentityError,
    LockBusy,
    MqttAuthError,
    MqttUnavailable,
    ProtocolError,
    Reason,
    Rejected,
    RetryClass,
    ServiceUnavailable,
    StoreError,
    Unauthorized,
)


@pytest.mark.parametrize(("cls", "reason", "retry", "exit_code"), [
    (ServiceUnavailable, Reason.UNAVAILABLE, RetryClass.TRANSIENT, EXIT_TEMPFAIL),
    (BadReply, Reason.BAD_REPLY, RetryClass.TRANSIENT, EXIT_TEMPFAIL),
    (MqttUnavailable, Reason.UNAVAILABLE, RetryClass.TRANSIENT, EXIT_TEMPFAIL),
    (Unauthorized, Reason.REFUSED, RetryClass.NEEDS_PERSON, EXIT_NOPERM),
    (MqttAuthError, Reason.REFUSED, RetryClass.NEEDS_PERSON, EXIT_NOPERM),
    (AlreadyProvisioned, Reason.CONFLICT, RetryClass.NEEDS_PERSON, EXIT_FAILED),
    (Rejected, Reason.REJECTED, RetryClass.NEEDS_PERSON, EXIT_FAILED),
    (ProtocolError, Reason.PROTOCOL, RetryClass.NEEDS_PERSON, EXIT_FAILED),
    (StoreError, Reason.STORE, RetryClass.NEEDS_PERSON, EXIT_FAILED),
    (CertificateError, Reason.CERTIFICATE, RetryClass.NEEDS_PERSON, EXIT_FAILED),
    (ConfigError, Reason.CONFIG, RetryClass.NEEDS_PERSON, EXIT_CONFIG),
    (IdentityError, Reason.CONFIG, RetryClass.NEEDS_PERSON, EXIT_CONFIG),
    (LockBusy, Reason.BUSY, RetryClass.TRANSIENT, EXIT_TEMPFAIL),
])
def test_each_class_has_a_default_reason_and_retry_class(
        cls: type[EdgeProvisionError], reason: Reason, retry: RetryClass,
        exit_code: int) -> None:  # fmt: skip
    """Class defaults: reason code, transient or needs-a-person, exit code."""
    exc = cls("something went wrong")
    assert exc.reason is reason and exc.retry_class is retry and exc.exit_code == exit_code
    assert exc.step is None and exc.hint is None and str(exc) == "something went wrong"


def test_raise_site_refines_the_reason() -> None:
    """A platform client can say more than the class does (a key mismatch is a refusal)."""
    exc = Unauthorized("config exists for another key", reason=Reason.KEY_MISMATCH)
    assert exc.reason is Reason.KEY_MISMATCH and isinstance(exc, Unauthorized)


def test_step_and_hint_shape_the_text_but_not_the_message() -> None:
    """``str`` names the step and appends the hint; ``message`` stays what was raised."""
    exc = ServiceUnavailable("GET /x: HTTP 503.", retry_after_s=3)
    exc.step = "lookup"
    exc.hint = "wait"
    assert str(exc) == "step lookup failed: GET /x: HTTP 503. What to do: wait"
    assert exc.message == "GET /x: HTTP 503." and exc.retry_after_s == 3


def test_config_error_keeps_its_problems() -> None:
    """ConfigError: one line per problem; the reason is CONFIG unless said otherwise."""
    exc = ConfigError("bad value")
    assert [str(p) for p in exc.problems] == ["bad value"] and exc.reason is Reason.CONFIG


def _hierarchy() -> list[type[EdgeProvisionError]]:
    return [obj for obj in vars(errors).values()
            if inspect.isclass(obj) and issubclass(obj, EdgeProvisionError)]


@pytest.mark.parametrize("cls", _hierarchy(), ids=lambda cls: cls.__name__)
def test_retry_class_agrees_with_retryable_and_the_exit_code(
        cls: type[EdgeProvisionError]) -> None:  # fmt: skip
    """Every class: transient <=> retryable <=> exit 75; needs a person <=> exit 1, 2 or 77."""
    exc = cls("x")
    if exc.retry_class is RetryClass.TRANSIENT:
        assert exc.retryable and exc.exit_code == EXIT_TEMPFAIL
    else:
        assert exc.retry_class is RetryClass.NEEDS_PERSON
        assert not exc.retryable and exc.exit_code in (EXIT_FAILED, EXIT_CONFIG, EXIT_NOPERM)


def test_a_bad_reply_is_a_transient_service_failure() -> None:
    """A captive portal's page is the platform not being there now, not a broken platform."""
    exc = BadReply("GET /x: HTTP 200 reply is an HTML page", retry_after_s=None)
    assert isinstance(exc, ServiceUnavailable) and not isinstance(exc, ProtocolError)
    assert exc.retry_class is RetryClass.TRANSIENT and exc.reason is Reason.BAD_REPLY
