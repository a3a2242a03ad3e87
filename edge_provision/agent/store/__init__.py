"""The gateway's on-disk credential store: a journalled state machine and generations.

Layout of ``state_dir`` (0700)::

    identity.json            owned by identity.py, never touched here
    state.json               State as JSON, sealed with a sha256 of its canonical body (0600)
    state.json.prev          the previous good state.json, written just before it is replaced (0600)
    generations/<n>/         one complete credential set per generation (0700):
        things.json            [{"id", "name", "metadata"}]                       0600
        channels.json          [{"id", "name", "metadata"}]                       0600
        credentials.json       {"things": {thing_id: thing_key}}                  0600
        bootstrap.json         {"content", "gateway_thing_id", "external_id", "source",
                                "created"}                                        0600
        <thing_id>.crt         client certificate PEM                             0644
        <thing_id>.key         its private key PEM                                0600
        ca.crt                 CA certificate PEM, when known                     0644
        manifest.json          {"files": {name: {"sha256", "mode"}}, ...}, sealed,
                               written last                                       0600
    generations/.tmp-<n>/    a generation being written; renamed to <n> when complete
    current -> generations/<n>   relative symlink, flipped with one atomic rename
    .lock                    flock(2) lock file guarding every write; while held it says who
                             holds it: {"pid", "command", "since"}

API: ``Store(state_dir, *, clock=None)``; ``with store.lock(blocking=True):`` around every
write (writes outside it raise :class:`StoreError`; the lock is re-entrant within a thread;
another process's lock is waited for, ``wait_s`` at most, and ``blocking=False`` raises
:class:`~edge_provision.errors.LockBusy` at once; the lock file names its holder).
``load_state() -> State`` never raises on damage: a damaged ``state.json`` falls back to
``state.json.prev`` (``recovered_from == "state.json.prev"``), both damaged to a fresh state
(``recovered_from == "fresh"``), each with a warning. ``save_state(state)``;
``update_state(change) -> State`` (load, change, save);
``write_generation(GenerationData) -> int``; ``switch_current(n) -> State``;
``current_generation() -> Generation | None`` verifies every file against the manifest and,
if the live generation is damaged, returns the newest older valid one with
``Generation.fallback_from`` set; ``load_generation(n)``, ``verify_generation(n)``,
``list_generations()``, ``prune(keep=5)``, ``forget_current()``, ``cleanup_temp()``.
The value types (:class:`State`, :class:`Generation` …) live in ``_store_model`` and are
re-exported here.

The ``current`` link is the source of truth for which generation is live;
``State.current_generation`` is reconciled with it on load (a crash between the link flip
and the state save is thus harmless). Every OSError becomes a StoreError naming the path
and a fix. Keys, thing keys and bootstrap content are never logged (and not in reprs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from edge_provision import fileio
from edge_provision.agent.store.model import (
    JOURNAL_LIMIT,
    STATE_VERSION,
    ErrorInfo,
    Generation,
    GenerationData,
    JournalEntry,
    Phase,
    State,
    StoredChannel,
    StoredThing,
    certificate_facts,
    generation_number,
    json_records,
    link_number,
    object_field,
    parse_state,
    read_file,
    render_generation,
    seal,
    sha256_hex,
    str_field,
    unseal,
)
from edge_provision.errors import EdgeProvisionError, StoreError

__all__ = [
    "JOURNAL_LIMIT",
    "ErrorInfo",
    "Generation",
    "GenerationData",
    "JournalEntry",
    "Phase",
    "State",
    "Store",
    "StoredChannel",
    "StoredThing",
]

logger = logging.getLogger(__name__)

_MANIFEST_VERSION = 1
_REQUIRED_FILES = ("things.json", "channels.json", "credentials.json", "bootstrap.json")
_GEN_TEMP_RE = re.compile(r"^\.(tmp|trash)-\d+$")
_OWN_FILES = ("state.json", "state.json.prev", "current")  # written with a staging file


class Store:
    """The credential store in ``state_dir``; see the module docstring."""

    def __init__(self, state_dir: Path, *, clock: Callable[[], datetime] | None = None,
                 describe_certificate: Callable[[bytes], Mapping[str, str]] | None = None
                 ) -> None:  # fmt: skip
        self.state_dir = Path(state_dir)
        self._describe = describe_certificate
        self.state_path = self.state_dir / "state.json"
        self.prev_path = self.state_dir / "state.json.prev"
        self.generations_dir = self.state_dir / "generations"
        self.current_link = self.state_dir / "current"
        self.lock_path = self.state_dir / ".lock"
        self.recovered_from: str | None = None
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._mutex = threading.RLock()
        self._owner: int | None = None
        self._depth = 0

    def __repr__(self) -> str:
        return f"Store({str(self.state_dir)!r})"

    def _now(self) -> str:
        return self._clock().astimezone(timezone.utc).isoformat(timespec="seconds")

    # -- locking --------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, blocking: bool = True, *, wait_s: float | None = None,
             holder: str | None = None,
             on_wait: Callable[[str], None] | None = None) -> Iterator[None]:  # fmt: skip
        """Hold the state directory's exclusive lock (re-entrant within one thread).

        Another process's lock is waited for (see :func:`edge_provision.fileio.exclusive_lock`:
        ``wait_s`` bounds the wait, ``blocking=False`` does not wait, ``holder`` is written
        into the lock file, ``on_wait`` hears who holds it); then LockBusy.
        """
        if not self._mutex.acquire(blocking=blocking):
            raise StoreError(
                f"{self.lock_path}: another thread of this process holds the state lock"
            )
        try:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            fileio.ensure_private_dir(self.state_dir)
            with fileio.exclusive_lock(self.lock_path, blocking=blocking, wait_s=wait_s,
                                       holder=holder, on_wait=on_wait):  # fmt: skip
                self._owner, self._depth = threading.get_ident(), 1
                try:
                    yield
                finally:
                    self._owner, self._depth = None, 0
        finally:
            self._mutex.release()

    @property
    def is_locked(self) -> bool:
        """True while the calling thread holds :meth:`lock`."""
        return self._depth > 0 and self._owner == threading.get_ident()

    def _require_lock(self, what: str) -> None:
        if not self.is_locked:
            raise StoreError(
                f"{self.state_dir}: {what} needs the state lock; call it inside "
                "`with store.lock():` (a bug in the caller)"
            )

    # -- state ----------------------------------------------------------------------------

    def load_state(self) -> State:
        """The saved state; else ``.prev``; else a fresh state. Never raises on damage."""
        self.recovered_from = None
        try:
            state = parse_state(read_file(self.state_path))
        except FileNotFoundError:
            return self._reconcile(State())
        except ValueError as exc:
            logger.warning(
                "state damaged path=%s reason=%s; trying %s",
                self.state_path,
                exc,
                self.prev_path.name,
            )
            try:
                state = parse_state(read_file(self.prev_path))
            except (FileNotFoundError, ValueError) as exc2:
                logger.warning(
                    "state unrecoverable path=%s reason=%s; starting from a fresh state",
                    self.prev_path,
                    exc2,
                )
                self.recovered_from = "fresh"
                return self._reconcile(State())
            self.recovered_from = self.prev_path.name
        return self._reconcile(state)

    def _reconcile(self, state: State) -> State:
        linked = self._linked_number()
        if linked is not None and linked != state.current_generation:
            logger.info(
                "state reconciled current_generation=%s link=%s", state.current_generation, linked
            )
            phase = Phase.PROVISIONED if state.phase is Phase.UNPROVISIONED else state.phase
            state = dataclasses.replace(state, current_generation=linked, phase=phase)
        return state

    def save_state(self, state: State) -> None:
        """Persist ``state``: the old good ``state.json`` goes to ``.prev`` first; both atomic."""
        self._require_lock("save_state")
        body = {"version": STATE_VERSION, "saved_at": self._now(), "state": state.to_dict()}
        with contextlib.suppress(FileNotFoundError, ValueError):
            old = read_file(self.state_path)
            parse_state(old)
            fileio.atomic_write(self.prev_path, old, fileio.SECRET_MODE)
        fileio.atomic_write(self.state_path, seal(body), fileio.SECRET_MODE)

    def update_state(self, change: Callable[[State], State]) -> State:
        """Load the state, apply ``change``, save and return the result (under the lock)."""
        self._require_lock("update_state")
        state = change(self.load_state())
        self.save_state(state)
        return state

    # -- generations ----------------------------------------------------------------------

    def list_generations(self) -> tuple[int, ...]:
        """Numbers of the complete generation directories, ascending (not verified)."""
        try:
            names = os.listdir(self.generations_dir)
        except FileNotFoundError:
            return ()
        except OSError as exc:
            raise fileio.os_error(self.generations_dir, "list", exc) from exc
        return tuple(sorted(n for n in map(generation_number, names) if n is not None))

    def write_generation(self, data: GenerationData) -> int:
        """Write ``data`` as a new generation (max existing + 1) and return its number.

        Written into ``generations/.tmp-<n>``, fsynced, then renamed into place: a crash
        leaves either no generation ``n`` or a complete one. Does not switch ``current``.
        """
        self._require_lock("write_generation")
        files = render_generation(data, self._now())
        fileio.ensure_private_dir(self.generations_dir)
        number = max(self.list_generations(), default=0) + 1
        tmp = self.generations_dir / f".tmp-{number}"
        final = self.generations_dir / str(number)
        try:
            if tmp.exists():
                _rmtree(tmp)
            os.mkdir(tmp, fileio.DIR_MODE)
            os.chmod(tmp, fileio.DIR_MODE)
            manifest: dict[str, object] = {}
            for name, (content, mode) in files.items():
                _write_new(tmp / name, content, mode)
                manifest[name] = {
                    "sha256": sha256_hex(content),
                    "mode": f"{mode:04o}",
                }
            doc = {
                "version": _MANIFEST_VERSION,
                "generation": number,
                "created": self._now(),
                "files": manifest,
                "certificates": self._certificate_facts(files),
            }
            _write_new(tmp / "manifest.json", seal(doc), fileio.SECRET_MODE)
            fileio.fsync_dir(tmp)
            os.rename(tmp, final)
            fileio.fsync_dir(self.generations_dir)
        except OSError as exc:
            _rmtree(tmp, ignore_errors=True)  # a full disk must not keep the half of it
            raise fileio.os_error(final, "write the generation", exc) from exc
        logger.info(
            "generation written number=%s source=%s things=%s certificates=%s",
            number,
            data.source,
            len(data.things),
            len(data.certificates),
        )
        return number

    def _certificate_facts(self, files: Mapping[str, tuple[bytes, int]]
                           ) -> dict[str, Mapping[str, str]]:  # fmt: skip
        """What each ``.crt`` says (subject, serial, validity), recorded for readers that must
        not load a crypto library (``status``); left out when no describer was given."""
        if self._describe is None:
            return {}
        facts: dict[str, Mapping[str, str]] = {}
        for name, (content, _) in files.items():
            if name.endswith(".crt"):
                try:
                    facts[name] = dict(self._describe(content))
                except EdgeProvisionError as exc:  # unreadable: readers parse it themselves
                    logger.warning("certificate not described file=%s error=%s", name, exc)
        return facts

    def verify_generation(self, number: int) -> tuple[str, ...]:
        """What is wrong with generation ``number`` (empty when it is complete and intact)."""
        try:
            self._read_generation(number)
        except ValueError as exc:
            return (str(exc),)
        return ()

    def load_generation(self, number: int) -> Generation:
        """Generation ``number``, verified; StoreError if missing or damaged."""
        try:
            return self._read_generation(number)
        except ValueError as exc:
            raise StoreError(
                f"{self.generations_dir / str(number)}: generation {number} is damaged "
                f"({exc}); enroll again to fetch fresh credentials"
            ) from None

    def switch_current(self, number: int) -> State:
        """Point ``current`` at generation ``number`` (verified first); record it in the state."""
        self._require_lock("switch_current")
        self.load_generation(number)
        fileio.atomic_symlink(self.current_link, f"generations/{number}")
        state = dataclasses.replace(self.load_state(), current_generation=number)
        self.save_state(state)
        logger.info("current generation switched number=%s", number)
        return state

    def current_generation(self) -> Generation | None:
        """The live generation, verified; an older valid one if it is damaged; ``None`` if none."""
        try:
            target = os.readlink(self.current_link)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: "current" exists but is not a symlink
                raise fileio.os_error(self.current_link, "read the link", exc) from exc
            target = ""
        number = link_number(target)
        if number is not None:
            try:
                return self._read_generation(number)
            except ValueError as exc:
                reason = f"generation {number}: {exc}"
        else:
            reason = f"link target {target!r} is not generations/<n>"
        older = [n for n in self.list_generations() if number is None or n < number]
        for candidate in reversed(older):
            try:
                gen = self._read_generation(candidate)
            except ValueError as exc:
                logger.warning("generation damaged number=%s reason=%s", candidate, exc)
                continue
            logger.warning(
                "current generation damaged reason=%s; using generation=%s", reason, candidate
            )
            return dataclasses.replace(
                gen, fallback_from=number if number is not None else 0, fallback_reason=reason
            )
        logger.warning("current generation damaged reason=%s; no valid older generation", reason)
        return None

    def prune(self, keep: int = 5) -> tuple[int, ...]:
        """Delete all but the newest ``keep`` generations, never the current one; return them."""
        self._require_lock("prune")
        if keep < 1:
            raise StoreError(f"prune keep={keep}: keep at least 1 generation")
        numbers = self.list_generations()
        protected = set(numbers[-keep:])
        current = self._linked_number()
        if current is not None:
            protected.add(current)
        removed = tuple(n for n in numbers if n not in protected)
        for n in removed:
            trash = self.generations_dir / f".trash-{n}"
            try:
                if trash.exists():  # litter of an interrupted prune
                    _rmtree(trash)
                os.rename(self.generations_dir / str(n), trash)
                fileio.fsync_dir(self.generations_dir)
                _rmtree(trash)
            except OSError as exc:
                raise fileio.os_error(
                    self.generations_dir / str(n), "delete the generation", exc
                ) from exc
        if removed:
            logger.info("generations pruned removed=%s", ",".join(map(str, removed)))
        return removed

    def forget_current(self, change: Callable[[State], State] | None = None) -> State:
        """For ``reset``: remove the ``current`` link, set phase UNPROVISIONED; keep generations.

        All or nothing: the new state (with ``change`` applied, e.g. a journal entry) is
        saved first, then the link removed; if either fails (a full disk, a read-only file
        system) nothing has changed and StoreError says why. A crash between the two leaves
        the link, which wins over the state (it is the source of truth): still nothing done.
        """
        self._require_lock("forget_current")
        old = self.load_state()
        new = dataclasses.replace(old, phase=Phase.UNPROVISIONED, current_generation=None,
                                  mapping_in_flight=False, next_action=None,
                                  next_action_at=None)  # fmt: skip
        if change is not None:
            new = change(new)
        self.save_state(new)
        try:
            os.unlink(self.current_link)
        except FileNotFoundError:
            pass
        except OSError as exc:
            with contextlib.suppress(StoreError):
                self.save_state(old)  # put the old state back: the link is still there
            raise fileio.os_error(self.current_link, "remove the link", exc) from exc
        with contextlib.suppress(OSError):  # durable at the next fsync if not now
            fileio.fsync_dir(self.state_dir)
        logger.info("current generation forgotten")
        return new

    def cleanup_temp(self) -> tuple[str, ...]:
        """Remove litter of the store's interrupted writes: ``generations/.tmp-*``, ``.trash-*``
        and the staging files of ``state.json``, ``state.json.prev`` and ``current`` (those of
        other files are their owners' business); their paths relative to the state dir."""
        self._require_lock("cleanup_temp")
        removed = [str(p.relative_to(self.state_dir)) for name in _OWN_FILES
                   for p in fileio.remove_temp_files(self.state_dir, of=name)]
        try:
            names = sorted(os.listdir(self.generations_dir))
        except FileNotFoundError:
            names = []
        except OSError as exc:
            raise fileio.os_error(self.generations_dir, "list", exc) from exc
        for name in names:
            path = self.generations_dir / name
            if not _GEN_TEMP_RE.match(name) and not fileio.is_temp_name(name):
                continue
            try:
                if path.is_dir() and not path.is_symlink():
                    _rmtree(path)
                else:
                    path.unlink()
            except OSError as exc:
                raise fileio.os_error(path, "remove", exc) from exc
            removed.append(str(path.relative_to(self.state_dir)))
        if removed:
            logger.info("temporary files removed count=%s", len(removed))
        return tuple(removed)

    def linked_generation(self) -> int | None:
        """The number the ``current`` link names (None: no link), whether valid or not."""
        return self._linked_number()

    def expected_modes(self) -> Iterator[tuple[Path, int]]:
        """(path, the mode it must not be looser than) for every file and directory of the
        store that exists: the state directory, state files, the lock, each generation and
        each file its manifest lists (keys 0600, certificates 0644)."""
        own = [(self.state_dir, fileio.DIR_MODE), (self.generations_dir, fileio.DIR_MODE),
               (self.state_path, fileio.SECRET_MODE), (self.prev_path, fileio.SECRET_MODE),
               (self.lock_path, fileio.SECRET_MODE)]  # fmt: skip
        for number in self.list_generations():
            path = self.generations_dir / str(number)
            own += [(path, fileio.DIR_MODE), (path / "manifest.json", fileio.SECRET_MODE)]
            with contextlib.suppress(FileNotFoundError, ValueError, StoreError):
                listed = unseal(read_file(path / "manifest.json")).get("files")
                for name, meta in (listed.items() if isinstance(listed, dict) else ()):
                    mode = meta.get("mode") if isinstance(meta, dict) else None
                    if isinstance(mode, str) and "/" not in name and not name.startswith("."):
                        own.append((path / name, int(mode, 8) & 0o777))
        for path, mode in own:
            if path.exists() and not path.is_symlink():
                yield path, mode

    def _linked_number(self) -> int | None:
        try:
            return link_number(os.readlink(self.current_link))
        except OSError:
            return None

    def _read_generation(self, number: int) -> Generation:
        """Read and verify one generation; ``ValueError`` says what is wrong."""
        path = self.generations_dir / str(number)
        try:
            manifest = unseal(read_file(path / "manifest.json"))
        except FileNotFoundError:
            raise ValueError("manifest.json missing (incomplete or deleted generation)") from None
        listed = manifest.get("files")
        if not isinstance(listed, dict) or manifest.get("generation") != number:
            raise ValueError("manifest.json does not describe this generation")
        blobs: dict[str, bytes] = {}
        for name, meta in listed.items():
            if "/" in name or name.startswith(".") or not isinstance(meta, dict):
                raise ValueError(f"manifest.json lists a bad entry {name!r}")
            try:
                blobs[name] = read_file(path / name)
            except FileNotFoundError:
                raise ValueError(f"{name} missing") from None
            if sha256_hex(blobs[name]) != str(meta.get("sha256")):
                raise ValueError(f"{name} does not match its sha256 in manifest.json")
        missing = [n for n in _REQUIRED_FILES if n not in blobs]
        if missing:
            raise ValueError(f"manifest.json lacks {', '.join(missing)}")
        keys = object_field(json_records(blobs, "credentials.json", single=True)[0], "things")
        boot = json_records(blobs, "bootstrap.json", single=True)[0]
        things = []
        for t in json_records(blobs, "things.json"):
            key = keys.get(str_field(t, "id"))
            if not isinstance(key, str):
                raise ValueError(f"credentials.json has no key for thing {t['id']!r}")
            things.append(StoredThing(str_field(t, "id"), str_field(t, "name"), key,
                                      object_field(t, "metadata")))
        channels = tuple(
            StoredChannel(str_field(c, "id"), str_field(c, "name"), object_field(c, "metadata"))
            for c in json_records(blobs, "channels.json")
        )
        gateway = str_field(boot, "gateway_thing_id")
        if gateway not in {t.id for t in things}:
            raise ValueError(f"gateway thing {gateway!r} is not among things.json")
        certs = tuple(
            sorted(t.id for t in things if f"{t.id}.crt" in blobs and f"{t.id}.key" in blobs)
        )
        return Generation(
            number,
            path,
            tuple(things),
            channels,
            gateway,
            str_field(boot, "content"),
            str_field(boot, "source"),
            str_field(boot, "external_id"),
            str_field(boot, "created"),
            certs,
            "ca.crt" in blobs,
            cert_facts=certificate_facts(manifest, blobs),
        )


# -- helpers ---------------------------------------------------------------------------------


def _rmtree(path: Path, ignore_errors: bool = False) -> None:
    """:func:`shutil.rmtree`, imported on first use: the lean daemon never removes a tree."""
    import shutil

    shutil.rmtree(path, ignore_errors=ignore_errors)


def _write_new(path: Path, content: bytes, mode: int) -> None:
    """Create ``path`` exclusively with ``mode``, write and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
