"""The lab server: a local, Mainflux-compatible /mapping and Bootstrap service."""

from __future__ import annotations

__all__: list[str] = []
