"""MCP Streamable HTTP at ``/mcp`` and ``/<route>/mcp``: the wire, and nothing but the wire.

POST carries client messages; GET opens the server-to-client stream (or resumes a stream
with ``Last-Event-ID``); DELETE ends a session. Each POST is classified on its own
(:mod:`gateway.protocol.inbound`): a ``MCP-Protocol-Version`` of the 2026-07-28 era goes to
:mod:`gateway.transports.modern`, the rest is the handshake era (2024-11-05 .. 2025-11-25):
``initialize`` opens a session, and requests run through the shared pipeline
(:class:`gateway.dispatch.Dispatcher`). Origin, Host and CORS were checked by the mount table.

A request is answered with JSON, or, once the call sends notifications (or when the client
accepts only SSE), with a resumable SSE stream: a priming event, the notifications, then the
result, every event with an id. A client that loses such a stream resumes it with a GET and
``Last-Event-ID``; the call goes on meanwhile (a disconnection is not a cancellation: the
spec asks for ``notifications/cancelled``). A request answered with JSON is cancelled,
upstream too, when its client disconnects: nobody could read its answer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio
from msgspec import UNSET, Raw

from .. import logsafe
from ..auth import same_caller
from ..dispatch import CallContext, Dispatcher, answer_headers
from ..http.server import Handler, Request, Responder
from ..protocol import inbound, jsonrpc, mcp
from ..protocol.errors import INVALID_REQUEST, ProtocolError
from ..protocol.inbound import Rejection
from ..protocol.jsonrpc import Message
from ..session import CANCELLED, InFlight, Session, SessionLimit, SessionManager, SSEStream, parse_event_id
from ..stats import RequestStats
from .sse_stream import JSON_HEADERS, KEEPALIVE, SSE_HEADERS, PostStream, write_events

if TYPE_CHECKING:
    from ..router import Route
    from .modern import ModernFront

log = logging.getLogger("mcp_gateway.http")


class StreamableHTTP:
    """The Streamable HTTP handlers of every route."""

    def __init__(self, dispatcher: Dispatcher, sessions: SessionManager, modern: ModernFront) -> None:
        self.dispatcher = dispatcher
        self.sessions = sessions
        self.modern = modern

    def endpoint(self, route: Route) -> Handler:
        async def handle(request: Request, responder: Responder) -> None:
            method = request.method
            if method == b"POST":
                await self._post(route, request, responder)
            elif method == b"GET":
                await self._get(route, request, responder)
            elif method == b"DELETE":
                await self._delete(request, responder)
            else:
                await responder.send(405, [(b"allow", b"GET, POST, DELETE, OPTIONS")], b"")
        return handle

    # -- POST -------------------------------------------------------------------------
    async def _post(self, route: Route, request: Request, responder: Responder) -> None:
        post = inbound.check_post(request.header(b"accept"), request.header(b"content-type"),
                                  request.header(mcp.VERSION_HEADER), request.body)
        if isinstance(post, Rejection):
            await _reject(responder, _counted(self.dispatcher.stats, post))
            return
        if post.era == "modern":
            await self.modern.post(route, request, responder, post)
            return
        if post.batch:
            await self._batch(route, request, responder, post)
            return
        try:
            msg = jsonrpc.decode_message(request.body)
        except ProtocolError as exc:
            await _reject(responder, Rejection.of(400, exc))
            return
        if msg.method == "initialize":
            await self._initialize(route, msg, request, responder)
            return
        if msg.method == "server/discover" or (msg.is_request and self.modern.has_envelope(msg)):
            await self.modern.post(route, request, responder, post, msg)  # it says what is missing
            return
        session = self._session(request)
        if isinstance(session, Rejection):
            await _reject(responder, session)
            return
        if session.route is not route:
            await _reject(responder, Rejection(404, INVALID_REQUEST, "Session belongs to another endpoint",
                                               jsonrpc.request_id(msg)))
            return
        ctx = CallContext(route, session, headers=request.headers, version=session.version, peer=request.peer,
                          identity=request.identity)
        if msg.is_request:
            await self._request(ctx, msg, responder, post.accepts_json, post.accepts_sse)
        elif msg.is_response:
            self.dispatcher.response(ctx, msg)  # an answer to a request relayed from an upstream
            await responder.send(202, [], b"")
        else:
            self.dispatcher.notification(ctx, msg)
            await responder.send(202, [], b"")

    def _session(self, request: Request) -> Session | Rejection:
        header = request.header(mcp.SESSION_HEADER)
        if header is None:
            return inbound.MISSING_SESSION
        session = self.sessions.get(header)
        if session is None or not same_caller(session.identity, request.identity):  # another's is unknown to you
            return inbound.UNKNOWN_SESSION
        session.touch()
        return session

    async def _initialize(self, route: Route, msg: Message, request: Request, responder: Responder) -> None:
        if not msg.is_request:
            await _reject(responder, Rejection(400, INVALID_REQUEST, "initialize must be a request"))
            return
        try:
            params = jsonrpc.decode_params(msg) if msg.params is not UNSET else {}
        except ProtocolError as exc:
            await _reject(responder, Rejection.of(400, exc))
            return
        version = mcp.negotiate_version(jsonrpc.decode_any(params.get("protocolVersion")))
        try:
            session = self.sessions.create(route, version, jsonrpc.decode_any(params.get("clientInfo")),
                                           jsonrpc.decode_any(params.get("capabilities")), request.peer,
                                           identity=request.identity)
        except SessionLimit as exc:
            await _reject(responder, _counted(self.dispatcher.stats, Rejection(
                503, jsonrpc.INTERNAL_ERROR, f"Too many sessions: {exc}", jsonrpc.request_id(msg))))
            return
        route.sessions.add(session)
        body = jsonrpc.encode(jsonrpc.result(msg.id, Raw(jsonrpc.encoder.encode(  # type: ignore[arg-type]
            route.initialize_result(version)))))
        client = session.client_info.get("name") if isinstance(session.client_info, dict) else None
        log.info("session %s… initialized (%s, client %s)", session.id[:8], version, logsafe.clean(str(client), 100),
                 extra={"route": route.prefix, "session": session.id[:8], "peer": request.peer})
        await responder.send(200, [*JSON_HEADERS, (b"mcp-session-id", session.id.encode())], body)

    async def _request(self, ctx: CallContext, msg: Message, responder: Responder, accepts_json: bool,
                       accepts_sse: bool) -> None:
        admitted = self.dispatcher.admit(ctx, msg)
        if not isinstance(admitted, InFlight):
            await responder.send(admitted[0], JSON_HEADERS, admitted[1])
            return
        session = ctx.session
        assert session is not None
        stream = PostStream(responder, lambda: session.sse_stream(None), resumable=True,
                            session=session) if accepts_sse else None
        ctx.back = stream
        try:
            if stream is not None and not accepts_json:
                stream.start()  # the client reads nothing but SSE
            status, body = await self.dispatcher.run(ctx, msg, admitted)
            if stream is None or stream.json_answer():
                await responder.send(status, [*JSON_HEADERS, *answer_headers(status, ctx)], body)
            else:
                # A client's own cancel ends its stream without an answer; a JSON answer always has one.
                await stream.finish(None if admitted.reason == CANCELLED else body)
        finally:
            self.dispatcher.release(ctx, msg, admitted)
            if stream is not None:
                stream.close()
                if stream.streaming:
                    await stream.wait_pump()

    async def _batch(self, route: Route, request: Request, responder: Responder, post: inbound.Post) -> None:
        try:
            items = self.dispatcher.parse_batch(request.body)
        except ProtocolError as exc:
            await _reject(responder, Rejection.of(400, exc))
            return
        session = self.sessions.get(request.header(mcp.SESSION_HEADER))
        refused = inbound.batch_allowed(session.version if session is not None else post.version)
        if refused is not None:
            await _reject(responder, refused)
            return
        found = self._session(request)
        if isinstance(found, Rejection):
            await _reject(responder, found)
            return
        ctx = CallContext(route, found, headers=request.headers, version=found.version, peer=request.peer,
                          identity=request.identity)
        try:
            answers = await self.dispatcher.batch(ctx, items)
        except ProtocolError as exc:
            await _reject(responder, Rejection.of(400, exc))
            return
        if not answers:
            await responder.send(202, [], b"")
            return
        await responder.send(200, JSON_HEADERS, b"[" + b",".join(answers) + b"]")

    # -- GET / DELETE ---------------------------------------------------------------------
    async def _get(self, route: Route, request: Request, responder: Responder) -> None:
        refused = inbound.check_get(request.header(b"accept"))
        if refused is None and request.header(mcp.VERSION_HEADER) is not None and \
                request.header(mcp.VERSION_HEADER) not in _HANDSHAKE_HEADERS:
            refused = Rejection(405, INVALID_REQUEST, "Method Not Allowed: MCP 2026-07-28 has no GET stream "
                                                      "(use subscriptions/listen)")
        session = self._session(request) if refused is None else refused
        if isinstance(session, Rejection):
            if session.status == 405:
                await responder.send(405, [(b"allow", b"POST"), *JSON_HEADERS], session.body())
            else:
                await _reject(responder, session)
            return
        last = parse_event_id(request.header(b"last-event-id"))
        session.streams += 1  # an open stream keeps its session alive and un-evictable
        try:
            if last is not None and last[0] != 0:
                resumed = session.find_sse_stream(last[0])
                if resumed is not None:
                    await _resume(responder, resumed, last[1])
                    return
            await self._listen(session, responder, last[1] if last is not None else None)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client left
        finally:
            session.streams -= 1
            session.touch()

    async def _listen(self, session: Session, responder: Responder, replay_after: int | None) -> None:
        """The GET stream: what the session missed since ``replay_after``, then whatever comes.

        One per session: a newer GET takes the stream over and the older one ends at once (the
        spec forbids sending a message on two streams, and one client must not hold many slots).
        """
        if session.get_owner is not None:
            session.get_owner.cancel()
        outbox = session.outbox()
        log_ = session.sse_stream(0)
        with trio.CancelScope() as owner:
            session.get_owner = owner
            try:
                await responder.start(200, SSE_HEADERS)
                await responder.write(b": stream open\n\n")
                if replay_after is not None:
                    for _, event in log_.since(replay_after):
                        await responder.write(event)
                while not session.closed:
                    with trio.move_on_after(KEEPALIVE) as idle:
                        try:
                            data = await outbox.receive()
                        except (trio.EndOfChannel, trio.ClosedResourceError):
                            break
                        log_.add(data)
                        await responder.write(log_.kept[-1][1])
                    if idle.cancelled_caught:
                        session.touch()
                        await responder.write(b": ping\n\n")
                await responder.end()
            finally:
                if session.get_owner is owner:
                    session.get_owner = None

    async def _delete(self, request: Request, responder: Responder) -> None:
        header = request.header(mcp.SESSION_HEADER)
        session = self.sessions.get(header)
        if session is None or not same_caller(session.identity, request.identity):
            await _reject(responder, Rejection(400 if header is None else 404, INVALID_REQUEST,
                                               "Missing Mcp-Session-Id header" if header is None
                                               else "Session not found"))
            return
        self.sessions.end(session)
        await responder.send(200, [], b"")


_HANDSHAKE_HEADERS = frozenset(v.encode() for v in mcp.HANDSHAKE_VERSIONS)


async def _resume(responder: Responder, stream: SSEStream, after: int) -> None:
    """A POST's stream, resumed on a GET: the events after ``after``, then the rest as they come."""
    stream.writers += 1
    try:
        await responder.start(200, SSE_HEADERS)
        await write_events(responder, stream, after)
        await responder.end()
    finally:
        stream.writers -= 1


async def _reject(responder: Responder, rejection: Rejection) -> None:
    await responder.send(rejection.status, JSON_HEADERS, rejection.body())


def _counted(stats: RequestStats, rejection: Rejection) -> Rejection:
    stats.reject(str(rejection.status))
    return rejection
