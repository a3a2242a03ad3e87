"""HTTP routes of the lab server (thin: parse, call :class:`LabService`, render).

Every answer that is not a success is ``{"error": "<what was wrong and what to
do>"}`` with ``Content-Type: application/json`` and a fitting status code; a
request a client can make never reaches the 500 handler. Bodies are read and
parsed by hand in ``_http`` (no pydantic on the hot path) and blocking backend
calls run in the thread pool, so the backend's group commit can batch concurrent
requests.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import Callable

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from edge_provision import __version__
from edge_provision.errors import Unauthorized
from edge_provision.lab.http._plumbing import (
    _JSON,
    _MAPPING_EXAMPLE,
    MAX_STRING_CHARS,
    Receive,
    Scope,
    _fail,
    _FastPath,
    _header,
    _install_error_handlers,
    _InternalErrors,
    _json,
    _LabApp,
    _mapping_handler,
    _page,
    _parse_object,
    _provision,
    _read_body,
    _require_json,
    _required,
)
from edge_provision.lab.service import LabService

__all__ = ["MAX_STRING_CHARS", "create_app"]

_MAX_CSR_CHARS = 32 * 1024
_PEM = "application/x-pem-file"

# --------------------------------------------------------------------------- app

_CSR_EXAMPLE = '{"thing_id": "<id>", "csr": "-----BEGIN CERTIFICATE REQUEST-----..."}'


def _body_doc(required: list[str], properties: dict[str, object]) -> dict[str, object]:
    schema = {"type": "object", "required": required, "properties": properties}
    return {"requestBody": {"required": True,
                            "content": {_JSON: {"schema": schema}}}}  # fmt: skip


def create_app(service: LabService) -> FastAPI:
    """The ASGI application serving ``service``; closes it at lifespan shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        service.close()

    app = _LabApp(
        title="edge-provision lab server",
        version=__version__,
        description="Mainflux-compatible provision, bootstrap and certificate endpoints.",
        lifespan=lifespan,
    )
    _install_error_handlers(app)
    limit = service.max_body_bytes

    @app.get("/health", tags=["service"])
    async def health(request: Request) -> Response:
        """Service health (upstream HealthInfo shape, plus ``csr: true``)."""
        return Response(service.health_body, media_type=_JSON)

    app.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)

    @app.post("/mapping", status_code=201, tags=["provision"], openapi_extra=_body_doc(
        ["external_id", "external_key"],
        {"external_id": {"type": "string"}, "external_key": {"type": "string"},
         "name": {"type": "string"}}))  # fmt: skip
    async def post_mapping(request: Request) -> Response:
        """Provision a gateway (idempotent per external_id + external_key)."""
        service.check_operator(_header(request), for_mapping=True)
        _require_json(request)
        obj = _parse_object(await _read_body(request, limit), _MAPPING_EXAMPLE)
        return Response(await _provision(service, obj), status_code=201, media_type=_JSON)

    @app.get("/mapping", tags=["provision"])
    async def get_mapping(request: Request) -> Response:
        """The ``[bootstrap.content]`` of the layout (operator token required)."""
        service.check_operator(_header(request))
        return _json(200, service.bootstrap_content())

    @app.get("/things/bootstrap/{external_id}", tags=["bootstrap"])
    async def bootstrap(external_id: str, request: Request) -> Response:
        """Device bootstrap with ``Authorization: Thing <external_key>`` (or bare)."""
        body = await run_in_threadpool(service.bootstrap, external_id, _header(request))
        if body is None:
            _fail(404, "no bootstrap configuration for this external_id and key")
        return _json(200, body)

    @app.get("/things/bootstrap/secure/{external_id}", tags=["bootstrap"])
    async def bootstrap_secure(external_id: str, request: Request) -> Response:
        """Encrypted device bootstrap (upstream AES-CFB scheme; binary body)."""
        blob = await run_in_threadpool(service.bootstrap_secure, external_id, _header(request))
        if blob is None:
            _fail(404, "no bootstrap configuration for this external_id and key")
        return Response(blob, media_type=_JSON)

    @app.post("/certs/csr", status_code=201, tags=["certs"], openapi_extra=_body_doc(
        ["thing_id", "csr"],
        {"thing_id": {"type": "string"}, "csr": {"type": "string"},
         "ttl_s": {"type": "integer", "minimum": 1}}))  # fmt: skip
    async def post_csr(request: Request) -> Response:
        """Sign a CSR; the private key never leaves the gateway."""
        header = _header(request)
        if header is None or not header.strip():
            raise Unauthorized("missing Authorization header; send 'Authorization: Thing "
                               "<thing_key>' (or the bare key)")  # fmt: skip
        _require_json(request)
        obj = _parse_object(await _read_body(request, limit), _CSR_EXAMPLE)
        thing_id = _required(obj, "thing_id")
        csr = _required(obj, "csr", max_chars=_MAX_CSR_CHARS)
        ttl_s = obj.get("ttl_s")
        if ttl_s is not None and (isinstance(ttl_s, bool) or not isinstance(ttl_s, int)
                                  or ttl_s < 1):  # fmt: skip
            _fail(400, f"field 'ttl_s' must be a whole number of seconds >= 1, got {ttl_s!r:.40}")
        body = await run_in_threadpool(service.sign_csr, thing_id, header, csr, ttl_s)
        return _json(201, body)

    @app.get("/metrics", tags=["service"])
    async def metrics() -> Response:
        text = await run_in_threadpool(service.metrics_text)
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/certs/ca", tags=["certs"])
    async def ca_cert() -> Response:
        """The lab CA certificate (PEM, no authentication)."""
        return Response(service.ca_pem, media_type=_PEM)

    @app.get("/certs/{serial}", tags=["certs"])
    async def get_cert(serial: str, request: Request) -> Response:
        """One issued certificate (operator token required)."""
        service.check_operator(_header(request))
        body = await run_in_threadpool(service.certificate, serial)
        if body is None:
            _fail(404, f"no certificate with serial {serial[:80]!r}")
        return _json(200, body)

    @app.delete("/certs/{thing_id}", tags=["certs"])
    async def revoke(thing_id: str, request: Request) -> Response:
        """Revoke every certificate of a thing (operator token required)."""
        service.check_operator(_header(request))
        return _json(200, await run_in_threadpool(service.revoke, thing_id))

    def listing(
        fetch: Callable[[int, int], dict[str, object]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            service.check_operator(_header(request))
            offset, page_limit = _page(request)
            return _json(200, await run_in_threadpool(fetch, offset, page_limit))

        return handler

    for path, fetch, what in (
        ("/things", service.list_things, "things"),
        ("/channels", service.list_channels, "channels"),
        ("/things/configs", service.list_configs, "bootstrap configs"),
        ("/certs", service.list_certificates, "issued certificates"),
    ):
        app.add_api_route(path, listing(fetch), methods=["GET"], tags=["operator"],
                          summary=f"List {what} (offset, limit <= 100; operator token)")
    async def raw_health(scope: Scope, receive: Receive) -> tuple[int, bytes]:
        return 200, service.health_body

    mapping = _mapping_handler(service, limit)
    app.fast_path = _FastPath(
        service,
        raw={("GET", "/health"): raw_health, ("HEAD", "/health"): raw_health,
             ("POST", "/mapping"): mapping},
        bootstrap=bootstrap, bootstrap_secure=bootstrap_secure,
    )  # fmt: skip
    app.counters = service.counters
    app.add_middleware(_InternalErrors, service=service)
    return app
