"""One client on a connection-oriented wire: legacy HTTP+SSE, WebSocket, stdio.

Those wires carry a stream of JSON-RPC messages each way, with no per-message HTTP status.
:class:`WireSession` is the part they share: given the messages the client sends, it opens
the MCP session at ``initialize`` (the connection is the session: no ``Mcp-Session-Id``), runs
every request through the pipeline in a task of its own (so a slow call never holds the
others; ``max_inflight`` bounds them), and queues every answer and notification on one
bounded outbound channel that the wire drains in order. Answers wait for room there (a client
that does not read slows only itself); notifications are dropped when it is full, and counted.

Requests that carry the 2026-07-28 envelope are served statelessly, as on HTTP (without the
header checks: these wires have no headers). The wire owns the connection; the session ends
when it does.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import trio
from msgspec import UNSET, Raw, UnsetType

from .. import logsafe
from ..dispatch import CallContext, Dispatcher
from ..protocol import jsonrpc, mcp, modern
from ..protocol.errors import INVALID_REQUEST, METHOD_NOT_FOUND, ProtocolError, UpstreamGone
from ..protocol.jsonrpc import Message
from ..session import Session, SessionLimit, SessionManager

if TYPE_CHECKING:
    from ..router import Route

log = logging.getLogger("mcp_gateway.wire")

OUTBOX: Final = 256  # messages queued for a client that reads slower than it asks


async def acquire(lock: trio.Lock) -> None:
    """``await lock.acquire()``, without its scheduler round when the lock is free (a wire's writer,
    the usual case: nobody else is writing)."""
    try:
        lock.acquire_nowait()
    except trio.WouldBlock:
        await lock.acquire()


class _Back:
    """A request's back-channel on a connection wire: the connection itself."""

    __slots__ = ("_wire",)

    def __init__(self, wire: WireSession) -> None:
        self._wire = wire

    def send(self, data: bytes) -> None:
        self._wire.push(data)

    def open(self) -> None:
        pass  # the connection always streams

    async def request(self, method: str, params: Raw | UnsetType, *, timeout: float) -> Raw:
        session = self._wire.session
        if session is None:
            raise UpstreamGone("the client's session has ended")
        requests = session.client_requests()
        request_id, data = requests.open(method, params)
        await self._wire.deliver(data)
        return await requests.wait(request_id, method, timeout)  # type: ignore[no-any-return]


class WireSession:
    """The MCP side of one connection; see the module docstring."""

    def __init__(self, route: Route, dispatcher: Dispatcher, sessions: SessionManager, *, wire: str,
                 peer: str = "", drain_on_eof: float = 0.0, identity: Any = None) -> None:
        self.route = route
        self.identity = identity  # who connected (gateway.auth.Identity): the connection's every call is theirs
        self.dispatcher = dispatcher
        self.sessions = sessions
        self.wire = wire
        self.peer = peer
        self.session: Session | None = None
        self._send, self.outbox = trio.open_memory_channel[bytes](OUTBOX)
        self._back = _Back(self)
        self._nursery: trio.Nursery | None = None
        self.dropped = 0
        self.closed = trio.Event()  # the session ended from our side (evicted, DELETE-less expiry)
        # stdio: when the client closes its side, calls it already sent may still be answered
        # (a pipe read to its end); on a socket nobody is left to read them.
        self._drain_on_eof = drain_on_eof
        self._running = 0
        self._idle = trio.Event()
        self.draining = False  # the gateway is shutting down: no new calls, close once the running ones end
        self._stopped = trio.Event()
        # The wire's write-through (set by the wire): writes one message now, False if it cannot
        # (its writer is mid-write); see deliver().
        self.direct: Callable[[bytes], Awaitable[bool]] | None = None

    # -- what the wire calls ----------------------------------------------------------------------
    async def run(self, receive: Callable[[], Awaitable[bytes | None]] | None, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until ``receive`` returns None (the client is gone) or the session is ended.

        ``receive`` None: the wire's reader calls :meth:`handle` itself and :meth:`stop` when the
        client is gone (no hand-off between tasks per message). The wire drains :attr:`outbox`
        meanwhile (its writer). Requests still running when the client leaves are cancelled,
        upstream too.
        """
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                if receive is None:
                    await self._stopped.wait()
                else:
                    while (data := await receive()) is not None:
                        await self.handle(data)
                if self._drain_on_eof > 0 and self._running:
                    with trio.move_on_after(self._drain_on_eof):
                        while self._running:
                            self._idle = trio.Event()
                            await self._idle.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            self._send.close()
            if self.session is not None:
                self.session.streams -= 1
                self.sessions.end(self.session)

    @property
    def running(self) -> bool:
        """Whether :meth:`handle` takes messages (run() is on and the session not over)."""
        return self._nursery is not None and not self._stopped.is_set()

    def nudge(self) -> None:
        """Queue an empty message (the wire's own keepalive marker) if the outbox has room."""
        try:
            self._send.send_nowait(b"")
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def stop(self) -> None:
        """The client is gone (a wire that calls :meth:`handle` itself): end :meth:`run`."""
        self._stopped.set()

    async def handle(self, data: bytes | bytearray) -> None:
        """One message (or a batch) from the client (dropped once the session is over)."""
        if self._nursery is None:
            return
        body = bytes(data)
        try:
            jsonrpc.check_utf8(body)
            if jsonrpc.is_batch(body):
                await self._batch(body)
                return
            msg = jsonrpc.decode_message(body)
        except ProtocolError as exc:
            await self.deliver(jsonrpc.encode_error(exc.id, exc.code, exc.message))
            return
        if msg.method == "initialize" and msg.is_request:
            await self.deliver(self._initialize(msg))  # inline: what follows may depend on it
        elif msg.is_request:
            self._start(self._request, msg)
        elif msg.is_notification:
            if self.session is not None:
                self.dispatcher.notification(self._context(), msg)
        elif self.session is not None:
            self.dispatcher.response(self._context(), msg)  # an answer to a request relayed from an upstream

    def push(self, data: bytes) -> None:
        """Queue a notification; never blocks (dropped and counted when the client lags)."""
        try:
            self._send.send_nowait(data)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self.dropped += 1

    async def deliver(self, data: bytes) -> None:
        """Send an answer: written at once when the outbox is empty and its writer waits for it (the
        order is kept, and the writer task is not woken per message), else queued, waiting for room
        (only this client's own requests wait)."""
        direct = self.direct
        if direct is not None:
            queue = self._send.statistics()
            if not queue.current_buffer_used and queue.tasks_waiting_receive and await direct(data):
                return
        try:
            await self._send.send(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the connection is gone: nobody to answer

    # -- inside --------------------------------------------------------------------------------
    def _start(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        assert self._nursery is not None
        self._running += 1
        # A name given: trio would otherwise format one from the function for every request.
        self._nursery.start_soon(self._tracked, fn, *args, name="wire request")

    async def _tracked(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        try:
            await fn(*args)
        finally:
            self._running -= 1
            if not self._running:
                self._idle.set()

    def _context(self, modern_request: modern.ModernRequest | None = None) -> CallContext:
        session = self.session if modern_request is None else None
        version = modern_request.version if modern_request is not None else (
            session.version if session is not None else mcp.LATEST_HANDSHAKE)
        return CallContext(self.route, session, back=self._back, version=version, peer=self.peer,
                           modern=modern_request, identity=self.identity)

    async def _request(self, msg: Message) -> None:
        method = msg.method
        if self.draining:
            await self.deliver(jsonrpc.encode_error(msg.id, jsonrpc.GATEWAY_SHUTTING_DOWN,  # type: ignore[arg-type]
                                                    "The gateway is shutting down: it takes no new calls"))
            return
        if self.session is not None:
            self.session.touch()
        if modern.has_envelope(msg):
            await self._modern(msg)
            return
        if self.session is None and method != "ping":
            await self.deliver(jsonrpc.encode_error(
                msg.id, INVALID_REQUEST, "Invalid request: send initialize first"))  # type: ignore[arg-type]
            return
        if self.session is None:
            await self.deliver(jsonrpc.encode(jsonrpc.result(msg.id, jsonrpc.RAW_EMPTY_OBJECT)))  # type: ignore[arg-type]
            return
        _, answer = await self.dispatcher.request(self._context(), msg)
        await self.deliver(answer)

    def _initialize(self, msg: Message) -> bytes:
        if self.session is not None:
            return jsonrpc.encode_error(msg.id, INVALID_REQUEST,  # type: ignore[arg-type]
                                        "Invalid request: this connection is already initialized")
        try:
            params = jsonrpc.decode_params(msg) if msg.params is not UNSET else {}
            version = mcp.negotiate_version(jsonrpc.decode_any(params.get("protocolVersion")))
            session = self.sessions.create(self.route, version, jsonrpc.decode_any(params.get("clientInfo")),
                                           jsonrpc.decode_any(params.get("capabilities")), self.peer,
                                           identity=self.identity)
        except ProtocolError as exc:
            return jsonrpc.encode_error(msg.id, exc.code, exc.message)  # type: ignore[arg-type]
        except SessionLimit as exc:
            return jsonrpc.encode_error(msg.id, jsonrpc.INTERNAL_ERROR,  # type: ignore[arg-type]
                                        f"Too many sessions: {exc}")
        ended = session.attach(self._send)  # the gateway's notifications for this session go here
        session.streams += 1  # connected: busy, like an open stream (connections are bounded per address)
        self.session = session
        self.route.sessions.add(session)
        assert self._nursery is not None
        self._nursery.start_soon(self._watch_session, session, ended)
        self._nursery.start_soon(self._watch_drain, session)
        client = session.client_info.get("name") if isinstance(session.client_info, dict) else None
        log.info("%s session %s… initialized (%s, client %s)", self.wire, session.id[:8], version,
                 logsafe.clean(str(client), 100))
        return jsonrpc.encode(jsonrpc.result(msg.id, Raw(jsonrpc.encoder.encode(  # type: ignore[arg-type]
            self.route.initialize_result(version)))))

    async def _modern(self, msg: Message) -> None:
        try:
            classified = modern.classify(msg, None)
        except ProtocolError as exc:
            await self.deliver(jsonrpc.encode_error(exc.id, exc.code, exc.message, exc.data))
            return
        if msg.method not in modern.METHODS or msg.method == "subscriptions/listen":
            await self.deliver(jsonrpc.encode_error(msg.id, METHOD_NOT_FOUND,  # type: ignore[arg-type]
                                                    "Method not found", msg.method))
            return
        if msg.method == "server/discover":
            result = modern.discover_result(self.route.catalog.capabilities, self.route.server_info,
                                            self.route.instructions)
            await self.deliver(jsonrpc.encode(jsonrpc.result(msg.id, Raw(jsonrpc.encoder.encode(result)))))  # type: ignore[arg-type]
            return
        _, answer = await self.dispatcher.request(self._context(classified), msg)
        await self.deliver(answer)

    async def _batch(self, body: bytes) -> None:
        if self.session is None or not mcp.supports_batches(self.session.version):
            version = self.session.version if self.session is not None else mcp.LATEST_HANDSHAKE
            await self.deliver(jsonrpc.encode_error(
                None, INVALID_REQUEST, f"Invalid request: JSON-RPC batches are not supported in protocol version "
                                       f"{version}"))
            return
        items = self.dispatcher.parse_batch(body)

        async def run() -> None:
            try:
                answers = await self.dispatcher.batch(self._context(), items)
            except ProtocolError as exc:
                await self.deliver(jsonrpc.encode_error(None, exc.code, exc.message))
                return
            if answers:
                await self.deliver(b"[" + b",".join(answers) + b"]")

        self._start(run)

    async def _watch_drain(self, session: Session) -> None:
        """Shutting down: new calls are refused, and the connection closes once the calls still
        running are answered (within the grace; the gateway answers the rest -32004)."""
        assert session.draining is not None
        await session.draining.wait()
        self.draining = True
        while self._running:
            self._idle = trio.Event()
            await self._idle.wait()
        self._send.close()  # the wire's writer sends what is queued, then ends its connection...
        await trio.sleep(1)
        if self._nursery is not None:  # ... or, if it does not, the session ends it now
            self._nursery.cancel_scope.cancel()

    async def _watch_session(self, session: Session, ended: trio.Event) -> None:
        """End the connection when the gateway ends the session (eviction, expiry, shutdown)."""
        await ended.wait()
        log.info("%s session %s… ended by the gateway; closing the connection", self.wire, session.id[:8])
        self.closed.set()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
