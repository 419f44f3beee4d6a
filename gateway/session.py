"""Client sessions: negotiated version, in-flight calls, the server-to-client stream.

Sessions cost one unauthenticated ``initialize``, so the table is bounded and shared
fairly: each session belongs to a peer (the client's address; an IPv6 /64 counts as
one), a peer may hold at most ``max_sessions_per_peer``, and when the table is full
the peer holding the most sessions gives up its least recently used idle one. A flood
of ``initialize`` from one place then only ever ends its own sessions.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from .protocol.errors import CallError, Cancelled, SessionEnded, ShuttingDown
from .protocol.jsonrpc import RequestId

log = logging.getLogger("mcp_gateway.session")

_OUTBOX_SIZE = 256  # server-to-client notifications buffered while no GET stream reads them

CANCELLED = "cancelled"  # the client sent notifications/cancelled
SESSION_ENDED = "session ended"  # DELETE, expiry or eviction
SHUTDOWN = "shutdown"  # still running when the gateway's shutdown grace ended
_STOPPED: dict[str, Callable[[], CallError]] = {
    CANCELLED: Cancelled, SESSION_ENDED: SessionEnded, SHUTDOWN: ShuttingDown}


class Waiting(Protocol):
    """What a request waits on when it runs in no cancel scope: an upstream call's answer."""

    def cancel(self) -> None:
        """Wake the request now, as if cancelled (nothing once the answer is in)."""


class InFlight:
    """One admitted request, and how to cancel it: why it was cancelled (if it was).

    A request that waits only for an upstream's answer (a tools/call, prompts/get or
    resources/read to a server that is up: the hot path) runs in no cancel scope of its own:
    entering and leaving one costs about 4 us, several per cent of a call. :meth:`cancel` then
    wakes the upstream call it waits on (``waiter``), which ends it as a cancellation would.
    Everything else runs in :meth:`cancellable`'s scope, which :meth:`cancel` cancels.
    """

    __slots__ = ("scope", "reason", "waiter")

    def __init__(self) -> None:
        self.scope: trio.CancelScope | None = None  # the scope it runs in, once it entered one
        self.reason: str | None = None
        self.waiter: Waiting | None = None  # the upstream answer it waits for now (no scope)

    def cancel(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        if self.scope is not None:
            self.scope.cancel()
        if self.waiter is not None:
            self.waiter.cancel()

    def cancellable(self) -> trio.CancelScope:
        """A scope for the request's work to run in (cancelled at once if the request already is)."""
        scope = self.scope = trio.CancelScope()
        if self.reason is not None:
            scope.cancel()
        return scope

    def stopped(self) -> CallError:
        """The error a cancelled request ends with: why it was stopped."""
        return _STOPPED.get(self.reason or CANCELLED, Cancelled)()

    async def scoped(self, fn: Callable[..., Awaitable[Any]], *args: Any, **kw: Any) -> Any:
        """``await fn(*args, **kw)`` in :meth:`cancellable`'s scope; the reason's error if it was cancelled."""
        with self.cancellable():
            return await fn(*args, **kw)
        raise self.stopped()  # the scope caught the request's cancellation


async def cancellable_call(inflight: InFlight | None, target: Any, method: str, params: Any, **kw: Any) -> Any:
    """``target.call(method, params, **kw)`` such that cancelling ``inflight`` (the request it
    serves) ends it: through the scope the request runs in, if it has one; else by the target
    itself if it can wake the request (``cancels_inflight``: an upstream connection); else in a
    scope of its own."""
    if inflight is None or inflight.scope is not None:
        return await target.call(method, params, **kw)
    if getattr(target, "cancels_inflight", False):
        return await target.call(method, params, inflight=inflight, **kw)
    return await inflight.scoped(target.call, method, params, **kw)


class SSEStream:
    """One resumable SSE stream of a session: the GET stream (id 0) or one POST's answer.

    Each event gets an id ``<stream>-<seq>``; the last ``keep`` events are kept so that a client
    that lost the connection can resume with ``Last-Event-ID`` (on a GET, as the spec says) and
    get exactly what followed, on the stream it lost. ``changed`` wakes whoever writes the stream.
    """

    __slots__ = ("id", "seq", "kept", "done", "changed", "writers", "ids")

    def __init__(self, stream_id: int, keep: int, *, ids: bool = True) -> None:
        self.id = stream_id
        self.ids = ids  # False: a stream that cannot be resumed (2026-07-28) sends no event ids
        self.seq = 0
        self.kept: deque[tuple[int, bytes]] = deque(maxlen=keep)
        self.done = False  # no event will follow (the POST's answer is in)
        self.changed = trio.Event()
        self.writers = 0  # connections writing it now

    def add(self, data: bytes) -> None:
        """Append one JSON-RPC message as an event (never blocks: the oldest kept one goes)."""
        self.seq += 1
        self.kept.append((self.seq, sse_frame(data, b"%d-%d" % (self.id, self.seq) if self.ids else None)))
        self._wake()

    def finish(self) -> None:
        self.done = True
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def priming(self, retry_ms: int) -> bytes:
        """The first event of a POST's stream: an id and no data, so the client can resume from it."""
        return b"id: %d-0\nretry: %d\ndata: \n\n" % (self.id, retry_ms)

    def since(self, seq: int) -> list[tuple[int, bytes]]:
        """The kept events after ``seq`` (all kept ones if the client fell further behind)."""
        return [(n, event) for n, event in self.kept if n > seq]


def sse_frame(data: bytes, event_id: bytes | None = None) -> bytes:
    """One JSON-RPC message as an SSE ``message`` event.

    A raw CR or LF can only be whitespace between JSON tokens (never inside a string), but SSE
    would read it as a line end and cut the event: they are blanked.
    """
    if b"\n" in data or b"\r" in data:
        data = data.replace(b"\r", b" ").replace(b"\n", b" ")
    head = b"id: " + event_id + b"\nevent: message\ndata: " if event_id is not None else b"event: message\ndata: "
    return head + data + b"\n\n"


def parse_event_id(value: bytes | None) -> tuple[int, int] | None:
    """``Last-Event-ID`` as (stream, seq); None if absent or not one of ours."""
    if value is None:
        return None
    stream, sep, seq = value.partition(b"-")
    if not sep or not stream.isdigit() or not seq.isdigit() or len(value) > 40:
        return None
    return int(stream), int(seq)


_KEEP_EVENTS = 128  # events kept per stream for Last-Event-ID
_KEEP_FINISHED = 16  # finished POST streams kept per session for resumption


class Listener:
    """One ``subscriptions/listen`` stream (MCP 2026-07-28): what it asked for, and its queue.

    The stateless era's replacement for a session's GET stream and resource subscriptions.
    Every notification it gets carries its ``subscriptionId`` (the listen request's id).
    """

    __slots__ = ("id", "wanted", "subscriptions", "outbox", "_send", "closed", "dropped")

    def __init__(self, request_id: RequestId, honoured: dict[str, Any]) -> None:
        self.id = request_id
        self.wanted = honoured
        self.subscriptions: set[str] = set()  # resource URIs it is subscribed to upstream
        self._send, self.outbox = trio.open_memory_channel[bytes](_OUTBOX_SIZE)
        self.closed = False
        self.dropped = 0

    def wants(self, method: str) -> bool:
        return bool(self.wanted.get(_LISTEN_FLAGS.get(method, "")))

    def frame(self, method: str, params: dict[str, Any] | None = None) -> bytes:
        from .protocol.jsonrpc import encoder  # (session.py stays free of protocol imports at load)

        body = dict(params or {})
        body["_meta"] = {"io.modelcontextprotocol/subscriptionId": self.id}
        return sse_frame(encoder.encode({"jsonrpc": "2.0", "method": method, "params": body}))

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Queue one notification; never blocks (a listener that does not read loses some)."""
        if self.closed:
            return
        try:
            self._send.send_nowait(self.frame(method, params))
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self.dropped += 1

    def closing_response(self) -> bytes:
        from .protocol.jsonrpc import encoder

        return sse_frame(encoder.encode({"jsonrpc": "2.0", "id": self.id, "result": {
            "resultType": "complete", "_meta": {"io.modelcontextprotocol/subscriptionId": self.id}}}))

    def close(self) -> None:
        """End the stream (gracefully: the writer sends the closing response)."""
        self.closed = True
        self._send.close()


_LISTEN_FLAGS = {"notifications/tools/list_changed": "toolsListChanged",
                 "notifications/prompts/list_changed": "promptsListChanged",
                 "notifications/resources/list_changed": "resourcesListChanged"}


class Session:
    """One MCP client session. Slim on purpose: an idle session costs a few hundred bytes."""

    __slots__ = ("id", "route", "version", "client_info", "client_capabilities", "last_used",
                 "inflight", "subscriptions", "_outbox_send", "_outbox_recv", "closed", "dropped", "streams",
                 "_lru", "peer", "_peer_lru", "_sse", "_next_stream", "get_owner", "_ended", "log_level",
                 "_client_requests", "draining", "identity")

    def __init__(self, session_id: str, route: Any, version: str, client_info: Any,
                 client_capabilities: Any, lru: OrderedDict[str, Session] | None = None, *,
                 peer: str = "", peer_lru: OrderedDict[str, Session] | None = None, identity: Any = None) -> None:
        self.id = session_id
        self.identity = identity  # who opened it (gateway.auth.Identity): only they may use it
        self.peer = peer
        self._peer_lru = peer_lru
        self.route = route
        self.version = version
        self.client_info = client_info
        self.client_capabilities = client_capabilities
        self.last_used = trio.current_time()
        self.inflight: dict[RequestId, InFlight] = {}
        self.subscriptions: set[str] | None = None
        self._outbox_send: trio.MemorySendChannel[bytes] | None = None
        self._outbox_recv: trio.MemoryReceiveChannel[bytes] | None = None
        self.closed = False
        self.dropped = 0
        self.streams = 0  # open streams (GET, SSE or a WebSocket/stdio connection): busy while > 0
        self._lru = lru  # the manager's sessions, least recently used first
        self._sse: dict[int, SSEStream] | None = None  # resumable streams, made on first use
        self._next_stream = 1
        self.get_owner: trio.CancelScope | None = None  # the GET writing stream 0 (a newer one takes over)
        self._ended: trio.Event | None = None  # set by close(), for a wire that owns a connection
        self.log_level: str | None = None  # what logging/setLevel asked for (None: everything)
        self.draining: trio.Event | None = None  # set when the gateway starts shutting down (connection wires)
        self._client_requests: Any = None  # relay.ClientRequests, made on the first relayed request

    @property
    def busy(self) -> bool:
        return bool(self.inflight) or self.streams > 0

    def touch(self) -> None:
        self.last_used = trio.current_time()
        if self._lru is not None and self.id in self._lru:
            self._lru.move_to_end(self.id)
            if self._peer_lru is not None:
                self._peer_lru.move_to_end(self.id)

    def outbox(self) -> trio.MemoryReceiveChannel[bytes]:
        """The receiving end of the server-to-client stream (created on first GET)."""
        if self._outbox_recv is None:
            self._outbox_send, self._outbox_recv = trio.open_memory_channel[bytes](_OUTBOX_SIZE)
        return self._outbox_recv

    def client_requests(self) -> Any:
        """The requests relayed to this client and waiting for its answers (relay.ClientRequests)."""
        if self._client_requests is None:
            from .relay import ClientRequests

            self._client_requests = ClientRequests()
        return self._client_requests

    def attach(self, send: trio.MemorySendChannel[bytes]) -> trio.Event:
        """Send this session's server-to-client messages to a connection's channel (WebSocket,
        stdio, legacy SSE); the event is set when the session ends."""
        self._outbox_send = send
        self._ended = trio.Event()
        self.draining = trio.Event()
        return self._ended

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

    def sse_stream(self, stream_id: int | None = None) -> SSEStream:
        """Stream ``stream_id`` (0: the GET stream), or a new POST stream when None."""
        if self._sse is None:
            self._sse = {}
        if stream_id is None:
            stream_id, self._next_stream = self._next_stream, self._next_stream + 1
            finished = [k for k, v in self._sse.items() if k and v.done]
            for old in finished[:-_KEEP_FINISHED]:  # the oldest finished ones beyond the last few
                del self._sse[old]
        stream = self._sse.get(stream_id)
        if stream is None:
            stream = self._sse[stream_id] = SSEStream(stream_id, _KEEP_EVENTS)
        return stream

    def find_sse_stream(self, stream_id: int) -> SSEStream | None:
        return None if self._sse is None else self._sse.get(stream_id)

    def close_stream(self) -> None:
        """End the GET stream (if any) but keep the session: used while draining."""
        if self.draining is not None:
            self.draining.set()  # a connection wire: it answers what runs, then closes its connection
        elif self._outbox_send is not None:
            self._outbox_send.close()

    def cancel_all(self, reason: str) -> None:
        """Cancel every request in flight, saying why (their answers depend on it)."""
        for call in list(self.inflight.values()):
            call.cancel(reason)

    def close(self) -> None:
        """End the session: cancel its calls and its GET stream."""
        self.closed = True
        self.cancel_all(SESSION_ENDED)
        self.inflight.clear()
        if self._client_requests is not None:
            self._client_requests.fail_all()
        for stream in (self._sse or {}).values():
            stream.finish()
        if self._ended is not None:
            self._ended.set()  # the wire that owns the connection closes it
        elif self._outbox_send is not None:
            self._outbox_send.close()


def peer_key(address: str) -> str:
    """Who a session is counted against: the IPv4 address, or the /64 of an IPv6 one (one
    host usually holds a whole /64, so its addresses are not separate peers)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address or "unknown"
    if ip.version == 6:
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return str(mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class SessionLimit(Exception):
    """No session can be created now (the message names the limit)."""


@dataclass(frozen=True, slots=True)
class SessionStatistics:
    sessions: int
    peers: int
    created: int
    expired: int
    evicted: int
    refused: int


class SessionManager:
    """All live sessions; expires idle ones. Owned by the gateway's nursery."""

    def __init__(self, *, max_sessions: int, idle_timeout: float, max_per_peer: int | None = None,
                 on_close: Callable[[Session], None] | None = None) -> None:
        self.max_sessions = max_sessions
        self.max_per_peer = max_per_peer or max_sessions
        self.idle_timeout = idle_timeout
        self._sessions: OrderedDict[str, Session] = OrderedDict()  # least recently used first
        self._by_peer: dict[str, OrderedDict[str, Session]] = {}  # the same, per peer
        self._on_close = on_close
        self.created_total = 0
        self.expired_total = 0
        self.evicted_total = 0
        self.refused_total = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._sessions.values()))

    def statistics(self) -> SessionStatistics:
        return SessionStatistics(sessions=len(self._sessions), peers=len(self._by_peer),
                                 created=self.created_total, expired=self.expired_total,
                                 evicted=self.evicted_total, refused=self.refused_total)

    def create(self, route: Any, version: str, client_info: Any, client_capabilities: Any,
               peer: str = "", identity: Any = None) -> Session:
        """A new session for ``peer``, making room fairly when needed (see the module docstring).

        Raises :class:`SessionLimit` only if no room can be made: every session that could give
        way is busy (a call in flight or a stream open).
        """
        key = peer_key(peer)
        own = self._by_peer.get(key)
        if own is not None and len(own) >= self.max_per_peer and not self._evict_from(key, "max_sessions_per_peer"):
            self.refused_total += 1
            raise SessionLimit(f"this client address holds limits.max_sessions_per_peer ({self.max_per_peer}) "
                               "sessions and every one is busy")
        if len(self._sessions) >= self.max_sessions and not self._evict_fairly():
            self.refused_total += 1
            raise SessionLimit(f"the gateway holds limits.max_sessions ({self.max_sessions}) sessions "
                               "and every one is busy")
        session_id = secrets.token_urlsafe(24)  # 192 bits: unguessable, visible ASCII only
        lru = self._by_peer.get(key)
        if lru is None:
            lru = self._by_peer[key] = OrderedDict()
        session = Session(session_id, route, version, client_info, client_capabilities, self._sessions,
                          peer=key, peer_lru=lru, identity=identity)
        self._sessions[session_id] = session
        lru[session_id] = session
        self.created_total += 1
        return session

    def _evict_fairly(self) -> bool:
        """End the least recently used idle session of the peer holding the most sessions.

        Peers are tried from the largest down, so a peer whose sessions are all busy does not
        shield the others. Linear in the number of peers, and only run when the table is full.
        """
        if not self._by_peer:
            return False
        largest = max(self._by_peer, key=lambda k: len(self._by_peer[k]))
        if self._evict_from(largest, "max_sessions"):
            return True
        for key in sorted(self._by_peer, key=lambda k: len(self._by_peer[k]), reverse=True):
            if key != largest and self._evict_from(key, "max_sessions"):
                return True
        return False

    def _evict_from(self, key: str, limit: str) -> bool:
        lru = self._by_peer.get(key)
        # Least recently used first, so the first idle one is the victim: usually found at once.
        victim = next((s for s in (lru or {}).values() if not s.busy), None)
        if victim is None:
            return False
        log.warning("at %s: ending the least recently used idle session %s… of %s (%d sessions)",
                    limit, victim.id[:8], key, len(lru or ()))
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
            lru = self._by_peer.get(session.peer)
            if lru is not None:
                lru.pop(session.id, None)
                if not lru:
                    del self._by_peer[session.peer]
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
