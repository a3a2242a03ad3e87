"""Command-line interface: parse, call one use case, render. Nothing imports this package.

:func:`main` is the entry point (``edge-provision``, ``python -m edge_provision``). A plain
``edge-provision [--config C] [--state-dir D] [--log-level L] run`` starts the daemon
without importing click or any command module (:mod:`edge_provision.cli._daemon`: the
long-lived supervisor stays small); every other command line goes to the click
application (:mod:`edge_provision.cli._app`, also available as ``edge_provision.cli.cli``).
Errors are mapped to exit codes here and in :func:`edge_provision.cli._app.run_app` (see
``errors.py`` for the table).
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from edge_provision.cli._context import error_lines
from edge_provision.cli._daemon import lean_daemon_args, start_daemon
from edge_provision.errors import EdgeProvisionError
from edge_provision.logs import setup_logging

if TYPE_CHECKING:
    import click

__all__ = ["cli", "main"]

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and map every outcome to an exit code."""
    args = sys.argv[1:] if argv is None else argv
    ctx = lean_daemon_args(args)
    if ctx is None:
        from edge_provision.cli._app import run_app

        run_app(argv)
        return
    setup_logging("warning")
    try:
        start_daemon(ctx)
    except EdgeProvisionError as exc:
        for line in error_lines(exc):
            print(line, file=sys.stderr)
        logger.debug("run failed", exc_info=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(0)


def __getattr__(name: str) -> click.Group:
    """``cli``: the click group, loaded on first use."""
    if name != "cli":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from edge_provision.cli._app import cli

    return cli
