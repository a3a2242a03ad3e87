"""Platforms the lab server can provision on (see :class:`edge_provision.lab.models.Backend`).

``embedded`` keeps everything in one local SQLite file and needs nothing else.
"""

from __future__ import annotations

from edge_provision.lab.backends.embedded import EmbeddedBackend

__all__ = ["EmbeddedBackend"]
