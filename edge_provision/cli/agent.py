"""Agent commands a technician runs by hand (and the daemon runs as children).

``enroll`` (one progress line per step), ``status`` (what this gateway is, never a key)
and ``reset`` (forget the local credentials). Only click and the standard library are
imported at module level: the daemon's idle footprint depends on it.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from edge_provision.cli._common import CliContext, emit_json, json_option

__all__ = ["enroll", "register", "reset", "status"]

_MARKS = {"done": "ok  ", "skipped": "skip", "failed": "FAIL"}


class _ProgressPrinter:
    """Prints one line per finished step: mark, step, message and the URL it used."""

    def __init__(self) -> None:
        self._urls: dict[str, str] = {}
        self._last_skip = ""

    def __call__(self, event: Any) -> None:
        if event.status == "started":
            if event.url:
                self._urls[event.step] = event.url
            return
        if event.status == "skipped" and event.message == self._last_skip:
            return  # "already provisioned" once, not once per step
        self._last_skip = event.message if event.status == "skipped" else ""
        url = event.url or self._urls.get(event.step)
        where = f"  [{url}]" if url and url not in event.message else ""
        click.echo(f"{_MARKS.get(event.status, event.status)} {event.step:<13}"
                   f"{event.message}{where}")  # fmt: skip


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
    progress = None if as_json else _ProgressPrinter()
    result = wiring.run_enroll(settings, force=force, progress=progress)
    if as_json:
        emit_json(result.to_dict())
        return
    if not result.changed:
        click.echo(f"already provisioned: external_id {result.external_id}, generation "
                   f"{result.generation} (use --force to re-fetch and re-issue certificates)")
    else:
        how = "new mapping" if result.created_mapping else "existing bootstrap config"
        click.echo(f"enrolled: external_id {result.external_id}, generation "
                   f"{result.generation} ({how}), thing {result.thing_id}")
    for channel in result.channels:
        click.echo(f"  channel {channel.get('type') or '-':<8} {channel['id']}  {channel['name']}")
    for cert in result.certificates:
        click.echo(f"  certificate {cert['subject']} expires {cert['not_after']}")
    if result.next_action:
        click.echo(f"  next: {result.next_action} at {result.next_action_at}")
    if result.handoff is not None and not result.handoff.ok:
        for hook in result.handoff.failed_hooks:
            click.echo(f"warning: hook {hook.name} failed: {hook.error}", err=True)
        for problem in result.handoff.errors:
            click.echo(f"warning: hand-off: {problem}", err=True)


def _cert_rows(generation: Any, now: datetime) -> tuple[list[dict[str, object]],
                                                         dict[str, object] | None]:  # fmt: skip
    from edge_provision.crypto import pki
    from edge_provision.errors import CertificateError

    rows: list[dict[str, object]] = []
    for thing_id in generation.certificates:
        pem = generation.read_certificate(thing_id)
        if pem is None:
            continue
        try:
            info = pki.parse_certificate(pem[0])
        except CertificateError as exc:
            rows.append({"thing_id": thing_id, "error": str(exc)})
            continue
        rows.append({
            "thing_id": thing_id, "subject": info.subject, "issuer": info.issuer,
            "serial": info.serial, "not_before": info.not_before.isoformat(),
            "not_after": info.not_after.isoformat(),
            "expires_in_s": int((info.not_after - now).total_seconds()),
            "expired": info.not_after <= now,
        })  # fmt: skip
    ca: dict[str, object] | None = None
    if generation.ca_path is not None:
        try:
            info = pki.parse_certificate(generation.ca_path.read_bytes())
            ca = {"subject": info.subject, "not_after": info.not_after.isoformat()}
        except (OSError, CertificateError) as exc:
            ca = {"error": str(exc)}
    return rows, ca


def _status_doc(settings: Any, verbose: bool) -> dict[str, object]:
    from edge_provision.agent import wiring
    from edge_provision.agent.identity import load_identity
    from edge_provision.settings import describe

    store = wiring.build_store(settings)
    state = store.load_state()
    generation = store.current_generation()
    ident = load_identity(settings.state_dir)
    now = datetime.now(timezone.utc)
    err = state.last_error
    doc: dict[str, object] = {
        "ok": True,
        "state_dir": str(settings.state_dir),
        "state": state.phase.value,
        "external_id": ident.external_id if ident is not None else None,
        "current_generation": generation.number if generation is not None else None,
        "generations": list(store.list_generations()),
        "last_error": None if err is None else {"kind": err.kind, "message": err.message,
                                                "at": err.at},
        "next_action": state.next_action,
        "next_action_at": state.next_action_at,
        "mapping_in_flight": state.mapping_in_flight,
        "counters": dict(state.counters),
        "recovered_from": store.recovered_from,
        "things": [], "channels": [], "certificates": [], "ca": None, "generation": None,
    }  # fmt: skip
    if generation is not None:
        certs, ca = _cert_rows(generation, now)
        doc.update({
            "generation": {"number": generation.number, "created": generation.created,
                           "source": generation.source, "path": str(generation.path),
                           "external_id": generation.external_id,
                           "fallback_from": generation.fallback_from,
                           "fallback_reason": generation.fallback_reason},
            "things": [{"id": t.id, "name": t.name,
                        "gateway": t.id == generation.gateway_thing_id}
                       for t in generation.things],
            "channels": [{"id": c.id, "name": c.name, "type": c.metadata.get("type")}
                         for c in generation.channels],
            "certificates": certs, "ca": ca,
        })  # fmt: skip
    if verbose:
        doc["settings"] = describe(settings)
        doc["journal"] = [{"step": e.step, "status": e.status, "at": e.at,
                           "detail": dict(e.detail)} for e in state.journal[-20:]]
    return doc


@click.command()
@click.option("--verbose", "-v", is_flag=True,
              help="also show every setting with its source, and the recent journal")
@json_option
@click.pass_obj
def status(obj: CliContext, verbose: bool, as_json: bool) -> None:
    """Show this gateway's enrollment: state, things, channels, certificates, errors.

    Keys are never printed. Reads only; safe while the daemon runs.

    \b
    Example:
      edge-provision status --json
    """
    settings = obj.agent_settings()
    doc = _status_doc(settings, verbose)
    if as_json:
        emit_json(doc)
        return
    click.echo(f"state        {doc['state']}" + (
        "  (a /mapping outcome is unknown; the next enroll looks up first)"
        if doc["mapping_in_flight"] else ""))
    click.echo(f"external_id  {doc['external_id'] or '- (not yet resolved)'}")
    click.echo(f"state dir    {doc['state_dir']}")
    gen = doc["generation"]
    if isinstance(gen, dict):
        fallback = (f"  WARNING: current link damaged, using generation {gen['number']}: "
                    f"{gen['fallback_reason']}" if gen["fallback_from"] is not None else "")
        click.echo(f"generation   {gen['number']} (from {gen['source']}, {gen['created']})"
                   f"{fallback}")
    else:
        click.echo("generation   none (run: edge-provision enroll)")
    for thing in doc["things"]:  # type: ignore[attr-defined]
        role = " (gateway)" if thing["gateway"] else ""
        click.echo(f"thing        {thing['id']}  {thing['name'] or '-'}{role}")
    for channel in doc["channels"]:  # type: ignore[attr-defined]
        click.echo(f"channel      {channel['id']}  {channel['name'] or '-'}  "
                   f"type={channel['type'] or '-'}")
    for cert in doc["certificates"]:  # type: ignore[attr-defined]
        if "error" in cert:
            click.echo(f"certificate  {cert['thing_id']}: unreadable: {cert['error']}")
            continue
        state = "EXPIRED" if cert["expired"] else f"expires {cert['not_after']}"
        click.echo(f"certificate  {cert['subject']}  {state}  serial {cert['serial']}")
    err = doc["last_error"]
    if isinstance(err, dict):
        click.echo(f"last error   {err['kind']}: {err['message']} (at {err['at']})")
    if doc["next_action"]:
        click.echo(f"next         {doc['next_action']} at {doc['next_action_at']}")
    if verbose:
        click.echo("settings:")
        for row in doc["settings"]:  # type: ignore[attr-defined]
            click.echo(f"  {row['name']:<20} {row['value']!s:<40} ({row['source']})")


@click.command()
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
@json_option
@click.pass_obj
def reset(obj: CliContext, yes: bool, as_json: bool) -> None:
    """Forget the local credentials (the current generation); keep identity and old files.

    The next enroll looks up the bootstrap config with the same external_id and key, so
    it gets the same things back. Old generations stay until that enrollment succeeds.

    \b
    Example:
      edge-provision reset --yes && edge-provision enroll
    """
    from edge_provision.agent import wiring
    from edge_provision.errors import ConfigError

    settings = obj.agent_settings()
    if not yes:
        if not sys.stdin.isatty():
            raise ConfigError("reset asks for confirmation: run it in a terminal or pass --yes")
        click.confirm(f"Forget the current credentials in {settings.state_dir}?", abort=True)
    store = wiring.build_store(settings)
    with store.lock(blocking=False):
        current = store.current_generation()
        state = store.forget_current()
        detail = {"generation": str(current.number)} if current is not None else {}
        store.save_state(state.record("reset", "done", detail))
        kept = list(store.list_generations())
    doc = {"ok": True, "state_dir": str(settings.state_dir),
           "forgot_generation": current.number if current is not None else None,
           "kept_generations": kept}  # fmt: skip
    if as_json:
        emit_json(doc)
    elif current is None:
        click.echo("nothing to forget: no current generation")
    else:
        click.echo(f"forgot generation {current.number}; {len(kept)} generation(s) kept until "
                   "the next successful enrollment; run: edge-provision enroll")


def register(group: click.Group) -> None:
    """Add ``enroll``, ``status`` and ``reset`` to the CLI."""
    group.add_command(enroll)
    group.add_command(status)
    group.add_command(reset)
