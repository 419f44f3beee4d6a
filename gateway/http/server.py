"""The data-plane HTTP/1.1 server: trio + h11, keep-alive, limits, timeouts, streaming.

Each connection is served by one task that parses a request with h11 and runs
the handler inline: no hand-off between tasks on the hot path. A request that
runs longer than ``watch_after`` (a slow tool call, an SSE stream) gets a
watcher task reading the socket, so a client that disconnects cancels its
request at once, and with it the upstream call.

A client that half-closes its sending side (``shutdown(SHUT_WR)``) is treated
as gone, as nginx does (its 499): TCP cannot tell a half-close from a close, and
a client that left must not keep an upstream call running. A request answered
before the gateway notices (quick ones, well under ``watch_after``) is answered.

Connections are bounded by ``max_connections`` (itself capped by the descriptors
the process may open, see :mod:`gateway.http.fdlimit`); at the bound, the
connection idle longest in keep-alive is closed to make room, so idle
connections cannot lock clients out. Shutdown is two-phase: stop accepting and
close idle connections, then give busy ones a deadline; requests still running
then are ended by the caller's hook (with an answer that says so), and the rest
closed.
"""

from __future__ import annotations

import errno
import logging
import math
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import h11
import trio

log = logging.getLogger("mcp_gateway.http")

Headers = list[tuple[bytes, bytes]]
_LINGER = 2.0  # seconds a rejected connection is drained before it is closed
_SMALL_WRITE = 128 * 1024  # an answer this small is written without a timeout (the kernel buffers it)
_FINAL_WRITE = 1.0  # seconds requests ended at shutdown get to write their answer
_ACCEPT_RETRY = 0.1  # pause after accept() failed for lack of descriptors or memory (trio's choice)
# accept() errors that mean "out of resources, try again later" (trio's serve_listeners retries these)
_ACCEPT_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


@dataclass(slots=True)
class Request:
    method: bytes
    target: bytes
    headers: dict[bytes, bytes]  # lowercase name -> first value
    body: bytes
    http_version: bytes = b"1.1"
    peer: str = ""  # the client's IP address ("" if unknown)
    identity: Any = None  # who sent it (gateway.auth.Identity), set by the mount table on MCP endpoints

    @property
    def path(self) -> str:
        return self.target.split(b"?", 1)[0].decode("latin-1")

    def header(self, name: bytes) -> bytes | None:
        """First value of a header (``name`` lowercase, as h11 normalizes them)."""
        return self.headers.get(name)


def _header_dict(headers: h11._headers.Headers) -> tuple[dict[bytes, bytes], int]:
    """Headers as a dict (first value wins) and their total size in bytes."""
    # h11's Headers is a Sequence whose generic __iter__ costs a __getitem__ call per
    # item; its _full_items list is the same data without that (measured: ~15% of a call).
    items = getattr(headers, "_full_items", None)
    pairs = [(name, value) for _, name, value in items] if items is not None else list(headers)
    out: dict[bytes, bytes] = {}
    size = 0
    for name, value in pairs:
        size += len(name) + len(value) + 4
        out.setdefault(name, value)
    return out, size


@dataclass(slots=True)
class Limits:
    max_body: int = 4 * 1024 * 1024
    max_header: int = 64 * 1024
    read_timeout: float = 30.0
    idle_timeout: float = 120.0
    max_connections: int = 20000
    max_connections_per_peer: int | None = None  # None: max_connections // 4
    write_timeout: float = 30.0  # a client that stops reading an answer or a stream is dropped after this
    watch_after: float = 0.1  # a request running this long gets its socket watched for disconnects


@dataclass(frozen=True, slots=True)
class HTTPServerStatistics:
    connections: int
    busy: int
    idle: int
    max_connections: int
    accepted: int
    evicted_idle: int


class Responder:
    """Writes one response: either :meth:`send` whole, or :meth:`start` + :meth:`write`\\* + :meth:`end`."""

    __slots__ = ("_conn", "_stream", "started", "finished", "close_after", "extra_headers", "_head", "_owner",
                 "survive_disconnect")

    def __init__(self, conn: h11.Connection, stream: trio.abc.Stream, *, head: bool = False,
                 owner: _Connection | None = None) -> None:
        self._conn = conn
        self._stream = stream
        self._head = head  # answering HEAD: the headers say what GET would send, but no body goes out
        self._owner = owner
        self.started = False
        self.finished = False
        self.close_after = False
        self.extra_headers: Headers | None = None  # added to whatever response is sent (e.g. CORS)
        # Set by a handler whose work must go on when the client leaves (a resumable SSE stream):
        # the request is then not cancelled, and its writes fail instead.
        self.survive_disconnect = False

    def spawn(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``fn`` beside the handler, in the connection's nursery (the handler must wait for it
        to end before it returns: the next request on the connection would otherwise interleave)."""
        assert self._owner is not None and self._owner.nursery is not None
        self._owner.nursery.start_soon(fn)

    def take_over(self) -> tuple[trio.abc.Stream, bytes]:
        """Hand the connection to another protocol (a WebSocket, after its 101 answer): returns the
        stream and the bytes already read past the request. HTTP ends on this connection."""
        assert self._owner is not None
        self._owner.taken_over = True
        self.started = self.finished = True
        return self._stream, bytes(self._conn.trailing_data[0])

    async def send(self, status: int, headers: Headers, body: bytes = b"") -> None:
        headers = [*headers, (b"content-length", b"%d" % len(body))]
        if self.extra_headers:
            headers += self.extra_headers
        if self.close_after:
            headers.append((b"connection", b"close"))
        conn = self._conn
        # _parsed=True: our headers are literal lowercase constants, so h11's regex
        # validation (a measurable share of each call) is skipped.
        out = conn.send(h11.Response(status_code=status, headers=headers, _parsed=True))
        assert out is not None
        if body and not self._head:  # h11 refuses body bytes after HEAD (RFC 9110 section 9.3.2)
            out += conn.send(h11.Data(data=body)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
        self.started = self.finished = True
        if len(out) <= _SMALL_WRITE:
            await self._stream.send_all(out)  # fits the socket buffers: never waits for the client
        else:
            await self._send_all(out)

    async def start(self, status: int, headers: Headers) -> None:
        """Begin a streamed (chunked) response, e.g. Server-Sent Events."""
        if self.extra_headers:
            headers = [*headers, *self.extra_headers]
        if self.close_after:
            headers = [*headers, (b"connection", b"close")]
        out = self._conn.send(h11.Response(status_code=status, headers=headers))
        self.started = True
        await self._send_all(out or b"")

    async def write(self, data: bytes) -> None:
        if data:
            await self._send_all(self._conn.send(h11.Data(data=data)) or b"")

    async def end(self) -> None:
        self.finished = True
        await self._send_all(self._conn.send(h11.EndOfMessage()) or b"")

    async def _send_all(self, data: bytes) -> None:
        """Write within the write timeout: a client that stops reading (a full socket buffer for
        that long) is treated as gone, so it cannot hold a connection slot and its request forever."""
        timeout = self._owner.server.limits.write_timeout if self._owner is not None else math.inf
        with trio.move_on_after(timeout) as scope:
            await self._stream.send_all(data)
        if scope.cancelled_caught:
            raise trio.BrokenResourceError(f"the client read nothing for {timeout:g}s")


Handler = Callable[[Request, Responder], Awaitable[None]]


class _Connection:
    """One client connection, served by one task; see the module docstring."""

    def __init__(self, server: HTTPServer, stream: trio.SocketStream, peer: str) -> None:
        self.server = server
        self.stream = stream
        self.peer = peer
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=server.limits.max_header)
        self.busy_since: float | None = None
        self.request_scope: trio.CancelScope | None = None
        self.watcher: trio.CancelScope | None = None
        self.watcher_done: trio.Event | None = None
        self.peer_gone = False
        self.taken_over = False  # a WebSocket owns the socket now
        self.responder: Responder | None = None
        self.nursery: trio.Nursery | None = None

    async def serve(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                await self._serve_requests()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(1):
                    await self.stream.aclose()

    def close_if_idle(self) -> None:
        if self.busy_since is None and self.nursery is not None:
            self.nursery.cancel_scope.cancel()

    async def _receive(self, timeout: float) -> bytes | None:
        """Bytes from the socket; None on timeout."""
        with trio.move_on_after(max(0.0, timeout)):
            try:
                return await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return b""  # reset by peer: same as EOF for us
        return None

    async def _serve_requests(self) -> None:
        conn = self.h11
        while True:
            request = await self._next_request()
            if request is None:
                return
            if not await self._handle(request):
                return
            if conn.our_state is not h11.DONE or conn.their_state is h11.MUST_CLOSE or self.server.draining:
                return
            conn.start_next_cycle()

    async def _next_request(self) -> Request | None:
        """Parse the next request (head and body) within the idle and read timeouts."""
        limits = self.server.limits
        conn = self.h11
        deadline: float | None = None  # a whole request must arrive within read_timeout of its first byte
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                await self._reject(exc.error_status_hint, f"Bad request: {exc}")
                return None
            if event is h11.NEED_DATA:
                idle = conn.their_state is h11.IDLE and not conn.trailing_data[0]
                if idle:
                    if self.server.draining:
                        return None
                    deadline = None
                    timeout = limits.idle_timeout
                    self.server.idle[self] = None  # evictable while it waits (oldest first)
                else:
                    if deadline is None:
                        deadline = trio.current_time() + limits.read_timeout
                    timeout = deadline - trio.current_time()
                try:
                    data = await self._receive(timeout)
                finally:
                    if idle:
                        self.server.idle.pop(self, None)
                if data is None:
                    if not idle:
                        await self._reject(408, "Request timeout")
                    return None
                conn.receive_data(data)
                if not data:
                    return None
            elif type(event) is h11.Request:
                return await self._read_body(event, deadline or trio.current_time() + limits.read_timeout)
            else:  # ConnectionClosed, or nothing we can serve
                return None

    async def _read_body(self, head: h11.Request, deadline: float) -> Request | None:
        limits = self.server.limits
        headers, header_size = _header_dict(head.headers)
        header_size += len(head.target)
        if header_size > limits.max_header:
            await self._reject(431, f"Request header fields exceed the limit of {limits.max_header} bytes")
            return None
        length = headers.get(b"content-length")
        if length is not None and b"transfer-encoding" in headers:
            # RFC 9112 section 6.1: a request with both is a smuggling attempt or a broken proxy;
            # answer 400 and close, so a second request hidden in the body is never read.
            await self._reject(400, "Bad request: both Content-Length and Transfer-Encoding")
            return None
        declared = int(length) if length is not None else None
        if declared is not None and declared > limits.max_body:
            await self._reject(413, f"Request body of {declared} bytes exceeds the limit of {limits.max_body}")
            return None
        if self.h11.they_are_waiting_for_100_continue:
            # The size is acceptable: let the client send the body now instead of after its timeout.
            await self.stream.send_all(self.h11.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:  # e.g. a malformed chunk header
                await self._reject(exc.error_status_hint, f"Bad request: {exc}")
                return None
            if event is h11.NEED_DATA:
                data = await self._receive(deadline - trio.current_time())
                if data is None:
                    await self._reject(408, "Request timeout")
                    return None
                self.h11.receive_data(data)
                if not data:
                    return None
            elif type(event) is h11.Data:
                size += len(event.data)
                if size > limits.max_body:
                    await self._reject(413, f"Request body exceeds the limit of {limits.max_body} bytes")
                    return None
                chunks.append(event.data)
            elif type(event) is h11.EndOfMessage:
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                return Request(head.method, head.target, headers, bytes(body), head.http_version, self.peer)
            else:
                return None

    async def _handle(self, request: Request) -> bool:
        """Run the handler inline; False if the connection cannot be reused."""
        responder = self.responder = Responder(self.h11, self.stream, head=request.method == b"HEAD", owner=self)
        if self.server.draining:
            responder.close_after = True
        self.busy_since = trio.current_time()
        self.server.busy.add(self)
        try:
            with trio.CancelScope() as self.request_scope:
                try:
                    await self.server.handler(request, responder)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return False  # the peer is gone mid-response
                except Exception:
                    log.exception("handler failed for %s %s", request.method.decode(), request.path)
                    if responder.started:
                        return False
                    try:
                        await responder.send(500, [(b"content-type", b"text/plain")], b"Internal error\n")
                    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
                        return False
        finally:
            self.request_scope = None
            self.responder = None
            self.busy_since = None
            self.server.busy.discard(self)
            if self.watcher is not None:
                self.watcher.cancel()
                with trio.CancelScope(shield=True):
                    await self.watcher_done.wait()  # type: ignore[union-attr]
                self.watcher = None
        return responder.finished and not self.peer_gone and not self.taken_over

    def start_watching(self) -> None:
        """Watch the socket while a long request runs, so a peer that leaves cancels it.

        Started by the server's watchdog only for requests running longer than
        ``watch_after``: quick calls never pay for the extra task and epoll changes.
        """
        if self.watcher is None and self.nursery is not None and self.request_scope is not None \
                and not self.taken_over:
            self.watcher = trio.CancelScope()
            self.watcher_done = trio.Event()
            self.nursery.start_soon(self._watch, self.watcher, self.watcher_done)

    async def _watch(self, scope: trio.CancelScope, done: trio.Event) -> None:
        try:
            with scope:
                while True:
                    try:
                        data = await self.stream.receive_some(65536)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        data = b""
                    if not data:
                        self.peer_gone = True
                        responder = self.responder
                        if self.request_scope is not None and not (responder and responder.survive_disconnect):
                            self.request_scope.cancel()
                        return
                    self.h11.receive_data(data)  # a pipelined request waits in h11's buffer
                    if len(self.h11.trailing_data[0]) > self.server.limits.max_body:
                        await trio.sleep_forever()  # stop reading until the request is done
        finally:
            done.set()

    async def _reject(self, status: int, text: str) -> None:
        """An error answered by the reader itself (the worker is idle), then close."""
        self.server.stats.rejected[str(status)] += 1
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = (text + "\n").encode()
        try:
            out = self.h11.send(h11.Response(status_code=status, headers=[
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", b"%d" % len(body)), (b"connection", b"close")]))
            out = (out or b"") + (self.h11.send(h11.Data(data=body)) or b"")
            out += self.h11.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            return
        with trio.move_on_after(_LINGER):
            try:
                await self.stream.send_all(out)
                # Lingering close: discard what the client is still sending (e.g. the rest of
                # a too-large body) before closing, or the kernel answers it with a reset and
                # the client never reads our status. Bounded by time; nothing is buffered.
                await self.stream.send_eof()
                while await self.stream.receive_some(65536):
                    pass
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass


class HTTPServer:
    """Accepts connections and runs :class:`_Connection`s until :meth:`shutdown`."""

    def __init__(self, handler: Handler, *, host: str = "127.0.0.1", port: int = 0,
                 limits: Limits | None = None) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.limits = limits or Limits()
        self.draining = False
        self.connections: set[_Connection] = set()
        self._accept_scope: trio.CancelScope | None = None
        self._slots = trio.Semaphore(self.limits.max_connections)
        self.drain_hooks: list[Callable[[], None]] = []
        self.busy: set[_Connection] = set()
        self.idle: dict[_Connection, None] = {}  # waiting in keep-alive, longest-waiting first
        self._listeners: list[trio.SocketListener] | None = None
        self.stats = ServerCounters()
        self._per_peer: dict[str, int] = {}
        self._max_per_peer = self.limits.max_connections_per_peer or max(1, self.limits.max_connections // 4)
        self._drained = trio.Event()  # set when the last connection closes

    def statistics(self) -> HTTPServerStatistics:
        return HTTPServerStatistics(connections=len(self.connections), busy=len(self.busy), idle=len(self.idle),
                                    max_connections=self.limits.max_connections, accepted=self.stats.accepted,
                                    evicted_idle=self.stats.evicted_idle)

    async def bind(self) -> int:
        """Open the listening sockets (raises OSError, e.g. address in use); returns the port."""
        if self._listeners is None:
            self._listeners = await trio.open_tcp_listeners(self.port, host=self.host, backlog=4096)
            self.port = self._listeners[0].socket.getsockname()[1]
        return self.port

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled or shut down; ``started`` with the bound port."""
        await self.bind()
        listeners, self._listeners = self._listeners or [], None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watchdog)
            with trio.CancelScope() as self._accept_scope:
                task_status.started(self.port)
                async with trio.open_nursery() as accept_nursery:
                    for listener in listeners:
                        accept_nursery.start_soon(self._accept_loop, listener, nursery)
            for listener in listeners:
                await listener.aclose()

    async def _watchdog(self) -> None:
        """Start socket watchers on requests that have been running for ``watch_after``."""
        after = self.limits.watch_after
        while True:
            await trio.sleep(after / 2)
            cutoff = trio.current_time() - after
            for connection in list(self.busy):
                since = connection.busy_since
                if since is not None and since < cutoff:
                    connection.start_watching()

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        failing_since: float | None = None
        failures = 0
        while True:
            await self._acquire_slot()
            try:
                stream = await listener.accept()
            except OSError as exc:
                self._slots.release()
                if exc.errno not in _ACCEPT_RESOURCE_ERRORS:
                    raise  # not a passing shortage: a bug or a closed listener
                failures += 1
                if failing_since is None:
                    failing_since = trio.current_time()
                    log.error("accept failed: %s; pausing accepts until descriptors or memory free up "
                              "(lower limits.max_connections or raise the file-descriptor limit)",
                              exc.strerror or exc)
                await trio.sleep(_ACCEPT_RETRY)
                continue
            except BaseException:
                self._slots.release()
                raise
            if failing_since is not None:
                log.warning("accepting again after %d failed accepts over %.1fs",
                            failures, trio.current_time() - failing_since)
                failing_since, failures = None, 0
            self.stats.accepted += 1
            nursery.start_soon(self._serve, stream)

    async def _acquire_slot(self) -> None:
        """A connection slot: at ``max_connections``, the longest-idle keep-alive connection is
        closed to make room (idle connections may be closed at any time in HTTP/1.1)."""
        try:
            self._slots.acquire_nowait()
            return
        except trio.WouldBlock:
            pass
        if self.idle:
            victim = next(iter(self.idle))
            del self.idle[victim]
            self.stats.evicted_idle += 1
            victim.close_if_idle()
        await self._slots.acquire()

    def _evict_idle_of(self, peer: str) -> bool:
        """Close this address's longest-idle keep-alive connection, if it has one (scans the idle
        connections: only at the per-address limit)."""
        victim = next((c for c in self.idle if c.peer == peer), None)
        if victim is None:
            return False
        del self.idle[victim]
        self.stats.evicted_idle += 1
        victim.close_if_idle()
        return True

    async def _serve(self, stream: trio.SocketStream) -> None:
        try:
            peer = str(stream.socket.getpeername()[0])
        except (OSError, IndexError, TypeError):
            peer = ""
        held = self._per_peer.get(peer, 0)
        if held >= self._max_per_peer and not self._evict_idle_of(peer):
            self.stats.rejected["per_peer_connections"] += 1
            # One address may not hold every slot (long-lived streams are not idle, so eviction
            # could not free them): this one is refused at once, its older connections go on.
            self.stats.refused_per_peer += 1
            self._slots.release()
            await _refuse(stream, f"Too many connections from this address (limit {self._max_per_peer})")
            return
        self._per_peer[peer] = held + 1
        connection = _Connection(self, stream, peer)
        self.connections.add(connection)
        try:
            await connection.serve()
        except Exception:
            # A bug reached by one connection must not take the server (and every other
            # client) down: log it and drop that connection only.
            log.exception("connection failed")
        finally:
            self.connections.discard(connection)
            left = self._per_peer.pop(peer) - 1
            if left:
                self._per_peer[peer] = left
            self._slots.release()
            if not self.connections:
                self._drained.set()

    async def shutdown(self, grace: float, *, on_grace_expired: Callable[[], None] | None = None) -> None:
        """Stop accepting, close idle connections, let busy ones finish within ``grace`` s.

        Then ``on_grace_expired`` ends what still runs (the gateway answers those calls with an
        error that says it is shutting down); those get ``_FINAL_WRITE`` s to write the answer
        before every connection left is closed.
        """
        self.draining = True
        if self._accept_scope is not None:
            self._accept_scope.cancel()
        for hook in self.drain_hooks:
            hook()  # e.g. end long-lived SSE streams so they do not hold the drain
        if await self._wait_drained(grace):
            return
        if on_grace_expired is not None:
            on_grace_expired()
            await self._wait_drained(_FINAL_WRITE)
        for connection in list(self.connections):
            if connection.nursery is not None:
                connection.nursery.cancel_scope.cancel()

    async def _wait_drained(self, timeout: float) -> bool:
        """Wait until every connection is closed; a busy one closes itself when its request ends
        (it sees ``draining``), an idle one is closed now."""
        for connection in list(self.connections):
            connection.close_if_idle()
        with trio.move_on_after(timeout):
            while self.connections:
                self._drained = trio.Event()
                await self._drained.wait()
        return not self.connections


async def _refuse(stream: trio.SocketStream, text: str) -> None:
    """A 503 written straight to a connection we will not serve, then closed (bounded in time)."""
    body = (text + "\n").encode()
    head = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"retry-after: 1\r\nconnection: close\r\ncontent-length: %d\r\n\r\n" % len(body))
    with trio.move_on_after(1):
        try:
            await stream.send_all(head + body)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    with trio.CancelScope(shield=True), trio.move_on_after(1):
        await stream.aclose()


@dataclass(slots=True)
class ServerCounters:
    """Counts since start (read through :meth:`HTTPServer.statistics`)."""

    accepted: int = 0
    evicted_idle: int = 0
    refused_per_peer: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # answered by the server itself, by status
