"""Routes: the aggregated catalog of a set of servers, and where each call goes.

:class:`Router.handle` answers one client request for one session: list methods
from the route's catalog (gateway-owned paging), named methods to the owning
upstream with the name translated back, resource methods by URI. Progress tokens
and cancellation are translated on the way (see :class:`ProgressTable`).
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Callable
from typing import Any

import msgspec
from msgspec import Raw

from .protocol import jsonrpc
from .protocol.catalog import RouteCatalog, aggregate, entry_str
from .protocol.jsonrpc import INVALID_PARAMS, METHOD_NOT_FOUND, Message, ProtocolError
from .protocol.paging import page
from .session import Session
from .upstream.backend import Backend

log = logging.getLogger("mcp_gateway.router")

Emit = Callable[[bytes], None]  # sends an encoded message on the request's own response stream

_LISTS = {
    "tools/list": ("tools", "tools"),
    "prompts/list": ("prompts", "prompts"),
    "resources/list": ("resources", "resources"),
    "resources/templates/list": ("resource_templates", "resourceTemplates"),
}
_CHANGED_NOTIFICATION = {
    "tools": "notifications/tools/list_changed",
    "prompts": "notifications/prompts/list_changed",
    "resources": "notifications/resources/list_changed",
    "resource_templates": "notifications/resources/list_changed",
}
_str_decoder = msgspec.json.Decoder(str)


class ProgressTable:
    """Gateway-wide progress-token translation.

    A client's token is only unique within its session, so each call that carries
    one gets a fresh gateway token upstream; progress coming back is re-labelled
    with the client's token and sent on that call's own stream.
    """

    def __init__(self) -> None:
        self._routes: dict[str, tuple[str, Raw, Emit]] = {}

    def register(self, server: str, client_token: Raw, emit: Emit) -> str:
        # Unguessable, and bound to the server the call went to: one upstream cannot
        # inject progress into another server's calls (other users' streams).
        token = f"gw-{secrets.token_urlsafe(12)}"
        self._routes[token] = (server, client_token, emit)
        return token

    def release(self, token: str) -> None:
        self._routes.pop(token, None)

    def deliver(self, server: str, params: dict[str, Raw]) -> bool:
        token_raw = params.get("progressToken")
        if token_raw is None:
            return False
        try:
            token = _str_decoder.decode(token_raw)
        except jsonrpc.DECODE_FAILURES:
            return False
        target = self._routes.get(token)
        if target is None or target[0] != server:
            return False
        _, client_token, emit = target
        params = dict(params)
        params["progressToken"] = client_token
        emit(jsonrpc.encode(jsonrpc.notification("notifications/progress", params)))
        return True


class Route:
    """A path prefix and the servers behind it, with their current aggregate."""

    def __init__(self, prefix: str, servers: list[Backend], separator: str, page_size: int,
                 name_prefixes: dict[str, str | None] | None = None) -> None:
        self.prefix = prefix
        self.servers = {s.name: s for s in servers}
        self.name_prefixes = name_prefixes  # server -> what its names start with (None: unprefixed)
        self.separator = separator
        self.page_size = page_size
        self._version = itertools.count(1)
        self.catalog: RouteCatalog = self._build()
        self.sessions: set[Session] = set()

    def _build(self) -> RouteCatalog:
        cats = [(name, s.catalog) for name, s in self.servers.items() if s.catalog is not None]
        return aggregate(cats, self.separator, next(self._version), self.name_prefixes)

    def rebuild(self) -> list[str]:
        """Recompute the aggregate; returns the list_changed notifications that apply."""
        old, self.catalog = self.catalog, self._build()
        changed: list[str] = []
        for kind in ("tools", "prompts", "resources", "resource_templates"):
            if jsonrpc.encoder.encode(getattr(old, kind)) != jsonrpc.encoder.encode(getattr(self.catalog, kind)):
                method = _CHANGED_NOTIFICATION[kind]
                if method not in changed:
                    changed.append(method)
        return changed

    def initialize_result(self, version: str) -> dict[str, Any]:
        names = ", ".join(self.servers)
        instructions = [f"{n}: {s.catalog.instructions}" for n, s in self.servers.items()
                        if s.catalog is not None and s.catalog.instructions]
        result: dict[str, Any] = {
            "protocolVersion": version,
            "capabilities": self.catalog.capabilities,
            "serverInfo": {"name": "mcp-gateway", "title": f"MCP gateway ({names})", "version": "0.1.0"},
        }
        if instructions:
            result["instructions"] = "\n".join(instructions)
        return result


class Router:
    """Dispatches one session's requests. Stateless apart from the tables it is given."""

    def __init__(self, progress: ProgressTable) -> None:
        self.progress = progress

    async def handle(self, session: Session, msg: Message, emit: Emit | None) -> Raw:
        """The result of request ``msg``; raises ProtocolError or UpstreamError for errors."""
        method = msg.method
        route: Route = session.route
        if method == "tools/call":
            return await self._call_named(route, session, route.catalog.tool_index, "tool", msg, emit)
        if method in _LISTS:
            return self._list(route, method, msg)
        if method == "ping":
            return jsonrpc.RAW_EMPTY_OBJECT
        if method == "prompts/get":
            return await self._call_named(route, session, route.catalog.prompt_index, "prompt", msg, emit)
        if method == "resources/read":
            return await self._call_by_uri(route, session, msg, emit)
        if method in ("resources/subscribe", "resources/unsubscribe"):
            return await self._subscribe(route, session, msg)
        if method == "completion/complete":
            return await self._complete(route, session, msg)
        if method == "logging/setLevel":
            # Upstreams are shared between sessions: one client's level must not change
            # what others receive, so the level is accepted and upstream logs stay in our log.
            return jsonrpc.RAW_EMPTY_OBJECT
        raise ProtocolError(METHOD_NOT_FOUND, f"Method not found: {method}", jsonrpc.request_id(msg))

    def _list(self, route: Route, method: str, msg: Message) -> Raw:
        attr, key = _LISTS[method]
        params = jsonrpc.decode_params(msg)
        cursor = _opt_str(params, "cursor", msg)
        catalog = route.catalog
        items, next_cursor = page(getattr(catalog, attr), cursor, catalog.version, route.page_size)
        out: dict[str, Any] = {key: items}
        if next_cursor is not None:
            out["nextCursor"] = next_cursor
        return Raw(jsonrpc.encoder.encode(out))

    async def _call_named(self, route: Route, session: Session, index: dict[str, tuple[str, str]], what: str,
                          msg: Message, emit: Emit | None) -> Raw:
        params = jsonrpc.decode_params(msg)
        name = _opt_str(params, "name", msg)
        if name is None:
            raise ProtocolError(INVALID_PARAMS, f"Invalid params: missing {what} name", jsonrpc.request_id(msg))
        target = index.get(name)
        if target is None:
            raise ProtocolError(INVALID_PARAMS, f"Unknown {what}: {name!r}", jsonrpc.request_id(msg))
        server, upstream_name = target
        params["name"] = Raw(jsonrpc.encoder.encode(upstream_name))
        return await self._forward(route.servers[server], session, msg.method, params, emit)  # type: ignore[arg-type]

    async def _call_by_uri(self, route: Route, session: Session, msg: Message, emit: Emit | None) -> Raw:
        params = jsonrpc.decode_params(msg)
        server = self._server_for_uri(route, params, msg)
        return await self._forward(route.servers[server], session, "resources/read", params, emit)

    def _server_for_uri(self, route: Route, params: dict[str, Raw], msg: Message) -> str:
        uri = _opt_str(params, "uri", msg)
        if uri is None:
            raise ProtocolError(INVALID_PARAMS, "Invalid params: missing uri", jsonrpc.request_id(msg))
        server = route.catalog.server_for_uri(uri)
        if server is None:
            with_resources = [n for n, s in route.servers.items()
                              if s.catalog is not None and "resources" in s.catalog.capabilities]
            if len(with_resources) != 1:
                raise ProtocolError(INVALID_PARAMS, f"Unknown resource: {uri!r}", jsonrpc.request_id(msg))
            server = with_resources[0]  # the only candidate may still know it (dynamic resources)
        return server

    async def _subscribe(self, route: Route, session: Session, msg: Message) -> Raw:
        params = jsonrpc.decode_params(msg)
        server = self._server_for_uri(route, params, msg)
        uri = _opt_str(params, "uri", msg)
        assert uri is not None
        backend = route.servers[server]
        if msg.method == "resources/subscribe":
            if session.subscriptions is None:
                session.subscriptions = set()
            first = not any(uri in (s.subscriptions or ()) for s in route.sessions)
            session.subscriptions.add(uri)
            if first:
                await backend.call("resources/subscribe", params, session=session)
        else:
            if session.subscriptions is not None:
                session.subscriptions.discard(uri)
            if not any(uri in (s.subscriptions or ()) for s in route.sessions):
                await backend.call("resources/unsubscribe", params, session=session)
        return jsonrpc.RAW_EMPTY_OBJECT

    async def _complete(self, route: Route, session: Session, msg: Message) -> Raw:
        params = jsonrpc.decode_params(msg)
        ref_raw = params.get("ref")
        ref = _object(ref_raw, "ref", msg) if ref_raw is not None else {}
        kind = entry_str(ref, "type")
        if kind == "ref/prompt":
            name = entry_str(ref, "name") or ""
            target = route.catalog.prompt_index.get(name)
            if target is None:
                raise ProtocolError(INVALID_PARAMS, f"Unknown prompt: {name!r}", jsonrpc.request_id(msg))
            ref["name"] = Raw(jsonrpc.encoder.encode(target[1]))
            server = target[0]
        elif kind == "ref/resource":
            uri = entry_str(ref, "uri") or ""
            found = route.catalog.server_for_uri(uri)
            if found is None:
                found = next((n for n, s in route.servers.items() if s.catalog is not None
                              and any(entry_str(t, "uriTemplate") == uri for t in s.catalog.resource_templates)),
                             None)
            if found is None:
                raise ProtocolError(INVALID_PARAMS, f"Unknown resource template: {uri!r}", jsonrpc.request_id(msg))
            server = found
        else:
            raise ProtocolError(INVALID_PARAMS, "Invalid params: ref.type must be ref/prompt or ref/resource",
                                jsonrpc.request_id(msg))
        params["ref"] = Raw(jsonrpc.encoder.encode(ref))
        return await self._forward(route.servers[server], session, "completion/complete", params, None)

    async def _forward(self, backend: Backend, session: Session, method: str, params: dict[str, Raw],
                       emit: Emit | None) -> Raw:
        """Send to the upstream, translating a progress token if the client gave one."""
        token: str | None = None
        meta_raw = params.get("_meta")
        if meta_raw is not None:
            meta = _object(meta_raw, "_meta", None)
            client_token = meta.get("progressToken")
            if client_token is not None:
                if emit is None:
                    del meta["progressToken"]  # no stream to report progress on
                else:
                    token = self.progress.register(backend.name, client_token, emit)
                    meta["progressToken"] = Raw(jsonrpc.encoder.encode(token))
                params["_meta"] = Raw(jsonrpc.encoder.encode(meta))
        try:
            return await backend.call(method, params, session=session)
        finally:
            if token is not None:
                self.progress.release(token)


def _object(value: Raw, key: str, msg: Message | None) -> dict[str, Raw]:
    """A params member that must be a JSON object, its members left raw."""
    try:
        return jsonrpc.raw_members(value)
    except jsonrpc.DECODE_FAILURES:
        raise ProtocolError(INVALID_PARAMS, f"Invalid params: {key} must be an object",
                            None if msg is None else jsonrpc.request_id(msg)) from None


def _opt_str(params: dict[str, Raw], key: str, msg: Message) -> str | None:
    value = params.get(key)
    if value is None or bytes(value) == b"null":
        return None
    try:
        return _str_decoder.decode(value)
    except jsonrpc.DECODE_FAILURES:
        raise ProtocolError(INVALID_PARAMS, f"Invalid params: {key} must be a string", jsonrpc.request_id(msg)) from None

