"""The simulator's engine: ``concurrency`` worker threads serving a schedule of attempts.

Every gateway enters the schedule at its arrival time. A free worker takes the next
gateway whose time has come and runs one attempt (:class:`~edge_provision.fleet.journey.Journey`)
with its own clients. A transient failure puts the gateway back in the schedule after
the daemon's backoff (scaled, :class:`~edge_provision.fleet.retry.RetryPolicy`); a
gateway waiting out its backoff holds no worker, as a real gateway holds no connection
to the server while it sleeps. ``concurrency`` is therefore the number of gateways
talking to the server at the same moment.

Only one waiting worker sleeps until the next arrival (the others wait to be woken),
so a slow ramp costs no busy wake-ups.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from edge_provision.errors import EdgeProvisionError
from edge_provision.fleet.clients import ClientPool
from edge_provision.fleet.gateways import SimGateway
from edge_provision.fleet.journey import (
    AttemptError,
    EnrollmentPlan,
    GatewayResult,
    Journey,
    Step,
    StepSample,
)
from edge_provision.fleet.retry import RetryPolicy

__all__ = ["FleetRun", "Progress", "run_fleet"]

logger = logging.getLogger(__name__)

_JOIN_S = 5.0


@dataclass(frozen=True)
class Progress:
    """A snapshot while the fleet runs."""

    total: int
    done: int
    enrolled: int
    failed: int
    retries: int
    in_flight: int
    elapsed_s: float


@dataclass(frozen=True)
class FleetRun:
    """Everything measured in one run (times in seconds from the run start)."""

    results: tuple[GatewayResult, ...]
    samples: tuple[StepSample, ...]
    errors: tuple[AttemptError, ...]
    started_at: datetime
    elapsed_s: float
    cpu_s: float
    concurrency: int


class _Schedule:
    """Gateways ordered by the time they may next try; see the module docstring."""

    def __init__(self, journeys: Sequence[Journey], start: float) -> None:
        self._seq = itertools.count()
        self._heap = [(start + j.arrival_s, next(self._seq), j) for j in journeys]
        heapq.heapify(self._heap)
        self._cond = threading.Condition()
        self._pending = len(journeys)
        self._leader = False
        self._stopped = False
        self.finished = threading.Event()
        if not journeys:
            self.finished.set()

    def take(self) -> Journey | None:
        """The next gateway due (waiting for it), or None when the run is over."""
        with self._cond:
            while True:
                if self._stopped or self._pending == 0:
                    return None
                now = time.monotonic()
                if self._heap and self._heap[0][0] <= now:
                    journey = heapq.heappop(self._heap)[2]
                    self._cond.notify()  # someone else watches the next one
                    return journey
                if self._heap and not self._leader:
                    self._leader = True
                    try:
                        self._cond.wait(self._heap[0][0] - now)
                    finally:
                        self._leader = False
                else:
                    self._cond.wait()

    def again(self, journey: Journey, at: float) -> None:
        """Put a gateway back, due at monotonic time ``at``."""
        with self._cond:
            heapq.heappush(self._heap, (at, next(self._seq), journey))
            self._cond.notify_all()  # it may be due before the one the leader waits for

    def done(self) -> None:
        """One gateway has its final result."""
        with self._cond:
            self._pending -= 1
            if self._pending == 0:
                self.finished.set()
                self._cond.notify_all()

    def stop(self) -> None:
        """End the run now: workers finish their attempt and leave."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()


class _Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.done = self.enrolled = self.failed = self.retries = self.in_flight = 0

    def add(self, **changes: int) -> None:
        with self._lock:
            for name, delta in changes.items():
                setattr(self, name, getattr(self, name) + delta)

    def snapshot(self, total: int, elapsed_s: float) -> Progress:
        with self._lock:
            return Progress(total, self.done, self.enrolled, self.failed, self.retries,
                            self.in_flight, elapsed_s)  # fmt: skip


def run_fleet(
    gateways: Sequence[SimGateway],
    arrivals: Sequence[float],
    pool: ClientPool,
    plan: EnrollmentPlan,
    retry: RetryPolicy,
    *,
    concurrency: int,
    seed: int,
    progress: Callable[[Progress], None] | None = None,
    progress_interval_s: float = 0.25,
) -> FleetRun:
    """Enroll every gateway (see the module docstring); returns when all have a result.

    Ctrl-C (``KeyboardInterrupt`` in the calling thread) stops the workers after their
    current attempt and is raised again.
    """
    if len(arrivals) != len(gateways):
        raise ValueError("one arrival time per gateway")
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    journeys = [Journey(g, a) for g, a in zip(gateways, arrivals)]
    results: dict[int, GatewayResult] = {}
    counters = _Counters()
    started_at = datetime.now(timezone.utc)
    cpu0 = time.process_time()
    t0 = time.monotonic()
    schedule = _Schedule(journeys, t0)

    def clock() -> float:
        return time.monotonic() - t0

    def finish(result: GatewayResult) -> None:
        results[result.index] = result
        counters.add(done=1, enrolled=int(result.ok), failed=int(not result.ok))
        schedule.done()

    def work() -> None:
        try:
            clients = pool.get()
        except Exception:  # cannot happen after the check below; never hang the run
            logger.exception("fleet worker could not build its clients")
            return
        while (journey := schedule.take()) is not None:
            counters.add(in_flight=1)
            try:
                result = journey.attempt(clients, plan, clock)
            except EdgeProvisionError as exc:
                if retry.should_retry(exc, journey.attempts):
                    rng = random.Random(seed * 65_537 + journey.gateway.index * 7_919
                                        + journey.attempts)  # fmt: skip
                    wait = retry.delay_s(journey.failures, rng,
                                         getattr(exc, "retry_after_s", None))  # fmt: skip
                    counters.add(retries=1)
                    schedule.again(journey, time.monotonic() + wait)
                else:
                    finish(journey.failed())
            except Exception as exc:  # a bug must not hang the run: this gateway fails
                logger.exception("simulated gateway crashed index=%s", journey.gateway.index)
                journey.errors.append(AttemptError(type(exc).__name__, Step.ENROLLMENT,
                                                   clock(), False, repr(exc)))  # fmt: skip
                finish(journey.failed())
            else:
                finish(result)
            finally:
                counters.add(in_flight=-1)

    pool.get()  # bad TLS files etc. fail here, in the caller's thread, before any work
    threads = [threading.Thread(target=work, name=f"fleet-worker-{i}", daemon=True)
               for i in range(concurrency)]  # fmt: skip
    for thread in threads:
        thread.start()
    try:
        while not schedule.finished.wait(progress_interval_s):
            if progress is not None:
                progress(counters.snapshot(len(gateways), clock()))
            if not any(thread.is_alive() for thread in threads):
                break  # every worker gone: what has no result yet failed
    except KeyboardInterrupt:
        schedule.stop()
        for thread in threads:
            thread.join(_JOIN_S)
        raise
    for thread in threads:
        thread.join(_JOIN_S)
    if progress is not None:
        progress(counters.snapshot(len(gateways), clock()))
    ended = [r.ended_s for r in results.values() if r.ended_s is not None]
    samples = [s for j in journeys for s in j.samples]
    errors = [e for j in journeys for e in j.errors]
    return FleetRun(
        results=tuple(results.get(j.gateway.index) or j.failed() for j in journeys),
        samples=tuple(sorted(samples, key=lambda s: s.ended_s)),
        errors=tuple(sorted(errors, key=lambda e: e.at_s)),
        started_at=started_at,
        elapsed_s=max(ended, default=clock()),
        cpu_s=time.process_time() - cpu0,
        concurrency=concurrency,
    )
