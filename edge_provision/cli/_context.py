"""The command-line context every command shares, without click.

:class:`CliContext` (what the global options leave for the commands, and the agent
settings they make), the ``--json`` shape of a failure and the text lines of one. No
click here: ``edge-provision run`` starts the daemon through this module without loading
click at all (:mod:`edge_provision.cli._daemon`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from edge_provision.errors import ConfigError, EdgeProvisionError
from edge_provision.logs import register_secret, setup_logging
from edge_provision.settings import AgentSettings, fields_of, load_agent_settings

__all__ = ["CliContext", "error_doc", "error_lines", "warn"]


def warn(text: str) -> None:
    """A line for the person at the terminal beside the command's output (stderr)."""
    print(text, file=sys.stderr, flush=True)


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
            warn(f"warning: {spec.flag} on the command line is visible to every user of "
                 f"this machine (ps, /proc); put it in a file named by {where}, or in "
                 f"{spec.env[0]}")


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
            "retry_class": exc.retry_class.value,
            "exit_code": exc.exit_code,
            "reason": exc.reason.value,
            "step": exc.step,
        },
    }


def error_lines(exc: EdgeProvisionError) -> list[str]:
    """The text form of a failure: one ``error: ...`` line per problem."""
    problems = exc.problems if isinstance(exc, ConfigError) else (str(exc),)
    return [f"error: {problem}" for problem in problems]
