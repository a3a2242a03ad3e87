"""What every command module shares: the click context object and JSON output.

The click-free parts (:class:`CliContext`, the error document) live in
:mod:`edge_provision.cli._context`, so that ``run`` can start without click.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Callable

import click

from edge_provision.cli._context import CliContext, error_doc, warn

__all__ = ["CliContext", "emit_json", "error_doc", "json_option", "warn"]


def emit_json(doc: Mapping[str, object]) -> None:
    """Print one JSON document (sorted keys, indented) on stdout."""
    click.echo(json.dumps(doc, indent=2, sort_keys=True, default=str))


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--json`` flag, the same on every command."""
    return click.option("--json", "as_json", is_flag=True, help="print one JSON document")(f)
