"""Removing what a failed provisioning run created (the "no leftovers" rule).

Private to :mod:`edge_provision.lab.backends.mainflux`. A run records each thing,
channel and config it made -- and, when a create call failed without a clear
answer (connection dropped, 5xx, or 0.13's one-by-one bulk), that it does not
know what was made: then the entities are found again by the run's
``edge_provision_request`` marker. Deletions are tried once each; what cannot
be deleted is logged with its ids and reported to ``on_leftover(kind, count)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from edge_provision.errors import EdgeProvisionError
from edge_provision.lab.backends.mainflux._marker import REQUEST
from edge_provision.platform.bootstrap_configs import BootstrapConfigsClient
from edge_provision.platform.things import ThingsClient

__all__ = ["Undo"]

logger = logging.getLogger("edge_provision.lab.backends.mainflux")

Leftover = Callable[[str, int], None]


class Undo:
    """The entities of one run, to delete if the run fails."""

    def __init__(self, things: ThingsClient, configs: BootstrapConfigsClient, *,
                 external_id: str, request: str, on_leftover: Leftover) -> None:
        self._things = things
        self._configs = configs
        self._external_id = external_id
        self._request = request
        self._on_leftover = on_leftover
        self.thing_ids: list[str] = []
        self.channel_ids: list[str] = []
        self.things_unsure = False
        self.channels_unsure = False
        self.config_id: str | None = None

    def run(self) -> None:
        """Delete the config, then the things (their connections go along), then the channels."""
        left: dict[str, list[str]] = {}
        if self.config_id is not None:
            self._delete("bootstrap_configs", [self.config_id], self._configs.delete, left)
        self._delete("things", self._ids(self.thing_ids, self.things_unsure, things=True),
                     self._things.delete_thing, left)
        self._delete("channels", self._ids(self.channel_ids, self.channels_unsure, things=False),
                     self._things.delete_channel, left)
        if left:
            logger.error(
                "leftovers on the platform after a failed mapping external_id=%s request=%s %s; "
                "delete them by hand", self._external_id, self._request,
                " ".join(f"{kind}={','.join(ids)}" for kind, ids in left.items()))
        else:
            logger.info("failed mapping rolled back external_id=%s request=%s",
                        self._external_id, self._request)

    def _ids(self, known: list[str], unsure: bool, *, things: bool) -> list[str]:
        """The ids to delete: the known ones, plus whatever carries this run's marker."""
        if not unsure:
            return list(known)
        marker = {REQUEST: self._request}
        try:
            page = (self._things.things(metadata=marker) if things
                    else self._things.channels(metadata=marker))  # fmt: skip
        except EdgeProvisionError as exc:
            kind = "things" if things else "channels"
            logger.error("cannot look up the %s of a failed mapping external_id=%s request=%s "
                         "error=%s; search metadata %s=%s and delete them by hand", kind,
                         self._external_id, self._request, type(exc).__name__, REQUEST,
                         self._request)  # fmt: skip
            self._on_leftover(kind, max(1, len(known)))
            return list(known)
        found = [e.id for e in page.items]
        return list(dict.fromkeys([*known, *found]))

    def _delete(self, kind: str, ids: list[str], delete: Callable[[str], None],
                left: dict[str, list[str]]) -> None:
        for entity_id in ids:
            try:
                delete(entity_id)
            except EdgeProvisionError as exc:
                logger.warning("delete failed kind=%s id=%s error=%s", kind, entity_id,
                               type(exc).__name__)
                left.setdefault(kind, []).append(entity_id)
        if kind in left:
            self._on_leftover(kind, len(left[kind]))
