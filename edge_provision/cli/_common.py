"""What every command module shares: the click context object and JSON output."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import click

from edge_provision.errors import ConfigError, EdgeProvisionError
from edge_provision.logs import register_secret, setup_logging
from edge_provision.settings import AgentSettings, fields_of, load_agent_settings

__all__ = ["CliContext", "emit_json", "error_doc", "json_option", "say"]


@dataclass
class CliContext:
    """What the group options leave for the commands."""

    config: Optional[Path] = None
    flags: dict[str, object] = field(default_factory=dict)

    def agent_settings(self, *, interactive: bool = True, **extra: object) -> AgentSettings:
        """Agent settings with this invocation's flags (``None`` values mean "not given").

        Interactive commands print their own progress, so unless a log level was set
        explicitly their log shows warnings and errors only; the daemon logs at info.
        """
        flags = dict(self.flags)
        flags.update({k: v for k, v in extra.items() if v is not None})
        settings = load_agent_settings(flags, config_path=self.config)
        register_secret(settings.token)
        register_secret(settings.external_key)
        register_secret(settings.encrypt_key)
        _warn_secret_flags(settings)
        level = settings.log_level
        if interactive and settings.source_of("log_level") == "default":
            level = "warning"
        setup_logging(level)
        return settings


def _warn_secret_flags(settings: AgentSettings) -> None:
    """A secret given as a flag (``--token``) works, but every local user sees it in ``ps``."""
    for spec in fields_of(AgentSettings):
        if spec.secret and spec.flag and settings.source_of(spec.name).startswith("flag "):
            where = f"{spec.env[0]}_FILE" + (f" or {spec.keys[0]}_file in the config file"
                                             if spec.keys else "")
            click.echo(f"warning: {spec.flag} on the command line is visible to every user of "
                       f"this machine (ps, /proc); put it in a file named by {where}, or in "
                       f"{spec.env[0]}", err=True)


def emit_json(doc: Mapping[str, object]) -> None:
    """Print one JSON document (sorted keys, indented) on stdout."""
    click.echo(json.dumps(doc, indent=2, sort_keys=True, default=str))


def error_doc(exc: EdgeProvisionError) -> dict[str, object]:
    """The ``--json`` shape of a failure."""
    problems = [str(p) for p in exc.problems] if isinstance(exc, ConfigError) else [str(exc)]
    return {
        "ok": False,
        "error": {
            "kind": exc.kind,
            "message": str(exc),
            "problems": problems,
            "retryable": exc.retryable,
            "exit_code": exc.exit_code,
            "reason": exc.reason.value,
            "step": exc.step,
        },
    }


def say(text: str) -> None:
    """A line for the person at the terminal beside the command's output (stderr)."""
    click.echo(text, err=True)


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--json`` flag, the same on every command."""
    return click.option("--json", "as_json", is_flag=True, help="print one JSON document")(f)
