"""Client sessions: negotiated version, in-flight calls, the server-to-client stream."""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import trio

from .protocol.jsonrpc import RequestId

log = logging.getLogger("mcp_gateway.session")

_OUTBOX_SIZE = 256  # server-to-client notifications buffered while no GET stream reads them


class Session:
    """One MCP client session. Slim on purpose: an idle session costs a few hundred bytes."""

    __slots__ = ("id", "route", "version", "client_info", "client_capabilities", "last_used",
                 "inflight", "subscriptions", "_outbox_send", "_outbox_recv", "closed", "dropped", "streams",
                 "_lru")

    def __init__(self, session_id: str, route: Any, version: str, client_info: Any,
                 client_capabilities: Any, lru: OrderedDict[str, Session] | None = None) -> None:
        self.id = session_id
        self.route = route
        self.version = version
        self.client_info = client_info
        self.client_capabilities = client_capabilities
        self.last_used = trio.current_time()
        self.inflight: dict[RequestId, trio.CancelScope] = {}
        self.subscriptions: set[str] | None = None
        self._outbox_send: trio.MemorySendChannel[bytes] | None = None
        self._outbox_recv: trio.MemoryReceiveChannel[bytes] | None = None
        self.closed = False
        self.dropped = 0
        self.streams = 0  # open GET streams
        self._lru = lru  # the manager's sessions, least recently used first

    @property
    def busy(self) -> bool:
        return bool(self.inflight) or self.streams > 0

    def touch(self) -> None:
        self.last_used = trio.current_time()
        if self._lru is not None and self.id in self._lru:
            self._lru.move_to_end(self.id)

    def outbox(self) -> trio.MemoryReceiveChannel[bytes]:
        """The receiving end of the server-to-client stream (created on first GET)."""
        if self._outbox_recv is None:
            self._outbox_send, self._outbox_recv = trio.open_memory_channel[bytes](_OUTBOX_SIZE)
        return self._outbox_recv

    def push(self, message: bytes) -> None:
        """Queue an encoded notification for the GET stream; never blocks.

        With no stream open, or a full buffer (a client that does not read), the
        message is dropped and counted: one slow client must not hold the gateway.
        """
        if self._outbox_send is None or self.closed:
            self.dropped += 1
            return
        try:
            self._outbox_send.send_nowait(message)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self.dropped += 1

    def close_stream(self) -> None:
        """End the GET stream (if any) but keep the session: used while draining."""
        if self._outbox_send is not None:
            self._outbox_send.close()

    def close(self) -> None:
        """End the session: cancel its calls and its GET stream."""
        self.closed = True
        for scope in self.inflight.values():
            scope.cancel()
        self.inflight.clear()
        if self._outbox_send is not None:
            self._outbox_send.close()


class SessionManager:
    """All live sessions; expires idle ones. Owned by the gateway's nursery."""

    def __init__(self, *, max_sessions: int, idle_timeout: float,
                 on_close: Callable[[Session], None] | None = None) -> None:
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self._sessions: OrderedDict[str, Session] = OrderedDict()  # least recently used first
        self._on_close = on_close
        self.created_total = 0
        self.expired_total = 0
        self.evicted_total = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._sessions.values()))

    def create(self, route: Any, version: str, client_info: Any, client_capabilities: Any) -> Session | None:
        """A new session; at ``max_sessions`` the least recently used idle one makes room.

        Sessions cost one unauthenticated ``initialize``: without eviction, anyone who can
        reach the endpoint could fill the table and lock everyone out until sessions expire.
        None only if every session is busy (a call in flight or a stream open).
        """
        if len(self._sessions) >= self.max_sessions and not self._evict_one():
            return None
        session_id = secrets.token_urlsafe(24)  # 192 bits: unguessable, visible ASCII only
        session = Session(session_id, route, version, client_info, client_capabilities, self._sessions)
        self._sessions[session_id] = session
        self.created_total += 1
        return session

    def _evict_one(self) -> bool:
        # The order is least recently used first, so the first idle one is the victim:
        # usually found at once (no scan of every session per initialize at the limit).
        victim = next((s for s in self._sessions.values() if not s.busy), None)
        if victim is None:
            return False
        log.warning("at max_sessions (%d): ending the least recently used idle session %s…",
                    self.max_sessions, victim.id[:8])
        self.evicted_total += 1
        self.end(victim)
        return True

    def get(self, session_id: bytes | str | None) -> Session | None:
        if session_id is None:
            return None
        key = session_id.decode("ascii", "replace") if isinstance(session_id, bytes) else session_id
        return self._sessions.get(key)

    def end(self, session: Session) -> None:
        if self._sessions.pop(session.id, None) is not None:
            session.close()
            if self._on_close is not None:
                self._on_close(session)

    def close_streams(self) -> None:
        for session in self._sessions.values():
            session.close_stream()

    def end_all(self) -> None:
        for session in list(self._sessions.values()):
            self.end(session)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Expire sessions idle longer than ``idle_timeout`` (with no call in flight)."""
        task_status.started()
        interval = max(0.05, min(60.0, self.idle_timeout / 4))
        while True:
            await trio.sleep(interval)
            cutoff = trio.current_time() - self.idle_timeout
            for session in list(self._sessions.values()):
                if session.last_used < cutoff and not session.busy:
                    log.info("session %s… expired after %.0fs idle", session.id[:8], self.idle_timeout)
                    self.expired_total += 1
                    self.end(session)
