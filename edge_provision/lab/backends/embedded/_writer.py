"""The embedded backend's writer thread: queued write jobs run in group-committed batches.

It also keeps the row counts of the tables (``/metrics``): counted once at open,
then moved by what each committed job says it added or removed, so reading
them is a dict copy, never a query.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from edge_provision.errors import StoreError
from edge_provision.lab.backends.embedded import _sql

__all__ = ["MAX_BATCH", "GroupCommitWriter", "WriterStats"]

logger = logging.getLogger("edge_provision.lab.backends.embedded")  # its historic name

T = TypeVar("T")
MAX_BATCH = 1000


@dataclass(frozen=True)
class WriterStats:
    """Group-commit counters: ``requests`` write jobs ran in ``batches`` transactions."""

    requests: int
    batches: int
    commits: int
    failed_batches: int
    max_batch: int


RowDelta = Callable[[Any], Mapping[str, int]]
"""A job's result -> rows it added (positive) or removed (negative), by table."""


@dataclass
class _Job:
    run: Callable[[sqlite3.Connection], object]
    future: Future[Any] | asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop | None = None  # set for asyncio futures
    prepared: _sql.Prepared | None = None  # a new mapping: may be bulk-inserted
    rows: RowDelta | None = None


def _mapping_rows(prepared: _sql.Prepared) -> RowDelta:
    """Rows a mapping job wrote: the prepared ones if it created the mapping, else none."""
    return lambda record: prepared.row_counts() if record.created else {}


def _delta(outcomes: list[tuple[_Job, object, BaseException | None]]) -> dict[str, int]:
    """Rows added or removed by the jobs of a batch that succeeded."""
    delta: dict[str, int] = {}
    for job, result, err in outcomes:
        if err is None and job.rows is not None:
            for table, change in job.rows(result).items():
                delta[table] = delta.get(table, 0) + change
    return delta


def _settle(jobs: list[tuple[asyncio.Future[Any], object, BaseException | None]]) -> None:
    """Resolve the asyncio futures of one batch (runs on their event loop)."""
    for future, result, err in jobs:
        if future.cancelled():
            continue
        if err is None:
            future.set_result(result)
        else:
            future.set_exception(err)


class GroupCommitWriter:
    """One thread owning the write connection; each batch of queued jobs is one transaction.

    Every job runs inside its own SAVEPOINT, so one failing job never fails the
    others; a job's caller is answered only after the COMMIT holding its rows.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, write_timeout_s: float) -> None:
        self._rows = _sql.count_rows(conn)
        self._conn = conn
        self._path = path
        self._write_timeout_s = write_timeout_s
        self._lock = threading.Lock()
        self._closed = False
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._stats = WriterStats(0, 0, 0, 0, 0)
        self._thread = threading.Thread(
            target=self._write_loop, name=f"embedded-writer:{path.name}", daemon=True
        )
        self._thread.start()

    @property
    def stats(self) -> WriterStats:
        """A snapshot of the group-commit counters."""
        with self._lock:
            return self._stats

    def row_counts(self) -> dict[str, int]:
        """Rows per table as of the last COMMIT (no query)."""
        with self._lock:
            return dict(self._rows)

    def submit(self, run: Callable[[sqlite3.Connection], T], action: str,
               rows: Callable[[T], Mapping[str, int]] | None = None) -> T:  # fmt: skip
        """Run ``run`` in the next batch; block until it is committed (or failed).

        ``rows(result)`` says which rows the job added or removed (for the counts).
        """
        future: Future[T] = Future()
        self._put(_Job(run, future, rows=rows))
        try:
            return future.result(timeout=self._write_timeout_s)
        except FutureTimeout:
            raise StoreError(
                f"{self._path}: {action} got no answer within {self._write_timeout_s:g}s; "
                "the database may be locked by another process; the outcome is unknown, "
                "retry (provisioning is idempotent)"
            ) from None

    async def submit_async(self, run: Callable[[sqlite3.Connection], T],
                           prepared: _sql.Prepared | None = None,
                           rows: Callable[[T], Mapping[str, int]] | None = None) -> T:  # fmt: skip
        """:meth:`submit` from a running event loop: no thread waits for the commit.

        The job is queued at once; the writer resolves the returned future on the
        caller's loop, one wake-up per batch, after the COMMIT holding its rows.
        ``prepared``: the rows of a new mapping (the batch may insert them together
        with others'); they are counted if the job's result says it created them.
        ``rows``: as for :meth:`submit`, for any other job.
        There is no write timeout here (a timer per request costs the event loop
        about a tenth of a mapping's CPU): a write lock held elsewhere ends the
        batch after the connection's busy timeout with a StoreError.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if prepared is not None:
            rows = _mapping_rows(prepared)
        self._put(_Job(run, future, loop, prepared, rows))
        return await future

    def _put(self, job: _Job) -> None:
        """Queue ``job``; StoreError once the writer is closed."""
        with self._lock:
            if self._closed:
                raise StoreError(f"{self._path}: the lab backend is closed")
            self._queue.put(job)

    def stop(self) -> None:
        """Refuse new jobs; the thread ends once the jobs already queued are done."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)

    def join(self) -> None:
        """Wait, at most the write timeout, for the thread to end."""
        self._thread.join(timeout=self._write_timeout_s)

    def close_connection(self) -> None:
        """Close the write connection, unless the thread is stuck and still using it."""
        if not self._thread.is_alive():
            with suppress(sqlite3.Error):
                self._conn.close()

    def _write_loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            batch: list[_Job] = []
            if first is None:
                stop = True
            else:
                batch.append(first)
            while len(batch) < MAX_BATCH:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                else:
                    batch.append(job)
            if batch:
                self._run_batch(batch)

    def _run_batch(self, batch: list[_Job]) -> None:
        conn = self._conn
        outcomes: list[tuple[_Job, object, BaseException | None]] = []
        committed = False
        try:
            conn.execute("BEGIN IMMEDIATE")
            rest = batch
            if any(job.prepared is not None for job in batch):
                try:
                    bulk_done, rest = self._bulk_mappings(conn, batch)
                except sqlite3.Error as exc:  # run every job on its own below
                    logger.warning("embedded bulk insert failed path=%s size=%s error=%s",
                                   self._path, len(batch), exc)
                    conn.execute("ROLLBACK")
                    conn.execute("BEGIN IMMEDIATE")
                    bulk_done, rest = [], batch
                outcomes += bulk_done
            for job in rest:
                conn.execute("SAVEPOINT job")
                try:
                    result = job.run(conn)
                except sqlite3.Error as exc:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    translated = _sql.store_error(self._path, exc, "writing")
                    translated.__cause__ = exc
                    outcomes.append((job, None, translated))
                except Exception as exc:  # one request's failure must not fail the batch
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((job, None, exc))
                else:
                    conn.execute("RELEASE job")
                    outcomes.append((job, result, None))
            conn.execute("COMMIT")
            committed = True
            delta = _delta(outcomes)
        except Exception as exc:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            logger.error("embedded batch failed path=%s size=%s error=%s",
                         self._path, len(batch), exc)
            failure = (
                _sql.store_error(self._path, exc, "committing")
                if isinstance(exc, sqlite3.Error)
                else StoreError(f"{self._path}: write failed: {exc}")
            )
            failure.__cause__ = exc
            done = {id(job) for job, _, err in outcomes if err is not None}
            outcomes = [o for o in outcomes if id(o[0]) in done]
            outcomes += [(job, None, failure) for job in batch if id(job) not in done]
        with self._lock:
            if committed:
                for table, change in delta.items():
                    self._rows[table] = self._rows.get(table, 0) + change
            s = self._stats
            self._stats = WriterStats(
                requests=s.requests + len(batch),
                batches=s.batches + 1,
                commits=s.commits + int(committed),
                failed_batches=s.failed_batches + int(not committed),
                max_batch=max(s.max_batch, len(batch)),
            )
        # one wake-up per event loop and batch instead of one per request
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for job, result, err in outcomes:
            if job.loop is not None:
                by_loop.setdefault(job.loop, []).append((job.future, result, err))
            elif err is None:
                job.future.set_result(result)
            else:
                job.future.set_exception(err)
        for loop, settled in by_loop.items():
            with suppress(RuntimeError):  # the loop closed meanwhile: nobody is waiting
                loop.call_soon_threadsafe(_settle, settled)

    @staticmethod
    def _bulk_mappings(
        conn: sqlite3.Connection, batch: list[_Job]
    ) -> tuple[list[tuple[_Job, object, BaseException | None]], list[_Job]]:
        """Insert the batch's new mappings together; (their outcomes, the jobs left to run).

        Left: other writes, repeats of stored external_ids and the second and later
        requests for one external_id in this batch (they then find the first one).
        """
        candidates = [job.prepared.external_id for job in batch if job.prepared is not None]
        existing = _sql.existing_mappings(conn, candidates)
        new: list[tuple[_Job, _sql.Prepared]] = []
        rest: list[_Job] = []
        for job in batch:
            p = job.prepared
            if p is None or p.external_id in existing:
                rest.append(job)
            else:
                existing.add(p.external_id)
                new.append((job, p))
        _sql.insert_mappings(conn, [p for _, p in new])
        return [(job, p.record, None) for job, p in new], rest
