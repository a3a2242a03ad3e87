"""The fake Mainflux over real loopback HTTP: faults, drops, counts, concurrency, restart."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import requests

from edge_provision.testing.mainflux import ADMIN_EMAIL, ADMIN_PASSWORD, FakeMainflux


@pytest.fixture
def fake() -> Iterator[FakeMainflux]:
    """A started 0.12 fake."""
    with FakeMainflux() as f:
        yield f


def _bulk(fake: FakeMainflux, token: str, names: list[str]) -> requests.Response:
    return requests.post(f"{fake.things_url}/things/bulk", json=[{"name": n} for n in names],
                         headers={"Authorization": token}, timeout=5)


def test_three_services_on_their_own_ports(fake: FakeMainflux) -> None:
    """Things, Bootstrap and Users listen on separate 127.0.0.1 ports, like a real stack."""
    urls = {fake.things_url, fake.bootstrap_url, fake.users_url}
    assert len(urls) == 3 and all(u.startswith("http://127.0.0.1:") for u in urls)
    login = requests.post(f"{fake.users_url}/tokens", timeout=5,
                          json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert login.status_code == 201
    assert _bulk(fake, login.json()["token"], ["a"]).status_code == 201
    # Things does not serve Bootstrap's routes and vice versa
    assert requests.get(f"{fake.users_url}/things", timeout=5).status_code == 404


def test_status_fault_is_not_applied(fake: FakeMainflux) -> None:
    """An injected status answers the call without touching the platform."""
    fault = fake.fail("POST /things/bulk", status=500)
    reply = _bulk(fake, fake.api_key(), ["a"])
    assert (reply.status_code, reply.json()) == (500, {"error": "fault injected by the test"})
    assert fault.hits == 1 and fake.counts()["things"] == 0
    assert _bulk(fake, fake.api_key(), ["a"]).status_code == 201  # used up after one call


def test_drop_before_and_after(fake: FakeMainflux) -> None:
    """drop='before' loses the call, drop='after' applies it but loses the reply."""
    key = fake.api_key()
    fake.fail("POST /things/bulk", drop="before")
    with pytest.raises(requests.ConnectionError):
        _bulk(fake, key, ["lost"])
    assert fake.counts()["things"] == 0
    fake.fail("POST /things/bulk", drop="after")
    with pytest.raises(requests.ConnectionError):
        _bulk(fake, key, ["applied"])
    assert [t["name"] for t in fake.things()] == ["applied"]
    assert fake.calls("things", "POST /things/bulk", "dropped") == 2


def test_skip_lets_calls_through_first(fake: FakeMainflux) -> None:
    """skip=n fails the (n+1)-th matching call only."""
    fake.fail("POST /things/bulk", status=503, skip=2)
    codes = [_bulk(fake, fake.api_key(), [f"t{i}"]).status_code for i in range(4)]
    assert codes == [201, 201, 503, 201]


def test_unknown_endpoint_in_a_fault_is_refused(fake: FakeMainflux) -> None:
    """A typo in a fault's endpoint is an error, not a fault that never fires."""
    with pytest.raises(ValueError, match="unknown endpoint"):
        fake.fail("POST /thing/bulk")


def test_concurrent_requests_are_serialised(fake: FakeMainflux) -> None:
    """Parallel bulk calls with the same chosen key: exactly one wins, the rest get 409."""
    key = fake.api_key()
    codes: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        reply = requests.post(f"{fake.things_url}/things/bulk", timeout=10,
                              json=[{"name": "x", "key": "same-key"}],
                              headers={"Authorization": key})
        with lock:
            codes.append(reply.status_code)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(codes) == [201] + [409] * 7
    assert fake.calls("things", "POST /things/bulk") == 8


def test_restart_keeps_the_state(fake: FakeMainflux) -> None:
    """stop() then start() serves the same platform on new ports."""
    key = fake.api_key()
    assert _bulk(fake, key, ["kept"]).status_code == 201
    fake.stop()
    fake.start()
    reply = requests.get(f"{fake.things_url}/things", headers={"Authorization": key}, timeout=5)
    assert [t["name"] for t in reply.json()["things"]] == ["kept"]
