"""The legacy HTTP+SSE transport (MCP 2024-11-05) at ``/sse`` and ``/message``, per route.

``GET /sse`` opens the stream: its first event, ``endpoint``, names where to POST
(``/message?sessionId=...``); every answer and notification then arrives on the stream.
``POST /message?sessionId=...`` carries one client message and is answered 202 at once (or
404 for a stream that is gone). The stream is the connection of a :class:`WireSession`: the
MCP session begins with ``initialize`` on it and ends with it. Idle streams get keep-alive
comments. Origin/Host/CORS were checked by the mount table; the message size by the HTTP server.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qs

import trio

from ..auth import same_caller
from ..dispatch import Dispatcher
from ..http.server import Handler, Request, Responder
from ..protocol import inbound
from ..protocol.errors import INVALID_REQUEST
from ..protocol.inbound import Rejection
from ..session import SessionManager, sse_frame
from .sse_stream import JSON_HEADERS, KEEPALIVE, SSE_HEADERS
from .wire import WireSession, acquire

if TYPE_CHECKING:
    from ..router import Route

log = logging.getLogger("mcp_gateway.sse")



class _Stream:
    __slots__ = ("wire",)

    def __init__(self, wire: WireSession) -> None:
        self.wire = wire


class LegacySSE:
    def __init__(self, dispatcher: Dispatcher, sessions: SessionManager) -> None:
        self.dispatcher = dispatcher
        self.sessions = sessions
        self._streams: dict[str, _Stream] = {}

    def __len__(self) -> int:
        return len(self._streams)

    def stream_endpoint(self, route: Route, message_path: str) -> Handler:
        async def handle(request: Request, responder: Responder) -> None:
            if request.method != b"GET":
                await responder.send(405, [(b"allow", b"GET, OPTIONS")], b"")
                return
            refused = inbound.check_get(request.header(b"accept"))
            if refused is not None:
                await responder.send(refused.status, JSON_HEADERS, refused.body())
                return
            await self._serve_stream(route, message_path, request, responder)
        return handle

    def message_endpoint(self) -> Handler:
        async def handle(request: Request, responder: Responder) -> None:
            if request.method != b"POST":
                await responder.send(405, [(b"allow", b"POST, OPTIONS")], b"")
                return
            if not inbound.is_json(request.header(b"content-type")):
                await _reject(responder, inbound.UNSUPPORTED_MEDIA_TYPE)
                return
            stream = self._streams.get(_session_id(request.target))
            if stream is None or not same_caller(stream.wire.identity, request.identity):  # not yours: unknown
                await _reject(responder, Rejection(404, INVALID_REQUEST,
                                                   "Session not found: open a new stream with GET /sse"))
                return
            if not stream.wire.running:
                await _reject(responder, Rejection(404, INVALID_REQUEST, "Session not found: its stream ended"))
                return
            # In this POST's own task (no hand-off per message): a request starts its call and
            # returns at once; what the session answers inline (initialize) is queued first.
            await stream.wire.handle(request.body)
            await responder.send(202, [], b"")
        return handle

    async def _serve_stream(self, route: Route, message_path: str, request: Request, responder: Responder) -> None:
        wire = WireSession(route, self.dispatcher, self.sessions, wire="sse", peer=request.peer,
                           identity=request.identity)
        stream_id = secrets.token_urlsafe(24)
        self._streams[stream_id] = _Stream(wire)

        writing = trio.Lock()  # one event at a time on the stream: the writer's, or a direct one

        async def write() -> None:
            outbox = wire.outbox
            try:
                async for data in outbox:
                    await acquire(writing)
                    try:
                        # b"": the keepalive's turn (so one task writes the stream, and a message costs no timer)
                        await responder.write(sse_frame(data) if data else b": ping\n\n")
                    finally:
                        writing.release()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # the client left: its session ends with the stream

        async def direct(data: bytes) -> bool:
            """The wire's write-through (WireSession.deliver): the event written by the task that has
            the answer; False while another event is being written."""
            if writing.locked() or responder.finished:
                return False
            writing.acquire_nowait()
            try:
                await responder.write(sse_frame(data))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                wire.stop()  # the client left: as when the writer finds out, the session ends
            finally:
                writing.release()
            return True

        async def keepalive() -> None:
            while True:
                await trio.sleep(KEEPALIVE)
                wire.nudge()  # a comment every KEEPALIVE (proxies drop idle streams); none while it is full

        try:
            await responder.start(200, SSE_HEADERS)
            await responder.write(b"event: endpoint\ndata: " + f"{message_path}?sessionId={stream_id}".encode()
                                  + b"\n\n")
            async with trio.open_nursery() as nursery:
                async def serve(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                    await wire.run(None, task_status=task_status)  # the POSTs hand it the client's messages
                    nursery.cancel_scope.cancel()

                wire.direct = direct
                await nursery.start(serve)  # up before the endpoint's first POST can arrive
                nursery.start_soon(keepalive)
                await write()
                nursery.cancel_scope.cancel()
            await responder.end()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client left: run() ended its session
        finally:
            del self._streams[stream_id]
            wire.stop()

    def close_all(self) -> None:
        """Draining: end the streams that opened no session yet; a session's stream answers the calls
        still running first (WireSession, on the session's drain), then ends."""
        for stream in self._streams.values():
            if stream.wire.session is None:
                stream.wire.stop()


_TOKEN_CHARS: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _session_id(target: bytes) -> str:
    """The ``sessionId`` of a POST's query: our own ids need no decoding (``secrets.token_urlsafe``),
    so the usual ``?sessionId=<id>`` is sliced; anything else is parsed properly."""
    query = target.partition(b"?")[2]
    if query.startswith(b"sessionId=") and _TOKEN_CHARS.issuperset(query[10:]):
        return query[10:].decode("ascii")
    return (parse_qs(query.decode("latin-1")).get("sessionId") or [""])[0]


async def _reject(responder: Responder, rejection: Rejection) -> None:
    await responder.send(rejection.status, JSON_HEADERS, rejection.body())
