"""Platforms the lab server can provision on (see :class:`edge_provision.lab.models.Backend`).

``embedded`` keeps everything in one local SQLite file and needs nothing else.
Each backend is a subpackage, imported only by whoever opens one
(``from edge_provision.lab.backends.embedded import EmbeddedBackend``).
"""

from __future__ import annotations

__all__: list[str] = []
