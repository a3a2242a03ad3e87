"""The progress shown while a fleet runs: a bar on a terminal, a line per 10 % elsewhere."""

from __future__ import annotations

import pytest

from edge_provision.cli.simulate import ProgressPrinter
from edge_provision.fleet.runner import Progress


def _p(done: int, total: int = 50, elapsed: float = 1.0) -> Progress:
    return Progress(total, done, done, 0, 2, 3, elapsed)


def test_one_line_per_tenth_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    """Ten lines for a whole run, whatever the number of snapshots; none on stdout."""
    printer = ProgressPrinter(tty=False)
    for done in (0, 3, 5, 6, 17, 17, 33, 49, 50, 50):
        printer(_p(done))
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == ""
    assert [line.split("%")[0].strip() for line in lines] == [
        "10", "20", "30", "40", "50", "60", "70", "80", "90", "100"]
    assert lines[-1].startswith("100% 50/50") and "retries 2" in lines[-1]


def test_bar_redrawn_in_place_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    """Carriage returns, no newline until the run is complete."""
    printer = ProgressPrinter(tty=True)
    printer(_p(25))
    printer(_p(50))
    err = capsys.readouterr().err
    assert err.count("\r") == 2 and err.endswith("\n") and err.count("\n") == 1
    assert "[" + "#" * 15 + "-" * 15 + "]" in err
