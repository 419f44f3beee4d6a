"""The data plane's access control, built from the configuration: one object the gateway holds.

It owns the authenticator (API keys, JWT) with the HTTP guard, the policy and the tool filters,
the rate limiter, the tool pins and the result redactors, and runs their background tasks
(key refresh, JWKS refresh, pin writes). The router asks it three questions: what may this
caller see (lists), may it call this (and is there room: rate limits), and what does a server's
catalog look like once filtered and screened for changed definitions. A reload swaps the policy,
limits, filters and redactors in one step; the authentication methods need a restart.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Literal

import trio

from ..config import GatewayConfig, resolve_secret
from ..config.errors import ConfigError, SecretError
from ..config.rest import secret_refs
from ..protocol.catalog import Entry, RouteCatalog, ServerCatalog, entry_str
from . import LOCAL, Identity
from .authenticator import Authenticator
from .guard import HttpGuard
from .jwt import JwtVerifier
from .keys import KeyRing, keys_db_path
from .pinning import Pins, PinStore
from .policy import Policy, compile_filter
from .ratelimit import RateLimiter, Ticket
from .redact import Redactor

log = logging.getLogger("mcp_gateway.auth")

Kind = Literal["tool", "prompt", "resource"]
_LIST_KIND: dict[str, Kind] = {"tools": "tool", "prompts": "prompt", "resources": "resource",
                               "resource_templates": "resource"}
_VIEW_CACHE = 4096  # filtered lists kept (per catalog version, list, caller); a flood of callers only clears it


def state_db_path(config: GatewayConfig, config_file: str | None) -> str | None:
    """Where tool pins are kept: the store's database, else the API keys' one, else nowhere (memory)."""
    if config.store is not None:
        return config.store.path
    return keys_db_path(config, config_file)


class Access:
    def __init__(self, config: GatewayConfig, *, config_file: str | None = None) -> None:
        auth = config.authentication
        self.keyring: KeyRing | None = None
        self.jwt: JwtVerifier | None = None
        self.authenticator: Authenticator | None = None
        self.guard: HttpGuard | None = None
        if auth is not None:
            path = keys_db_path(config, config_file)
            if auth.keys is not None and path is not None:
                self.keyring = KeyRing(path, refresh=auth.keys.refresh)
            if auth.jwt is not None:
                self.jwt = JwtVerifier(auth.jwt, audience=auth.jwt.audience or auth.resource or "")
            self.authenticator = Authenticator(keys=self.keyring, jwt=self.jwt)
            self.guard = HttpGuard(self.authenticator, auth)
        pin_path = state_db_path(config, config_file)
        self.pins_persist = pin_path is not None
        self.pins = Pins(PinStore(pin_path))
        self._views: dict[tuple[Any, ...], list[Entry]] = {}
        self.apply(config)

    def apply(self, config: GatewayConfig) -> None:
        """The parts a reload changes: policy, rate limits, tool filters, redactors (no await)."""
        self.config = config
        self.policy = Policy(list(config.policy))
        self.limiter = RateLimiter(list(config.rate_limits))
        self.server_filters = {n: f for n, s in config.servers.items() if (f := compile_filter(s.tools)) is not None}
        self.route_filters = {p: f for p, r in config.route_configs().items()
                              if (f := compile_filter(r.tools)) is not None}
        secrets = _secret_values(config)
        self.redactors = {n: Redactor(secrets) for n, s in config.servers.items() if s.redact_results}
        self._views.clear()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The background work: keys loaded before the first request, then refreshed; JWKS; pin writes."""
        async with trio.open_nursery() as nursery:
            if self.keyring is not None:
                await nursery.start(self.keyring.run)
            if self.jwt is not None:
                await nursery.start(self.jwt.run)
            await nursery.start(self.pins.run)
            task_status.started()

    # -- what a caller sees and may call ----------------------------------------------------------
    def visible(self, identity: Identity | None, route: str, catalog: RouteCatalog, attr: str) -> list[Entry]:
        """The entries of one list of ``catalog`` this caller may use (the list itself without a policy)."""
        items: list[Entry] = getattr(catalog, attr)
        if not self.policy.enabled:
            return items
        who = identity or LOCAL
        key = (id(catalog), catalog.version, attr, who.key, who.groups, who.scopes, route)
        found = self._views.get(key)
        if found is not None:
            return found
        view = self.policy.view(who, route)
        kind = _LIST_KIND[attr]
        if attr in ("tools", "prompts"):
            index = catalog.tool_index if attr == "tools" else catalog.prompt_index
            found = [e for e in items if _allowed_named(view, kind, index, e)]
        elif attr == "resources":
            found = [e for e in items if view.allows(kind, catalog.resource_index.get(entry_str(e, "uri") or "", ""),
                                                     entry_str(e, "uri") or "")]
        else:  # templates and their matchers were built side by side
            found = [e for e, (_, server) in zip(items, catalog.template_matchers, strict=True)
                     if view.allows(kind, server, entry_str(e, "uriTemplate") or "")]
        if len(self._views) >= _VIEW_CACHE:
            self._views.clear()
        self._views[key] = found
        return found

    def allows(self, identity: Identity | None, route: str, kind: Kind, server: str, name: str) -> bool:
        return not self.policy.enabled or self.policy.allows(identity or LOCAL, route, kind, server, name)

    def admit(self, identity: Identity | None, route: str, name: str) -> Ticket | None:
        """A rate-limit ticket to release when the call ends (None: no limits); raises RateLimited."""
        if not self.limiter.enabled:
            return None
        return self.limiter.admit(identity or LOCAL, route, name, trio.current_time())

    # -- catalogs ---------------------------------------------------------------------------------
    def screen(self, server: str, catalog: ServerCatalog) -> ServerCatalog:
        """A server's catalog as routes serve it: its tool filter applied, changed definitions screened."""
        tools = catalog.tools
        visible = self.server_filters.get(server)
        if visible is not None:
            tools = [t for t in tools if visible(entry_str(t, "name") or "")]
        settings = self.config.servers.get(server)
        if settings is not None:
            tools = self.pins.screen(server, settings.tool_change, tools)
        return catalog if tools is catalog.tools else dataclasses.replace(catalog, tools=tools)

    def filter_route(self, route: str, catalog: RouteCatalog) -> RouteCatalog:
        """The route's own tool filter (on the names clients see)."""
        visible = self.route_filters.get(route)
        if visible is None:
            return catalog
        hidden = [name for name in catalog.tool_index if not visible(name)]
        for name in hidden:
            del catalog.tool_index[name]
            catalog.param_headers.pop(name, None)
        catalog.tools = [t for t in catalog.tools if (entry_str(t, "name") or "") in catalog.tool_index]
        return catalog

    def statistics(self) -> dict[str, Any]:
        return {
            "auth_refused": dict(self.authenticator.refused) if self.authenticator else {},
            "auth_accepted": sum(self.authenticator.accepted.values()) if self.authenticator else 0,
            "rate_limits": self.limiter.statistics(),
            "pins": self.pins.statistics(),
        }


def _allowed_named(view: Any, kind: Kind, index: dict[str, tuple[str, str]], entry: Entry) -> bool:
    name = entry_str(entry, "name") or ""
    target = index.get(name)
    return target is not None and view.allows(kind, target[0], name)


def _secret_values(config: GatewayConfig) -> list[str]:
    """Every secret value the gateway was given (server secrets, bearer tokens, the JWT secret)."""
    refs: list[tuple[str, str]] = []
    for name, server in config.servers.items():
        refs += [(ref, f"servers.{name}.secrets.{key}") for key, ref in server.secrets.items()]
        if server.bearer is not None:
            refs.append((server.bearer, f"servers.{name}.bearer"))
        if server.http is not None:
            refs += [(ref, f"servers.{name}.http.headers.{key}") for key, value in server.http.headers.items()
                     for ref in secret_refs(value)]
    auth = config.authentication
    if auth is not None and auth.jwt is not None and auth.jwt.secret is not None:
        refs.append((auth.jwt.secret, "auth.jwt.secret"))
    if config.admin.token is not None:
        refs.append((config.admin.token, "admin.token"))
    values: list[str] = []
    for ref, where in refs:
        try:
            values.append(resolve_secret(ref, where=where))
        except (SecretError, ConfigError, OSError):
            continue  # the server that needs it says so when it starts
    return [v for v in values if v]
