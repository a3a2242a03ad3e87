"""File modes of the state directory: found looser than they must be, and tightened.

A key file someone loosened to 0644 (a backup restored with ``cp``, a careless ``chmod -R``)
lets every local user read a private key, a thing key or the external key. ``status``
reports each such file (:func:`find_loose`); ``enroll`` and ``renew`` put the mode back and
say so (:func:`tighten`). The modes come from the store (each generation's manifest names
the mode of each of its files) plus the identity file. Standard library only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edge_provision import fileio
from edge_provision.agent.identity import IDENTITY_FILE
from edge_provision.agent.store import Store

__all__ = ["LooseFile", "find_loose", "tighten"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LooseFile:
    """A file or directory whose mode gives more than it must (``mode`` beyond ``expected``)."""

    path: Path
    mode: int
    expected: int

    def __str__(self) -> str:
        return f"{self.path} is {self.mode:04o}, expected {self.expected:04o}"


def _expected(store: Store) -> Iterator[tuple[Path, int]]:
    yield from store.expected_modes()
    for name in (IDENTITY_FILE, ".identity.lock"):
        path = store.state_dir / name
        if path.exists() and not path.is_symlink():
            yield path, fileio.SECRET_MODE


def find_loose(store: Store) -> tuple[LooseFile, ...]:
    """Every file of the state directory with a permission bit its expected mode lacks."""
    loose = []
    for path, expected in _expected(store):
        try:
            mode = path.stat().st_mode & 0o777
        except OSError:
            continue
        if mode & ~expected:
            loose.append(LooseFile(path, mode, expected))
    return tuple(loose)


def tighten(store: Store) -> tuple[LooseFile, ...]:
    """Put every loose mode back to its expected one (the store lock held); what was fixed.

    A file we cannot change (another owner) is logged and left: it is reported by status.
    """
    fixed = []
    for loose in find_loose(store):
        try:
            os.chmod(loose.path, loose.expected)
        except OSError as exc:
            logger.warning("file mode not restored path=%s error=%s", loose.path, exc.strerror)
            continue
        logger.info("file mode restored path=%s was=%04o now=%04o", loose.path, loose.mode,
                       loose.expected)
        fixed.append(loose)
    return tuple(fixed)
