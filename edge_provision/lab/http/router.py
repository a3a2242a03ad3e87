"""The lab server's router: method + path template -> handler.

A :class:`Route` is one operation (``GET /things/bootstrap/{external_id}``); a
``{name}`` segment matches one non-empty path segment (the decoded path, so an
encoded ``/`` never matches) and is passed to the handler by name. Static paths
are looked up in a dict first and, as OpenAPI matches them, shadow the templates
(``/certs/ca`` is only ``GET /certs/ca``, never ``/certs/{id}``); templates are
tried in the order given. A path that some route serves, but not with this
method, is 405 with an ``Allow`` header listing every method of the path; a
path no route serves is 404, unless it does with the trailing slash added or
removed: then a 307 redirect there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping
from typing import Callable, NamedTuple
from urllib.parse import quote

from edge_provision.lab.http.errors import ApiError
from edge_provision.lab.http.messages import Reply, Request

__all__ = ["Handler", "Route", "Router"]

Handler = Callable[[Request], Awaitable[Reply]]
"""One endpoint: the request in, the complete reply out."""

_NO_PARAMS: Mapping[str, str] = {}


class Route(NamedTuple):
    """One operation: method, path template, handler."""

    method: str
    path: str
    handler: Handler


class _Template(NamedTuple):
    route: Route
    segments: tuple[str | None, ...]  # literal segment, or None for a parameter
    names: tuple[str, ...]  # parameter names, in order

    def match(self, parts: list[str]) -> dict[str, str] | None:
        values: list[str] = []
        for want, got in zip(self.segments, parts):
            if want is None:
                if not got:
                    return None
                values.append(got)
            elif want != got:
                return None
        return dict(zip(self.names, values))


class Router:
    """Finds the handler of a request (see the module docstring for the rules)."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes: tuple[Route, ...] = tuple(routes)
        self._static: dict[str, dict[str, Handler]] = {}
        self._templates: dict[int, list[_Template]] = {}
        for route in self.routes:
            if not route.path.startswith("/"):
                raise ValueError(f"route path must start with '/': {route.path!r}")
            parts = route.path.split("/")
            if not any(p.startswith("{") for p in parts):
                methods = self._static.setdefault(route.path, {})
                if route.method in methods:
                    raise ValueError(f"route {route.method} {route.path} is defined twice")
                methods[route.method] = route.handler
                continue
            segments = tuple(None if p.startswith("{") else p for p in parts)
            names = tuple(p[1:-1] for p in parts if p.startswith("{"))
            self._templates.setdefault(len(parts), []).append(_Template(route, segments, names))

    def match(self, method: str, path: str) -> tuple[Handler, Mapping[str, str]]:
        """The handler and path parameters for ``method path``; ApiError 404/405 otherwise."""
        methods = self._static.get(path)
        if methods is not None:  # the common case: one dict lookup
            handler = methods.get(method)
            if handler is not None:
                return handler, _NO_PARAMS
        served = self._served(path)
        found = served.get(method)
        if found is not None:
            return found
        if served:
            allow = ", ".join(sorted(served))
            raise ApiError(405, f"method {method} is not allowed on {path}; use {allow}",
                           {"Allow": allow})  # fmt: skip
        other = path[:-1] if path.endswith("/") else path + "/"
        if path != "/" and self._served(other):
            return _redirect(other), _NO_PARAMS
        raise ApiError(404, f"no such endpoint: {method} {path}; see /openapi.json for the API")

    def _served(self, path: str) -> dict[str, tuple[Handler, Mapping[str, str]]]:
        """Every method served on ``path``, with its handler and parameters."""
        static = self._static.get(path)
        if static is not None:  # a concrete path shadows the templates
            return {m: (h, _NO_PARAMS) for m, h in static.items()}
        served: dict[str, tuple[Handler, Mapping[str, str]]] = {}
        parts = path.split("/")
        for template in self._templates.get(len(parts), ()):
            params = template.match(parts)
            if params is not None:
                served.setdefault(template.route.method, (template.route.handler, params))
        return served


def _redirect(path: str) -> Handler:
    location = quote(path, safe="/:@!$&'()*+,;=-._~")

    async def redirect(request: Request) -> Reply:
        query = request.scope.get("query_string", b"").decode("latin-1")
        return Reply(307, b"", None, (("Location", location + ("?" + query if query else "")),))

    return redirect
