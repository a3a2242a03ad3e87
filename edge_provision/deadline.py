"""Deadlines: a moment on the monotonic clock by which something must be over.

An HTTP request must be over by its own deadline (``server.request_deadline_s``: connect,
headers and body together) and by the deadline of the run it belongs to
(``agent.run_deadline``: a whole ``enroll`` or ``renew``, so that the state lock is never
held past it). :func:`limit` sets the run's deadline for everything called inside it (a
context variable: each thread sees its own, nested limits keep the sooner one);
:func:`current` is what the HTTP client and the step runner consult, and
:meth:`Deadline.sooner` picks the one that ends first. A deadline that has passed becomes
a transient :class:`~edge_provision.errors.ServiceUnavailable` with
``reason=Reason.DEADLINE`` that names the setting (:meth:`Deadline.error`).

Everything that honours a deadline stops on its own. ``limit(..., on_overrun=...)`` adds
a backstop for what cannot be interrupted from Python (a DNS lookup, a hung file system):
the callback runs ``grace_s`` after the deadline if the block is still running;
:func:`exit_process` is the one the commands use (the process ends with exit code 75, so
the kernel releases the lock; every write is atomic, so nothing is lost).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, Optional

from edge_provision.errors import EXIT_TEMPFAIL, Reason, ServiceUnavailable

__all__ = ["Deadline", "current", "exit_process", "grace_for", "limit"]

logger = logging.getLogger(__name__)

_CURRENT: ContextVar[Optional[Deadline]] = ContextVar("edge_provision_deadline", default=None)


@dataclass(frozen=True)
class Deadline:
    """Be done by ``at`` (``time.monotonic()``): ``budget_s`` for ``what``, set by ``setting``."""

    at: float
    budget_s: float
    what: str  # "request", "enroll run", ...
    setting: str  # the setting that gives the budget, named in the error

    @classmethod
    def after(cls, seconds: float, what: str, setting: str) -> Deadline:
        """The deadline ``seconds`` from now."""
        return cls(time.monotonic() + max(0.0, seconds), max(0.0, seconds), what, setting)

    def remaining(self) -> float:
        """Seconds left (0 once passed)."""
        return max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return time.monotonic() >= self.at

    def sooner(self, other: Deadline | None) -> Deadline:
        """This deadline or ``other``, whichever ends first."""
        return other if other is not None and other.at < self.at else self

    def error(self, doing: str) -> ServiceUnavailable:
        """The transient error for ``doing`` not being over in time."""
        return ServiceUnavailable(
            f"{doing}: not done within the {self.budget_s:g} s {self.what} deadline "
            f"({self.setting})",
            reason=Reason.DEADLINE,
            hint=f"try again later (the daemon does); if the platform is slow by nature, "
                 f"raise {self.setting}",
        )


def current() -> Deadline | None:
    """The deadline of the run this code is part of (None outside :func:`limit`)."""
    return _CURRENT.get()


def grace_for(budget_s: float) -> float:
    """How long after a missed deadline the backstop waits: a tenth, from 1 s up to 10 s."""
    return min(10.0, max(1.0, budget_s / 10.0))


@contextlib.contextmanager
def limit(seconds: float, what: str, setting: str, *,
          on_overrun: Callable[[Deadline], None] | None = None) -> Iterator[Deadline]:  # fmt: skip
    """Run the block under a deadline ``seconds`` from now (or the enclosing one, if sooner).

    ``on_overrun`` (the backstop) is called from another thread with the deadline if the
    block is still running :func:`grace_for` seconds after it passed.
    """
    deadline = Deadline.after(seconds, what, setting).sooner(current())
    token = _CURRENT.set(deadline)
    timer: threading.Timer | None = None
    if on_overrun is not None:
        timer = threading.Timer(deadline.remaining() + grace_for(deadline.budget_s),
                                on_overrun, args=(deadline,))  # fmt: skip
        timer.daemon = True
        timer.name = "edge-provision-deadline"
        timer.start()
    try:
        yield deadline
    finally:
        if timer is not None:
            timer.cancel()
        _CURRENT.reset(token)


def exit_process(deadline: Deadline) -> None:
    """The backstop of the commands: say why on stderr and end the process with exit 75."""
    text = (f"error: the {deadline.what} did not stop at its {deadline.budget_s:g} s deadline "
            f"({deadline.setting}) and was ended; run it again to resume")
    logger.error("run ended by its deadline what=%s deadline_s=%s setting=%s", deadline.what,
                 deadline.budget_s, deadline.setting)  # fmt: skip
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    os._exit(EXIT_TEMPFAIL)
