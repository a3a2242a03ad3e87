"""The gateway agent: enrollment, the long-running daemon and its systemd integration.

Import the submodules you need (``edge_provision.agent.daemon.systemd`` …); this package
imports nothing itself, so that the idle supervisor stays small.
"""

from __future__ import annotations

__all__: list[str] = []
