"""UsersClient login and the token sources (API key, renewing login session) against the fake."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from edge_provision.errors import Unauthorized
from edge_provision.http import HttpClient
from edge_provision.platform.things import ThingsClient
from edge_provision.platform.users import ApiKey, LoginSession, UsersClient, token_expiry
from edge_provision.testing.mainflux import ADMIN_EMAIL, ADMIN_PASSWORD, FakeMainflux


@pytest.fixture(params=["0.12", "0.13"])
def fake(request: pytest.FixtureRequest) -> Iterator[FakeMainflux]:
    """A started fake of each generation with one-hour login tokens."""
    with FakeMainflux(generation=request.param, token_ttl_s=3600) as f:
        yield f


@pytest.fixture
def users(fake: FakeMainflux) -> Iterator[UsersClient]:
    """A Users client."""
    with HttpClient(fake.users_url) as http:
        yield UsersClient(http)


def test_login_and_refusal(users: UsersClient) -> None:
    """A good password gets a JWT with iat/exp; a wrong one is Unauthorized naming the user."""
    window = token_expiry(users.login(ADMIN_EMAIL, ADMIN_PASSWORD))
    assert window is not None and window[1] - window[0] == 3600
    with pytest.raises(Unauthorized, match=r"admin@example\.com"):
        users.login(ADMIN_EMAIL, "wrong")


def test_session_renews_after_a_refused_token(fake: FakeMainflux, users: UsersClient) -> None:
    """When the platform refuses the expired token, the session logs in again and retries once."""
    session = LoginSession(users, ADMIN_EMAIL, ADMIN_PASSWORD)
    with HttpClient(fake.things_url) as http:
        things = ThingsClient(http, session)
        assert things.things().total == 0
        fake.expire_tokens()
        assert things.things().total == 0
    assert session.logins == 2
    assert fake.calls("users", "POST /tokens", "201") == 2


def test_session_renews_before_expiry(fake: FakeMainflux, users: UsersClient) -> None:
    """Close to the token's exp the session logs in again without waiting for a refusal."""
    now = [0.0]
    session = LoginSession(users, ADMIN_EMAIL, ADMIN_PASSWORD, clock=lambda: now[0])
    first = session.token()
    window = token_expiry(first)
    assert window is not None
    now[0] = window[1] - 120  # two minutes left: keep it
    assert session.token() == first
    now[0] = window[1] - 30  # inside the 60 s margin: renew
    assert session.token() != first and session.logins == 2


def test_concurrent_renewals_share_one_login(users: UsersClient) -> None:
    """Threads that saw the same stale token trigger one login, not one each."""
    session = LoginSession(users, ADMIN_EMAIL, ADMIN_PASSWORD)
    stale = session.token()
    results: list[str | None] = []
    threads = [threading.Thread(target=lambda: results.append(session.renew(stale)))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(set(results)) == 1 and results[0] != stale and session.logins == 2


def test_api_key_is_never_renewed() -> None:
    """An API key source answers renew() with None and hides the key in repr."""
    key = ApiKey("secret-api-key")
    assert key.token() == "secret-api-key" and key.renew("secret-api-key") is None
    assert "secret" not in repr(key)


def test_token_expiry_of_non_jwts() -> None:
    """Anything that is not a JWT with exp has no known expiry."""
    assert token_expiry("not-a-jwt") is None
    assert token_expiry("a.b.c") is None
