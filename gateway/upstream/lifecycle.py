"""Per-session and per-call server lifecycles, with a pool of warm instances.

``lifecycle: session`` gives every client session its own instance (started on the
session's first call, stopped when the session ends or after ``idle_timeout``
unused); ``lifecycle: call`` runs each call on a fresh instance that is stopped
afterwards. ``pool: N`` keeps N instances started and initialized so neither waits
for a cold start; the pool refills in the background. The catalog comes from one
instance started at gateway start.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from msgspec import Raw

from ..protocol import jsonrpc
from ..protocol.errors import SessionEnded
from .backend import BackendBase
from .instance import Instance, StartError
from .peer import Connector

log = logging.getLogger("mcp_gateway.upstream")


class PooledBackend(BackendBase):
    """Common part of the session and call lifecycles: warm pool, starts, idle reaping."""

    lifecycle = "pool"

    def __init__(self, name: str, connector: Connector, *, pool: int, idle_timeout: float, start_timeout: float,
                 call_timeout: float, max_instances: int = 64, **kwargs: Any) -> None:
        super().__init__(name, connector, start_timeout=start_timeout, call_timeout=call_timeout, **kwargs)
        self.pool_size = pool
        self.idle_timeout = idle_timeout
        self.max_instances = max(max_instances, pool)
        self.started_total = 0
        self.warm: list[Instance] = []
        self._slots = trio.Semaphore(self.max_instances)  # bounds instances, warm ones included
        self._refill_wakeup = trio.Event()
        self._available = trio.Event()  # set and replaced when a slot frees or a warm instance arrives
        self._active = 0  # calls in flight

    @property
    def instances(self) -> int:
        """Instances holding a slot: starting, warm, serving or still stopping."""
        return self.max_instances - self._slots.value

    def _instance_counts(self) -> dict[str, int]:
        warm = sum(1 for i in self.warm if i.alive)
        ready = self._serving()
        return {"ready": ready, "warm": warm, "other": max(0, self.instances - warm - ready)}

    def _serving(self) -> int:
        return self._active

    def _pool_available(self) -> int:
        return sum(1 for i in self.warm if i.alive)

    def _inflight(self) -> int:
        return self._active

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                await self._start_warm()  # the catalog instance is the first warm one
            except StartError:
                self.state = "failed"
            task_status.started()
            nursery.start_soon(self._refill_loop)
            await self._reap_loop()

    async def _start_warm(self) -> None:
        """Start one instance for the pool (or for the catalog), only if a slot is free now:
        the pool never queues for slots in front of callers."""
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            return
        instance = await self._start_holding_slot()
        if self.pool_size > 0:
            self.warm.append(instance)
            self._signal_available()
        else:
            instance.stop()

    async def _refill_loop(self) -> None:
        """Keep ``pool_size`` warm instances, and retry the catalog until one start succeeds
        (backing off while starts fail)."""
        delay = 0.5
        while True:
            # A fresh event before looking: an instance taken or a slot freed while we refill
            # sets it, and the loop goes round again at once instead of at the next 5 s check.
            wakeup = self._refill_wakeup = trio.Event()
            self.warm = [i for i in self.warm if i.alive]
            missing = max(self.pool_size - len(self.warm), 1 if self.catalog is None else 0)
            missing = min(missing, self._slots.value)  # never more than the free slots
            if missing:
                failures = 0

                async def one() -> None:
                    nonlocal failures
                    try:
                        await self._start_warm()
                    except StartError:
                        failures += 1

                async with trio.open_nursery() as nursery:  # start them side by side
                    for _ in range(missing):
                        nursery.start_soon(one)
                if failures:
                    await trio.sleep(delay)
                    delay = min(delay * 2, 30.0)
                    continue
                delay = 0.5
                continue
            with trio.move_on_after(5):  # also notices warm instances that died
                await wakeup.wait()

    async def _run_instance(self, instance: Instance, *,
                            task_status: trio.TaskStatus[Instance] = trio.TASK_STATUS_IGNORED) -> None:
        """Run an instance whose slot the caller acquired; the slot is freed when it ends."""
        try:
            await instance.run(task_status=task_status)
        finally:
            self._slots.release()
            self._refill_wakeup.set()
            self._signal_available()

    def _signal_available(self) -> None:
        """Wake every caller waiting for a slot or a warm instance."""
        self._available.set()
        self._available = trio.Event()

    async def _start_holding_slot(self, capabilities: dict[str, Any] | None = None) -> Instance:
        """Start one instance in an acquired slot (fetching the catalog if there is none yet),
        offering ``capabilities`` (default: the configured ones).

        Its own ``start_timeout`` bounds the start. Raises StartError.
        """
        assert self._nursery is not None
        needs_catalog = self.catalog is None
        instance = self.new_instance(with_catalog=needs_catalog, capabilities=capabilities)
        try:
            await self._nursery.start(self._run_instance, instance)
        except StartError as exc:  # (the task has ended, and released the slot, by now)
            self.last_error = exc.message
            log.error("%s", exc.message)
            raise
        self.started_total += 1
        self.state = "ready"
        if needs_catalog and self.catalog is None and instance.catalog is not None:
            self.catalog = instance.catalog
            self._changed()  # the route aggregates now include this server
        return instance

    async def acquire(self, session: Any = None) -> Instance:
        """A ready instance for a call of ``session``: a warm one if there is one, else a cold
        start in a free slot.

        Without a pool, every instance starts for its client: it is offered what ``offer_for`` says
        for the session (never what that client cannot answer). With one, instances start before
        their client and offer the configured capabilities, as a shared server does (the same for
        every call, pool empty or not). Waiting for a slot is bounded by ``call_timeout``; a warm
        instance that appears meanwhile is taken instead.
        """
        offer = None
        if self.offer_for is not None and session is not None and self.pool_size == 0:
            offer = self.offer_for(session)
        have_slot = False
        with trio.move_on_after(self.call_timeout):
            while not have_slot:
                while self.warm:
                    instance = self.warm.pop(0)
                    self._refill_wakeup.set()
                    if instance.alive:
                        return instance
                try:
                    self._slots.acquire_nowait()
                    have_slot = True
                except trio.WouldBlock:
                    log.warning("%s: all %d instances busy; waiting for one", self.name, self.max_instances)
                    await self._slot_or_warm()
        if not have_slot:
            self.last_error = f"server {self.name!r} is at its limit of {self.max_instances} instances"
            raise StartError(self.last_error)
        return await self._start_holding_slot(offer)  # bounded by start_timeout, not call_timeout

    async def _slot_or_warm(self) -> None:
        """Wait until a slot is freed or a warm instance is added (either may serve us)."""
        if self._slots.value == 0 and not self.warm:
            await self._available.wait()

    async def _reap_loop(self) -> None:
        interval = max(0.05, min(10.0, self.idle_timeout / 4))
        while True:
            await trio.sleep(interval)
            self.reap_idle(trio.current_time() - self.idle_timeout)

    def reap_idle(self, cutoff: float) -> None:
        """Stop instances unused since ``cutoff`` (the warm pool is kept)."""

    async def _call_on(self, instance: Instance, method: str, params: Raw | dict[str, Raw] | jsonrpc.UnsetType,
                       timeout: float | None, origin: Any = None) -> Raw:
        assert instance.conn is not None
        instance.last_used = trio.current_time()
        limit = self.call_timeout if timeout is None else timeout
        self._active += 1
        try:
            return await instance.conn.call(method, params, timeout=limit, origin=origin)
        finally:
            self._active -= 1
            instance.last_used = trio.current_time()


class SessionBackend(PooledBackend):
    """``lifecycle: session``: one instance per client session."""

    lifecycle = "session"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.by_session: dict[str, Instance] = {}
        self._starting: dict[str, trio.Lock] = {}

    async def call(self, method: str, params: Raw | dict[str, Raw] | jsonrpc.UnsetType = jsonrpc.UNSET, *,
                   session: Any = None, timeout: float | None = None, origin: Any = None) -> Raw:
        key = session.id if session is not None else ""
        lock = self._starting.setdefault(key, trio.Lock())
        async with lock:  # two first calls of one session must not start two instances
            instance = self.by_session.get(key)
            if instance is None or not instance.alive:
                if instance is not None:
                    self.restarts += 1
                instance = await self.acquire(session)
                if session is not None and getattr(session, "closed", False):
                    instance.stop()
                    raise SessionEnded()
                self.by_session[key] = instance
        return await self._call_on(instance, method, params, timeout, origin)

    def _serving(self) -> int:
        return sum(1 for i in self.by_session.values() if i.alive)

    def session_ended(self, session: Any) -> None:
        self._starting.pop(session.id, None)
        instance = self.by_session.pop(session.id, None)
        if instance is not None:
            instance.stop()

    def reap_idle(self, cutoff: float) -> None:
        for key, instance in list(self.by_session.items()):
            if not instance.alive or (instance.last_used < cutoff and not instance.conn.in_flight):  # type: ignore[union-attr]
                log.info("%s: stopping the instance of an idle session", self.name)
                instance.stop()
                del self.by_session[key]


class CallBackend(PooledBackend):
    """``lifecycle: call``: a fresh instance for every call, stopped afterwards."""

    lifecycle = "call"

    async def call(self, method: str, params: Raw | dict[str, Raw] | jsonrpc.UnsetType = jsonrpc.UNSET, *,
                   session: Any = None, timeout: float | None = None, origin: Any = None) -> Raw:
        instance = await self.acquire(session)
        try:
            return await self._call_on(instance, method, params, timeout, origin)
        finally:
            instance.stop()
