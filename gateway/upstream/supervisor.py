"""Keeps one upstream server running: start, initialize, catalog, restart with backoff."""

from __future__ import annotations

import logging
import math
from typing import Any, Final

import trio
from msgspec import Raw

from ..protocol import jsonrpc
from ..protocol.catalog import ServerCatalog
from ..protocol.errors import CallError, UpstreamGone, UpstreamTimeout
from ..protocol.jsonrpc import Message
from ..session import InFlight, cancellable_call
from .backend import BackendBase
from .instance import StartError, fetch_list, fetch_templates
from .peer import Connector, UpstreamPeer

log = logging.getLogger("mcp_gateway.upstream")

_HEALTHY_UPTIME = 10.0  # seconds a server must stay up for its restart backoff to reset

# notifications/<x>/list_changed -> the list to refetch
_LIST_CHANGED = {
    "notifications/tools/list_changed": "tools",
    "notifications/prompts/list_changed": "prompts",
    "notifications/resources/list_changed": "resources",
}


class ServerSupervisor(BackendBase):
    """One long-lived instance of a server, shared by every client session.

    ``catalog`` is the last one fetched (kept across restarts so the aggregate does
    not flap); ``on_change(name)`` is called whenever it changes and
    ``on_notification(name, msg)`` for every other upstream notification.
    """

    def __init__(self, name: str, connector: Connector, *, start_timeout: float = 30.0, call_timeout: float = 60.0,
                 backoff: float = 0.5, backoff_max: float = 30.0, **kwargs: Any) -> None:
        super().__init__(name, connector, start_timeout=start_timeout, call_timeout=call_timeout, **kwargs)
        self._backoff = backoff
        self._backoff_max = backoff_max
        self.backoff_delay = backoff  # the wait before the latest restart
        self._conn: UpstreamPeer | None = None
        self._ready = trio.Event()
        self._refreshing: set[str] = set()
        self._refresh_dirty: set[str] = set()
        self._start_failed = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run (and re-run) the server until cancelled. ``started`` after the first attempt."""
        delay = self._backoff
        first = True
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            while True:
                started_at = trio.current_time()
                try:
                    ready = await self._lifetime(task_status if first else None)
                except Exception as exc:  # containment: never let one server end the gateway
                    log.exception("%s: supervisor failed", self.name)
                    self.last_error = f"server {self.name!r}: the gateway failed supervising it ({exc!r})"
                    self._conn, ready = None, False
                    if first:
                        task_status.started()
                first = False
                self.restarts += 1
                # Only a run that lasted resets the backoff: one that dies right after
                # initialize is a crash loop and must back off like a failed start.
                healthy = ready and trio.current_time() - started_at >= min(_HEALTHY_UPTIME, self._backoff_max)
                if healthy:
                    delay = self._backoff
                self.state = "backoff" if ready else "failed"
                self.backoff_delay = delay
                log.info("%s: restarting in %.1fs", self.name, delay, extra={"server": self.name})
                await trio.sleep(delay)
                if not healthy:
                    delay = min(delay * 2, self._backoff_max)

    async def _lifetime(self, task_status: trio.TaskStatus[None] | None) -> bool:
        """Start, initialize and serve one instance; True if it became ready."""
        self.state = "starting"
        instance = self.new_instance(with_catalog=True)
        assert self._nursery is not None
        try:
            await self._nursery.start(instance.run)
        except StartError as exc:
            self.last_error = exc.message
            log.error("%s", self.last_error)
            self._start_failed = True
            self.state = "failed"
            # Wake calls that were waiting for this (re)start: they fail now with the reason.
            self._ready.set()
            self._ready = trio.Event()
            if task_status is not None:
                task_status.started()
            return False
        assert instance.catalog is not None and instance.conn is not None
        self._set_catalog(instance.catalog)
        self._conn = instance.conn
        self.state = "ready"
        self.last_error = None
        self._start_failed = False
        self._ready.set()
        log.info("%s: ready (%d tools, %d prompts, %d resources)", self.name, len(instance.catalog.tools),
                 len(instance.catalog.prompts), len(instance.catalog.resources))
        if task_status is not None:
            task_status.started()
        await instance.conn.closed.wait()
        # Callers wait for the next instance from now on, not once the old one is torn
        # down (which can take seconds for a container).
        self.last_error = instance.end_reason
        self._conn = None
        self._ready = trio.Event()
        self.state = "stopped"
        await instance.ended.wait()
        return True

    async def connection(self) -> UpstreamPeer:
        """The live connection, waiting (within the caller's deadline) for a (re)start."""
        while True:
            conn = self._conn
            if conn is not None and not conn.closed.is_set():
                return conn
            if self._start_failed:
                # A server that cannot start fails calls at once instead of holding them
                # for the call timeout; one that crashed after running is waited for.
                raise UpstreamGone(self.last_error or f"server {self.name!r} is not running")
            await self._ready.wait()

    cancels_inflight: Final = True  # call() takes the client's request and wakes it when it is cancelled

    async def call(self, method: str, params: Raw | dict[str, Raw] | jsonrpc.UnsetType = jsonrpc.UNSET,
                   *, session: object = None, timeout: float | None = None, origin: Any = None,
                   inflight: InFlight | None = None) -> Raw:
        """Call the server, waiting for it to be up; the whole call obeys ``timeout``. ``inflight``:
        the request this call serves, if it runs in no cancel scope (cancelling it ends the call)."""
        limit = self.call_timeout if timeout is None else timeout
        conn = self._conn
        if conn is not None and not conn.closed.is_set():  # the common case: no wait, one scope less
            return await cancellable_call(inflight, conn, method, params,  # type: ignore[no-any-return]
                                          timeout=limit, origin=origin)
        if inflight is not None:  # waiting for the server to be up: in a scope the request's cancel reaches
            return await inflight.scoped(self._call_when_up, method, params, limit, origin)  # type: ignore[no-any-return]
        return await self._call_when_up(method, params, limit, origin)

    async def _call_when_up(self, method: str, params: Raw | dict[str, Raw] | jsonrpc.UnsetType, limit: float,
                            origin: Any) -> Raw:
        with trio.move_on_after(limit) as scope:
            conn = await self.connection()
            return await conn.call(method, params, timeout=math.inf, origin=origin)
        assert scope.cancelled_caught
        if self._conn is None:
            raise UpstreamGone(self.last_error or f"server {self.name!r} is not running")
        raise UpstreamTimeout(f"server {self.name!r} did not answer {method} within {limit:g}s")

    def _instance_counts(self) -> dict[str, int]:
        if self._conn is not None and not self._conn.closed.is_set():
            return {"ready": 1}
        return {"other": 1} if self.state == "starting" else {}

    def _inflight(self) -> int:
        conn = self._conn
        return conn.in_flight if conn is not None and not conn.closed.is_set() else 0

    def _set_catalog(self, catalog: ServerCatalog) -> None:
        changed = self.catalog != catalog
        self.catalog = catalog
        if changed:
            self._changed()

    def _notification(self, msg: Message, origins: list[Any]) -> None:
        kind = _LIST_CHANGED.get(msg.method) if isinstance(msg.method, str) else None
        if kind is not None:
            self._schedule_refresh(kind)
        else:
            super()._notification(msg, origins)

    def _schedule_refresh(self, kind: str) -> None:
        """One refresh loop per list kind: bursts coalesce, and two refreshes of one list
        never overlap (an older answer landing last would undo a newer one)."""
        self._refresh_dirty.add(kind)
        if kind not in self._refreshing and self._nursery is not None:
            self._refreshing.add(kind)
            self._nursery.start_soon(self._refresh_loop, kind)

    async def _refresh_loop(self, kind: str) -> None:
        try:
            while kind in self._refresh_dirty:
                self._refresh_dirty.discard(kind)
                await self._refresh(kind)
        finally:
            self._refreshing.discard(kind)

    async def _refresh(self, kind: str) -> None:
        conn, catalog = self._conn, self.catalog
        if conn is None or catalog is None:
            return
        try:
            entries = await fetch_list(conn, kind, self.call_timeout)
            templates = await fetch_templates(conn, self.call_timeout) if kind == "resources" else None
        except CallError as exc:
            log.warning("%s: refreshing %s failed: %s", self.name, kind, exc.message)
            return
        if self._conn is not conn or self.catalog is None:
            return  # restarted meanwhile: the new instance fetched its own catalog
        new = ServerCatalog(**vars(self.catalog))  # the current one: another kind's refresh may have landed
        setattr(new, kind, entries)
        if templates is not None:
            new.resource_templates = templates
        self._set_catalog(new)
