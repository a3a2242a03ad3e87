"""The hand-kept OpenAPI document against the running lab server: routes, methods, statuses.

Every route the router serves is in ``/openapi.json`` with its method, and nothing
else is; on the wire, every other method of a documented path is a 405 whose
``Allow`` lists exactly the documented methods. A table of real requests reaches
every documented status of every operation, no undocumented one, and every JSON
answer matches its documented schema (a small validator below, enough for the
keywords the document uses).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
import requests
from _lab_util import lab_settings, serving

from edge_provision.crypto import bootstrap_cipher, pki
from edge_provision.lab.server import TOKEN_FILE, RunningLabServer, start_in_thread

TIMEOUT = 10
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
EXTERNAL_ID, EXTERNAL_KEY = "02:42:ac:11:00:42", "openapi-key"


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[RunningLabServer]:
    """A lab server with a generated token."""
    with serving(lab_settings(tmp_path)) as server:
        yield server


@pytest.fixture
def token(tmp_path: Path, lab: RunningLabServer) -> str:
    """The generated operator token."""
    return (tmp_path / "lab" / TOKEN_FILE).read_text().strip()


def _document(lab: RunningLabServer) -> dict[str, Any]:
    resp = requests.get(f"{lab.url}/openapi.json", timeout=TIMEOUT)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/json"
    doc: dict[str, Any] = resp.json()
    assert doc["openapi"].startswith("3.1")
    return doc


def _matches(template: str, path: str) -> bool:
    """Whether a concrete path fits a template (``{name}``: one non-empty segment)."""
    pattern = "".join("[^/]+" if part.startswith("{") else re.escape(part)
                      for part in re.split(r"(\{[^}]+\})", template))
    return re.fullmatch(pattern, path) is not None


def _concrete(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", template)


def test_document_lists_exactly_the_served_routes(lab: RunningLabServer) -> None:
    """Router routes == documented operations; every other method on the wire is a 405."""
    doc = _document(lab)
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = {(route.path, route.method) for route in lab.app.router.routes}
    assert served == documented
    for template in doc["paths"]:
        path = _concrete(template)
        # as OpenAPI matches paths: a concrete one shadows the templates
        matching = [template] if "{" not in template else [
            t for t in doc["paths"] if _matches(t, path)]
        allowed = {m.upper() for t in matching for m in doc["paths"][t]}
        for method in METHODS:
            resp = requests.request(method, f"{lab.url}{path}", timeout=TIMEOUT,
                                    allow_redirects=False)
            if method in allowed:
                assert resp.status_code not in (404, 405), (method, path, resp.text)
            else:
                assert resp.status_code == 405, (method, path, resp.status_code)
                assert resp.headers["Allow"] == ", ".join(sorted(allowed)), (method, path)


def test_document_is_consistent(lab: RunningLabServer) -> None:
    """Every $ref resolves and every path parameter is declared by each of its operations."""
    doc = _document(lab)
    refs = re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(doc))
    assert refs and set(refs) <= set(doc["components"]["schemas"])
    for template, ops in doc["paths"].items():
        names = set(re.findall(r"\{([^}]+)\}", template))
        for method, op in ops.items():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (method, template)
            assert op["responses"], (method, template)
            for scheme in op.get("security", []):
                assert set(scheme) <= set(doc["components"]["securitySchemes"])


def test_mapping_security_follows_the_token_mode(tmp_path: Path, lab: RunningLabServer) -> None:
    """POST /mapping needs the token when it was generated; with a configured one (upstream's
    MF_PROVISION_API_KEY) the document says it is optional, as the server lets it through."""
    assert _document(lab)["paths"]["/mapping"]["post"]["security"] == [{"operatorToken": []}]
    settings = lab_settings(tmp_path / "configured", env={"MF_PROVISION_API_KEY": "op-key"})
    with start_in_thread(settings) as configured:
        doc = _document(configured)
        assert doc["paths"]["/mapping"]["post"]["security"] == [{"operatorToken": []}, {}]
        assert doc["paths"]["/mapping"]["get"]["security"] == [{"operatorToken": []}]
        resp = requests.post(f"{configured.url}/mapping", timeout=TIMEOUT,
                             json={"external_id": "gw", "external_key": "k"})
        assert resp.status_code == 201


# ------------------------------------------------------------------ the statuses


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


_TYPES: dict[str, Callable[[object], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


def _validate(doc: dict[str, Any], schema: dict[str, Any], value: object, where: str) -> None:
    """Check ``value`` against ``schema`` (type, required, properties, items, lengths)."""
    schema = _resolve(doc, schema)
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        assert any(_TYPES[k](value) for k in kinds), f"{where}: {value!r:.80} is not {kinds}"
    if isinstance(value, str):
        assert schema.get("minLength", 0) <= len(value), where
        assert len(value) <= schema.get("maxLength", len(value)), where
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        missing = set(schema.get("required", ())) - set(value)
        assert not missing, f"{where}: missing {missing}"
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                _validate(doc, properties[key], item, f"{where}.{key}")
            elif extra is False:
                raise AssertionError(f"{where}: undocumented field {key!r}")
            elif isinstance(extra, dict):
                _validate(doc, extra, item, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for n, item in enumerate(value):
            _validate(doc, schema["items"], item, f"{where}[{n}]")


def _check(doc: dict[str, Any], template: str, method: str, resp: requests.Response) -> int:
    """The answer is documented for the operation: status, content type, JSON schema."""
    op = doc["paths"][template][method.lower()]
    where = f"{method} {template} -> {resp.status_code}"
    documented = op["responses"].get(str(resp.status_code))
    assert documented is not None, f"{where} is not documented: {resp.text[:200]}"
    if "content" not in documented:  # 204: no body, no type
        assert resp.content == b"" and "Content-Type" not in resp.headers, where
        return resp.status_code
    ((media_type, content),) = documented["content"].items()
    assert resp.headers["Content-Type"] == media_type, where
    schema = _resolve(doc, content["schema"])
    if media_type == "application/json" and method != "HEAD" and schema.get("format") != "binary":
        _validate(doc, schema, resp.json(), where)
    return resp.status_code


def test_every_documented_status_is_answered_and_nothing_else(
    lab: RunningLabServer, token: str
) -> None:
    """Real requests reach each documented status of each operation, and only those."""
    doc = _document(lab)
    seen: dict[tuple[str, str], set[int]] = {}
    url = lab.url
    operator = {"Authorization": f"Bearer {token}"}
    as_json = {"Content-Type": "application/json"}

    def call(method: str, template: str, path: str | None = None, **kw: Any) -> requests.Response:
        resp = requests.request(method, url + (path or template), timeout=TIMEOUT,
                                allow_redirects=False, **kw)
        seen.setdefault((template, method), set()).add(_check(doc, template, method, resp))
        return resp

    mapping = {"external_id": EXTERNAL_ID, "external_key": EXTERNAL_KEY}
    created = call("POST", "/mapping", json=mapping, headers=operator).json()
    thing = created["things"][0]
    call("POST", "/mapping", data=b"{}", headers={**operator, **as_json})
    call("POST", "/mapping", json=mapping)
    call("POST", "/mapping", json={**mapping, "external_key": "other"}, headers=operator)
    call("POST", "/mapping", data=b"x" * 70_000, headers={**operator, **as_json})
    call("POST", "/mapping", data=b"{}", headers={**operator, "Content-Type": "text/plain"})
    call("GET", "/mapping", headers=operator)
    call("GET", "/mapping")
    call("GET", "/health")
    call("HEAD", "/health")

    boot = "/things/bootstrap/{external_id}"
    here = f"/things/bootstrap/{EXTERNAL_ID}"
    call("GET", boot, here, headers={"Authorization": f"Thing {EXTERNAL_KEY}"})
    call("GET", boot, here)
    call("GET", boot, here, headers={"Authorization": "Thing wrong"})
    secure, key = "/things/bootstrap/secure/{external_id}", bootstrap_cipher.parse_encrypt_key(
        bootstrap_cipher.DEFAULT_ENCRYPT_KEY_HEX)
    there = f"/things/bootstrap/secure/{EXTERNAL_ID}"

    def sealed(external_key: str) -> dict[str, str]:
        header = bootstrap_cipher.encrypt_external_key_header(key, external_key)
        return {"Authorization": f"Thing {header}"}

    call("GET", secure, there, headers=sealed(EXTERNAL_KEY))
    call("GET", secure, there, headers={"Authorization": "Thing not-hex"})
    call("GET", secure, there, headers=sealed("wrong"))

    thing_auth = {"Authorization": f"Thing {thing['key']}"}
    csr = pki.make_csr(pki.generate_key(), thing["id"])
    signed = call("POST", "/certs/csr", json={"thing_id": thing["id"], "csr": csr},
                  headers=thing_auth).json()
    call("POST", "/certs/csr", json={"thing_id": thing["id"], "csr": "not a CSR"},
         headers=thing_auth)
    call("POST", "/certs/csr", json={"thing_id": thing["id"], "csr": csr})
    call("POST", "/certs/csr", data=b"x" * 70_000, headers={**thing_auth, **as_json})
    call("POST", "/certs/csr", data=b"{}", headers={**thing_auth, "Content-Type": "text/xml"})
    call("GET", "/certs/ca")
    one = "/certs/{id}"
    call("GET", one, f"/certs/{signed['cert_serial']}", headers=operator)
    call("GET", one, "/certs/00ff", headers=operator)
    call("GET", one, f"/certs/{signed['cert_serial']}")
    call("DELETE", one, f"/certs/{thing['id']}", headers=operator)
    call("DELETE", one, f"/certs/{thing['id']}")
    gone = "/things/{id}"
    other = requests.post(f"{url}/mapping", json={**mapping, "external_id": "gw-gone"},
                          headers=operator, timeout=TIMEOUT).json()["things"][0]["id"]
    call("DELETE", gone, f"/things/{other}")
    call("DELETE", gone, f"/things/{other}", headers=operator)
    call("DELETE", gone, f"/things/{other}", headers=operator)  # unknown now: 204 again
    call("GET", "/metrics")
    call("GET", "/openapi.json")
    call("GET", "/docs")
    listings = [p for p, ops in doc["paths"].items()
                if "offset" in json.dumps(ops.get("get", {}).get("parameters", []))]
    assert len(listings) == 4
    for listing in listings:
        call("GET", listing, headers=operator)
        call("GET", listing, f"{listing}?limit=0", headers=operator)
        call("GET", listing)

    lab.service.backend.close()  # from here on storage is unavailable: 503
    call("POST", "/mapping", json={**mapping, "external_id": "gw-503"}, headers=operator)
    call("GET", boot, here, headers={"Authorization": f"Thing {EXTERNAL_KEY}"})
    call("GET", secure, there, headers=sealed(EXTERNAL_KEY))
    call("POST", "/certs/csr", json={"thing_id": thing["id"], "csr": csr}, headers=thing_auth)
    call("GET", one, f"/certs/{signed['cert_serial']}", headers=operator)
    call("DELETE", one, f"/certs/{thing['id']}", headers=operator)
    call("DELETE", gone, f"/things/{thing['id']}", headers=operator)
    call("GET", "/metrics")
    for listing in listings:
        call("GET", listing, headers=operator)

    documented = {(t, m.upper()): {int(s) for s in op["responses"]}
                  for t, ops in doc["paths"].items() for m, op in ops.items()}
    assert seen == documented
