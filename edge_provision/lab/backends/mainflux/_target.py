"""Where the Mainflux platform is and how the lab authenticates to it.

Private to :mod:`edge_provision.lab.backends.mainflux` (re-exported there). The
names are upstream Provision's: ``MF_PROVISION_THINGS_LOCATION``,
``MF_PROVISION_BS_SVC_URL`` (with or without the ``/things`` upstream appends),
``MF_PROVISION_USERS_LOCATION``, and ``MF_PROVISION_API_KEY`` or
``MF_PROVISION_USER``/``MF_PROVISION_PASS``. As upstream, the API key wins when
both are given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from edge_provision.errors import ConfigError, Problem
from edge_provision.http import AuthScheme

__all__ = ["ENV_NAMES", "MainfluxTarget"]

ENV_NAMES = {
    "things_url": "MF_PROVISION_THINGS_LOCATION",
    "bootstrap_url": "MF_PROVISION_BS_SVC_URL",
    "users_url": "MF_PROVISION_USERS_LOCATION",
    "api_key": "MF_PROVISION_API_KEY",
    "user": "MF_PROVISION_USER",
    "password": "MF_PROVISION_PASS",
}


@dataclass(frozen=True)
class MainfluxTarget:
    """A Mainflux platform (Things, Bootstrap, Users) and the lab's credentials on it."""

    things_url: str
    bootstrap_url: str
    users_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    auth_scheme: AuthScheme = AuthScheme.AUTO
    ca_bundle: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    insecure: bool = False
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0

    @property
    def uses_login(self) -> bool:
        """True when the lab logs in with user and password (no API key given)."""
        return not self.api_key

    def problems(self) -> list[Problem]:
        """Everything wrong with this target, each naming the variable to fix."""
        found = []
        for name in ("things_url", "bootstrap_url", "users_url"):
            value = getattr(self, name)
            if value is None and name == "users_url":
                continue
            parts = urlsplit(value or "")
            if parts.scheme not in ("http", "https") or not parts.netloc:
                found.append(Problem(
                    f"expected an http:// or https:// URL, got {value!r}", path=ENV_NAMES[name]))
        if not self.api_key:
            if not self.user or not self.password:
                found.append(Problem(
                    "no credentials: set MF_PROVISION_API_KEY, or MF_PROVISION_USER and "
                    "MF_PROVISION_PASS (with MF_PROVISION_USERS_LOCATION)",
                    path=ENV_NAMES["api_key"]))
            elif not self.users_url:
                found.append(Problem(
                    "a login with MF_PROVISION_USER/MF_PROVISION_PASS needs the Users service URL",
                    path=ENV_NAMES["users_url"]))
        return found

    def check(self) -> MainfluxTarget:
        """``self``, or ConfigError listing every problem."""
        problems = self.problems()
        if problems:
            raise ConfigError(problems)
        return self

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> MainfluxTarget:
        """Read upstream's ``MF_PROVISION_*`` variables (empty counts as unset)."""
        values = {attr: environ.get(var, "").strip() or None for attr, var in ENV_NAMES.items()}
        return cls(
            things_url=values["things_url"] or "",
            bootstrap_url=values["bootstrap_url"] or "",
            users_url=values["users_url"],
            api_key=values["api_key"],
            user=values["user"],
            password=environ.get(ENV_NAMES["password"]) or None,
        ).check()
