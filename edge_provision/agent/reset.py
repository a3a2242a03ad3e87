"""The reset use case: forget the current generation, keep the identity and old files.

The next enrollment looks up the bootstrap config with the same external_id and key and
so gets the same things back; the older generations stay until it succeeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from edge_provision.agent.store import Store

__all__ = ["ResetResult", "reset"]


@dataclass(frozen=True)
class ResetResult:
    """What ``reset`` forgot (None: there was no current generation) and what it kept."""

    forgot_generation: Optional[int]
    kept_generations: tuple[int, ...]

    def to_dict(self, state_dir: str) -> dict[str, object]:
        """The ``reset --json`` document."""
        return {"ok": True, "state_dir": state_dir, "forgot_generation": self.forgot_generation,
                "kept_generations": list(self.kept_generations)}  # fmt: skip


def reset(store: Store) -> ResetResult:
    """Unlink ``current`` and journal it, under the store lock; all or nothing (a full disk
    fails with StoreError and leaves ``current`` in place)."""
    with store.lock(blocking=False):
        current = store.current_generation()
        detail = {"generation": str(current.number)} if current is not None else {}
        store.forget_current(lambda state: state.record("reset", "done", detail))
        return ResetResult(current.number if current is not None else None,
                           tuple(store.list_generations()))  # fmt: skip
