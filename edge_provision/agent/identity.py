"""The gateway's identity on the platform: ``external_id`` and ``external_key``.

``external_id`` comes, in order, from:

1. an explicit value (``--external-id`` / ``EDGE_PROVISION_EXTERNAL_ID``);
2. ``state_dir/identity.json``, written the first time an identity is resolved, so
   that a NIC swap or a changed interface order never mints a new identity;
3. the MAC address of a network interface: the configured one
   (``--interface`` / ``EDGE_PROVISION_INTERFACE``), else the physical interface
   with the lowest ifindex whose MAC is globally administered unicast.

An explicit ``external_id`` that differs from the stored one wins for the run *and*
replaces the stored one (a warning names both ids): the operator said which
identity this gateway has, and the next run without the setting must not silently
fall back to the old one. ``external_key`` follows the same order (explicit value,
stored value) and is otherwise generated once with :func:`secrets.token_urlsafe`
(192 bits) and stored. The key used is always the one stored, so removing the
setting later keeps the key the platform knows. Keys are never logged.

``persist=False`` computes without touching the disk (for previews): nothing is
written and no key is generated (``external_key`` is then ``""``).

:func:`identity_for` is the one place that reads these settings out of
:class:`~edge_provision.settings.AgentSettings`; psutil is imported only when the
interfaces must really be listed (``status`` and a no-op ``enroll`` never do).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from edge_provision import fileio
from edge_provision.clock import iso, utc_now
from edge_provision.errors import IdentityError, StoreError

if TYPE_CHECKING:
    from edge_provision.settings import AgentSettings

__all__ = [
    "IDENTITY_FILE",
    "Identity",
    "IdentityPreview",
    "InterfaceInfo",
    "MacFormat",
    "format_mac",
    "identity_for",
    "is_usable_mac",
    "is_virtual",
    "list_interfaces",
    "load_identity",
    "mismatch_error",
    "parse_mac",
    "pick_interface",
    "preview_identity",
    "resolve_identity",
]

logger = logging.getLogger(__name__)

IDENTITY_FILE = "identity.json"
_LOCK_FILE = ".identity.lock"
_VERSION = 1
_KEY_BYTES = 24  # token_urlsafe(24): 192 random bits
_SYS_CLASS_NET = Path("/sys/class/net")

_VIRTUAL_NAME = re.compile(
    r"^(?:lo\d*$|docker|veth|br-|virbr|vnet|tun|tap|wg|dummy|zt|tailscale|vmnet|vboxnet"
    r"|cni|flannel|cali|kube|lxc|lxdbr|ip6tnl|sit|gre|ifb|podman|vxlan|weave|nlmon)"
)
_MAC_SEPARATED = re.compile(r"[0-9a-fA-F]{2}([:-])(?:[0-9a-fA-F]{2}\1){4}[0-9a-fA-F]{2}")
_MAC_PLAIN = re.compile(r"[0-9a-fA-F]{12}")
_PREFIX = re.compile(r"[A-Za-z0-9._~:-]*")
_ID_FORBIDDEN = re.compile(r"[\s/?#]")

_FIX_HINT = (
    "set the id with --external-id or EDGE_PROVISION_EXTERNAL_ID, or pick an interface "
    "with --interface / EDGE_PROVISION_INTERFACE"
)


@dataclass(frozen=True)
class InterfaceInfo:
    """One network interface: name, MAC (``""`` if none), ifindex (0 if unknown)."""

    name: str
    mac: str
    index: int
    is_up: bool
    virtual: bool = False  # /sys says virtual (bridge, bond, under devices/virtual)


class MacFormat(str, Enum):
    """How a MAC address is written into ``external_id``."""

    COLON_LOWER = "colon-lower"
    COLON_UPPER = "colon-upper"
    PLAIN_LOWER = "plain-lower"
    PLAIN_UPPER = "plain-upper"
    DASH_UPPER = "dash-upper"


_FORMATS = {  # separator, upper case
    MacFormat.COLON_LOWER: (":", False),
    MacFormat.COLON_UPPER: (":", True),
    MacFormat.PLAIN_LOWER: ("", False),
    MacFormat.PLAIN_UPPER: ("", True),
    MacFormat.DASH_UPPER: ("-", True),
}


@dataclass(frozen=True)
class Identity:
    """The resolved identity and where each half came from."""

    external_id: str
    external_key: str = field(repr=False)
    external_id_source: str
    external_key_source: str
    interface: str | None
    mac: str | None = None  # colon-lower MAC the id was derived from, if any


@dataclass(frozen=True)
class _Record:
    """The content of ``identity.json``."""

    external_id: str
    external_key: str = field(repr=False)
    interface: str | None
    mac: str | None
    created: str | None

    def to_json(self) -> str:
        body = {"version": _VERSION, **asdict(self)}
        return json.dumps(body, indent=2, sort_keys=True) + "\n"


# --------------------------------------------------------------------------- MACs


def parse_mac(mac: str) -> bytes:
    """Return the 6 octets of ``mac`` (``aa:bb:..``, ``AA-BB-..`` or ``aabb..``, any case)."""
    text = mac.strip()
    if _MAC_SEPARATED.fullmatch(text):
        return bytes.fromhex(re.sub(r"[:-]", "", text))
    if _MAC_PLAIN.fullmatch(text):
        return bytes.fromhex(text)
    raise ValueError(
        f"malformed MAC address {mac!r}: expected 6 octets of 2 hex digits, e.g. "
        "aa:bb:cc:dd:ee:ff, AA-BB-CC-DD-EE-FF or aabbccddeeff"
    )


def format_mac(mac: str, fmt: MacFormat = MacFormat.COLON_LOWER, prefix: str = "") -> str:
    """Write ``mac`` in format ``fmt``, after ``prefix``; ValueError if either is malformed."""
    octets = parse_mac(mac)
    fmt = MacFormat(fmt)
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(
            f"invalid external_id prefix {prefix!r}: use only letters, digits and . _ ~ : -"
        )
    separator, upper = _FORMATS[fmt]
    body = separator.join(f"{b:02x}" for b in octets)
    return prefix + (body.upper() if upper else body)


def _mac_problem(mac: str) -> str | None:
    """Why ``mac`` cannot be an identity, or None if it can."""
    if not mac:
        return "no MAC address"
    try:
        octets = parse_mac(mac)
    except ValueError:
        return f"malformed MAC {mac}"
    shown = format_mac(mac)
    if not any(octets):
        return "all-zero MAC"
    if octets[0] & 0x01:
        return f"multicast MAC {shown}"
    if octets[0] & 0x02:
        return f"locally administered MAC {shown}"
    return None


def is_usable_mac(mac: str) -> bool:
    """True for a well-formed, unicast, globally administered, non-zero MAC."""
    return _mac_problem(mac) is None


# --------------------------------------------------------------------------- interfaces


def is_virtual(name: str) -> bool:
    """True if ``name`` is loopback or a well-known virtual interface name."""
    return _VIRTUAL_NAME.match(name) is not None


def _read_ifindex(entry: Path) -> int:
    try:
        return int((entry / "ifindex").read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return 0


def _sysfs_says_virtual(entry: Path) -> bool:
    """A bridge, or a device that resolves under ``/sys/devices/virtual/``."""
    try:
        if not entry.exists():
            return False
        if (entry / "bridge").exists():
            return True
        return "/devices/virtual/" in entry.resolve().as_posix() + "/"
    except OSError:
        return False


def list_interfaces(*, sys_class_net: Path = _SYS_CLASS_NET) -> list[InterfaceInfo]:
    """Every interface psutil reports, sorted by ifindex then name.

    ``sys_class_net`` is only for tests; the ifindex falls back to
    :func:`socket.if_nameindex` when ``<sys_class_net>/<name>/ifindex`` is missing.
    """
    import psutil

    try:
        addrs = psutil.net_if_addrs()
        stats = psutil.net_if_stats()
    except OSError as exc:
        raise IdentityError(
            f"cannot list network interfaces: {exc.strerror or exc}; {_FIX_HINT}"
        ) from exc
    try:
        import socket  # here: only listing interfaces needs it (status never does)

        kernel_index = {name: index for index, name in socket.if_nameindex()}
    except OSError:
        kernel_index = {}
    result: list[InterfaceInfo] = []
    for name in sorted(set(addrs) | set(stats)):
        mac = ""
        for addr in addrs.get(name, ()):
            if addr.family == psutil.AF_LINK and addr.address:
                try:
                    mac = format_mac(addr.address)
                except ValueError:
                    continue  # tunnels report non-Ethernet link addresses
                break
        safe = "/" not in name and name not in ("", ".", "..")
        entry = sys_class_net / name
        index = _read_ifindex(entry) if safe else 0
        if index <= 0:
            index = kernel_index.get(name, 0)
        stat = stats.get(name)
        result.append(
            InterfaceInfo(
                name=name,
                mac=mac,
                index=index,
                is_up=bool(stat.isup) if stat is not None else False,
                virtual=is_virtual(name) or (safe and _sysfs_says_virtual(entry)),
            )
        )
    result.sort(key=_index_order)
    return result


def _index_order(info: InterfaceInfo) -> tuple[bool, int, str]:
    """Known ifindex first, lowest first; name breaks ties."""
    return (info.index <= 0, info.index, info.name)


def _seen(interfaces: Sequence[InterfaceInfo], reasons: dict[str, str]) -> str:
    if not interfaces:
        return "none"
    parts = []
    for info in sorted(interfaces, key=_index_order):
        reason = reasons.get(info.name)
        parts.append(f"{info.name} ({reason})" if reason else info.name)
    return ", ".join(parts)


def pick_interface(
    interfaces: Sequence[InterfaceInfo], configured: str | None = None
) -> InterfaceInfo:
    """The interface whose MAC becomes the ``external_id``; IdentityError if none fits.

    A configured interface wins (virtual or not) if its MAC is usable. Otherwise the
    non-virtual interface with the lowest ifindex and a usable MAC; up/down state is
    ignored so that an unplugged cable never changes the choice. When no physical
    interface has a globally administered MAC (typical of VMs and containers), the
    lowest-ifindex physical one with a locally administered unicast MAC is used, with a
    warning; only when there is none of those either is it an IdentityError.
    """
    if configured:
        for info in interfaces:
            if info.name == configured:
                problem = _mac_problem(info.mac)
                if problem is None:
                    return info
                raise IdentityError(
                    f"interface {configured!r} has no usable MAC address ({problem}); "
                    "set the id with --external-id or EDGE_PROVISION_EXTERNAL_ID, or pick "
                    "another interface with --interface / EDGE_PROVISION_INTERFACE "
                    f"(interfaces here: {_seen(interfaces, {})})"
                )
        raise IdentityError(
            f"interface {configured!r} does not exist (interfaces here: "
            f"{_seen(interfaces, {})}); fix --interface / EDGE_PROVISION_INTERFACE or set "
            "the id with --external-id or EDGE_PROVISION_EXTERNAL_ID"
        )
    reasons: dict[str, str] = {}
    local_fallback: InterfaceInfo | None = None
    for info in sorted(interfaces, key=_index_order):
        if info.virtual or is_virtual(info.name):
            reasons[info.name] = "loopback" if re.fullmatch(r"lo\d*", info.name) else "virtual"
            continue
        problem = _mac_problem(info.mac)
        if problem is None:
            return info
        if local_fallback is None and problem.startswith("locally administered"):
            local_fallback = info
        reasons[info.name] = problem
    if local_fallback is not None:
        # VMs and containers often have only locally administered MACs (02:xx...).
        # They are unique per host in practice and the first value is persisted, so
        # a later change does not mint a new identity; say so loudly anyway.
        logger.warning(
            "no globally administered MAC found; using the locally administered MAC of "
            "interface=%s (set --external-id to choose the id yourself)", local_fallback.name
        )
        return local_fallback
    raise IdentityError(
        "no network interface with a globally administered MAC address found "
        f"(seen: {_seen(interfaces, reasons)}); {_FIX_HINT}"
    )


# --------------------------------------------------------------------------- persistence


def _corrupt(path: Path, what: str) -> IdentityError:
    return IdentityError(
        f"{path}: {what}. The file holds this gateway's identity: restore it from a "
        "backup, or set --external-id / EDGE_PROVISION_EXTERNAL_ID (and "
        "EDGE_PROVISION_EXTERNAL_KEY) to the values registered on the platform, or "
        "delete the file only if you accept a new identity (the gateway must then be "
        "provisioned again)"
    )


def _optional_str(body: dict[str, object], key: str, path: Path) -> str | None:
    value = body.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _corrupt(path, f"{key!r} must be a string or null, not {type(value).__name__}")


def _load_record(state_dir: Path) -> _Record | None:
    path = state_dir / IDENTITY_FILE
    if not path.exists() and not path.is_symlink():
        return None
    try:
        text = fileio.read_text(path, "identity file")
    except ValueError as exc:
        raise IdentityError(f"{exc}; run as the service user or fix --state-dir") from exc
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _corrupt(path, f"not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(body, dict):
        raise _corrupt(path, f"expected a JSON object, found {type(body).__name__}")
    version = body.get("version")
    if version != _VERSION or isinstance(version, bool):
        raise _corrupt(path, f"unsupported version {version!r} (expected {_VERSION})")
    for key in ("external_id", "external_key"):
        value = body.get(key)
        if not isinstance(value, str) or not value:
            raise _corrupt(path, f"{key!r} must be a non-empty string")
    problem = _id_problem(body["external_id"])
    if problem is not None:
        raise _corrupt(path, f"'external_id' {body['external_id']!r}: {problem}")
    return _Record(
        external_id=body["external_id"],
        external_key=body["external_key"],
        interface=_optional_str(body, "interface", path),
        mac=_optional_str(body, "mac", path),
        created=_optional_str(body, "created", path),
    )


def load_identity(state_dir: Path) -> Identity | None:
    """The identity stored in ``state_dir/identity.json``, or None; never writes."""
    record = _load_record(Path(state_dir))
    if record is None:
        return None
    source = f"stored {Path(state_dir) / IDENTITY_FILE}"
    return Identity(
        record.external_id, record.external_key, source, source, record.interface, record.mac
    )


def mismatch_error(identity: Identity, number: int, enrolled_as: str) -> IdentityError:
    """The refusal to enroll ``identity`` over generation ``number`` made for another id.

    Enrolling would provision a second set of things on the platform and leave the first
    one orphaned there; the message says so and how to go either way.
    """
    new = identity.external_id
    return IdentityError(
        f"external_id {new!r} ({identity.external_id_source}) is not {enrolled_as!r}, the "
        f"external_id the current generation {number} was enrolled with. Enrolling now would "
        f"provision {new!r} as a second set of things on the platform and leave the things of "
        f"{enrolled_as!r} orphaned there. To keep this gateway as it is: restore identity.json "
        f"(external_id {enrolled_as!r}) or set EDGE_PROVISION_EXTERNAL_ID={enrolled_as}. To "
        f"move it to {new!r} on purpose: run `edge-provision enroll --force`, then have an "
        f"operator delete the bootstrap config and things of {enrolled_as!r}"
    )


def _id_problem(value: str) -> str | None:
    """Why ``value`` cannot be an external_id (it travels as one URL path segment), or None."""
    if value in ("", ".", "..") or _ID_FORBIDDEN.search(value) or not value.isprintable():
        return ("it cannot be one URL path segment: it must not be empty, '.' or '..', nor "
                "contain '/', '?', '#', whitespace or control characters")  # fmt: skip
    return None


def _check_external_id(value: str, source: str) -> str:
    problem = _id_problem(value)
    if problem is not None:
        raise IdentityError(
            f"invalid external_id {value!r} ({source}): {problem}; fix it there (--external-id, "
            "EDGE_PROVISION_EXTERNAL_ID or identity.external_id)"
        )
    return value


def _warn_if_settings_ignored(
    record: _Record, interface: str | None, mac_format: MacFormat, prefix: str, path: Path
) -> None:
    """Say so when the stored id wins over settings that would now give another id."""
    if interface and record.interface and interface != record.interface:
        logger.warning("stored identity kept interface=%s stored=%s", interface, record.interface)
    if record.mac and record.interface:
        try:
            now = format_mac(record.mac, mac_format, prefix)
        except ValueError:
            return
        if now != record.external_id:
            logger.warning(
                "stored identity kept external_id=%s settings_give=%s", record.external_id, now
            )


def resolve_identity(
    state_dir: Path,
    *,
    external_id: str | None = None,
    external_key: str | None = None,
    interface: str | None = None,
    mac_format: MacFormat = MacFormat.COLON_LOWER,
    prefix: str = "",
    interfaces: Sequence[InterfaceInfo] | None = None,
    persist: bool = True,
    external_id_source: str = "setting",
) -> Identity:
    """Work out (and with ``persist`` store) this gateway's identity.

    Empty strings count as not set; an ``external_id`` that cannot travel as one URL path
    segment is refused, naming ``external_id_source`` (where the setting came from).
    ``interfaces`` defaults to :func:`list_interfaces` and is only consulted when no id is
    given or stored.
    Raises :class:`IdentityError`, or :class:`StoreError` if ``state_dir`` cannot be
    created or locked.
    """
    state_dir = Path(state_dir)
    external_id = (external_id or "").strip() or None
    external_key = external_key or None
    interface = (interface or "").strip() or None
    if external_id is not None:
        _check_external_id(external_id, external_id_source)
    lock: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if persist:
        fileio.ensure_private_dir(state_dir)
        lock = fileio.exclusive_lock(state_dir / _LOCK_FILE)
    with lock:  # two first runs at once must not both generate a key
        path = state_dir / IDENTITY_FILE
        stored_src = f"stored {path}"
        try:
            record = _load_record(state_dir)
        except IdentityError:
            if external_id is None:
                raise
            # The operator set the id: a corrupt file must not block that; keep a copy.
            logger.warning("identity file unreadable, replacing it path=%s", path)
            record = None
            if persist:
                _keep_corrupt_copy(path)

        used_iface: str | None = None
        used_mac: str | None = None
        created: str | None = None
        if external_id is not None:
            id_value, id_source = external_id, "setting"
            if record is not None and record.external_id != external_id:
                logger.warning(
                    "external_id setting overrides the stored one external_id=%s "
                    "stored_external_id=%s path=%s",
                    external_id,
                    record.external_id,
                    path,
                )
            elif record is not None:
                used_iface, used_mac, created = record.interface, record.mac, record.created
        elif record is not None:
            id_value, id_source = record.external_id, stored_src
            used_iface, used_mac, created = record.interface, record.mac, record.created
            _warn_if_settings_ignored(record, interface, mac_format, prefix, path)
        else:
            seen = list(interfaces) if interfaces is not None else list_interfaces()
            chosen = pick_interface(seen, interface)
            used_iface, used_mac = chosen.name, format_mac(chosen.mac)
            try:
                id_value = format_mac(chosen.mac, mac_format, prefix)
            except ValueError as exc:
                raise IdentityError(f"{exc}; fix the external_id format settings") from exc
            id_source = f"interface {chosen.name} ({used_mac})"

        if external_key is not None:
            key_value, key_source = external_key, "setting"
            if record is not None and record.external_key != external_key:
                logger.warning("external_key setting differs from the stored one path=%s", path)
        elif record is not None:
            key_value, key_source = record.external_key, stored_src
        elif persist:
            import secrets  # only here: it loads OpenSSL's hashlib, which status never needs

            key_value, key_source = secrets.token_urlsafe(_KEY_BYTES), "generated"
        else:
            key_value, key_source = "", "not yet generated"

        if persist and (
            record is None or record.external_id != id_value or record.external_key != key_value
        ):
            new = _Record(id_value, key_value, used_iface, used_mac, created or iso(utc_now()))
            _store(path, new)
            logger.info("identity stored external_id=%s path=%s", id_value, path)
        logger.debug("identity resolved external_id=%s source=%s", id_value, id_source)
        return Identity(
            external_id=id_value,
            external_key=key_value,
            external_id_source=id_source,
            external_key_source=key_source,
            interface=used_iface,
            mac=used_mac,
        )


def identity_for(
    settings: AgentSettings,
    *,
    interfaces: Sequence[InterfaceInfo] | None = None,
    persist: bool = True,
) -> Identity:
    """:func:`resolve_identity` with the identity settings of ``settings``.

    ``persist=False`` is the read-only preview (``edge-provision identity``).
    """
    return resolve_identity(
        settings.state_dir, external_id=settings.external_id,
        external_key=settings.external_key, interface=settings.interface,
        mac_format=MacFormat(settings.mac_format), prefix=settings.id_prefix,
        interfaces=interfaces, persist=persist,
        external_id_source=settings.source_of("external_id"),
    )  # fmt: skip


@dataclass(frozen=True)
class IdentityPreview:
    """The identity the settings give (nothing written) and the interfaces seen."""

    identity: Identity
    interfaces: tuple[InterfaceInfo, ...]

    @staticmethod
    def usable(info: InterfaceInfo) -> bool:
        """Whether ``info`` could give the external_id (not virtual, a usable MAC)."""
        return not is_virtual(info.name) and is_usable_mac(info.mac)


def preview_identity(settings: AgentSettings) -> IdentityPreview:
    """What ``edge-provision identity`` shows: :func:`identity_for` without writing."""
    interfaces = list_interfaces()
    return IdentityPreview(identity_for(settings, interfaces=interfaces, persist=False),
                           tuple(sorted(interfaces, key=lambda i: i.index)))  # fmt: skip


def _store(path: Path, record: _Record) -> None:
    try:
        fileio.atomic_write(path, record.to_json(), mode=fileio.SECRET_MODE)
    except StoreError as exc:
        raise IdentityError(
            f"{exc}; make the state directory writable by the service user or pick "
            "another one with --state-dir"
        ) from exc


def _keep_corrupt_copy(path: Path) -> None:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    copy = path.with_name(f"{path.name}.corrupt-{stamp}")
    try:
        fileio.atomic_write(copy, path.read_bytes(), mode=fileio.SECRET_MODE)
    except (OSError, StoreError) as exc:
        logger.warning(
            "cannot keep a copy of the corrupt identity file path=%s error=%s", path, exc
        )
    else:
        logger.warning("corrupt identity file kept path=%s", copy)
