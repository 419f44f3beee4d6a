"""Routes: the aggregated catalog of a set of servers, and where each call goes.

:class:`Router.handle` answers one client request, given its
:class:`~gateway.dispatch.CallContext`: list methods from the route's catalog
(gateway-owned paging), named methods to the owning upstream with the name
translated back, resource methods by URI. Progress tokens and cancellation are
translated on the way (see :class:`~gateway.protocol.progress.ProgressTable`).

A route with ``tool_mode: search`` lists two tools instead of its catalog (see
:mod:`gateway.protocol.search`): ``search_tools`` searches the caller's view of the catalog and
``call_tool`` calls a tool by name along the very path a direct ``tools/call`` takes (policy,
rate limits, progress, cancellation, redaction; metrics and the audit log name the inner tool).
A direct ``tools/call`` of a catalog name still works there, for clients that kept names.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import trio
from msgspec import Raw

from .auth.ratelimit import RateLimited
from .protocol import jsonrpc, modern, search
from .protocol.catalog import Entry, RouteCatalog, aggregate, entry_str
from .protocol.errors import RATE_LIMITED, CallError
from .protocol.jsonrpc import INVALID_PARAMS, METHOD_NOT_FOUND, Message, ProtocolError
from .protocol.paging import page
from .protocol.progress import ProgressTable
from .relay import LEVELS, most_verbose
from .session import Listener, Session, cancellable_call

if TYPE_CHECKING:
    from .dispatch import CallContext
from .upstream.backend import Backend

log = logging.getLogger("mcp_gateway.router")

_ENVELOPE_PREFIX = "io.modelcontextprotocol/"  # the 2026-07-28 per-request _meta keys

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
_MAX_INDEXES = 64  # search indexes kept per route (one per caller view of the current catalog)
GATEWAY_SERVER = "(gateway)"  # the server metrics and the audit log name for search_tools (no real server can)
ToolMode = Literal["all", "search"]


class Route:
    """A path prefix and the servers behind it, with their current aggregate."""

    def __init__(self, prefix: str, servers: list[Backend], separator: str, page_size: int,
                 name_prefixes: dict[str, str | None] | None = None, *, tool_mode: ToolMode = "all",
                 access: Any = None) -> None:
        self.prefix = prefix
        self.tool_mode: ToolMode = tool_mode
        self._listed_mode = tool_mode  # the mode of the last rebuild: a change is a tools/list_changed
        self._indexes: dict[int, tuple[list[Entry], search.ToolIndex]] = {}  # id(view) -> (view, index)
        self._indexes_version = 0
        self.servers = {s.name: s for s in servers}
        self.name_prefixes = name_prefixes  # server -> what its names start with (None: unprefixed)
        self.separator = separator
        self.page_size = page_size
        self._version = itertools.count(1)
        self.access = access  # gateway.auth.access.Access: filters and screens the catalog (None: as served)
        self.catalog: RouteCatalog = self._build()
        self.sessions: set[Session] = set()
        self.listeners: set[Listener] = set()  # subscriptions/listen streams (2026-07-28)
        self.server_info = {"name": "mcp-gateway", "title": f"MCP gateway ({', '.join(self.servers)})",
                            "version": "0.1.0"}
        self.server_meta = modern.server_info_meta(self.server_info)

    @property
    def instructions(self) -> str | None:
        parts = [f"{n}: {s.catalog.instructions}" for n, s in self.servers.items()
                 if s.catalog is not None and s.catalog.instructions]
        if self.tool_mode == "search":
            parts.insert(0, f"This server's tools are found with {search.SEARCH_TOOL} and called with "
                            f"{search.CALL_TOOL}.")
        return "\n".join(parts) if parts else None

    def meta_tools(self) -> list[dict[str, Any]]:
        """What ``tools/list`` answers in search mode: the search tool and the call tool."""
        return search.meta_tools(self.servers)

    def search_index(self, view: list[Entry]) -> search.ToolIndex:
        """The search index of one caller's view of the current catalog, built once per catalog
        version and view (the policy's views are cached lists: the same caller gets the same one)."""
        version = self.catalog.version
        if self._indexes_version != version:
            self._indexes.clear()
            self._indexes_version = version
        found = self._indexes.get(id(view))
        if found is not None and found[0] is view:
            return found[1]
        if len(self._indexes) >= _MAX_INDEXES:
            self._indexes.clear()
        index = search.ToolIndex(view, separator=self.separator)
        self._indexes[id(view)] = (view, index)  # the view is kept, so its id is not reused meanwhile
        return index

    def subscribers(self) -> list[Session | Listener]:
        return [*self.sessions, *self.listeners]

    def _build(self) -> RouteCatalog:
        access = self.access
        cats = [(name, s.catalog if access is None else access.screen(name, s.catalog))
                for name, s in self.servers.items() if s.catalog is not None]
        catalog = aggregate(cats, self.separator, next(self._version), self.name_prefixes)
        return catalog if access is None else access.filter_route(self.prefix, catalog)

    def reconfigure(self, servers: list[Backend], separator: str, name_prefixes: dict[str, str | None],
                    tool_mode: ToolMode | None = None) -> None:
        """Serve another set of servers (a reload); callers then :meth:`rebuild`. No await: one step."""
        if tool_mode is not None:
            self.tool_mode = tool_mode
        self.servers = {s.name: s for s in servers}
        self.separator = separator
        self.name_prefixes = name_prefixes
        self.server_info = {**self.server_info, "title": f"MCP gateway ({', '.join(self.servers)})"}
        self.server_meta = modern.server_info_meta(self.server_info)

    def rebuild(self) -> list[str]:
        """Recompute the aggregate; returns the list_changed notifications that apply."""
        old, self.catalog = self.catalog, self._build()
        changed: list[str] = []
        if self._listed_mode != self.tool_mode:
            self._listed_mode = self.tool_mode
            changed.append(_CHANGED_NOTIFICATION["tools"])
        for kind in ("tools", "prompts", "resources", "resource_templates"):
            if jsonrpc.encoder.encode(getattr(old, kind)) != jsonrpc.encoder.encode(getattr(self.catalog, kind)):
                method = _CHANGED_NOTIFICATION[kind]
                if method not in changed:
                    changed.append(method)
        return changed

    def initialize_result(self, version: str) -> dict[str, Any]:
        result: dict[str, Any] = {
            "protocolVersion": version,
            "capabilities": self.catalog.capabilities,
            "serverInfo": self.server_info,
        }
        instructions = self.instructions
        if instructions:
            result["instructions"] = instructions
        return result


class Router:
    """Dispatches one session's requests. Stateless apart from the tables it is given."""

    def __init__(self, progress: ProgressTable, routes: Callable[[], Iterable[Route]] = tuple,
                 access: Any = None) -> None:
        self.progress = progress
        self.routes = routes  # every route (to find every client of a server)
        self.access = access  # gateway.auth.access.Access: who may see and call what (None: everyone)
        self._levels: dict[str, str] = {}  # server -> the log level last set on it

    async def handle(self, ctx: CallContext, msg: Message) -> Raw:
        """The result of request ``msg``; raises ProtocolError or CallError for errors."""
        method = msg.method
        route = ctx.route
        if method == "tools/call":
            if route.tool_mode == "all":
                return await self._call_named(ctx, route.catalog.tool_index, "tool", msg)
            return await self._search_mode_call(ctx, msg)
        if method in _LISTS:
            return self._list(ctx, method, msg)
        if method == "ping":
            return jsonrpc.RAW_EMPTY_OBJECT
        if method == "prompts/get":
            return await self._call_named(ctx, route.catalog.prompt_index, "prompt", msg)
        if method == "resources/read":
            return await self._call_by_uri(ctx, msg)
        if method in ("resources/subscribe", "resources/unsubscribe") and ctx.session is not None:
            return await self._subscribe(ctx, ctx.session, msg)
        if method == "completion/complete":
            return await self._complete(ctx, msg)
        if method == "logging/setLevel":
            await self._set_level(ctx, msg)
            return jsonrpc.RAW_EMPTY_OBJECT
        raise ProtocolError(METHOD_NOT_FOUND, f"Method not found: {method}", jsonrpc.request_id(msg))

    async def _set_level(self, ctx: CallContext, msg: Message) -> None:
        """Keep the level per session (the relay filters what each client gets) and set each of the
        route's servers to the most verbose level any of its clients asked for."""
        level = _opt_str(jsonrpc.decode_params(msg), "level", msg)
        if level not in LEVELS:
            raise ProtocolError(INVALID_PARAMS, f"Invalid params: level must be one of {', '.join(LEVELS)}",
                                jsonrpc.request_id(msg))
        if ctx.session is None:
            return
        ctx.session.log_level = level
        for name, backend in ctx.route.servers.items():
            if backend.catalog is None or "logging" not in backend.catalog.capabilities:
                continue
            target = most_verbose(s.log_level for route in self.routes() if name in route.servers
                                  for s in route.sessions)
            if target is None or self._levels.get(name) == target:
                continue
            self._levels[name] = target
            try:
                await backend.call("logging/setLevel", {"level": Raw(jsonrpc.encoder.encode(target))},
                                   session=ctx.session)
            except CallError as exc:
                log.info("%s: logging/setLevel %s failed: %s", name, target, exc.message)

    def _list(self, ctx: CallContext, method: str, msg: Message) -> Raw:
        attr, key = _LISTS[method]
        params = jsonrpc.decode_params(msg)
        cursor = _opt_str(params, "cursor", msg)
        route = ctx.route
        catalog = route.catalog
        access = self.access
        entries: list[Any]
        if attr == "tools" and route.tool_mode == "search":
            entries = route.meta_tools()
        else:
            entries = getattr(catalog, attr) if access is None else access.visible(ctx.identity, route.prefix,
                                                                                   catalog, attr)
        items, next_cursor = page(entries, cursor, catalog.version, route.page_size)
        out: dict[str, Any] = {key: items}
        if next_cursor is not None:
            out["nextCursor"] = next_cursor
        return Raw(jsonrpc.encoder.encode(out))

    async def _call_named(self, ctx: CallContext, index: dict[str, tuple[str, str]], what: str,
                          msg: Message, params: dict[str, Raw] | None = None, *, param_headers: bool = True) -> Raw:
        if params is None:
            params = jsonrpc.decode_params(msg)
        name = _opt_str(params, "name", msg)
        if name is None:
            raise ProtocolError(INVALID_PARAMS, f"Invalid params: missing {what} name", jsonrpc.request_id(msg))
        target = index.get(name)
        access = self.access
        if target is None or (access is not None and not access.allows(ctx.identity, ctx.route.prefix, what,
                                                                       target[0], name)):
            # What a caller may not use does not exist for it: the same answer as for no such name.
            raise ProtocolError(INVALID_PARAMS, f"Unknown {what}: {name!r}", jsonrpc.request_id(msg))
        server, upstream_name = target
        if msg.method == "tools/call":
            ctx.tool = (server, name)
        ctx.arguments = params.get("arguments")
        if ctx.modern is not None and ctx.headers is not None and msg.method == "tools/call" and param_headers:
            annotations = ctx.route.catalog.param_headers.get(name)
            if annotations:  # only then are the arguments decoded (to compare them with the headers)
                arguments = jsonrpc.decode_any(params.get("arguments"))
                problem = modern.check_param_headers(annotations, arguments, ctx.headers)
                if problem is not None:
                    raise ProtocolError(jsonrpc.HEADER_MISMATCH, problem, jsonrpc.request_id(msg))
        params["name"] = Raw(jsonrpc.encoder.encode(upstream_name))
        return await self._limited(ctx, msg, server, name, params)

    async def _search_mode_call(self, ctx: CallContext, msg: Message) -> Raw:
        """A ``tools/call`` on a search-mode route: a search, a call through ``call_tool``, or a
        direct call of a catalog name (which works as on any route)."""
        params = jsonrpc.decode_params(msg)
        name = _opt_str(params, "name", msg)
        index = ctx.route.catalog.tool_index
        if name == search.SEARCH_TOOL:
            return self._search(ctx, msg, params)
        if name != search.CALL_TOOL:
            return await self._call_named(ctx, index, "tool", msg, params)
        outer = params.get("arguments")
        arguments = {} if outer is None or bytes(outer) == b"null" else _object(outer, "arguments", msg)
        inner_name = jsonrpc.decode_any(arguments.get("name"))
        if not isinstance(inner_name, str):
            raise ProtocolError(INVALID_PARAMS, f"Invalid params: {search.CALL_TOOL} needs the name of the tool "
                                                f"to call, a string (arguments.name)", jsonrpc.request_id(msg))
        inner_arguments = arguments.get("arguments")
        if inner_arguments is not None and bytes(inner_arguments) == b"null":
            inner_arguments = None
        if inner_arguments is not None and not bytes(inner_arguments).lstrip().startswith(b"{"):
            raise ProtocolError(INVALID_PARAMS, f"Invalid params: {search.CALL_TOOL}'s arguments.arguments must be "
                                                f"an object", jsonrpc.request_id(msg))
        ctx.inner_call = (inner_name, inner_arguments)
        # The call the client would have made directly: every other member (_meta with its progress
        # token, task, ...) is kept. No Mcp-Param-* header check: the client only knew call_tool's
        # schema, which annotates none, so it had no header to send.
        inner = dict(params)
        inner["name"] = arguments["name"]
        if inner_arguments is None:
            inner.pop("arguments")
        else:
            inner["arguments"] = inner_arguments
        return await self._call_named(ctx, index, "tool", msg, inner, param_headers=False)

    def _search(self, ctx: CallContext, msg: Message, params: dict[str, Raw]) -> Raw:
        """``search_tools``: the caller's view of the catalog searched (what it may not call it cannot find)."""
        ctx.tool = (GATEWAY_SERVER, search.SEARCH_TOOL)
        try:
            query, limit = search.parse_search_arguments(jsonrpc.decode_any(params.get("arguments")))
        except ValueError as exc:
            raise ProtocolError(INVALID_PARAMS, f"Invalid params: {exc}", jsonrpc.request_id(msg)) from None
        route = ctx.route
        access = self.access
        if access is not None:
            try:  # searches are calls too: a rule for every call of a caller covers them
                ticket = access.admit(ctx.identity, route.prefix, search.SEARCH_TOOL)
            except RateLimited as refused:
                ctx.retry_after = refused.retry_after
                raise ProtocolError(RATE_LIMITED, f"Rate limited: {refused.message}", jsonrpc.request_id(msg),
                                    data={"retryAfter": refused.retry_after}) from None
            if ticket is not None:
                ticket.release()  # answered at once: nothing stays in flight
        catalog = route.catalog
        view: list[Entry] = catalog.tools if access is None else access.visible(ctx.identity, route.prefix,
                                                                                catalog, "tools")
        return Raw(search.search_result(query, route.search_index(view), limit))

    async def _call_by_uri(self, ctx: CallContext, msg: Message) -> Raw:
        params = jsonrpc.decode_params(msg)
        server = self._server_for_uri(ctx, params, msg)
        return await self._limited(ctx, msg, server, _opt_str(params, "uri", msg) or "", params)

    async def _limited(self, ctx: CallContext, msg: Message, server: str, name: str, params: dict[str, Raw]) -> Raw:
        """Forward a call within the rate limits that apply to it; redact the result if configured."""
        access = self.access
        ticket = None
        if access is not None:
            try:
                ticket = access.admit(ctx.identity, ctx.route.prefix, name)
            except RateLimited as refused:
                ctx.retry_after = refused.retry_after
                raise ProtocolError(RATE_LIMITED, f"Rate limited: {refused.message}",
                                    jsonrpc.request_id(msg),
                                    data={"retryAfter": refused.retry_after}) from None
        try:
            result = await self._forward(ctx, ctx.route.servers[server], msg.method, params)  # type: ignore[arg-type]
        finally:
            if ticket is not None:
                ticket.release()
        redactor = access.redactors.get(server) if access is not None else None
        return result if redactor is None else redactor.redact_raw(result)

    def _server_for_uri(self, ctx: CallContext, params: dict[str, Raw], msg: Message | None) -> str:
        uri = _opt_str(params, "uri", msg)
        if uri is None:
            raise ProtocolError(INVALID_PARAMS, "Invalid params: missing uri", _rid(msg))
        route = ctx.route
        server = route.catalog.server_for_uri(uri)
        if server is None:
            with_resources = [n for n, s in route.servers.items()
                              if s.catalog is not None and "resources" in s.catalog.capabilities]
            if len(with_resources) != 1:
                raise ProtocolError(INVALID_PARAMS, f"Unknown resource: {uri!r}", _rid(msg))
            server = with_resources[0]  # the only candidate may still know it (dynamic resources)
        access = self.access
        if access is not None and not access.allows(ctx.identity, route.prefix, "resource", server, uri):
            raise ProtocolError(INVALID_PARAMS, f"Unknown resource: {uri!r}", _rid(msg))
        return server

    async def _subscribe(self, ctx: CallContext, session: Session, msg: Message) -> Raw:
        params = jsonrpc.decode_params(msg)
        uri = _opt_str(params, "uri", msg)
        if uri is None:
            raise ProtocolError(INVALID_PARAMS, "Invalid params: missing uri", jsonrpc.request_id(msg))
        if msg.method == "resources/subscribe":
            await self.subscribe(ctx, session, uri)
        else:
            await self.unsubscribe(ctx, session, uri)
        return jsonrpc.RAW_EMPTY_OBJECT

    async def subscribe(self, ctx: CallContext, who: Session | Listener, uri: str) -> None:
        """Subscribe ``who`` to a resource; the upstream hears of it from the first subscriber only."""
        route = ctx.route
        server = self._server_for_uri(ctx, {"uri": Raw(jsonrpc.encoder.encode(uri))}, None)
        first = not any(uri in (s.subscriptions or ()) for s in route.subscribers())
        if who.subscriptions is None:
            who.subscriptions = set()
        who.subscriptions.add(uri)
        if first:
            await route.servers[server].call("resources/subscribe", {"uri": Raw(jsonrpc.encoder.encode(uri))},
                                             session=ctx.session)

    async def unsubscribe(self, ctx: CallContext, who: Session | Listener, uri: str) -> None:
        """The upstream hears of it when the last subscriber leaves."""
        route = ctx.route
        if who.subscriptions is not None:
            who.subscriptions.discard(uri)
        if any(uri in (s.subscriptions or ()) for s in route.subscribers()):
            return
        server = self._server_for_uri(ctx, {"uri": Raw(jsonrpc.encoder.encode(uri))}, None)
        await route.servers[server].call("resources/unsubscribe", {"uri": Raw(jsonrpc.encoder.encode(uri))},
                                         session=ctx.session)

    async def _complete(self, ctx: CallContext, msg: Message) -> Raw:
        route = ctx.route
        params = jsonrpc.decode_params(msg)
        ref_raw = params.get("ref")
        ref = _object(ref_raw, "ref", msg) if ref_raw is not None else {}
        kind = entry_str(ref, "type")
        if kind == "ref/prompt":
            name = entry_str(ref, "name") or ""
            target = route.catalog.prompt_index.get(name)
            access = self.access
            if target is None or (access is not None and not access.allows(ctx.identity, route.prefix, "prompt",
                                                                           target[0], name)):
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
            access = self.access
            if found is None or (access is not None and not access.allows(ctx.identity, route.prefix, "resource",
                                                                          found, uri)):
                raise ProtocolError(INVALID_PARAMS, f"Unknown resource template: {uri!r}", jsonrpc.request_id(msg))
            server = found
        else:
            raise ProtocolError(INVALID_PARAMS, "Invalid params: ref.type must be ref/prompt or ref/resource",
                                jsonrpc.request_id(msg))
        params["ref"] = Raw(jsonrpc.encoder.encode(ref))
        return await self._forward(ctx, route.servers[server], "completion/complete", params, progress=False)

    async def _forward(self, ctx: CallContext, backend: Backend, method: str, params: dict[str, Raw], *,
                       progress: bool = True) -> Raw:
        """Send to the upstream, translating a progress token if the client gave one.

        ``_meta`` keys of the 2026-07-28 envelope are the gateway's business, not the upstream's
        (which speaks the handshake era): they are dropped on the way.
        """
        token: str | None = None
        meta_raw = params.get("_meta")
        if meta_raw is not None:
            meta = _object(meta_raw, "_meta", None)
            for key in [k for k in meta if k.startswith(_ENVELOPE_PREFIX)]:
                del meta[key]
            client_token = meta.get("progressToken")
            if client_token is not None:
                if not progress or ctx.back is None:
                    del meta["progressToken"]  # no stream to report progress on
                else:
                    token = self.progress.register(backend.name, client_token, ctx.back.send)
                    meta["progressToken"] = Raw(jsonrpc.encoder.encode(token))
                    ctx.back.open()
            if meta:
                params["_meta"] = Raw(jsonrpc.encoder.encode(meta))
            else:
                del params["_meta"]
        started = trio.current_time()
        try:
            return await cancellable_call(ctx.inflight, backend, method, params,  # type: ignore[no-any-return]
                                          session=ctx.session, origin=ctx)
        finally:
            ctx.upstream_seconds = trio.current_time() - started
            if token is not None:
                self.progress.release(token)


def _rid(msg: Message | None) -> jsonrpc.RequestId | None:
    return None if msg is None else jsonrpc.request_id(msg)


def _object(value: Raw, key: str, msg: Message | None) -> dict[str, Raw]:
    """A params member that must be a JSON object, its members left raw."""
    try:
        return jsonrpc.raw_members(value)
    except jsonrpc.DECODE_FAILURES:
        raise ProtocolError(INVALID_PARAMS, f"Invalid params: {key} must be an object", _rid(msg)) from None


def _opt_str(params: dict[str, Raw], key: str, msg: Message | None) -> str | None:
    value = params.get(key)
    if value is None or bytes(value) == b"null":
        return None
    try:
        return _str_decoder.decode(value)
    except jsonrpc.DECODE_FAILURES:
        raise ProtocolError(INVALID_PARAMS, f"Invalid params: {key} must be a string", _rid(msg)) from None

