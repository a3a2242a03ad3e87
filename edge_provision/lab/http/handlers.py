"""The lab server's endpoints: one handler each, thin (check, call :class:`LabService`, reply).

Credentials are checked before a body is read. What a gateway calls (``POST
/mapping``, the bootstrap fetches, ``POST /certs/csr``) awaits the service on the
event loop (the backend's group commit batches concurrent writes without a thread
per request); the operator's blocking service calls run in the worker threads of the
loop's default executor. The OpenAPI document
(:mod:`edge_provision.lab.http.openapi`) describes exactly these routes.
"""

from __future__ import annotations

import asyncio
from typing import Callable, TypeVar

from edge_provision.errors import Unauthorized
from edge_provision.lab.http.errors import fail
from edge_provision.lab.http.messages import JSON, Reply, Request, json_reply
from edge_provision.lab.http.router import Handler, Route
from edge_provision.lab.http.validation import (
    check_external_id,
    check_external_key,
    check_json_content_type,
    optional,
    optional_whole_number,
    page,
    parse_object,
    required,
)
from edge_provision.lab.service import LabService

__all__ = ["LISTINGS", "MAX_CSR_CHARS", "lab_routes"]

T = TypeVar("T")

MAX_CSR_CHARS = 32 * 1024
"""Longest PEM CSR accepted."""

LISTINGS = (
    ("/things", "things"),
    ("/channels", "channels"),
    ("/things/configs", "configs"),
    ("/certs", "certs"),
)
"""The operator listings: path and the name of the list in the answer."""

_PEM = "application/x-pem-file"
_METRICS = "text/plain; version=0.0.4; charset=utf-8"
_MAPPING_EXAMPLE = '{"external_id": "02:42:ac:11:00:07", "external_key": "secret"}'
_CSR_EXAMPLE = '{"thing_id": "<id>", "csr": "-----BEGIN CERTIFICATE REQUEST-----..."}'
_NO_BOOTSTRAP = "no bootstrap configuration for this external_id and key"


async def _blocking(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` in a worker thread (the loop's default executor)."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def lab_routes(service: LabService) -> list[Route]:
    """Every endpoint of the lab API, bound to ``service``."""
    limit = service.max_body_bytes
    health_reply = Reply(200, service.health_body)

    async def health(request: Request) -> Reply:
        """Service health (upstream HealthInfo shape, plus ``csr: true``)."""
        return health_reply

    async def post_mapping(request: Request) -> Reply:
        """Provision a gateway (idempotent per external_id + external_key)."""
        service.check_operator(request.authorization, for_mapping=True)
        check_json_content_type(request)
        obj = parse_object(await request.body(limit), _MAPPING_EXAMPLE)
        external_id = required(obj, "external_id")
        external_key = required(obj, "external_key")
        name = optional(obj, "name")
        check_external_id(external_id)
        check_external_key(external_key)
        return json_reply(201, await service.provision(external_id, external_key, name))

    async def get_mapping(request: Request) -> Reply:
        """The ``[bootstrap.content]`` of the layout (operator token required)."""
        service.check_operator(request.authorization)
        return json_reply(200, service.bootstrap_content())

    async def bootstrap(request: Request) -> Reply:
        """Device bootstrap with ``Authorization: Thing <external_key>`` (or bare)."""
        body = await service.bootstrap(request.params["external_id"], request.authorization)
        if body is None:
            fail(404, _NO_BOOTSTRAP)
        return json_reply(200, body)

    async def bootstrap_secure(request: Request) -> Reply:
        """Encrypted device bootstrap (upstream AES-CFB scheme; binary body)."""
        blob = await service.bootstrap_secure(request.params["external_id"],
                                              request.authorization)  # fmt: skip
        if blob is None:
            fail(404, _NO_BOOTSTRAP)
        return Reply(200, blob, JSON)

    async def post_csr(request: Request) -> Reply:
        """Sign a CSR; the private key never leaves the gateway."""
        header = request.authorization
        if header is None or not header.strip():
            raise Unauthorized("missing Authorization header; send 'Authorization: Thing "
                               "<thing_key>' (or the bare key)")  # fmt: skip
        check_json_content_type(request)
        obj = parse_object(await request.body(limit), _CSR_EXAMPLE)
        thing_id = required(obj, "thing_id")
        csr = required(obj, "csr", max_chars=MAX_CSR_CHARS, line_breaks=True)
        ttl_s = optional_whole_number(obj, "ttl_s", "seconds", minimum=1)
        return json_reply(201, await service.sign_csr(thing_id, header, csr, ttl_s))

    async def metrics(request: Request) -> Reply:
        """Prometheus text: counters and the platform's entity counts."""
        return Reply(200, (await _blocking(service.metrics_text)).encode(), _METRICS)

    async def ca_cert(request: Request) -> Reply:
        """The lab CA certificate (PEM, no authentication)."""
        return Reply(200, service.ca_pem.encode("ascii"), _PEM)

    async def get_cert(request: Request) -> Reply:
        """One issued certificate (operator token required)."""
        service.check_operator(request.authorization)
        serial = request.params["id"]
        body = await _blocking(service.certificate, serial)
        if body is None:
            fail(404, f"no certificate with serial {serial[:80]!r}")
        return json_reply(200, body)

    async def revoke(request: Request) -> Reply:
        """Revoke every certificate of a thing (operator token required)."""
        service.check_operator(request.authorization)
        return json_reply(200, await _blocking(service.revoke, request.params["id"]))

    async def delete_thing(request: Request) -> Reply:
        """Remove a thing, its connections, bootstrap config and broker access (operator)."""
        service.check_operator(request.authorization)
        await _blocking(service.delete_thing, request.params["id"])
        return Reply(204, b"", None)

    def listing(fetch: Callable[[int, int], dict[str, object]]) -> Handler:
        async def handler(request: Request) -> Reply:
            """A page of a listing (operator token required)."""
            service.check_operator(request.authorization)
            offset, page_limit = page(request)
            return json_reply(200, await _blocking(fetch, offset, page_limit))

        return handler

    fetchers = {"things": service.list_things, "channels": service.list_channels,
                "configs": service.list_configs, "certs": service.list_certificates}
    return [
        Route("GET", "/health", health),
        Route("HEAD", "/health", health),
        Route("POST", "/mapping", post_mapping),
        Route("GET", "/mapping", get_mapping),
        Route("GET", "/things/bootstrap/{external_id}", bootstrap),
        Route("GET", "/things/bootstrap/secure/{external_id}", bootstrap_secure),
        Route("POST", "/certs/csr", post_csr),
        Route("GET", "/certs/ca", ca_cert),
        Route("GET", "/certs/{id}", get_cert),  # id: a certificate serial
        Route("DELETE", "/certs/{id}", revoke),  # id: a thing id
        Route("DELETE", "/things/{id}", delete_thing),
        Route("GET", "/metrics", metrics),
        *(Route("GET", path, listing(fetchers[name])) for path, name in LISTINGS),
    ]
