"""Writing SSE streams: a POST's answer that becomes a stream, and a stream read from its log.

Shared by Streamable HTTP (both eras) and the legacy HTTP+SSE transport. A POST is answered
with JSON unless the call sends notifications (progress, log messages) first: then, and only
then, the answer becomes an SSE stream of those notifications followed by the result, so they
arrive before the result on the call's own stream (lazily: the common call pays for nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import trio
from msgspec import Raw, UnsetType

from ..http.server import Headers, Responder, ResponseStateError
from ..protocol.errors import UpstreamGone
from ..session import Session, SSEStream

JSON_HEADERS: Final[Headers] = [(b"content-type", b"application/json")]
SSE_HEADERS: Final[Headers] = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                               (b"x-accel-buffering", b"no")]
KEEPALIVE: Final = 15.0  # seconds between SSE comments on a quiet stream (proxies drop idle ones)
RETRY_MS: Final = 1000  # the `retry:` a resumable stream tells clients to wait before reconnecting
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, ResponseStateError)


async def write_events(responder: Responder, stream: SSEStream, cursor: int) -> None:
    """Write ``stream``'s events after ``cursor`` as they come, until it is done."""
    while True:
        for seq, event in stream.since(cursor):
            await responder.write(event)
            cursor = seq
        if stream.done and not stream.since(cursor):
            return
        with trio.move_on_after(KEEPALIVE) as quiet:
            await stream.changed.wait()
        if quiet.cancelled_caught:
            await responder.write(b": ping\n\n")


class PostStream:
    """A POST's back-channel (:class:`gateway.dispatch.BackChannel`), see the module docstring.

    ``stream`` is where its events go. A resumable one (handshake era, in a session) has event
    ids and a priming event; the client may lose the connection and resume with Last-Event-ID,
    so the call then goes on without it (the spec: a disconnection is not a cancellation).
    A stateless one (2026-07-28) has no ids, and a disconnection cancels the call.
    """

    __slots__ = ("_make_stream", "_responder", "_resumable", "stream", "closed", "_pump_done", "dropped",
                 "_session")

    def __init__(self, responder: Responder, make_stream: Callable[[], SSEStream], *, resumable: bool,
                 session: Session | None = None) -> None:
        self._responder = responder
        self._session = session  # who answers the requests relayed on this stream (none: stateless)
        self._make_stream = make_stream  # () -> SSEStream
        self._resumable = resumable
        self.stream: SSEStream | None = None
        self.closed = False
        self._pump_done: trio.Event | None = None
        self.dropped = 0

    @property
    def streaming(self) -> bool:
        return self.stream is not None

    def send(self, data: bytes) -> None:
        """A notification for this request's client; turns the answer into a stream."""
        if self.closed:
            self.dropped += 1
            return
        self.start()
        assert self.stream is not None
        self.stream.add(data)

    def open(self) -> None:
        self.start()

    async def request(self, method: str, params: Raw | UnsetType, *, timeout: float) -> Raw:
        """A request to the client on this stream (which becomes SSE); its answer arrives on a POST."""
        if self._session is None or self.closed:
            raise UpstreamGone("the client's stream for this call is closed")
        requests = self._session.client_requests()
        request_id, data = requests.open(method, params)
        self.send(data)
        return await requests.wait(request_id, method, timeout)  # type: ignore[no-any-return]

    def start(self) -> None:
        """Answer with SSE from now on (also when the client accepts only SSE)."""
        if self.stream is not None:
            return
        self.stream = self._make_stream()
        if self._resumable:
            self._responder.survive_disconnect = True
        self._pump_done = trio.Event()
        self._responder.spawn(self._pump)

    async def _pump(self) -> None:
        stream, responder = self.stream, self._responder
        assert stream is not None and self._pump_done is not None
        stream.writers += 1
        try:
            await responder.start(200, SSE_HEADERS)
            if self._resumable:
                await responder.write(stream.priming(RETRY_MS))
            await write_events(responder, stream, 0)
            await responder.end()
        except _GONE:
            pass  # the client left: a resumable stream's events stay for Last-Event-ID
        finally:
            stream.writers -= 1
            self._pump_done.set()

    def json_answer(self) -> bool:
        """Whether the answer goes as plain JSON (nothing was streamed): the caller sends it with
        its responder, and the back-channel closes now (a late notification is dropped)."""
        if self.stream is not None:
            return False
        self.closed = True
        return True

    async def finish(self, body: bytes | None) -> None:
        """End a streamed answer (:meth:`json_answer` said False) with ``body`` as its last event
        (None: end the stream without one, as for a request the client cancelled)."""
        assert self.stream is not None
        if body is not None and not self.closed:
            self.stream.add(body)
        self.close()
        await self.wait_pump()

    def close(self) -> None:
        self.closed = True
        if self.stream is not None and not self.stream.done:
            self.stream.finish()

    async def wait_pump(self) -> None:
        """Wait for the stream's writer to end (shielded and bounded: used on the way out; callers
        skip it when nothing was streamed)."""
        if self._pump_done is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self._pump_done.wait()
