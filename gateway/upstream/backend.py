"""What the router needs from a configured server, whatever its lifecycle."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import trio
from msgspec import Raw

from ..protocol.catalog import ServerCatalog
from ..protocol.jsonrpc import Message
from .channel import Launcher
from .instance import Instance, fetch_catalog
from .liveness import LivenessPolicy

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
                   timeout: float | None = None) -> Raw: ...

    def session_ended(self, session: Any) -> None: ...


class BackendBase:
    """What every lifecycle shares: identity, timeouts, reported state, and making instances."""

    def __init__(self, name: str, launcher: Launcher, *, start_timeout: float, call_timeout: float,
                 max_message: int, on_change: Callable[[str], None] | None = None,
                 on_notification: Callable[[str, Message], None] | None = None,
                 liveness: LivenessPolicy | None = None) -> None:
        self.name = name
        self.liveness = liveness if liveness is not None else LivenessPolicy()
        self.launcher = launcher
        self.start_timeout = start_timeout
        self.call_timeout = call_timeout
        self._max_message = max_message
        self._on_change = on_change
        self._on_notification = on_notification
        self.catalog: ServerCatalog | None = None
        self.state = "starting"
        self.last_error: str | None = None
        self.restarts = 0
        self._nursery: trio.Nursery | None = None

    def new_instance(self, *, with_catalog: bool) -> Instance:
        """An instance that, once started, has also fetched the lists if ``with_catalog``."""
        fetch = (lambda conn, cat: fetch_catalog(conn, cat, self.start_timeout)) if with_catalog else None
        return Instance(self.name, self.launcher, start_timeout=self.start_timeout, max_message=self._max_message,
                        on_notification=self._notification, fetch=fetch, liveness=self.liveness)

    def _changed(self) -> None:
        """Tell the routes the catalog changed; a failure there is logged, never raised into
        the server's tasks (it would end them, and with them the gateway)."""
        if self._on_change is not None:
            try:
                self._on_change(self.name)
            except Exception:
                log.exception("%s: applying its catalog change failed", self.name)

    def _notification(self, msg: Message) -> None:
        if self._on_notification is not None:
            self._on_notification(self.name, msg)

    def session_ended(self, session: Any) -> None:
        """Only the session lifecycle keeps per-session state."""
