"""The data-plane HTTP/1.1 server: trio + llhttp (:mod:`gateway.http.h1`), keep-alive, limits,
timeouts, streaming.

Each connection is served by one task that parses a request and runs
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

import trio

from ..fdio import receive_some, send_within
from . import h1
from .h1 import Headers as Headers, Request as Request  # re-exported: the handlers import them from here

log = logging.getLogger("mcp_gateway.http")

_LINGER = 2.0  # seconds a rejected connection is drained before it is closed
_FINAL_WRITE = 1.0  # seconds requests ended at shutdown get to write their answer
_MAX_TICK = 0.05  # seconds between the watchdog's rounds at most (the precision of the timeouts)
_ACCEPT_RETRY = 0.1  # pause after accept() failed for lack of descriptors or memory (trio's choice)
# accept() errors that mean "out of resources, try again later" (trio's serve_listeners retries these)
_ACCEPT_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


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


class ResponseStateError(RuntimeError):
    """A handler wrote out of turn (a second response, a body after the end): a bug, never sent."""


class Responder:
    """Writes one response: either :meth:`send` whole, or :meth:`start` + :meth:`write`\\* + :meth:`end`."""

    __slots__ = ("_stream", "started", "finished", "close_after", "extra_headers", "_head", "_owner",
                 "survive_disconnect", "_chunked")

    def __init__(self, stream: trio.abc.Stream, *, head: bool = False, keep_alive: bool = True,
                 http10: bool = False, owner: _Connection | None = None) -> None:
        self._stream = stream
        self._head = head  # answering HEAD: the headers say what GET would send, but no body goes out
        self._owner = owner
        self.started = False
        self.finished = False
        self.close_after = not keep_alive  # the connection closes after this response
        self._chunked = not http10  # a streamed body is chunked (HTTP/1.1), else delimited by the close
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
        return self._stream, self._owner.parser.take_rest()

    async def send(self, status: int, headers: Headers, body: bytes = b"") -> None:
        if self.started:
            raise ResponseStateError("a response was already sent")
        headers = [*headers, (b"content-length", b"%d" % len(body))]
        if self.extra_headers:
            headers += self.extra_headers
        out = h1.head(status, headers, close=self.close_after)
        if body and not self._head:  # no body after HEAD (RFC 9110 section 9.3.2)
            out += body
        self.started = self.finished = True
        await self._send_all(out)

    async def start(self, status: int, headers: Headers) -> None:
        """Begin a streamed (chunked) response, e.g. Server-Sent Events."""
        if self.started:
            raise ResponseStateError("a response was already sent")
        if self.extra_headers:
            headers = [*headers, *self.extra_headers]
        if not self._chunked:
            self.close_after = True  # HTTP/1.0 has no chunks: the close ends the body
        self.started = True
        await self._send_all(h1.head(status, headers, close=self.close_after,
                                     chunked=self._chunked and not self._head))

    async def write(self, data: bytes) -> None:
        if self.finished or not self.started:
            raise ResponseStateError("no streamed response is open")
        if data and not self._head:
            await self._send_all(h1.chunk(data) if self._chunked else data)

    async def end(self) -> None:
        if self.finished or not self.started:
            raise ResponseStateError("no streamed response is open")
        self.finished = True
        if self._chunked and not self._head:
            await self._send_all(h1.LAST_CHUNK)

    async def _send_all(self, data: bytes) -> None:
        """Write within the write timeout: a client that stops reading (a full socket buffer for
        that long) is treated as gone, so it cannot hold a connection slot and its request forever.
        What the socket takes at once costs no timer (gateway/fdio.py)."""
        timeout = self._owner.server.limits.write_timeout if self._owner is not None else math.inf
        await send_within(self._stream, data, timeout)


Handler = Callable[[Request, Responder], Awaitable[None]]


class _Connection:
    """One client connection, served by one task; see the module docstring."""

    def __init__(self, server: HTTPServer, stream: trio.SocketStream, peer: str) -> None:
        self.server = server
        self.stream = stream
        self.peer = peer
        self.parser = h1.H1Parser(max_header=server.limits.max_header, max_body=server.limits.max_body)
        self.busy_since: float | None = None
        self.watcher: trio.CancelScope | None = None
        self.watcher_done: trio.Event | None = None
        self.peer_gone = False
        self.eof = False  # the client closed its side (nothing more will be read)
        self.taken_over = False  # a WebSocket owns the socket now
        self.timed_out = False  # a request did not arrive whole within read_timeout: answer 408
        self.responder: Responder | None = None
        self.nursery: trio.Nursery | None = None

    async def serve(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                await self._serve_requests()
                nursery.cancel_scope.cancel()
            if self.timed_out:
                await self._reject(408, "Request timeout")
        finally:
            self.server.idle.pop(self, None)
            self.server.reading.pop(self, None)
            with trio.CancelScope(shield=True):
                with trio.move_on_after(1):
                    await self.stream.aclose()

    def close_if_idle(self) -> None:
        if self.busy_since is None and self.nursery is not None:
            self.nursery.cancel_scope.cancel()

    def time_out_reading(self) -> None:
        """The watchdog's verdict: the request begun did not arrive whole in time."""
        if self.busy_since is None and self.nursery is not None:
            self.timed_out = True
            self.nursery.cancel_scope.cancel()

    async def _serve_requests(self) -> None:
        while True:
            request = await self._next_request()
            if request is None:
                return
            if not await self._handle(request):
                return
            if not request.keep_alive or self.server.draining:
                return
            if request.upgrade:
                self.parser.resume_http()  # the handler did not take the connection over

    async def _next_request(self) -> Request | None:
        """The next request (head and body). Its deadlines are the watchdog's (no timer per read):
        ``idle_timeout`` while nothing of a request has come, ``read_timeout`` from its first byte
        until it is whole."""
        parser = self.parser
        server = self.server
        stream = self.stream
        while True:
            if parser.ready:
                request = parser.ready.popleft()
                parser.taken(request)
                server.reading.pop(self, None)
                return request
            if parser.error is not None:
                await self._reject(parser.error.status, parser.error.text)
                return None
            if self.eof:
                return None
            idle = not parser.in_message
            if idle:
                if server.draining:
                    return None
                server.idle[self] = trio.current_time()  # evictable while it waits (oldest first)
            try:
                data = await receive_some(stream, h1.READ_SIZE)  # wait, then read once (gateway/fdio.py)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""  # reset by peer: same as EOF for us
            finally:
                if idle:
                    server.idle.pop(self, None)
            if not data:
                return None  # the client closed (a request cut short is never served)
            parser.feed(data)
            if parser.in_message and self not in server.reading:
                server.reading[self] = trio.current_time() + server.limits.read_timeout
            if parser.expects_continue and parser.error is None:
                # The head is within the limits: let the client send the body now, not after its timeout.
                parser.expects_continue = False
                await stream.send_all(b"HTTP/1.1 100 Continue\r\n\r\n")

    async def _handle(self, request: Request) -> bool:
        """Run the handler inline; False if the connection cannot be reused.

        No cancel scope of its own: a peer that leaves mid-request ends the whole connection
        (its nursery), which is all such a scope would have cancelled.
        """
        request.peer = self.peer
        responder = self.responder = Responder(self.stream, head=request.method == b"HEAD",
                                               keep_alive=request.keep_alive,
                                               http10=request.http_version == b"1.0", owner=self)
        if self.server.draining:
            responder.close_after = True
        self.busy_since = trio.current_time()
        self.server.busy.add(self)
        try:
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
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return False
        finally:
            self.responder = None
            self.busy_since = None
            self.server.busy.discard(self)
            if self.watcher is not None:
                self.watcher.cancel()
                with trio.CancelScope(shield=True):
                    await self.watcher_done.wait()  # type: ignore[union-attr]
                self.watcher = None
        return responder.finished and not responder.close_after and not self.peer_gone and not self.taken_over

    def start_watching(self) -> None:
        """Watch the socket while a long request runs, so a peer that leaves cancels it.

        Started by the server's watchdog only for requests running longer than
        ``watch_after``: quick calls never pay for the extra task and epoll changes.
        """
        if self.watcher is None and self.nursery is not None and self.busy_since is not None \
                and not self.taken_over:
            self.watcher = trio.CancelScope()
            self.watcher_done = trio.Event()
            self.nursery.start_soon(self._watch, self.watcher, self.watcher_done)

    async def _watch(self, scope: trio.CancelScope, done: trio.Event) -> None:
        try:
            with scope:
                while True:
                    try:
                        data = await self.stream.receive_some(h1.READ_SIZE)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        data = b""
                    if not data:
                        self.peer_gone = self.eof = True
                        responder = self.responder
                        if self.busy_since is not None and not (responder and responder.survive_disconnect) \
                                and self.nursery is not None:
                            self.nursery.cancel_scope.cancel()  # the request, and the connection it was on
                        return
                    self.parser.feed(data)  # a pipelined request waits in the parser's queue
                    if self.parser.buffered > self.server.limits.max_body or self.parser.error is not None:
                        await trio.sleep_forever()  # stop reading until the request is done
        finally:
            done.set()

    async def _reject(self, status: int, text: str) -> None:
        """An error answered by the reader itself (the worker is idle), then close."""
        self.server.stats.rejected[str(status)] += 1
        body = (text + "\n").encode()
        out = h1.head(status, [(b"content-type", b"text/plain; charset=utf-8"),
                               (b"content-length", b"%d" % len(body))], close=True) + body
        with trio.move_on_after(_LINGER):
            try:
                await self.stream.send_all(out)
                # Lingering close: discard what the client is still sending (e.g. the rest of
                # a too-large body) before closing, or the kernel answers it with a reset and
                # the client never reads our status. Bounded by time; nothing is buffered.
                await self.stream.send_eof()
                while await self.stream.receive_some(h1.READ_SIZE):
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
        self.idle: dict[_Connection, float] = {}  # waiting in keep-alive since, longest-waiting first
        self.reading: dict[_Connection, float] = {}  # a request begun -> its read deadline, earliest first
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
        """Start socket watchers on requests that have been running for ``watch_after``, and
        enforce the idle and read timeouts: one timer for the server instead of one per read
        (a trio cancel scope with a deadline per request was a tenth of a call's CPU)."""
        limits = self.limits
        tick = min(limits.watch_after / 2, _MAX_TICK)
        while True:
            await trio.sleep(tick)
            now = trio.current_time()
            cutoff = now - limits.watch_after
            for connection in list(self.busy):
                since = connection.busy_since
                if since is not None and since < cutoff:
                    connection.start_watching()
            _expire(self.idle, now - limits.idle_timeout, _Connection.close_if_idle)
            _expire(self.reading, now, _Connection.time_out_reading)

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


def _expire(entries: dict[_Connection, float], cutoff: float, act: Callable[[_Connection], None]) -> None:
    """Take the connections whose time is ``cutoff`` or earlier off ``entries`` and ``act`` on each;
    the dict is in the order of its times (insertion order, one timeout each), so this stops at the
    first that is not due."""
    while entries:
        connection, when = next(iter(entries.items()))
        if when > cutoff:
            return
        del entries[connection]
        act(connection)


async def _refuse(stream: trio.SocketStream, text: str) -> None:
    """A 503 written straight to a connection we will not serve, then closed (bounded in time)."""
    body = (text + "\n").encode()
    head = h1.head(503, [(b"content-type", b"text/plain; charset=utf-8"), (b"retry-after", b"1"),
                         (b"content-length", b"%d" % len(body))], close=True)
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
