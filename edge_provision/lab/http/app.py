"""The lab server's ASGI application: one path for every request.

route (:mod:`.router`) -> handler (:mod:`.handlers`, :mod:`.openapi`) -> reply;
a refused request or a known error becomes its answer through one table
(:mod:`.errors`); anything else is one logged 500. Every answer is counted by
status for ``/metrics``. At start-up the event loop gets a pool of worker threads
for blocking calls (the handlers' and the backend's).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from edge_provision.lab.http.errors import INTERNAL_ERROR, error_reply
from edge_provision.lab.http.handlers import lab_routes
from edge_provision.lab.http.messages import (
    Disconnected,
    Receive,
    Request,
    Scope,
    Send,
    send_reply,
)
from edge_provision.lab.http.openapi import openapi_routes
from edge_provision.lab.http.router import Router
from edge_provision.lab.service import LabService

__all__ = ["WORKER_THREADS", "LabApp", "create_app"]

logger = logging.getLogger("edge_provision.lab.http")

WORKER_THREADS = 40
"""Threads for blocking calls: enough for a group commit to gather concurrent writes."""


class LabApp:
    """ASGI application: ``http`` requests through :class:`Router`, and the lifespan."""

    def __init__(self, router: Router, service: LabService) -> None:
        self.router = router
        self._service = service
        self._counters = service.counters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            raise RuntimeError(f"the lab server speaks HTTP only, not {scope['type']!r}")

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        try:
            handler, params = self.router.match(method, path)
            reply = await handler(Request(scope, receive, params))
        except Disconnected:
            logger.debug("client went away before its body arrived method=%s path=%s",
                         method, path)  # fmt: skip
            return
        except Exception as exc:
            known = error_reply(exc, path)
            if known is None:
                self._service.internal_errors += 1
                logger.exception("internal error method=%s path=%s", method, path)
                known = INTERNAL_ERROR
            reply = known
        self._counters.inc("http_requests_total", status=str(reply.status))
        await send_reply(send, reply)

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                loop = asyncio.get_running_loop()
                loop.set_default_executor(ThreadPoolExecutor(
                    WORKER_THREADS, thread_name_prefix="edge-provision-lab-worker"))  # fmt: skip
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(service: LabService) -> LabApp:
    """The ASGI application serving ``service`` (the caller closes the service)."""
    routes = [*lab_routes(service), *openapi_routes(service.info.header_required)]
    return LabApp(Router(routes), service)
