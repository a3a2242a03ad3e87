"""After the run: did the platform end up with exactly what the fleet should have made?

Read through the operator listings (:mod:`edge_provision.fleet.listings`) and the
device endpoint, per simulated gateway:

* **duplicate** -- more than one bootstrap config for the gateway's MAC (in any
  spelling: ``02:5a:..`` and ``02-5A-..`` are one gateway), more than one thing carrying
  its external_id, or things of the gateway outside the thing-set it enrolled with
  (leftovers of a second mapping);
* **missing** -- an enrolled gateway without a bootstrap config, a thing of its set or a
  channel of its config not on the platform;
* **shared** -- a thing, a thing key or a channel that belongs to two gateways;
* **mismatch** -- the config names another thing than the gateway enrolled with, or a
  key other than the thing's;
* **unfetchable** -- ``GET /things/bootstrap/<external_id>`` with the gateway's own key
  does not give its config back;
* **stray** -- an entity that carries the run's prefix but no gateway of the run;
* **incomplete** -- a listing could not be read, so the audit could not finish.

Entities are matched to gateways by ``metadata.external_id`` (a MAC of the run) and, for
things without it, by the ``sim-<prefix>-<index>`` name. Keys are compared, never shown.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from edge_provision.errors import EdgeProvisionError
from edge_provision.fleet.clients import ClientPool
from edge_provision.fleet.gateways import RunPrefix, SimGateway
from edge_provision.fleet.journey import GatewayResult
from edge_provision.fleet.listings import Listings, fetch_listings
from edge_provision.platform import BootstrapConfig, PlatformThing

__all__ = ["AuditReport", "Finding", "FindingKind", "audit_run", "check_fetched",
           "check_listings"]  # fmt: skip

_T = TypeVar("_T")
_FETCH_TRIES = 3
_FETCH_PAUSE_S = 0.2


class FindingKind(str, Enum):
    """What is wrong (see the module docstring)."""

    DUPLICATE = "duplicate"
    MISSING = "missing"
    SHARED = "shared"
    MISMATCH = "mismatch"
    UNFETCHABLE = "unfetchable"
    STRAY = "stray"
    INCOMPLETE = "incomplete"


@dataclass(frozen=True)
class Finding:
    """One problem, with the gateway it concerns (None: the whole run)."""

    kind: FindingKind
    message: str
    gateway: int | None = None


@dataclass(frozen=True)
class AuditReport:
    """What the audit read and found."""

    findings: tuple[Finding, ...]
    gateways: int
    things: int
    channels: int
    configs: int
    fetched: int

    @property
    def ok(self) -> bool:
        """Nothing found."""
        return not self.findings

    @property
    def duplicates(self) -> int:
        """Gateways with more than one thing-set (or leftovers of one)."""
        return len({f.gateway for f in self.findings if f.kind is FindingKind.DUPLICATE})

    def counts(self) -> dict[str, int]:
        """Findings by kind."""
        out: dict[str, int] = {}
        for finding in self.findings:
            out[finding.kind.value] = out.get(finding.kind.value, 0) + 1
        return dict(sorted(out.items()))

    def to_dict(self, max_problems: int = 100) -> dict[str, object]:
        """The ``audit`` part of ``simulate --json`` (the first ``max_problems`` messages)."""
        return {
            "ok": self.ok,
            "gateways": self.gateways,
            "things": self.things,
            "channels": self.channels,
            "configs": self.configs,
            "fetched": self.fetched,
            "duplicates": self.duplicates,
            "findings": self.counts(),
            "problems": [f"{f.kind.value}: {f.message}" for f in self.findings[:max_problems]],
        }


def _owner(thing: PlatformThing, prefix: RunPrefix) -> int | None:
    external_id = thing.metadata.get("external_id")
    if isinstance(external_id, str):
        index = prefix.index_of(external_id)
        if index is not None:
            return index
    return prefix.index_of_name(thing.name)


def _by_gateway(items: Iterable[_T], index_of: Callable[[_T], int | None],
                describe: Callable[[_T], str], count: int,
                findings: list[Finding]) -> dict[int, list[_T]]:  # fmt: skip
    """The run's items by gateway index; items for an index past the fleet are stray."""
    out: dict[int, list[_T]] = defaultdict(list)
    for item in items:
        index = index_of(item)
        if index is None:
            continue
        if index >= count:
            findings.append(Finding(FindingKind.STRAY, f"{describe(item)} claims gateway "
                                    f"{index}, which this run does not have"))
            continue
        out[index].append(item)
    return out


def check_listings(gateways: Sequence[SimGateway], results: Sequence[GatewayResult],
                   prefix: RunPrefix, listings: Listings) -> tuple[Finding, ...]:  # fmt: skip
    """Every finding the listings show (pure; see the module docstring)."""
    findings: list[Finding] = []
    count = len(gateways)
    things = _by_gateway(listings.things, lambda t: _owner(t, prefix),
                         lambda t: f"thing {t.id} ({t.name!r})", count, findings)
    configs = _by_gateway(listings.configs, lambda c: prefix.index_of(c.external_id),
                          lambda c: f"bootstrap config {c.external_id!r}", count, findings)
    by_id = {t.id: t for t in listings.things}
    channel_ids = {c.id for c in listings.channels}
    thing_owners: dict[str, set[int]] = defaultdict(set)
    key_owners: dict[str, set[int]] = defaultdict(set)
    channel_owners: dict[str, set[int]] = defaultdict(set)
    for gw, result in zip(gateways, results):
        i, who = gw.index, f"gateway {gw.index} ({gw.external_id})"

        def add(kind: FindingKind, text: str, i: int = i, who: str = who) -> None:
            findings.append(Finding(kind, f"{who}: {text}", i))

        own = configs.get(i, [])
        if len(own) > 1:
            spellings = ", ".join(sorted(repr(c.external_id) for c in own))
            add(FindingKind.DUPLICATE, f"{len(own)} bootstrap configs ({spellings})")
        if result.ok and not own:
            add(FindingKind.MISSING, "enrolled but has no bootstrap config on the platform")
        listed = things.get(i, [])
        carrying = [t for t in listed if "external_id" in t.metadata]
        if len(carrying) > 1:
            add(FindingKind.DUPLICATE, f"{len(carrying)} things carry its external_id")
        for thing in listed:
            thing_owners[thing.id].add(i)
            key_owners[thing.key].add(i)
        if result.ok:
            expected = set(result.thing_ids)
            present = {t.id for t in listed}
            extra = sorted(present - expected)
            if extra:
                add(FindingKind.DUPLICATE, f"{len(extra)} thing(s) outside the thing-set it "
                    f"enrolled with: {', '.join(extra[:5])}")
            for thing_id in sorted(expected - present):
                if thing_id not in by_id:
                    add(FindingKind.MISSING, f"thing {thing_id} of its set is not listed")
            for thing_id in expected:
                thing_owners[thing_id].add(i)
        for config in own:
            thing_owners[config.thing_id].add(i)
            if result.ok and config.thing_id != result.gateway_thing_id:
                add(FindingKind.MISMATCH, f"its bootstrap config names thing {config.thing_id},"
                    f" it enrolled as {result.gateway_thing_id}")
            listed_thing = by_id.get(config.thing_id)
            if listed_thing is None:
                add(FindingKind.MISSING, f"thing {config.thing_id} of its config is not listed")
            elif listed_thing.key != config.thing_key:
                add(FindingKind.MISMATCH, f"its config holds a key other than thing "
                    f"{config.thing_id}'s")
            for channel_id in config.channel_ids:
                channel_owners[channel_id].add(i)
                if channel_id not in channel_ids:
                    add(FindingKind.MISSING, f"channel {channel_id} of its config is not listed")
    for what, owners in (("thing", thing_owners), ("channel", channel_owners)):
        for entity, holders in sorted(owners.items()):
            if len(holders) > 1:
                findings.append(Finding(FindingKind.SHARED, f"{what} {entity} belongs to "
                                        f"gateways {', '.join(map(str, sorted(holders)))}",
                                        min(holders)))  # fmt: skip
    for holders in sorted((h for h in key_owners.values() if len(h) > 1), key=min):
        findings.append(Finding(FindingKind.SHARED, "one thing key is used by gateways "
                                f"{', '.join(map(str, sorted(holders)))}", min(holders)))
    return tuple(findings)


Fetch = Callable[[SimGateway], "BootstrapConfig | None"]


def check_fetched(gateway: SimGateway, result: GatewayResult, fetch: Fetch) -> Finding | None:
    """Whether the gateway gets its own config back with its key (None: it does)."""
    who = f"gateway {gateway.index} ({gateway.external_id})"
    for attempt in range(1, _FETCH_TRIES + 1):
        try:
            config = fetch(gateway)
        except EdgeProvisionError as exc:
            if exc.retryable and attempt < _FETCH_TRIES:
                time.sleep(_FETCH_PAUSE_S * attempt)
                continue
            return Finding(FindingKind.UNFETCHABLE,
                           f"{who}: fetching its bootstrap config failed: {exc.kind}: {exc}",
                           gateway.index)  # fmt: skip
        if config is None:
            return Finding(FindingKind.UNFETCHABLE, f"{who}: no bootstrap config for it",
                           gateway.index)  # fmt: skip
        if result.ok and config.thing_id != result.gateway_thing_id:
            return Finding(FindingKind.MISMATCH, f"{who}: the device endpoint gives thing "
                           f"{config.thing_id}, it enrolled as {result.gateway_thing_id}",
                           gateway.index)  # fmt: skip
        return None
    return None  # pragma: no cover - the loop always returns


def audit_run(pool: ClientPool, gateways: Sequence[SimGateway],
              results: Sequence[GatewayResult], prefix: RunPrefix, *, secure: bool,
              concurrency: int) -> AuditReport:  # fmt: skip
    """Read the listings, check them, fetch every enrolled gateway's config with its key."""
    clients = pool.get()
    try:
        listings = fetch_listings(clients.things, clients.configs, pool.target.token,
                                  run_name=prefix.name, scheme=pool.target.auth_scheme)
    except EdgeProvisionError as exc:
        finding = Finding(FindingKind.INCOMPLETE, f"the operator listings could not be read: "
                          f"{exc.kind}: {exc}")  # fmt: skip
        return AuditReport((finding,), len(gateways), 0, 0, 0, 0)
    findings = list(check_listings(gateways, results, prefix, listings))
    with_config = {prefix.index_of(c.external_id) for c in listings.configs}
    to_fetch = [(g, r) for g, r in zip(gateways, results) if r.ok or g.index in with_config]

    def fetch(gateway: SimGateway) -> BootstrapConfig | None:
        return pool.get().bootstrap.fetch(gateway.external_id, gateway.external_key,
                                          secure=secure)  # fmt: skip

    with concurrent.futures.ThreadPoolExecutor(max(1, concurrency),
                                               thread_name_prefix="fleet-audit") as executor:
        fetched = list(executor.map(lambda pair: check_fetched(pair[0], pair[1], fetch),
                                    to_fetch))  # fmt: skip
    findings += [f for f in fetched if f is not None]
    run_things = sum(1 for t in listings.things if _owner(t, prefix) is not None)
    run_configs = sum(1 for c in listings.configs if prefix.index_of(c.external_id) is not None)
    run_channels = len({ch for c in listings.configs if prefix.index_of(c.external_id) is not None
                        for ch in c.channel_ids})  # fmt: skip
    return AuditReport(tuple(findings), len(gateways), run_things, run_channels, run_configs,
                       sum(1 for f in fetched if f is None))  # fmt: skip
