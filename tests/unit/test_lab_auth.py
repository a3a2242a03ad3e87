"""Unit tests for the lab server's Authorization header parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_provision.lab.auth import (
    THING_SCHEMES,
    USER_SCHEMES,
    AuthOutcome,
    check_token,
    extract_credential,
    secrets_equal,
)


@pytest.mark.parametrize(
    "header",
    ["abc", "Bearer abc", "bearer abc", "BEARER abc", "Token abc", "token abc", "ApiKey abc",
     "apikey abc", "Bearer   abc", "Bearer\tabc", "  Bearer abc  ", " abc "],
)
def test_user_forms_give_the_credential(header: str) -> None:
    """Bare, Bearer, Token and ApiKey forms (any case, any spacing) yield the token."""
    assert extract_credential(header, USER_SCHEMES) == "abc"


@pytest.mark.parametrize("header", [None, "", "   ", "Bearer", "bearer  ", "Basic abc",
                                    "Thing abc", "Bearer a b", "a b"])
def test_unreadable_user_headers_give_none(header: str | None) -> None:
    """Missing, empty, scheme-only, foreign-scheme and multi-word headers give no credential."""
    assert extract_credential(header, USER_SCHEMES) is None


@pytest.mark.parametrize("header", ["key-1", "Thing key-1", "thing key-1", "THING   key-1"])
def test_thing_forms_give_the_key(header: str) -> None:
    """Device endpoints accept the bare key and ``Thing <key>``."""
    assert extract_credential(header, THING_SCHEMES) == "key-1"


def test_bearer_is_not_a_thing_scheme() -> None:
    """``Bearer`` before a thing key is refused rather than guessed at."""
    assert extract_credential("Bearer key-1", THING_SCHEMES) is None


@pytest.mark.parametrize(
    ("header", "required", "outcome"),
    [
        (None, True, AuthOutcome.MISSING),
        ("", True, AuthOutcome.MISSING),
        (None, False, AuthOutcome.OK),
        ("  ", False, AuthOutcome.OK),
        ("Bearer s3cret", True, AuthOutcome.OK),
        ("s3cret", False, AuthOutcome.OK),
        ("Bearer wrong", False, AuthOutcome.WRONG),
        ("wrong", True, AuthOutcome.WRONG),
        ("Basic s3cret", False, AuthOutcome.MALFORMED),
        ("Bearer", True, AuthOutcome.MALFORMED),
    ],
)
def test_check_token(header: str | None, required: bool, outcome: AuthOutcome) -> None:
    """A present header must carry the token; an absent one passes only when optional."""
    assert check_token(header, "s3cret", header_required=required) is outcome


def test_secrets_equal() -> None:
    """Equal secrets compare equal, different ones (also of other lengths) do not."""
    assert secrets_equal("abc", "abc")
    assert not secrets_equal("abc", "abd")
    assert not secrets_equal("abc", "abcd")
    assert secrets_equal("é", "é")


@given(st.text(alphabet=st.characters(blacklist_categories=("Zs", "Cc")), min_size=1,
               max_size=40),
       st.sampled_from(["Bearer", "Token", "ApiKey", "bearer", ""]),
       st.integers(min_value=1, max_value=4))
def test_round_trip(token: str, scheme: str, spaces: int) -> None:
    """Any whitespace-free token survives every accepted header form."""
    header = f"{scheme}{' ' * spaces}{token}" if scheme else token
    expected = None if not scheme and token.lower() in USER_SCHEMES else token
    assert extract_credential(header, USER_SCHEMES) == expected
