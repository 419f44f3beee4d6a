"""MCP over WebSocket at ``/ws`` and ``/<route>/ws``: subprotocol ``mcp``, one JSON-RPC message
per text frame.

MCP defines no WebSocket transport; this is the common convention (the SDKs' former WebSocket
client spoke it). The upgrade arrives as an HTTP request on the data-plane server, after the mount
table's Origin/Host checks; :func:`check_upgrade` answers a request that is not a valid upgrade
with a 4xx that says what is missing. wsproto writes the 101, the connection is taken over from
the HTTP server (:meth:`Responder.take_over`), and the WebSocket session runs inside the handler call: the
HTTP connection ends (and its slot is released) when the socket closes.

Each socket is a :class:`WireSession` (the connection is the MCP session, from ``initialize``
on) served by a reader (frames -> whole text messages, each handed to
:meth:`WireSession.handle` in the reader's own task; control frames), a writer (the wire's outbox ->
one text frame per message) and a keepalive; each call runs in a task of the wire. A message's
frame is split, unmasked and framed back by :mod:`gateway.transports.ws_frames`; wsproto handles
the rest. Nothing is buffered without a bound: the reader hands the wire one message at a time and
stops reading while too many answers wait for room in the outbox (a client that does not read is
not read from either), and a message is refused with 1009 as soon as its frame header says it is
larger than ``max_message`` (a fragmented one as soon as it grows past it), not after it arrived.

Close codes (always with a reason):

====  =================================================================================
1000  never sent by us unprompted; the client's own close is echoed with its code
1001  the gateway is shutting down (:meth:`WebSocketTransport.close_all`)
1002  a WebSocket protocol error (wsproto's verdict)
1003  a binary frame: MCP messages are JSON text
1007  a text message that is not UTF-8
1008  the gateway ended the session (evicted for a newer one, or expired): the client
      must open a new session; a policy decision of the gateway, so not 1000 ("done")
1009  a message larger than ``limits.max_message``
1011  keepalive timeout (no answer to a Ping within ``ping_interval``; the precedent of the
      ``websockets`` library) or an error of ours; also recorded (no frame can get through)
      for a client that read nothing for 2 x ``ping_interval``
====  =================================================================================

At shutdown a socket stops taking new calls (they are answered -32004 at once) and closes with
1001 when the calls it has in flight are answered: within the grace period, or with the
gateway's -32004 "shutting down" answer when the grace runs out.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import h11
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Request as UpgradeRequest,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from .. import logsafe
from ..dispatch import Dispatcher
from ..fdio import WriteTimeout, receive_some, send_within
from ..http.server import Handler, Headers, Request, Responder
from ..protocol import jsonrpc
from ..protocol.errors import GATEWAY_SHUTTING_DOWN, ProtocolError
from ..session import SessionManager
from .wire import WireSession, acquire
from .ws_frames import ClientFrames, Raw as RawFrame, Refused, Text, text_frame

if TYPE_CHECKING:
    from ..router import Route

log = logging.getLogger("mcp_gateway.websocket")

SUBPROTOCOL: Final = "mcp"
GOING_AWAY: Final = 1001
PROTOCOL_ERROR: Final = 1002
UNSUPPORTED_DATA: Final = 1003
ABNORMAL: Final = 1006  # never sent: recorded when the peer vanished without a Close frame
INVALID_DATA: Final = 1007
POLICY: Final = 1008
TOO_BIG: Final = 1009
INTERNAL_ERROR: Final = 1011

_RECEIVE: Final = 65536  # bytes per read: also how far past max_message a message can get
_CLOSE_TIMEOUT: Final = 2.0  # seconds the closing handshake may take before the TCP connection goes
_WRITE_TIMEOUT: Final = 60.0  # a frame not written in this long (keepalive off): the client reads nothing
_PLAIN: Final[Headers] = [(b"content-type", b"text/plain; charset=utf-8")]
_OPEN_STATES: Final = (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING)


@dataclass(frozen=True, slots=True)
class WebSocketStatistics:
    open: int  # sockets open now
    accepted: int  # upgrades accepted since start
    refused: int  # upgrade requests answered with a 4xx/5xx
    closes: Mapping[int, int]  # close code -> sockets that ended with it (1006: the peer vanished)


def _tokens(value: bytes | None, *, lower: bool = True) -> list[str]:
    """The comma-separated tokens of a header value."""
    if value is None:
        return []
    text = value.decode("latin-1")
    return [t.strip().lower() if lower else t.strip() for t in text.split(",") if t.strip()]


def check_upgrade(request: Request) -> tuple[int, Headers, str] | None:
    """Why ``request`` is not a WebSocket upgrade we serve, as (status, headers, text); None if it is."""
    if request.method != b"GET":
        return 405, [(b"allow", b"GET, OPTIONS")], "Method not allowed: open the WebSocket with GET"
    if "websocket" not in _tokens(request.header(b"upgrade")):
        # RFC 9110 section 15.5.22: a 426 names the protocol to upgrade to.
        return 426, [(b"upgrade", b"websocket")], (
            f"Upgrade required: this endpoint serves MCP over WebSocket (subprotocol {SUBPROTOCOL}); "
            "send Upgrade: websocket")
    if request.http_version != b"1.1":
        return 400, [], "Bad request: a WebSocket upgrade needs HTTP/1.1"
    if "upgrade" not in _tokens(request.header(b"connection")):
        return 400, [], "Bad request: a WebSocket upgrade needs Connection: upgrade"
    version = request.header(b"sec-websocket-version")
    if version is None:
        return 400, [(b"sec-websocket-version", b"13")], "Bad request: Sec-WebSocket-Version 13 is missing"
    if version.strip() != b"13":
        # RFC 6455 section 4.2.2: say which version we speak.
        return 426, [(b"sec-websocket-version", b"13")], "Upgrade required: only Sec-WebSocket-Version 13"
    key = request.header(b"sec-websocket-key")
    try:
        valid_key = key is not None and len(base64.b64decode(key.strip(), validate=True)) == 16
    except (binascii.Error, ValueError):
        valid_key = False
    if not valid_key:
        return 400, [], "Bad request: Sec-WebSocket-Key must be 16 bytes in base64"
    offered = _tokens(request.header(b"sec-websocket-protocol"), lower=False)
    # A client that offers subprotocols must offer ours; one that offers none is served anyway:
    # browser code written without it and CLI clients (websocat, wscat) often set none, and the
    # path already says what is spoken here.
    if offered and SUBPROTOCOL not in offered:
        return 400, [], (f"Bad request: this endpoint speaks the WebSocket subprotocol {SUBPROTOCOL!r}, "
                         f"not {logsafe.clean(', '.join(offered), 200)}")
    return None


class WebSocketTransport:
    """Every WebSocket of the gateway (all routes); see the module docstring."""

    def __init__(self, dispatcher: Dispatcher, sessions: SessionManager, *, max_message: int,
                 ping_interval: float = 30.0) -> None:
        self.dispatcher = dispatcher
        self.sessions = sessions
        self.max_message = max_message
        self.ping_interval = ping_interval  # 0: no keepalive
        self.draining = False
        self._open: set[_Socket] = set()
        self._accepted = 0
        self._refused = 0
        self._closes: Counter[int] = Counter()

    def __len__(self) -> int:
        return len(self._open)

    def statistics(self) -> WebSocketStatistics:
        return WebSocketStatistics(open=len(self._open), accepted=self._accepted, refused=self._refused,
                                   closes=dict(self._closes))

    def endpoint(self, route: Route) -> Handler:
        async def handle(request: Request, responder: Responder) -> None:
            await self._serve(route, request, responder)
        return handle

    def close_all(self) -> None:
        """Draining: close every WebSocket with 1001 once what it has in flight is answered."""
        self.draining = True
        for socket in self._open:
            socket.drain()

    async def _refuse(self, responder: Responder, status: int, headers: Headers, text: str) -> None:
        self._refused += 1
        await responder.send(status, [*_PLAIN, *headers], (text + "\n").encode())

    async def _serve(self, route: Route, request: Request, responder: Responder) -> None:
        refusal = check_upgrade(request)
        if refusal is not None:
            await self._refuse(responder, *refusal)
            return
        if self.draining:
            responder.close_after = True
            await self._refuse(responder, 503, [], "Service unavailable: the gateway is shutting down")
            return
        ws = WSConnection(ConnectionType.SERVER)
        try:
            # The HTTP server parsed the request already; wsproto checks it again and keeps the key for the 101.
            ws.initiate_upgrade_connection(list(request.headers.items()), request.target)
            upgrade = next(e for e in ws.events() if isinstance(e, UpgradeRequest))
        except (RemoteProtocolError, h11.ProtocolError, UnicodeError, StopIteration) as exc:
            # (wsproto decodes the subprotocols as ASCII and the host as IDNA)
            await self._refuse(responder, 400, [], f"Bad request: {str(exc) or 'not a WebSocket upgrade'}")
            return
        # No extensions: permessage-deflate would let a small frame inflate past max_message.
        accept = ws.send(AcceptConnection(subprotocol=SUBPROTOCOL if upgrade.subprotocols else None))
        # From here the socket is ours: the HTTP server neither reads it (no watcher) nor reuses it.
        stream, already_read = responder.take_over()
        socket = _Socket(self, route, request.peer, ws, stream, request.identity)
        self._open.add(socket)
        self._accepted += 1
        try:
            await socket.run(accept, already_read)
        finally:
            self._open.discard(socket)
            self._closes[socket.close_code or ABNORMAL] += 1


class _Socket:
    """One WebSocket connection: its tasks, its close handshake."""

    def __init__(self, transport: WebSocketTransport, route: Route, peer: str, ws: WSConnection,
                 stream: trio.abc.Stream, identity: Any = None) -> None:
        self.wire = WireSession(route, transport.dispatcher, transport.sessions, wire="websocket", peer=peer,
                                identity=identity)
        self.wire.direct = self._direct
        self.peer = peer
        self._ws = ws
        self._stream = stream
        self._max_message = transport.max_message
        self._ping_interval = transport.ping_interval
        self._write_timeout = 2 * transport.ping_interval if transport.ping_interval > 0 else _WRITE_TIMEOUT
        # Answers that may wait for room in the outbox before the reader stops reading: one per
        # call the session may run, so that only a client that does not read is slowed.
        self._max_waiting = transport.dispatcher.max_inflight
        self._lock = trio.Lock()  # one frame at a time on the stream, in wsproto's order
        self._room = trio.Event()  # the writer took a message from the outbox
        self._closing = trio.Event()
        self._close: tuple[int, str] | None = None  # what we close with (the first reason wins)
        self._close_sent = False
        self._broken = False  # a write failed or was cut short: the stream is unusable
        self._gone = False  # the peer vanished without a Close frame
        self._peer_closed = False  # the peer sent Close first (its code and reason are echoed)
        self._peer_close_seen = False  # the peer's Close frame arrived (first, or in answer to ours)
        self._reader_done = trio.Event()
        self._draining = trio.Event()
        self._parts = bytearray()  # a fragmented text message so far (wsproto's pieces)
        self._already_read = b""
        self._last_seen = trio.current_time()
        self._wire_scope = trio.CancelScope()
        self.close_code: int | None = None

    # -- decisions (synchronous; run() carries them out) ---------------------------------------------
    def close(self, code: int, reason: str) -> None:
        if self._close is None:
            self._close = (code, reason)
            self._closing.set()

    def drain(self) -> None:
        """The gateway is shutting down: take no new calls, close with 1001 when idle."""
        self._draining.set()

    def _quiet(self) -> bool:
        session = self.wire.session
        outbox = self.wire.outbox.statistics()
        # (Requests of the stateless 2026-07-28 era have no session here: they are not waited for.)
        return not (session is not None and session.inflight) and not outbox.current_buffer_used \
            and not outbox.tasks_waiting_send

    def _close_if_drained(self) -> None:
        if self._draining.is_set() and self._quiet():
            self.close(GOING_AWAY, "the gateway is shutting down")

    # -- the connection --------------------------------------------------------------------------
    async def run(self, accept: bytes, already_read: bytes) -> None:
        """Answer the upgrade, serve until closed, then close (handshake bounded in time)."""
        try:
            async with trio.open_nursery() as nursery:
                if not await self._write(accept):
                    return
                self._already_read = already_read  # sent right after the upgrade request: the reader's first bytes
                await nursery.start(self._serve_wire)  # the wire is up before the reader hands it anything
                nursery.start_soon(self._read)
                nursery.start_soon(self._write_outbox)
                nursery.start_soon(self._drain_when_quiet)
                if self._ping_interval > 0:
                    nursery.start_soon(self._keepalive)
                await self._closing.wait()
                self._wire_scope.cancel()  # calls still running end with the connection
                await self._send_close()
                if self._close_sent and not self._broken:
                    with trio.move_on_after(_CLOSE_TIMEOUT):
                        await self._reader_done.wait()
                        if not self._peer_close_seen:
                            await self._linger()
                nursery.cancel_scope.cancel()
        except BaseException as exc:
            # Cancelled from outside (the HTTP server's last shutdown step): going away; our bug: 1011.
            failed = isinstance(exc, Exception) or (
                isinstance(exc, BaseExceptionGroup) and exc.subgroup(Exception) is not None)
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                self.close(INTERNAL_ERROR if failed else GOING_AWAY,
                           "internal error" if failed else "the gateway is shutting down")
                await self._send_close()
            raise
        finally:
            code, reason = self._close or (ABNORMAL, "")
            self.close_code = ABNORMAL if self._gone else code
            if self._peer_closed:  # its reason is the client's text: escaped, capped, not above debug
                log.debug("websocket from %s closed by the client: %d %s", self.peer or "?", code,
                          logsafe.clean(reason, 123))
            elif code != ABNORMAL:
                log.info("websocket from %s closed: %d %s", self.peer or "?", code, reason)

    async def _serve_wire(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with self._wire_scope:
            await self.wire.run(None, task_status=task_status)  # the reader hands it each message
        if self.wire.closed.is_set():
            self.close(POLICY, "session ended by the gateway (evicted or expired): open a new one")
        else:
            self.close(ABNORMAL, "")  # the reader ended (and said why first)

    async def _hand(self, message: bytes) -> None:
        """One whole message from the client to the wire, in the reader's task (no hand-off between
        tasks per message). Reading pauses meanwhile: while the client does not read its answers
        (backpressure), and for what the wire handles inline (initialize)."""
        outbox = self.wire.outbox
        while outbox.statistics().tasks_waiting_send >= self._max_waiting:
            self._room = trio.Event()
            await self._room.wait()  # backpressure: the client is not reading its answers
        if self._close is not None:
            return  # closing: what the client still sends is discarded
        if self._draining.is_set():
            refusal = _refusal_while_draining(message)
            if refusal is not None:
                await self.wire.deliver(refusal)
                return
            # a notification (notifications/cancelled still cancels) or a response goes on
        await self.wire.handle(message)

    async def _read(self) -> None:
        """Frames in: whole text messages to the wire, Pings answered, the peer's Close noted.

        Each message's frame is split and unmasked by :class:`ClientFrames`; anything else goes to
        wsproto whole (see gateway/transports/ws_frames.py)."""
        ws = self._ws
        frames = ClientFrames(self._max_message)
        self._parts = bytearray()
        data: bytes | bytearray = self._already_read  # frames the HTTP server read past the upgrade
        self._already_read = b""
        try:
            while ws.state is not ConnectionState.CLOSED:
                if not data:
                    try:
                        data = await receive_some(self._stream, _RECEIVE)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        data = b""
                if not data:
                    self._gone = True
                    self.close(ABNORMAL, "")
                    return
                self._last_seen = trio.current_time()
                for item in frames.feed(data):
                    if type(item) is Text:
                        await self._hand(item.data)
                    elif type(item) is RawFrame:
                        ws.receive_data(item.data)
                        if await self._wsproto_events(frames):
                            return
                    else:
                        assert isinstance(item, Refused)
                        self.close(item.code, item.reason)  # nothing after it is parsed
                        return
                data = b""
        finally:
            self.wire.stop()  # the socket is done: so is the session
            self._reader_done.set()

    async def _wsproto_events(self, frames: ClientFrames) -> bool:
        """What wsproto made of the frames it was given; True when reading must stop."""
        ws = self._ws
        for event in ws.events():
            if isinstance(event, TextMessage):
                if event.message_finished:
                    frames.fragmented = False
                if self._close is not None:
                    continue  # closing: what the client still sends is discarded
                piece = event.data.encode()
                parts = self._parts
                if len(parts) + len(piece) > self._max_message:
                    self._parts = bytearray()
                    self.close(TOO_BIG, f"message too big: the limit is {self._max_message} bytes")
                elif not event.message_finished:
                    parts += piece
                else:
                    if parts:
                        parts += piece
                        piece, self._parts = bytes(parts), bytearray()
                    await self._hand(piece)
            elif isinstance(event, BytesMessage):
                if event.message_finished:
                    frames.fragmented = False
                self.close(UNSUPPORTED_DATA, "binary frames are not accepted: send JSON-RPC as text")
            elif isinstance(event, Ping):
                await self._send(event.response())
            elif isinstance(event, CloseConnection):
                if ws.state is ConnectionState.OPEN:
                    # wsproto's verdict on a broken frame (1002, or 1007 for bad UTF-8): it
                    # parses nothing after it, so the peer's Close is not waited for.
                    self.close(int(event.code), event.reason or "protocol error")
                else:
                    self._peer_close_seen = True
                    self._peer_closed = self._close is None
                    self.close(int(event.code), event.reason or "")  # the peer's Close, echoed
                return True
            # Pong: any traffic counts for the keepalive (below)
        return ws.state is ConnectionState.CLOSED

    async def _write_outbox(self) -> None:
        """One text frame per message of the wire's outbox, in order."""
        async for data in self.wire.outbox:
            self._room.set()
            if not await self._send(text_frame(data)):
                return
            self._close_if_drained()

    async def _drain_when_quiet(self) -> None:
        await self._draining.wait()
        # One scheduling round later: a request handed to the wire just before the drain began
        # has then been admitted (it is in session.inflight), so it is waited for, not dropped.
        await trio.lowlevel.checkpoint()
        self._close_if_drained()

    async def _keepalive(self) -> None:
        """A Ping after ``ping_interval`` without traffic; no traffic for as long again: closed."""
        interval = self._ping_interval
        while True:
            await trio.sleep_until(self._last_seen + interval)
            if trio.current_time() < self._last_seen + interval:
                continue  # traffic meanwhile
            pinged = trio.current_time()
            if not await self._send(Ping(payload=b"keepalive")):
                return
            await trio.sleep_until(pinged + interval)
            if self._last_seen < pinged:
                self.close(INTERNAL_ERROR, f"keepalive timeout: no answer to a ping within {interval:g}s")
                return

    async def _linger(self) -> None:
        """Half-close, then discard what the peer still sends until it closes too (the reader has
        stopped: wsproto parses nothing after a broken frame). Closing with unread bytes, or before
        the peer's answer arrives, would reset the connection, and the peer could lose our Close."""
        try:
            if isinstance(self._stream, trio.abc.HalfCloseableStream):
                await self._stream.send_eof()
            while await self._stream.receive_some(_RECEIVE):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    # -- writing ---------------------------------------------------------------------------------
    async def _send(self, event: Event | bytes) -> bool:
        """Send one frame (False: the socket is closing or broken, nothing was sent): a wsproto event,
        or a whole text message's frame made by :func:`text_frame` (wsproto keeps no state for those,
        and going through it would decode and re-encode every answer)."""
        await acquire(self._lock)
        try:
            if self._close_sent or self._broken or self._ws.state not in _OPEN_STATES:
                return False
            return await self._write(event if isinstance(event, bytes) else self._ws.send(event))
        finally:
            self._lock.release()

    async def _direct(self, data: bytes) -> bool:
        """The wire's write-through (WireSession.deliver): an answer's frame written by the task that
        has it, not handed to the writer task; False when a frame is being written already."""
        if self._lock.locked():
            return False
        await self._send(text_frame(data))  # a frame that cannot go out ends the stream, as in the writer
        self._close_if_drained()
        return True

    async def _send_close(self) -> None:
        """Our Close frame (the reply, if the peer closed first), unless the stream is unusable."""
        code, reason = self._close or (GOING_AWAY, "the gateway is shutting down")
        if code == ABNORMAL:
            return  # the peer is gone, or it closed already and was answered
        with trio.move_on_after(_CLOSE_TIMEOUT):
            async with self._lock:
                if self._close_sent or self._broken or self._ws.state not in _OPEN_STATES:
                    return
                data = self._ws.send(CloseConnection(code=code, reason=reason))
                self._close_sent = True
                await self._write(data)

    async def _write(self, data: bytes) -> bool:
        self._broken = True  # until the whole frame is out: a frame cut short ends the stream
        try:
            await send_within(self._stream, data, self._write_timeout)
        except WriteTimeout:
            self.close(INTERNAL_ERROR, f"the client read nothing for {self._write_timeout:g}s")
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._gone = True
            self.close(ABNORMAL, "")
            return False
        self._broken = False
        return True


def _refusal_while_draining(data: bytes) -> bytes | None:
    """The -32004 answer to a request that arrives while the gateway shuts down (None: not a request)."""
    text = "The gateway is shutting down: it takes no new calls"
    if jsonrpc.is_batch(data):
        return jsonrpc.encode_error(None, GATEWAY_SHUTTING_DOWN, text)
    try:
        msg = jsonrpc.decode_message(data)
    except ProtocolError:
        return None  # the wire answers what cannot be read
    if not msg.is_request:
        return None
    return jsonrpc.encode_error(msg.id, GATEWAY_SHUTTING_DOWN, text)  # type: ignore[arg-type]
