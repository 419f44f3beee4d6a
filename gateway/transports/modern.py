"""MCP 2026-07-28 on the Streamable HTTP endpoint: stateless requests, ``server/discover`` and
``subscriptions/listen``.

Chosen per request by the transport (a ``MCP-Protocol-Version`` of this era). No session: every
request carries its own ``_meta`` (:func:`gateway.protocol.modern.classify` checks it and the
headers), runs through the same pipeline as any other with ``session=None``, and gets its
result rewritten for the era (``resultType``, caching hints, ``serverInfo``). A request that
sends notifications (progress, log messages) is answered with an SSE stream without event
ids (nothing is resumable without a session); closing it cancels the request, upstream too,
as the spec says. There is no GET stream: ``subscriptions/listen`` is a POST whose SSE answer
carries the list changes and resource updates the client asked for.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgspec
import trio
from msgspec import UNSET, Raw

from ..dispatch import CallContext, Dispatcher, answer_headers
from ..http.server import Request, Responder
from ..protocol import inbound, jsonrpc, modern
from ..protocol.errors import INVALID_REQUEST, METHOD_NOT_FOUND, ProtocolError, http_status
from ..protocol.inbound import Rejection
from ..protocol.jsonrpc import Message
from ..session import InFlight, Listener, SSEStream
from .sse_stream import JSON_HEADERS, KEEPALIVE, SSE_HEADERS, PostStream

if TYPE_CHECKING:
    from ..router import Route

log = logging.getLogger("mcp_gateway.http")

_SINGLE = "Body must be a single JSON-RPC request or notification object"


class _Filter(msgspec.Struct, rename="camel"):
    tools_list_changed: bool = False
    prompts_list_changed: bool = False
    resources_list_changed: bool = False
    resource_subscriptions: list[str] = []


class _ListenParams(msgspec.Struct):
    notifications: _Filter = msgspec.field(default_factory=_Filter)


_listen_decoder = msgspec.json.Decoder(_ListenParams)


class ModernFront:
    def __init__(self, dispatcher: Dispatcher, *, max_listeners: int = 1024) -> None:
        self.dispatcher = dispatcher
        self.max_listeners = max_listeners
        self.listeners = 0

    @staticmethod
    def has_envelope(msg: Message) -> bool:
        return modern.has_envelope(msg)

    async def post(self, route: Route, request: Request, responder: Responder, post: inbound.Post,
                   msg: Message | None = None) -> None:
        if post.batch:
            await _reject(responder, Rejection(400, INVALID_REQUEST, _SINGLE))
            return
        if msg is None:
            try:
                msg = jsonrpc.decode_message(request.body)
            except ProtocolError as exc:
                await _reject(responder, Rejection.of(400, exc))
                return
        if not msg.is_request:
            if msg.is_notification and (post.version is None or modern.is_modern_version(post.version)):
                # 2026-07-28 defines no client notifications on HTTP (a stateless cancel could
                # reach someone else's request): accepted and dropped, as the SDK does.
                await responder.send(202, [], b"")
            elif msg.is_notification:
                await _reject(responder, Rejection.of(400, modern.unsupported_version(None, post.version)))
            else:
                await _reject(responder, Rejection(400, INVALID_REQUEST, _SINGLE))
            return
        if post.version is not None and not modern.is_modern_version(post.version) and not modern.has_envelope(msg):
            # A version we do not speak on a request of neither era's shape: say which we speak
            # (what a handshake-era client with a bad header needs to hear), not which key is missing.
            await _reject(responder, Rejection.of(400, modern.unsupported_version(jsonrpc.request_id(msg),
                                                                                  post.version)))
            return
        try:
            classified = modern.classify(msg, request.headers)
        except ProtocolError as exc:
            await _reject(responder, Rejection.of(http_status(exc.code, default=400), exc))
            return
        method = msg.method
        if method not in modern.METHODS:
            await _reject(responder, Rejection(404, METHOD_NOT_FOUND, "Method not found", jsonrpc.request_id(msg),
                                               data=method))
            return
        if method == "server/discover":
            result = modern.discover_result(route.catalog.capabilities, route.server_info, route.instructions)
            await responder.send(200, JSON_HEADERS, jsonrpc.encode(
                jsonrpc.result(msg.id, Raw(jsonrpc.encoder.encode(result)))))  # type: ignore[arg-type]
            return
        ctx = CallContext(route, None, headers=request.headers, version=classified.version, peer=request.peer,
                          modern=classified, identity=request.identity)
        if method == "subscriptions/listen":
            await self._listen(ctx, msg, responder, post)
            return
        admitted = self.dispatcher.admit(ctx, msg)
        assert isinstance(admitted, InFlight)  # stateless requests are never refused for their id
        stream = PostStream(responder, lambda: SSEStream(0, 256, ids=False), resumable=False) \
            if post.accepts_sse else None
        ctx.back = stream
        try:
            if stream is not None and not post.accepts_json:
                stream.start()
            status, body = await self.dispatcher.run(ctx, msg, admitted)
            if stream is None or stream.json_answer():
                await responder.send(status, [*JSON_HEADERS, *answer_headers(status, ctx)], body)
            else:
                await stream.finish(body)
        finally:
            self.dispatcher.release(ctx, msg, admitted)
            if stream is not None:
                stream.close()
                if stream.streaming:
                    await stream.wait_pump()

    async def _listen(self, ctx: CallContext, msg: Message, responder: Responder, post: inbound.Post) -> None:
        """``subscriptions/listen``: an acknowledgment, then the notifications asked for, until
        the client closes the stream (or the gateway shuts down: then a final response)."""
        if not post.accepts_sse:
            await responder.send(406, JSON_HEADERS, jsonrpc.encode_error(
                jsonrpc.request_id(msg), INVALID_REQUEST, "Not Acceptable: subscriptions/listen needs "
                                                          "Accept: text/event-stream"))
            return
        try:
            params = _listen_decoder.decode(msg.params) if msg.params is not UNSET else _ListenParams()
        except jsonrpc.DECODE_FAILURES as exc:
            await _reject(responder, Rejection(400, jsonrpc.INVALID_PARAMS, f"Invalid params: {exc}",
                                               jsonrpc.request_id(msg)))
            return
        if self.listeners >= self.max_listeners:
            await _reject(responder, Rejection(200, jsonrpc.INTERNAL_ERROR, "Too many subscriptions/listen streams",
                                               jsonrpc.request_id(msg)))
            return
        route = ctx.route
        caps = route.catalog.capabilities
        wanted = params.notifications
        honoured: dict[str, Any] = {}
        if wanted.tools_list_changed and "tools" in caps:
            honoured["toolsListChanged"] = True
        if wanted.prompts_list_changed and "prompts" in caps:
            honoured["promptsListChanged"] = True
        if wanted.resources_list_changed and "resources" in caps:
            honoured["resourcesListChanged"] = True
        uris = [u for u in wanted.resource_subscriptions if isinstance(u, str)][:256]
        subscribable = isinstance(caps.get("resources"), dict) and caps["resources"].get("subscribe")
        if uris and subscribable:
            honoured["resourceSubscriptions"] = uris
        listener = Listener(msg.id, honoured)  # type: ignore[arg-type]
        self.listeners += 1
        route.listeners.add(listener)
        try:
            for uri in honoured.get("resourceSubscriptions", ()):
                try:
                    await self.dispatcher.router.subscribe(ctx, listener, uri)
                except ProtocolError:
                    pass  # an unknown URI is simply never updated
            await responder.start(200, SSE_HEADERS)
            await responder.write(listener.frame("notifications/subscriptions/acknowledged",
                                                 {"notifications": honoured}))
            outbox = listener.outbox
            while not listener.closed:
                with trio.move_on_after(KEEPALIVE) as idle:
                    try:
                        data = await outbox.receive()
                    except (trio.EndOfChannel, trio.ClosedResourceError):
                        break
                    await responder.write(data)
                if idle.cancelled_caught:
                    await responder.write(b": ping\n\n")
            # Graceful closure (the gateway is stopping): the listen request's response.
            await responder.write(listener.closing_response())
            await responder.end()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client closed the stream: that ends the subscription
        finally:
            self.listeners -= 1
            route.listeners.discard(listener)
            listener.close()
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                for uri in listener.subscriptions:
                    await self.dispatcher.router.unsubscribe(ctx, listener, uri)


async def _reject(responder: Responder, rejection: Rejection) -> None:
    await responder.send(rejection.status, JSON_HEADERS, rejection.body())
