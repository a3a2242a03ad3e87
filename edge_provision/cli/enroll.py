"""``edge-provision enroll``: provision this gateway, one progress line per step.

The text printer and ``--json`` are fed by the same step events (the ``steps`` of the
result). Only click and the standard library at module level.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from edge_provision.cli._common import CliContext, emit_json, json_option, warn

if TYPE_CHECKING:
    from edge_provision.agent.enroll import EnrollResult, StepEvent

__all__ = ["ProgressPrinter", "enroll", "register"]

_MARKS = {"done": "ok  ", "skipped": "skip", "failed": "FAIL"}


class ProgressPrinter:
    """One line per finished step: mark, step, message and the URL it used."""

    def __init__(self) -> None:
        self._urls: dict[str, str] = {}
        self._last_skip = ""

    def line(self, event: StepEvent) -> str | None:
        """The line for ``event`` (None: nothing to print for it)."""
        step, status = event.step.value, event.status.value
        if status == "started":
            if event.url:
                self._urls[step] = event.url
            return None
        if status == "skipped" and event.message == self._last_skip:
            return None  # "already provisioned" once, not once per step
        self._last_skip = event.message if status == "skipped" else ""
        url = event.url or self._urls.get(step)
        where = f"  [{url}]" if url and url not in event.message else ""
        return f"{_MARKS.get(status, status)} {step:<13}{event.message}{where}"

    def __call__(self, event: StepEvent) -> None:
        text = self.line(event)
        if text is not None:
            click.echo(text)


@click.command()
@click.option("--provision-url", default=None,
              help="Provision service base URL [env EDGE_PROVISION_PROVISION_URL]")
@click.option("--bootstrap-url", default=None,
              help="Bootstrap service base URL [env EDGE_PROVISION_BOOTSTRAP_URL; "
                   "default: the provision URL]")
@click.option("--certs-url", default=None,
              help="certificate service base URL [env EDGE_PROVISION_CERTS_URL; "
                   "default: the provision URL]")
@click.option("--token", default=None,
              help="user token or API key for /mapping [env EDGE_PROVISION_TOKEN]")
@click.option("--external-id", default=None,
              help="override the MAC-derived external_id [env EDGE_PROVISION_EXTERNAL_ID]")
@click.option("--external-key", default=None,
              help="bootstrap secret [env EDGE_PROVISION_EXTERNAL_KEY; default: generated once]")
@click.option("--interface", default=None,
              help="interface whose MAC is the external_id [env EDGE_PROVISION_INTERFACE]")
@click.option("--name", default=None,
              help="thing name sent with /mapping [env EDGE_PROVISION_NAME]")
@click.option("--insecure", is_flag=True, default=None,
              help="do NOT verify TLS certificates (lab only) [env EDGE_PROVISION_INSECURE]")
@click.option("--ca-bundle", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="CA certificates for the servers' TLS [env EDGE_PROVISION_CA_BUNDLE]")
@click.option("--force", is_flag=True,
              help="re-fetch the bootstrap config and re-issue certificates into a new generation")
@json_option
@click.pass_obj
def enroll(obj: CliContext, provision_url: str | None, bootstrap_url: str | None,
           certs_url: str | None, token: str | None, external_id: str | None,
           external_key: str | None, interface: str | None, name: str | None,
           insecure: bool | None, ca_bundle: Path | None, force: bool, as_json: bool) -> None:
    """Provision this gateway on the platform (resumable; a no-op once provisioned).

    Looks up the bootstrap config for this gateway's external_id, calls POST /mapping
    only if there is none, gets certificates (a CSR whose key stays here when the server
    offers it), stores a new credential generation, makes it current and hands it to
    the configured services and hooks. Run it again after any failure: it resumes and
    never creates a second set of things.

    \b
    Examples:
      edge-provision enroll --provision-url http://192.0.2.10:8190 --token "$TOKEN"
      edge-provision enroll --json            # settings from config file / environment
      edge-provision enroll --force           # new certificates, same things
    """
    from edge_provision.agent import wiring

    settings = obj.agent_settings(
        provision_url=provision_url, bootstrap_url=bootstrap_url, certs_url=certs_url,
        token=token, external_id=external_id, external_key=external_key,
        interface=interface, name=name, insecure=insecure, ca_bundle=ca_bundle,
    )  # fmt: skip
    result = wiring.run_enroll(settings, force=force, hard_stop=True, notice=warn,
                               progress=None if as_json else ProgressPrinter())  # fmt: skip
    if as_json:
        emit_json(result.to_dict())
    else:
        _print_summary(result)


def _print_summary(result: EnrollResult) -> None:
    if not result.changed:
        click.echo(f"already provisioned: external_id {result.external_id}, generation "
                   f"{result.generation} (use --force to re-fetch and re-issue certificates)")
    else:
        how = "new mapping" if result.created_mapping else "existing bootstrap config"
        click.echo(f"enrolled: external_id {result.external_id}, generation "
                   f"{result.generation} ({how}), thing {result.thing_id}")
    for channel in result.credentials.channels:
        click.echo(f"  channel {channel.type or '-':<8} {channel.id}  {channel.name}")
    for cert in result.credentials.certificates:
        if cert.error is not None:
            click.echo(f"  certificate of {cert.thing_id} unreadable: {cert.error}")
        else:
            click.echo(f"  certificate {cert.subject} expires {cert.not_after}")
    if result.next_action:
        click.echo(f"  next: {result.next_action} at {result.next_action_at}")
    if result.handoff is not None and not result.handoff.ok:
        for hook in result.handoff.failed_hooks:
            click.echo(f"warning: hook {hook.name} failed: {hook.error}", err=True)
        for problem in result.handoff.errors:
            click.echo(f"warning: hand-off: {problem}", err=True)


def register(group: click.Group) -> None:
    """Add ``enroll`` to the CLI."""
    group.add_command(enroll)
