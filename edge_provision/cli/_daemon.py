"""``edge-provision run`` without click: the daemon's own lean start.

The supervisor is a long-lived process on a gateway with little memory: it should hold no
more than it needs (docs/daemon.md, "Memory"). :func:`lean_daemon_args` recognises the
command lines of ``run`` -- ``[--config C] [--state-dir D] [--log-level L] run`` and
nothing else -- so that :func:`edge_provision.cli.main` starts the daemon before click and
the command modules are imported; any other command line (``run --help``, a typo, an
unknown option) goes through click as before, which reports it properly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edge_provision.cli._context import CliContext
from edge_provision.settings import AgentSettings

__all__ = ["lean_daemon_args", "start_daemon"]

_GLOBALS = {"--config": "config", "--state-dir": "state_dir", "--log-level": "log_level"}
_LOG_LEVELS = ("debug", "info", "warning", "error")


def lean_daemon_args(argv: Sequence[str]) -> CliContext | None:
    """The context of ``[global options] run`` (None: any other command line)."""
    values: dict[str, str] = {}
    args = list(argv)
    while args and args[0] != "run":
        option, equals, value = args.pop(0).partition("=")
        name = _GLOBALS.get(option)
        if name is None or name in values:
            return None
        if not equals:
            if not args:
                return None
            value = args.pop(0)
        if not value or value.startswith("-"):
            return None
        values[name] = value
    if args != ["run"] or values.get("log_level", "info") not in _LOG_LEVELS:
        return None
    config = Path(values["config"]) if "config" in values else None
    state_dir = Path(values["state_dir"]) if "state_dir" in values else None
    return CliContext(config=config, flags={"state_dir": state_dir,
                                            "log_level": values.get("log_level")})


def start_daemon(ctx: CliContext) -> None:
    """Load the settings (the daemon logs at ``agent.log_level``) and run the supervisor."""
    from edge_provision.agent.daemon.supervisor import Daemon, command_prefix

    def load() -> AgentSettings:
        return ctx.agent_settings(interactive=False)

    settings = load()
    state_dir = ctx.flags.get("state_dir")
    log_level = ctx.flags.get("log_level")
    prefix = command_prefix(
        config=ctx.config,
        state_dir=state_dir if isinstance(state_dir, Path) else None,
        log_level=log_level if isinstance(log_level, str) else None,
    )
    Daemon(settings, reload_settings=load, argv_prefix=prefix).run()
