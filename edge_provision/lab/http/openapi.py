"""The lab server's OpenAPI document, kept by hand, and the two routes that serve it.

The document lists exactly the routes :func:`~edge_provision.lab.http.handlers.lab_routes`
serves (plus ``/openapi.json`` and ``/docs``), each with the status codes it can
answer; ``tests/integration/test_lab_openapi.py`` checks that against the running
server. Change a handler, change this document.
"""

from __future__ import annotations

import copy
import json

from edge_provision import __version__
from edge_provision.lab.http.handlers import LISTINGS, MAX_CSR_CHARS
from edge_provision.lab.http.messages import JSON, Reply, Request
from edge_provision.lab.http.router import Route
from edge_provision.lab.http.validation import (
    CONTROL_CHARS,
    CONTROL_CHARS_BUT_LINE_BREAKS,
    DEFAULT_PAGE_LIMIT,
    DOT_SEGMENTS,
    KEY_CHARS,
    MAX_PAGE_LIMIT,
    MAX_STRING_CHARS,
)

__all__ = ["DOCUMENT", "document", "openapi_routes"]

Doc = dict[str, object]

_ERRORS = {
    400: "the request is malformed; the message names the field or parameter",
    401: "missing, unreadable or wrong credentials (`WWW-Authenticate` says which scheme)",
    404: "not found",
    409: "external_id already provisioned with a different external_key",
    413: "request body over the configured limit (64 KiB by default)",
    415: "Content-Type is not application/json",
    503: "storage or platform unavailable; retry after `Retry-After`; requests are idempotent",
}

_ERROR_HEADERS: dict[int, Doc] = {
    401: {"WWW-Authenticate": {"required": True, "description": "`Bearer` or `Thing`, with "
                               "the realm", "schema": {"type": "string"}}},
    503: {"Retry-After": {"required": True, "description": "seconds to wait",
                          "schema": {"type": "string", "pattern": "^[0-9]+$"}}},
}  # fmt: skip

_OPERATOR: list[dict[str, list[str]]] = [{"operatorToken": []}]
_THING: list[dict[str, list[str]]] = [{"thingKey": []}]


def _ref(name: str) -> Doc:
    return {"$ref": f"#/components/schemas/{name}"}


def _string(**extra: object) -> Doc:
    return {"type": "string", **extra}


def _object(required: list[str], properties: dict[str, Doc], *, closed: bool = True) -> Doc:
    doc: Doc = {"type": "object", "required": required, "properties": properties}
    if closed:
        doc["additionalProperties"] = False
    return doc


def _content(schema: Doc, media_type: str = JSON) -> Doc:
    return {"content": {media_type: {"schema": schema}}}


def _operation(summary: str, tag: str, ok: int, ok_body: Doc, errors: tuple[int, ...] = (),
               **extra: object) -> Doc:  # fmt: skip
    responses: Doc = {str(ok): {"description": "success", **ok_body}}
    for status in errors:
        answer: Doc = {"description": _ERRORS[status], **_content(_ref("Error"))}
        if status in _ERROR_HEADERS:
            answer["headers"] = _ERROR_HEADERS[status]
        responses[str(status)] = answer
    return {"summary": summary, "tags": [tag], "responses": responses, **extra}


def _body(schema: str) -> Doc:
    return {"requestBody": {"required": True, **_content(_ref(schema))}}


def _path_param(name: str, description: str) -> list[Doc]:
    return [{"name": name, "in": "path", "required": True, "description": description,
             "schema": _string(minLength=1)}]  # fmt: skip


_ID = _string(minLength=1, maxLength=MAX_STRING_CHARS, pattern=f"^[^{CONTROL_CHARS}]+$")
_EXTERNAL_ID = _string(
    minLength=1, maxLength=MAX_STRING_CHARS, pattern=f"^[^{CONTROL_CHARS}/]+$",
    **{"not": {"enum": list(DOT_SEGMENTS)}},
    description="the gateway's id; no control characters, no '/', not a dot segment: it is "
                "one path segment of /things/bootstrap/<external_id>")
_EXTERNAL_KEY = _string(
    minLength=1, maxLength=MAX_STRING_CHARS, pattern=f"^[{KEY_CHARS}]+$",
    description="the gateway's secret; Latin-1 without spaces or control characters: the "
                "gateway sends it in an Authorization header")
_SCHEMAS: dict[str, Doc] = {
    "Error": _object(["error"], {"error": _string(description="what was wrong and what to do")}),
    "Health": _object(
        ["status", "version", "commit", "description", "build_time", "csr", "backend", "certs"],
        {"status": _string(), "version": _string(), "commit": _string(),
         "description": _string(), "build_time": _string(),
         "csr": {"type": "boolean", "description": "POST /certs/csr exists"},
         "backend": _string(description="where mappings are stored: embedded or mainflux"),
         "certs": _string(description="who signs certificates: lab-ca (the lab's own CA)")}),
    "MappingRequest": _object(
        ["external_id", "external_key"],
        {"external_id": _EXTERNAL_ID, "external_key": _EXTERNAL_KEY,
         "name": {"type": ["string", "null"], "maxLength": MAX_STRING_CHARS,
                  "pattern": f"^[^{CONTROL_CHARS}]*$"}},
        closed=False),
    "Thing": _object(["id", "name", "key", "metadata"],
                     {"id": _string(), "name": _string(), "key": _string(),
                      "metadata": {"type": "object"}}),
    "Channel": _object(["id", "name", "metadata"],
                       {"id": _string(), "name": _string(), "metadata": {"type": "object"}}),
    "Mapping": _object(
        ["things", "channels"],
        {"things": {"type": "array", "items": _ref("Thing")},
         "channels": {"type": "array", "items": _ref("Channel")},
         "whitelisted": {"type": "object", "additionalProperties": {"type": "boolean"}},
         "client_cert": {"type": "object", "additionalProperties": _string()},
         "client_key": {"type": "object", "additionalProperties": _string()},
         "ca_cert": _string()}),
    "BootstrapConfig": _object(
        ["mainflux_id", "mainflux_key", "mainflux_channels", "thing_id", "thing_key",
         "channels"],
        {"mainflux_id": _string(), "mainflux_key": _string(),
         "mainflux_channels": {"type": "array", "items": _ref("Channel")},
         "thing_id": _string(), "thing_key": _string(),
         "channels": {"type": "array", "items": _ref("Channel")},
         "content": _string(description="JSON text"), "client_cert": _string(),
         "client_key": _string(), "ca_cert": _string(),
         "extra_things": {"type": "array", "items": _ref("Thing")}}),
    "CsrRequest": _object(
        ["thing_id", "csr"],
        {"thing_id": _ID, "csr": _string(
            minLength=1, maxLength=MAX_CSR_CHARS,
            pattern=f"^[^{CONTROL_CHARS_BUT_LINE_BREAKS}]+$",
            description="the PEM CSR (line breaks allowed, no other control characters)"),
         "ttl_s": {"type": ["integer", "null"], "minimum": 1}},
        closed=False),
    "IssuedCertificate": _object(
        ["thing_id", "client_cert", "cert_serial", "expiration", "ca_cert"],
        {"thing_id": _string(), "client_cert": _string(), "cert_serial": _string(),
         "expiration": _string(format="date-time"), "ca_cert": _string()}),
    "CertificateSummary": _object(
        ["thing_id", "cert_serial", "not_before", "expiration", "revoked"],
        {"thing_id": _string(), "cert_serial": _string(),
         "not_before": _string(format="date-time"), "expiration": _string(format="date-time"),
         "revoked": {"type": "boolean"}}),
    "Certificate": _object(
        ["thing_id", "cert_serial", "not_before", "expiration", "revoked", "cert"],
        {"thing_id": _string(), "cert_serial": _string(),
         "not_before": _string(format="date-time"), "expiration": _string(format="date-time"),
         "revoked": {"type": "boolean"}, "cert": _string()}),
    "Revoked": _object(["revoked"], {"revoked": {"type": "array", "items": _string()}}),
    "ConfigSummary": _object(
        ["external_id", "mainflux_id", "mainflux_key", "name", "mainflux_channels", "content",
         "state", "has_client_cert"],
        {"external_id": _string(), "mainflux_id": _string(), "mainflux_key": _string(),
         "name": _string(), "mainflux_channels": {"type": "array", "items": _ref("Channel")},
         "content": _string(), "state": {"type": "integer"},
         "has_client_cert": {"type": "boolean"}}),
}  # fmt: skip

_LISTED = {"things": "Thing", "channels": "Channel", "configs": "ConfigSummary",
           "certs": "CertificateSummary"}  # fmt: skip
for _path, _name in LISTINGS:
    _SCHEMAS[f"{_name.capitalize()}Page"] = _object(
        ["total", "offset", "limit", _name],
        {"total": {"type": "integer"}, "offset": {"type": "integer"},
         "limit": {"type": "integer"},
         _name: {"type": "array", "items": _ref(_LISTED[_name])}})  # fmt: skip

_PAGE_PARAMS: list[Doc] = [
    {"name": "offset", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 0, "maximum": 10**12, "default": 0}},
    {"name": "limit", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_LIMIT,
                "default": DEFAULT_PAGE_LIMIT}},
]  # fmt: skip

_health = _operation("Service health (upstream HealthInfo shape, plus csr: true)", "service",
                     200, _content(_ref("Health")))
_bootstrap_errors = (401, 404, 503)
_external_id = _path_param("external_id", "the gateway's external id")

_PATHS: dict[str, Doc] = {
    "/health": {"get": _health, "head": {**_health, "summary": "Service health, no body"}},
    "/mapping": {
        "post": _operation(
            "Provision a gateway (idempotent per external_id + external_key)", "provision",
            201, _content(_ref("Mapping")), (400, 401, 409, 413, 415, 503),
            security=_OPERATOR, **_body("MappingRequest")),
        "get": _operation(
            "The layout's [bootstrap.content] (operator token)", "provision", 200,
            _content({"type": "object"}), (401,), security=_OPERATOR),
    },
    "/things/bootstrap/{external_id}": {"get": _operation(
        "Device bootstrap with its external key", "bootstrap", 200,
        _content(_ref("BootstrapConfig")), _bootstrap_errors, security=_THING,
        parameters=_external_id)},
    "/things/bootstrap/secure/{external_id}": {"get": _operation(
        "Encrypted device bootstrap: Authorization carries hex(iv || AES-CFB(key, "
        "external_key)); the body is iv || AES-CFB(key, JSON)", "bootstrap", 200,
        _content(_string(format="binary")), _bootstrap_errors, security=_THING,
        parameters=_external_id)},
    "/certs/csr": {"post": _operation(
        "Sign a CSR with the thing key; the private key never leaves the gateway", "certs",
        201, _content(_ref("IssuedCertificate")), (400, 401, 413, 415, 503), security=_THING,
        **_body("CsrRequest"))},
    "/certs/ca": {"get": _operation(
        "The lab CA certificate (PEM)", "certs", 200,
        _content(_string(), "application/x-pem-file"))},
    "/certs/{id}": {
        "get": _operation(
            "One issued certificate (operator token)", "certs", 200,
            _content(_ref("Certificate")), (401, 404, 503), security=_OPERATOR,
            parameters=_path_param("id", "a certificate serial (hex, any case)")),
        "delete": _operation(
            "Revoke every certificate of a thing (operator token)", "certs", 200,
            _content(_ref("Revoked")), (401, 503), security=_OPERATOR,
            parameters=_path_param("id", "a thing id")),
    },
    "/things/{id}": {"delete": _operation(
        "Remove a thing: connections, bootstrap config (a gateway's), certificates revoked, "
        "broker access and sessions (operator token); an unknown id is no error, as upstream",
        "operator", 204, {}, (401, 503), security=_OPERATOR,
        parameters=_path_param("id", "a thing id"))},
    "/metrics": {"get": _operation(
        "Prometheus metrics", "service", 200,
        _content(_string(), "text/plain; version=0.0.4; charset=utf-8"), (503,))},
    "/openapi.json": {"get": _operation(
        "This document", "service", 200, _content({"type": "object"}))},
    "/docs": {"get": _operation(
        "This document in Swagger UI (loads it from cdn.jsdelivr.net)", "service", 200,
        _content(_string(), "text/html; charset=utf-8"))},
}  # fmt: skip
for _path, _name in LISTINGS:
    _PATHS[_path] = {"get": _operation(
        f"List {_name} (operator token)", "operator", 200,
        _content(_ref(f"{_name.capitalize()}Page")), (400, 401, 503), security=_OPERATOR,
        parameters=_PAGE_PARAMS)}  # fmt: skip

_AUTH_FORMS = "(scheme word in any case, one or more spaces)"
DOCUMENT: Doc = {
    "openapi": "3.1.0",
    "info": {
        "title": "edge-provision lab server",
        "version": __version__,
        "description": "Mainflux-compatible provision, bootstrap and certificate endpoints. "
                       "Every error is {\"error\": \"<what was wrong and what to do>\"}. "
                       "Before any operation is reached, a connection may be answered 408 "
                       "(the request head was not complete in time) or 503 with Retry-After "
                       "(the connection cap is reached and every connection is busy), and "
                       "closed.",
    },
    "paths": _PATHS,
    "components": {
        "schemas": _SCHEMAS,
        "securitySchemes": {
            "operatorToken": {
                "type": "apiKey", "in": "header", "name": "Authorization",
                "description": "the lab API token: `Bearer <token>`, `Token <token>`, "
                               f"`ApiKey <token>` or the bare token {_AUTH_FORMS}"},
            "thingKey": {
                "type": "apiKey", "in": "header", "name": "Authorization",
                "description": "a thing key or external key: `Thing <key>` or the bare key "
                               f"{_AUTH_FORMS}"},
        },
    },
}  # fmt: skip
"""The document served at ``/openapi.json`` when every request needs the token."""


def document(header_required: bool) -> Doc:
    """The document of a server whose token is generated (``header_required``) or configured.

    With a configured token (upstream's ``MF_PROVISION_API_KEY``) ``POST /mapping``
    without an Authorization header is let through: its security is optional.
    """
    if header_required:
        return DOCUMENT
    doc = copy.deepcopy(DOCUMENT)
    mapping = doc["paths"]["/mapping"]["post"]  # type: ignore[index]
    mapping["security"] = [*_OPERATOR, {}]
    return doc

_DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>edge-provision lab server API</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "openapi.json", dom_id: "#swagger-ui"});</script>
</body>
</html>
"""


def openapi_routes(header_required: bool = True) -> list[Route]:
    """``GET /openapi.json`` (the :func:`document`) and ``GET /docs`` (Swagger UI)."""
    served = Reply(200, json.dumps(document(header_required),
                                   separators=(",", ":")).encode(), JSON)
    page = Reply(200, _DOCS_PAGE.encode(), "text/html; charset=utf-8")

    async def openapi(request: Request) -> Reply:
        return served

    async def docs(request: Request) -> Reply:
        return page

    return [Route("GET", "/openapi.json", openapi), Route("GET", "/docs", docs)]
