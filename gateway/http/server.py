"""The data-plane HTTP/1.1 server: trio + h11, keep-alive, limits, timeouts, streaming.

Each connection runs two tasks: a *reader* that parses requests with h11 and a
*worker* that handles them one at a time. While the worker is busy the reader
keeps watching the socket, so a client that disconnects mid-request cancels
its request at once (and with it the upstream call). Shutdown is two-phase:
stop accepting and close idle connections, then give busy ones a deadline.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import h11
import trio

log = logging.getLogger("mcp_gateway.http")

Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class Request:
    method: bytes
    target: bytes
    headers: Headers
    body: bytes
    http_version: bytes = b"1.1"

    @property
    def path(self) -> str:
        return self.target.split(b"?", 1)[0].decode("latin-1")

    def header(self, name: bytes) -> bytes | None:
        """First value of a header (``name`` lowercase, as h11 normalizes them)."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(slots=True)
class Limits:
    max_body: int = 4 * 1024 * 1024
    max_header: int = 64 * 1024
    read_timeout: float = 30.0
    idle_timeout: float = 120.0
    max_connections: int = 20000


class Responder:
    """Writes one response: either :meth:`send` whole, or :meth:`start` + :meth:`write`\\* + :meth:`end`."""

    __slots__ = ("_conn", "_stream", "started", "finished", "close_after")

    def __init__(self, conn: h11.Connection, stream: trio.abc.Stream) -> None:
        self._conn = conn
        self._stream = stream
        self.started = False
        self.finished = False
        self.close_after = False

    async def send(self, status: int, headers: Headers, body: bytes = b"") -> None:
        headers = [*headers, (b"content-length", b"%d" % len(body))]
        if self.close_after:
            headers.append((b"connection", b"close"))
        conn = self._conn
        out = conn.send(h11.Response(status_code=status, headers=headers))
        assert out is not None
        if body:
            out += conn.send(h11.Data(data=body)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
        self.started = self.finished = True
        await self._stream.send_all(out)

    async def start(self, status: int, headers: Headers) -> None:
        """Begin a streamed (chunked) response, e.g. Server-Sent Events."""
        if self.close_after:
            headers = [*headers, (b"connection", b"close")]
        out = self._conn.send(h11.Response(status_code=status, headers=headers))
        self.started = True
        await self._stream.send_all(out or b"")

    async def write(self, data: bytes) -> None:
        if data:
            await self._stream.send_all(self._conn.send(h11.Data(data=data)) or b"")

    async def end(self) -> None:
        self.finished = True
        await self._stream.send_all(self._conn.send(h11.EndOfMessage()) or b"")


Handler = Callable[[Request, Responder], Awaitable[None]]


class _Connection:
    """One client connection: reader + worker, see module docstring."""

    def __init__(self, server: HTTPServer, stream: trio.SocketStream) -> None:
        self.server = server
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=server.limits.max_header)
        self.requests_send, self.requests_recv = trio.open_memory_channel[Request](0)
        self.busy = False
        self.request_scope: trio.CancelScope | None = None
        self.pause_scope: trio.CancelScope | None = None
        self.nursery: trio.Nursery | None = None

    async def serve(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                nursery.start_soon(self._worker)
                await self._reader()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(1):
                    await self.stream.aclose()

    def close_if_idle(self) -> None:
        if not self.busy and self.nursery is not None:
            self.nursery.cancel_scope.cancel()

    async def _receive(self, timeout: float) -> bytes | None:
        """Bytes from the socket; None on timeout."""
        with trio.move_on_after(timeout):
            try:
                return await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return b""  # reset by peer: same as EOF for us
        return None

    async def _reader(self) -> None:
        limits = self.server.limits
        conn = self.h11
        deadline: float | None = None  # a whole request must arrive within read_timeout of its first byte
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                await self._reject(exc.error_status_hint, f"Bad request: {exc}")
                return
            if event is h11.NEED_DATA:
                idle = conn.their_state is h11.IDLE and not conn.trailing_data[0]
                if idle:
                    if self.server.draining:
                        return
                    deadline = None
                    timeout = limits.idle_timeout
                else:
                    if deadline is None:
                        deadline = trio.current_time() + limits.read_timeout
                    timeout = deadline - trio.current_time()
                data = await self._receive(timeout)
                if data is None:
                    if not idle:
                        await self._reject(408, "Request timeout")
                    return
                conn.receive_data(data)
                if not data:
                    return
            elif type(event) is h11.Request:
                request = await self._read_request(
                    event, deadline or trio.current_time() + limits.read_timeout)
                deadline = None
                if request is None:
                    return
                await self.requests_send.send(request)
                if not await self._watch_while_busy():
                    return
            elif event is h11.PAUSED:
                if not await self._watch_while_busy():
                    return
            elif type(event) is h11.ConnectionClosed:
                return
            else:  # pragma: no cover - h11 yields nothing else at this point
                return

    async def _read_request(self, head: h11.Request, deadline: float) -> Request | None:
        limits = self.server.limits
        declared = None
        header_size = len(head.target)
        for key, value in head.headers:
            header_size += len(key) + len(value) + 4
            if key == b"content-length":
                declared = int(value)
        if header_size > limits.max_header:
            await self._reject(431, f"Request header fields exceed the limit of {limits.max_header} bytes")
            return None
        if declared is not None and declared > limits.max_body:
            await self._reject(413, f"Request body of {declared} bytes exceeds the limit of {limits.max_body}")
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            event = self.h11.next_event()
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
                return Request(head.method, head.target, head.headers, bytes(body), head.http_version)
            else:
                return None

    async def _watch_while_busy(self) -> bool:
        """Read ahead while the worker answers; False if the peer closed (its request is cancelled)."""
        while self.busy or self.h11.our_state is not h11.IDLE:
            if self.h11.our_state in (h11.MUST_CLOSE, h11.CLOSED) and not self.busy:
                return False
            with trio.CancelScope() as self.pause_scope:
                try:
                    data = await self.stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    if self.request_scope is not None:
                        self.request_scope.cancel()
                    return False
                self.h11.receive_data(data)  # a pipelined request waits in h11's buffer
                if len(self.h11.trailing_data[0]) > self.server.limits.max_body:
                    await trio.sleep_forever()  # stop reading until the worker is done
            self.pause_scope = None
        return self.h11.our_state is not h11.MUST_CLOSE

    async def _worker(self) -> None:
        handler = self.server.handler
        async for request in self.requests_recv:
            responder = Responder(self.h11, self.stream)
            if self.server.draining:
                responder.close_after = True
            self.busy = True
            with trio.CancelScope() as self.request_scope:
                try:
                    await handler(request, responder)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    responder.finished = False  # the peer is gone mid-response: close below
                except Exception:
                    log.exception("handler failed for %s %s", request.method.decode(), request.path)
                    if not responder.started:
                        await responder.send(500, [(b"content-type", b"text/plain")], b"Internal error\n")
            self.request_scope = None
            self.busy = False
            if not responder.finished or self.h11.our_state is not h11.DONE:
                self.nursery.cancel_scope.cancel()  # type: ignore[union-attr]
                return
            if self.h11.their_state is h11.MUST_CLOSE or self.server.draining:
                self.nursery.cancel_scope.cancel()  # type: ignore[union-attr]
                return
            self.h11.start_next_cycle()
            if self.pause_scope is not None:
                self.pause_scope.cancel()

    async def _reject(self, status: int, text: str) -> None:
        """An error answered by the reader itself (the worker is idle), then close."""
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
        with trio.move_on_after(5):
            try:
                await self.stream.send_all(out)
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

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled or shut down; ``started`` with the bound port."""
        listeners = await trio.open_tcp_listeners(self.port, host=self.host, backlog=4096)
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            self._connections_nursery = nursery
            with trio.CancelScope() as self._accept_scope:
                task_status.started(self.port)
                async with trio.open_nursery() as accept_nursery:
                    for listener in listeners:
                        accept_nursery.start_soon(self._accept_loop, listener, nursery)
            for listener in listeners:
                await listener.aclose()

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            await self._slots.acquire()
            try:
                stream = await listener.accept()
            except OSError as exc:
                self._slots.release()
                log.warning("accept failed: %s", exc)
                await trio.sleep(0.05)
                continue
            except BaseException:
                self._slots.release()
                raise
            nursery.start_soon(self._serve, stream)

    async def _serve(self, stream: trio.SocketStream) -> None:
        connection = _Connection(self, stream)
        self.connections.add(connection)
        try:
            await connection.serve()
        finally:
            self.connections.discard(connection)
            self._slots.release()

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, close idle connections, let busy ones finish within ``grace`` s."""
        self.draining = True
        if self._accept_scope is not None:
            self._accept_scope.cancel()
        for hook in self.drain_hooks:
            hook()  # e.g. end long-lived SSE streams so they do not hold the drain
        for connection in list(self.connections):
            connection.close_if_idle()
        with trio.move_on_after(grace):
            while self.connections:
                await trio.sleep(0.05)
                for connection in list(self.connections):
                    connection.close_if_idle()
        for connection in list(self.connections):
            if connection.nursery is not None:
                connection.nursery.cancel_scope.cancel()
