"""The lab server's HTTP layer: one path for every request (no web framework).

=============  ==============================================================
``app``        the ASGI application: route, handle, answer errors, count
``router``     method + path template -> handler; 404, 405 with ``Allow``
``handlers``   one handler per endpoint, calling :class:`~edge_provision.lab.service.LabService`
``openapi``    the OpenAPI document, kept by hand; ``/openapi.json`` and ``/docs``
``messages``   ASGI types, request, reply, the body reader
``validation`` Content-Type, JSON bodies, fields, paging parameters
``errors``     exception -> status table, the 500 answer
``listener``   the socket and uvicorn (the only module that imports it)
=============  ==============================================================

Import the module you need (``edge_provision.lab.http.app.create_app``); this
package itself imports nothing.
"""

from __future__ import annotations

__all__: list[str] = []
