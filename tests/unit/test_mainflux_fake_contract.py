"""The fake Mainflux replays our fixture of the real services' behaviour, in-process.

``tests/data/mainflux_contract.json`` restates, in our own words, what the
recorded exchanges with a genuine Mainflux 0.12.1 stack and the 0.13 wire
contract show. Each scenario runs on a fresh :class:`FakeMainflux`; a step sends
one request and checks the status, the body's shape, ``Location`` and, where it
says so, the platform's entity counts. Format:

* ``call``: ``"<service> <METHOD> <target>"``; ``auth``: the Authorization value;
  ``json`` (sent with ``Content-Type: application/json``) or ``raw`` body;
  ``content_type`` overrides the header (``null``: none).
* ``${name}`` is a saved value; ``${encrypted:name}`` its secure-bootstrap hex form.
* Patterns: ``<uuid>``, ``<jwt>``, ``<any>``, ``<pad36:...>`` (space-padded to 36),
  objects must have exactly the keys shown, ``{"$unordered": [...]}`` and
  ``{"$len": n}`` for lists, ``""`` for an empty body.
* ``save``: ``{"name": "body.things.0.id"}`` (``sent.`` for the request body) or
  ``"location"`` (its last path segment).
* ``decrypt``: the body is a secure-bootstrap message; match its plaintext.
* A scenario's ``users`` are registered next to ``admin@example.com`` (``${password}``).
* ``expire_tokens``: a step without a call that moves the fake clock past every token.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from edge_provision.crypto import bootstrap_cipher
from edge_provision.testing.mainflux import ADMIN_PASSWORD, ENDPOINTS, FakeMainflux

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "mainflux_contract.json"
DATA = json.loads(FIXTURE.read_text(encoding="utf-8"))
SCENARIOS: list[dict[str, Any]] = DATA["scenarios"]
_VAR = re.compile(r"\$\{([a-z0-9_]+)(?::([a-z0-9_]+))?\}")
_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


class Mismatch(AssertionError):
    """A reply that differs from the fixture."""


class Replay:
    """Runs the steps of one scenario against one fake, keeping saved values."""

    def __init__(self, fake: FakeMainflux) -> None:
        self.fake = fake
        self.vars: dict[str, str] = {"password": ADMIN_PASSWORD, "api_key": fake.api_key()}

    def sub(self, value: Any) -> Any:
        """``value`` with every ``${...}`` replaced (recursively in lists and objects)."""
        if isinstance(value, str):
            def one(m: re.Match[str]) -> str:
                if m.group(2) is None:
                    return self.vars[m.group(1)]
                if m.group(1) != "encrypted":
                    raise KeyError(m.group(0))
                key = self.vars[m.group(2)]
                return bootstrap_cipher.encrypt_external_key_header(self.fake.encrypt_key, key)
            return _VAR.sub(one, value)
        if isinstance(value, list):
            return [self.sub(v) for v in value]
        if isinstance(value, dict):
            return {k: self.sub(v) for k, v in value.items()}
        return value

    def match(self, want: Any, got: Any, where: str) -> None:
        """Raise Mismatch naming the first place where ``got`` does not fit ``want``."""
        if isinstance(want, str):
            if want == "<any>":
                return
            if want == "<uuid>":
                ok = isinstance(got, str) and _is_uuid(got)
            elif want == "<jwt>":
                ok = isinstance(got, str) and _JWT.fullmatch(got) is not None
            elif want.startswith("<pad36:") and want.endswith(">"):
                ok = got == self.sub(want[7:-1]).ljust(36)
            else:
                ok = got == self.sub(want)
            if not ok:
                raise Mismatch(f"{where}: expected {want!r}, got {got!r}")
            return
        if isinstance(want, dict) and "$len" in want:
            if not isinstance(got, list) or len(got) != want["$len"]:
                raise Mismatch(f"{where}: expected a list of {want['$len']}, got {got!r}")
            return
        if isinstance(want, dict) and "$unordered" in want:
            items = want["$unordered"]
            if not isinstance(got, list) or len(got) != len(items):
                raise Mismatch(f"{where}: expected {len(items)} items in any order, got {got!r}")
            left = list(got)
            for n, item in enumerate(items):
                for i, candidate in enumerate(left):
                    try:
                        self.match(item, candidate, f"{where}[?{n}]")
                    except Mismatch:
                        continue
                    del left[i]
                    break
                else:
                    raise Mismatch(f"{where}: nothing matches {item!r} in {got!r}")
            return
        if isinstance(want, dict):
            if not isinstance(got, dict) or set(got) != set(want):
                keys = sorted(got) if isinstance(got, dict) else got
                raise Mismatch(f"{where}: expected keys {sorted(want)}, got {keys!r}")
            for key, item in want.items():
                self.match(item, got[key], f"{where}.{key}")
            return
        if isinstance(want, list):
            if not isinstance(got, list) or len(got) != len(want):
                raise Mismatch(f"{where}: expected {len(want)} items, got {got!r}")
            for n, (w, g) in enumerate(zip(want, got)):
                self.match(w, g, f"{where}[{n}]")
            return
        if got != want or type(got) is not type(want):
            raise Mismatch(f"{where}: expected {want!r}, got {got!r}")

    def step(self, step: dict[str, Any]) -> None:
        """Send one request and check the answer against the step."""
        if step.get("expire_tokens"):
            self.fake.expire_tokens()
            return
        service, method, target = self.sub(step["call"]).split(" ", 2)
        headers: dict[str, str] = {}
        if "auth" in step:
            headers["Authorization"] = self.sub(step["auth"])
        body = b""
        sent = self.sub(step.get("json"))
        if "json" in step:
            body = json.dumps(sent).encode()
            headers["Content-Type"] = "application/json"
        elif "raw" in step:
            body = self.sub(step["raw"]).encode()
            headers["Content-Type"] = "application/json"
        if "content_type" in step:
            headers.pop("Content-Type", None)
            if step["content_type"] is not None:
                headers["Content-Type"] = step["content_type"]
        reply = self.fake.request(service, method, target, headers=headers, body=body)
        payload = reply.payload()
        if reply.status != step["status"]:
            raise Mismatch(f"status: expected {step['status']}, got {reply.status} "
                           f"({payload[:200]!r})")
        if step.get("decrypt"):
            payload = bootstrap_cipher.decrypt(self.fake.encrypt_key, payload)
        if "text" in step and payload.decode() != step["text"]:
            raise Mismatch(f"body: expected text {step['text']!r}, got {payload!r}")
        got: Any = json.loads(payload) if payload and "text" not in step else ""
        if "body" in step:
            self.match(step["body"], got, "body")
        location = dict(reply.headers).get("Location")
        if "location" in step:
            self.match(step["location"], location, "Location")
        for name, path in step.get("save", {}).items():
            if path == "location":
                assert location is not None, "no Location header to save"
                self.vars[name] = location.rsplit("/", 1)[-1]
                continue
            value: Any = sent if path.startswith("sent.") else got
            for part in path.split(".")[1:]:
                value = value[int(part)] if isinstance(value, list) else value[part]
            self.vars[name] = value
        if "counts" in step:
            counts = self.fake.counts()
            self.match(step["counts"], {k: counts[k] for k in step["counts"]}, "counts")


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def _run(scenario: dict[str, Any]) -> FakeMainflux:
    fake = FakeMainflux(generation=scenario["generation"])
    for email, password in scenario.get("users", {}).items():
        fake.add_user(email, password)
    replay = Replay(fake)
    for n, step in enumerate(scenario["steps"]):
        try:
            replay.step(step)
        except (Mismatch, KeyError) as exc:
            raise AssertionError(
                f"{scenario['name']} step {n} ({step.get('facts')}: {step.get('say')}): {exc}"
            ) from None
    return fake


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["name"] for s in SCENARIOS])
def test_fake_answers_like_the_real_services(scenario: dict[str, Any]) -> None:
    """Every step of the scenario gets the status, body shape and effect the facts show."""
    _run(scenario)


def test_fixture_exercises_every_endpoint_of_the_fake() -> None:
    """No endpoint of the fake escapes the fixture (so none can drift unchecked)."""
    seen: set[tuple[str, str]] = set()
    for scenario in SCENARIOS:
        seen |= {(s, e) for s, e, _st in _run(scenario).call_counts()}
    assert set(ENDPOINTS) - seen == set()


def test_every_step_names_its_facts() -> None:
    """Each step says what it checks and where the fact comes from (a recording or the contract)."""
    for scenario in SCENARIOS:
        assert scenario["generation"] in ("0.12", "0.13")
        for step in scenario["steps"]:
            assert step.get("say"), step
            assert re.fullmatch(r"(rec \d\d(-[0-9a-z-]+)?|contract [0-9.]+)(, .+)?",
                                step.get("facts", "")), step


def test_the_checker_rejects_a_wrong_answer() -> None:
    """A step whose expectation is wrong fails (the replay can detect drift)."""
    replay = Replay(FakeMainflux())
    wrong = {"call": "things GET /things", "auth": "${api_key}", "status": 200,
             "body": {"total": 1, "offset": 0, "limit": 10, "order": "", "direction": "",
                      "things": []}}
    with pytest.raises(Mismatch, match=r"body\.total"):
        replay.step(wrong)
    with pytest.raises(Mismatch, match="status"):
        replay.step({**wrong, "auth": "Bearer ${api_key}"})
