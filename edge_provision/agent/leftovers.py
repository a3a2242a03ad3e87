"""Leftovers of interrupted writes: found and removed when the agent next starts.

Every file the agent writes goes through a staging file (``.<name>.<8 hex>.tmp``,
:func:`edge_provision.fileio.atomic_write`) and every generation through
``generations/.tmp-<n>``. A process killed in between leaves them behind, and some hold a
secret: ``.identity.json.<hex>.tmp`` the external key, ``.agent.env.<hex>.tmp`` (0640) the
MQTT password, ``generations/.tmp-<n>`` thing keys and private keys. :func:`remove_leftovers`
removes them from the state directory and, for the files handed off elsewhere, only the
staging files of those very names. ``enroll``, ``renew`` and ``reset`` call it under the
state lock before anything else, the daemon when it starts. Standard library only.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edge_provision import fileio
from edge_provision.agent.store import Store
from edge_provision.errors import StoreError
from edge_provision.settings import AgentSettings

__all__ = ["remove_leftovers"]

logger = logging.getLogger(__name__)


def remove_leftovers(settings: AgentSettings, store: Store) -> tuple[str, ...]:
    """Remove what interrupted writes left behind; the paths removed (the store lock held).

    A leftover beside a handed-off file that cannot be removed is logged, never raised: it
    must not stop the run (the state directory's own leftovers do raise StoreError).
    """
    removed = [str(store.state_dir / name) for name in store.cleanup_temp()]
    # the state directory is ours alone: any staging file in it is a leftover of ours
    removed += [str(p) for p in fileio.remove_temp_files(store.state_dir)]
    targets = (settings.agent_config, settings.agent_env, settings.export_config,
               settings.metrics_textfile)  # fmt: skip
    for target in targets:
        if target is None:
            continue
        path = Path(target)
        try:
            removed += [str(p) for p in fileio.remove_temp_files(path.parent, of=path.name)]
        except StoreError as exc:
            logger.warning("leftover not removed error=%s", exc)
    for name in removed:
        logger.info("leftover of an interrupted write removed path=%s", name)
    return tuple(removed)
