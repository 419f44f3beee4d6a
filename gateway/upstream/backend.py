"""What the router needs from a configured server, whatever its lifecycle."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import trio
from msgspec import Raw

from ..protocol.catalog import ServerCatalog
from ..protocol.jsonrpc import Message
from .instance import Instance, fetch_catalog
from .liveness import LivenessPolicy
from .peer import Connector, PeerHandlers, ServerRequest

log = logging.getLogger("mcp_gateway.upstream")


class Backend(Protocol):
    """A configured server: ``shared`` (ServerSupervisor), ``session`` or ``call`` (lifecycle.py)."""

    name: str
    catalog: ServerCatalog | None
    state: str
    last_error: str | None
    restarts: int

    async def run(self, *, task_status: trio.TaskStatus[None] = ...) -> None: ...

    async def call(self, method: str, params: Any = ..., *, session: Any = None,
                   timeout: float | None = None, origin: Any = None) -> Raw: ...

    def session_ended(self, session: Any) -> None: ...

    def statistics(self) -> BackendStatistics: ...


@dataclass(frozen=True, slots=True)
class BackendStatistics:
    """One configured server, now (for /healthz, metrics and the admin API)."""

    name: str
    kind: str  # the connector's kind of server: process, container, remote
    lifecycle: str
    state: str
    healthy: bool
    restarts: int
    last_error: str | None
    instances: dict[str, int]  # by state: ready (serving), warm (pooled, unused), other (starting, stopping)
    pool_available: int
    inflight: int


class BackendBase:
    """What every lifecycle shares: identity, timeouts, reported state, and making instances."""

    lifecycle = "shared"

    def __init__(self, name: str, connector: Connector, *, start_timeout: float, call_timeout: float,
                 on_change: Callable[[str], None] | None = None,
                 on_notification: Callable[[str, Message, list[Any]], None] | None = None,
                 on_request: Callable[[str, ServerRequest], Awaitable[Raw]] | None = None,
                 liveness: LivenessPolicy | None = None, capabilities: dict[str, Any] | None = None,
                 offer_for: Callable[[Any], dict[str, Any]] | None = None) -> None:
        self.name = name
        self.liveness = liveness if liveness is not None else LivenessPolicy()
        self.connector = connector
        self.start_timeout = start_timeout
        self.call_timeout = call_timeout
        self.capabilities = capabilities or {}  # the client capabilities offered to the server
        # For an instance that serves one client session: what to offer, given that session
        # (None: the configured capabilities, always).
        self.offer_for = offer_for
        self._on_change = on_change
        self._on_notification = on_notification
        self._on_request = on_request
        self.catalog: ServerCatalog | None = None
        self.state = "starting"
        self.last_error: str | None = None
        self.restarts = 0
        self._nursery: trio.Nursery | None = None

    def new_instance(self, *, with_catalog: bool, capabilities: dict[str, Any] | None = None) -> Instance:
        """An instance that, once started, has also fetched the lists if ``with_catalog``; it offers
        ``capabilities`` (default: the configured ones) to the server."""
        fetch = (lambda conn, cat: fetch_catalog(conn, cat, self.start_timeout)) if with_catalog else None
        handlers = PeerHandlers(notification=self._notification,
                                request=self._request if self._on_request is not None else None)
        return Instance(self.name, self.connector, start_timeout=self.start_timeout, handlers=handlers,
                        fetch=fetch, liveness=self.liveness,
                        capabilities=self.capabilities if capabilities is None else capabilities)

    async def _request(self, request: ServerRequest) -> Raw:
        assert self._on_request is not None
        return await self._on_request(self.name, request)

    def statistics(self) -> BackendStatistics:
        return BackendStatistics(
            name=self.name, kind=getattr(self.connector, "kind", "process"), lifecycle=self.lifecycle,
            state=self.state, healthy=self.state == "ready", restarts=self.restarts, last_error=self.last_error,
            instances=self._instance_counts(), pool_available=self._pool_available(), inflight=self._inflight())

    def _instance_counts(self) -> dict[str, int]:
        return {}

    def _pool_available(self) -> int:
        return 0

    def _inflight(self) -> int:
        return 0

    def _changed(self) -> None:
        """Tell the routes the catalog changed; a failure there is logged, never raised into
        the server's tasks (it would end them, and with them the gateway)."""
        if self._on_change is not None:
            try:
                self._on_change(self.name)
            except Exception:
                log.exception("%s: applying its catalog change failed", self.name)

    def _notification(self, msg: Message, origins: list[Any]) -> None:
        if self._on_notification is not None:
            self._on_notification(self.name, msg, origins)

    def session_ended(self, session: Any) -> None:
        """Only the session lifecycle keeps per-session state."""
