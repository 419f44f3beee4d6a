"""One started and initialized instance of a server: a launcher lifetime plus its connection."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import trio
from msgspec import Raw

from ..protocol import jsonrpc
from ..protocol.catalog import ServerCatalog, decode_list_page
from ..protocol.errors import CallError, UpstreamGone, UpstreamInvalid
from ..protocol.mcp import LATEST_HANDSHAKE
from .channel import LaunchError
from .connection import decode_object
from .liveness import LivenessPolicy, watch
from .peer import Connector, PeerHandlers, UpstreamPeer

log = logging.getLogger("mcp_gateway.upstream")

CLIENT_INFO = {"name": "mcp-gateway", "version": "0.1.0"}


async def initialize(conn: UpstreamPeer, capabilities: dict[str, Any] | None = None) -> ServerCatalog:
    """The MCP handshake (offering the client ``capabilities`` the gateway relays); returns a
    catalog with capabilities filled, lists empty."""
    params = {
        "protocolVersion": jsonrpc.raw(LATEST_HANDSHAKE),
        "capabilities": jsonrpc.raw(capabilities or {}),
        "clientInfo": jsonrpc.raw(CLIENT_INFO),
    }
    raw = await conn.call("initialize", params)
    try:
        result = decode_object(raw)
    except jsonrpc.DECODE_FAILURES as exc:  # upstream output is untrusted
        raise UpstreamInvalid(f"server {conn.name!r} sent an invalid initialize result: {exc}") from None
    await conn.notify("notifications/initialized")
    caps = result.get("capabilities")
    info = result.get("serverInfo")
    instructions = result.get("instructions")
    return ServerCatalog(
        capabilities=caps if isinstance(caps, dict) else {},
        server_info=info if isinstance(info, dict) else {},
        instructions=instructions if isinstance(instructions, str) else None,
    )


_LIST_PAGE_CAP = 1000  # an upstream paginator that never ends cannot hang a refresh


async def fetch_list(conn: UpstreamPeer, kind: str, timeout: float) -> list[dict[str, Raw]]:
    """Every entry of ``<kind>/list``, following upstream cursors."""
    method = "resources/templates/list" if kind == "resource_templates" else f"{kind}/list"
    entries: list[dict[str, Raw]] = []
    cursor: str | None = None
    for _ in range(_LIST_PAGE_CAP):
        params = {"cursor": jsonrpc.raw(cursor)} if cursor else jsonrpc.UNSET
        result = await conn.call(method, params, timeout=timeout)
        try:
            page, cursor = decode_list_page(result)
        except jsonrpc.DECODE_FAILURES as exc:  # upstream output is untrusted: one bad server stays contained
            raise UpstreamInvalid(f"server {conn.name!r} sent an invalid {method} result: {exc}") from None
        entries += page
        if not cursor:
            break
    return entries


async def fetch_catalog(conn: UpstreamPeer, catalog: ServerCatalog, timeout: float) -> None:
    caps = catalog.capabilities
    if "tools" in caps:
        catalog.tools = await fetch_list(conn, "tools", timeout)
    if "prompts" in caps:
        catalog.prompts = await fetch_list(conn, "prompts", timeout)
    if "resources" in caps:
        catalog.resources = await fetch_list(conn, "resources", timeout)
        catalog.resource_templates = await fetch_templates(conn, timeout)


async def fetch_templates(conn: UpstreamPeer, timeout: float) -> list[dict[str, Raw]]:
    """Resource templates; none for a server that does not implement the method."""
    try:
        return await fetch_list(conn, "resource_templates", timeout)
    except CallError as exc:
        if exc.code != jsonrpc.METHOD_NOT_FOUND:
            raise
        return []


class Instance:
    """Start with ``await nursery.start(instance.run)``: returns once initialized (or raises
    :class:`StartError`); the instance then lives until :meth:`stop` or until the server exits."""

    def __init__(self, name: str, connector: Connector, *, start_timeout: float,
                 handlers: PeerHandlers | None = None,
                 fetch: Callable[[UpstreamPeer, ServerCatalog], object] | None = None,
                 liveness: LivenessPolicy | None = None, capabilities: dict[str, Any] | None = None) -> None:
        self.name = name
        self._liveness = liveness
        self._connector = connector
        self._start_timeout = start_timeout
        self._handlers = handlers or PeerHandlers()
        self._fetch = fetch
        self._capabilities = capabilities or {}
        self.conn: UpstreamPeer | None = None
        self.catalog: ServerCatalog | None = None
        self.ended = trio.Event()
        self.last_used = trio.current_time()
        self._scope = trio.CancelScope()

    @property
    def alive(self) -> bool:
        return self.conn is not None and not self.conn.closed.is_set() and not self.ended.is_set()

    @property
    def end_reason(self) -> str:
        if self.conn is not None and self.conn.close_reason:
            return self.conn.close_reason
        return f"server {self.name!r} stopped"

    def stop(self) -> None:
        self._scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[Instance] = trio.TASK_STATUS_IGNORED) -> None:
        failure: str | None = None
        # The start deadline covers launching (process spawn, container create and start)
        # as well as initialize and the catalog; it is lifted once the instance is ready.
        starting = trio.CancelScope(deadline=trio.current_time() + self._start_timeout)
        try:
            with self._scope, starting:
                async with self._connector.connect(self._handlers) as conn, trio.open_nursery() as nursery:
                    await nursery.start(conn.run)
                    # Errors are caught here, inside the nursery, so they do not leave it
                    # wrapped in an ExceptionGroup.
                    try:
                        catalog = await initialize(conn, self._capabilities)
                        if self._fetch is not None:
                            await self._fetch(conn, catalog)  # type: ignore[misc]
                    except UpstreamGone as exc:  # its message names the server and the exit
                        failure = f"{exc.message} while starting"
                    except CallError as exc:
                        failure = f"server {self.name!r} failed to initialize: {exc.message}"
                    if failure is None:
                        starting.deadline = math.inf
                        self.conn, self.catalog = conn, catalog
                        if self._liveness is not None:
                            nursery.start_soon(watch, conn, self._liveness)
                        task_status.started(self)
                        await conn.closed.wait()
                    nursery.cancel_scope.cancel()
        except LaunchError as exc:
            failure = str(exc)
        except Exception as exc:  # containment: a bug reached through one server ends that instance only
            log.exception("%s: instance failed", self.name)
            failure = f"server {self.name!r}: the gateway failed running it ({type(exc).__name__}: {exc})"
        finally:
            self.ended.set()
        if self.conn is None:
            if failure is None and starting.cancelled_caught:
                failure = (f"server {self.name!r} did not finish starting and initialize within "
                           f"{self._start_timeout:g}s")
            raise StartError(failure or f"server {self.name!r} was stopped while starting")


class StartError(UpstreamGone):
    """The instance could not be started or initialized (the message says why)."""
