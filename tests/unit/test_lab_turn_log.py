"""TurnLog: what one turn of the event loop reports is logged as one line."""

from __future__ import annotations

import asyncio
import logging

import pytest

from edge_provision.lab._turn_log import TurnLog

LOGGER = logging.getLogger("test.turn_log")


def _log(interval_s: float = 0.0) -> TurnLog[str]:
    return TurnLog(LOGGER, lambda items: ("seen count=%d items=%s", (len(items), ",".join(items))),
                   interval_s=interval_s)  # fmt: skip


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER.name]


def test_one_line_per_turn(caplog: pytest.LogCaptureFixture) -> None:
    """Items added in one turn share a line; the next turn's items get the next line."""
    caplog.set_level(logging.INFO, logger=LOGGER.name)
    log = _log()

    async def run() -> None:
        for item in ("a", "b", "c"):
            log.add(item)
        assert _lines(caplog) == []  # not before the turn is over
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        log.add("d")
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(run())
    assert _lines(caplog) == ["seen count=3 items=a,b,c", "seen count=1 items=d"]


def test_one_line_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    """With an interval, items of several turns within it share a line, logged at its end."""
    caplog.set_level(logging.INFO, logger=LOGGER.name)
    log = _log(interval_s=0.2)

    async def run() -> None:
        log.add("a")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        log.add("b")
        assert _lines(caplog) == []
        for _ in range(100):  # bounded: 5 s
            if _lines(caplog):
                break
            await asyncio.sleep(0.05)
        log.add("c")
        log.flush()

    asyncio.run(run())
    assert _lines(caplog) == ["seen count=2 items=a,b", "seen count=1 items=c"]


def test_outside_a_loop_each_item_is_logged_at_once(caplog: pytest.LogCaptureFixture) -> None:
    """Without a running event loop there is no turn to wait for."""
    caplog.set_level(logging.INFO, logger=LOGGER.name)
    log = _log()
    log.add("x")
    assert _lines(caplog) == ["seen count=1 items=x"]
    log.add("y")
    assert _lines(caplog) == ["seen count=1 items=x", "seen count=1 items=y"]


def test_items_of_a_loop_that_ended_are_not_lost(caplog: pytest.LogCaptureFixture) -> None:
    """A loop closed before its turn ended: the next report (here outside a loop) logs them."""
    caplog.set_level(logging.INFO, logger=LOGGER.name)
    log = _log()
    loop = asyncio.new_event_loop()

    def report_and_stop() -> None:
        log.add("early")
        loop.stop()

    loop.call_soon(report_and_stop)
    loop.run_forever()  # stops at the end of this turn: the flush it scheduled never runs
    loop.close()
    assert _lines(caplog) == []
    log.add("late")
    assert _lines(caplog) == ["seen count=1 items=early", "seen count=1 items=late"]
    log.flush()
    assert len(_lines(caplog)) == 2
