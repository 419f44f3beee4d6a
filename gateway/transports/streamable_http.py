"""MCP Streamable HTTP (2025-03-26 .. 2025-11-25) at ``/mcp`` and ``/<route>/mcp``.

POST carries client messages (answered with JSON, or SSE when the request asks
for progress and the client accepts it); GET opens the server-to-client stream;
DELETE ends a session. Clients that probe with the 2026-07-28 per-request
envelope get ``-32022`` naming the handshake versions, which makes them fall
back to ``initialize``.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import msgspec
import trio
from msgspec import UNSET, Raw

from .. import logsafe
from ..http.server import Headers, Request, Responder
from ..protocol import jsonrpc, mcp
from ..protocol.errors import CallError
from ..protocol.jsonrpc import INVALID_REQUEST, Message, ProtocolError
from ..router import Route, Router
from ..session import CANCELLED, SHUTDOWN, InFlight, Session, SessionLimit, SessionManager

log = logging.getLogger("mcp_gateway.http")

JSON_HEADERS: Headers = [(b"content-type", b"application/json")]
SSE_HEADERS: Headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                        (b"x-accel-buffering", b"no")]
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_PREFLIGHT_HEADERS: Headers = [
    (b"access-control-allow-methods", b"GET, POST, DELETE, OPTIONS"),
    (b"access-control-allow-headers",
     b"content-type, accept, authorization, mcp-session-id, mcp-protocol-version, last-event-id"),
    (b"access-control-max-age", b"600"),
]
_KEEPALIVE = 15.0
_batch_decoder = msgspec.json.Decoder(list[Raw])


def sse_event(data: bytes) -> bytes:
    # A raw CR or LF can only be whitespace between JSON tokens (never inside a string),
    # but SSE would read it as a line end and cut the event: blank them.
    if b"\n" in data or b"\r" in data:
        data = data.replace(b"\r", b" ").replace(b"\n", b" ")
    return b"event: message\ndata: " + data + b"\n\n"


class OriginPolicy:
    """Origin and Host checks against DNS rebinding and cross-site browsers."""

    def __init__(self, allowed_origins: list[str], bind_host: str) -> None:
        self.any_origin = "*" in allowed_origins
        self.origins = {o.rstrip("/") for o in allowed_origins}
        # Bound to loopback, only loopback Host headers make sense; a rebinding page
        # sends its own host name.
        self.check_host = bind_host in _LOOPBACK_HOSTS or _is_loopback_ip(bind_host)
        self.hosts = set(_LOOPBACK_HOSTS) | {urlsplit(o).hostname or "" for o in self.origins}

    def origin_ok(self, origin: bytes | None) -> bool:
        if origin is None or self.any_origin:
            return True
        text = origin.decode("latin-1").rstrip("/")
        if text in self.origins:
            return True
        try:
            host = urlsplit(text).hostname
        except ValueError:
            return False
        return host in _LOOPBACK_HOSTS

    def may_read(self, origin: bytes) -> bool:
        """Whether a browser page from ``origin`` may read our answers (CORS): only origins
        configured in allowed_origins. Localhost pages may send, but any local web page
        (a dev server, another app) is not trusted to read session ids by default."""
        return self.any_origin or origin.decode("latin-1").rstrip("/") in self.origins

    def host_ok(self, host: bytes | None) -> bool:
        if not self.check_host or host is None:
            return True
        try:
            name = urlsplit("//" + host.decode("latin-1")).hostname
        except ValueError:
            return False
        return name in self.hosts or _is_loopback_ip(name)


def _is_loopback_ip(name: str | None) -> bool:
    try:
        return name is not None and ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a name such as 127.attacker.example is not an address


def _accepts(request: Request) -> tuple[bool, bool]:
    """(accepts JSON, accepts SSE); a missing Accept header accepts both."""
    accept = request.header(b"accept")
    if accept is None:
        return True, True
    accept = accept.lower()
    wild = b"*/*" in accept
    return (wild or b"application/json" in accept or b"application/*" in accept,
            wild or b"text/event-stream" in accept or b"text/*" in accept)


class StreamableHTTPTransport:
    """The HTTP handler for every MCP endpoint of the gateway."""

    def __init__(self, routes: dict[str, Route], router: Router, sessions: SessionManager,
                 origins: OriginPolicy, *, max_inflight: int,
                 extra: Callable[[Request, Responder], Any] | None = None) -> None:
        self.paths = {("/mcp" if prefix == "/" else f"{prefix}/mcp"): route for prefix, route in routes.items()}
        self.router = router
        self.sessions = sessions
        self.origins = origins
        self.max_inflight = max_inflight
        self.extra = extra

    async def __call__(self, request: Request, responder: Responder) -> None:
        origin = request.header(b"origin")
        if not self.origins.origin_ok(origin):
            await _error(responder, 403, None, INVALID_REQUEST, "Forbidden: Origin not allowed")
            return
        if origin is not None and self.origins.may_read(origin):
            # A configured browser origin may read our answers and the session id (CORS).
            responder.extra_headers = [(b"access-control-allow-origin", origin),
                                       (b"access-control-expose-headers", b"mcp-session-id"), (b"vary", b"origin")]
        if not self.origins.host_ok(request.header(b"host")):
            await _error(responder, 403, None, INVALID_REQUEST, "Forbidden: Host not allowed")
            return
        path = request.path
        route = self.paths.get(path) or self.paths.get(path.rstrip("/"))
        if route is None:
            if self.extra is not None and await self.extra(request, responder):
                return
            await _text(responder, 404, f"Not found: {path}; MCP endpoints: {', '.join(sorted(self.paths))}")
            return
        method = request.method
        if method == b"POST":
            await self._post(route, request, responder)
        elif method == b"GET":
            await self._get(route, request, responder)
        elif method == b"DELETE":
            await self._delete(request, responder)
        elif method == b"OPTIONS":  # CORS preflight (its Origin passed the check above)
            await responder.send(204, _PREFLIGHT_HEADERS, b"")
        else:
            await responder.send(405, [(b"allow", b"GET, POST, DELETE, OPTIONS")], b"")

    # -- POST -------------------------------------------------------------------------
    async def _post(self, route: Route, request: Request, responder: Responder) -> None:
        accepts_json, accepts_sse = _accepts(request)
        if not (accepts_json or accepts_sse):
            await _error(responder, 406, None, INVALID_REQUEST,
                         "Not Acceptable: Accept must include application/json or text/event-stream")
            return
        if not _is_json(request.header(b"content-type")):
            # Required, not assumed: without it a page on localhost could send a CORS "simple
            # request" (text/plain) and open sessions without a preflight.
            await _error(responder, 415, None, INVALID_REQUEST,
                         "Unsupported Media Type: Content-Type must be application/json")
            return
        body = request.body
        try:
            jsonrpc.check_utf8(body)
        except ProtocolError as exc:
            await _error(responder, 400, None, exc.code, exc.message)
            return
        if jsonrpc.is_batch(body):
            await self._batch(route, request, responder, accepts_json, accepts_sse)
            return
        try:
            msg = jsonrpc.decode_message(body)
        except ProtocolError as exc:
            await _error(responder, 400, exc.id, exc.code, exc.message)
            return
        version = request.header(mcp.VERSION_HEADER)
        if msg.method == "initialize":
            await self._initialize(route, msg, version, responder, request.peer)
            return
        if msg.method == "server/discover" or (version is not None and not mcp.is_known_version(
                version.decode("latin-1"))):
            await self._unsupported_version(msg, version, responder)
            return
        session = await self._session(request, responder, version)
        if session is None:
            return
        if session.route is not route:
            await _error(responder, 404, jsonrpc.request_id(msg), INVALID_REQUEST, "Session belongs to another endpoint")
            return
        if msg.is_request:
            await self._request(session, msg, responder, accepts_json, accepts_sse)
        else:
            self._client_notification(session, msg)
            await responder.send(202, [], b"")

    async def _session(self, request: Request, responder: Responder, version: bytes | None) -> Session | None:
        header = request.header(mcp.SESSION_HEADER)
        if header is None:
            await _error(responder, 400, None, INVALID_REQUEST,
                         "Bad Request: missing Mcp-Session-Id header (send initialize first)")
            return None
        session = self.sessions.get(header)
        if session is None:
            await _error(responder, 404, None, INVALID_REQUEST,
                         "Session not found: it ended or expired; initialize a new one")
            return None
        # A supported MCP-Protocol-Version other than the negotiated one is accepted: the spec asks
        # for 400 only for an invalid or unsupported one (refused before this, with -32022).
        session.touch()
        return session

    async def _initialize(self, route: Route, msg: Message, version_header: bytes | None,
                          responder: Responder, peer: str = "") -> None:
        if not msg.is_request:
            await _error(responder, 400, None, INVALID_REQUEST, "initialize must be a request")
            return
        params = jsonrpc.decode_params(msg) if msg.params is not UNSET else {}
        requested = jsonrpc.decode_any(params.get("protocolVersion"))
        version = mcp.negotiate_version(requested)
        try:
            session = self.sessions.create(route, version, jsonrpc.decode_any(params.get("clientInfo")),
                                           jsonrpc.decode_any(params.get("capabilities")), peer)
        except SessionLimit as exc:
            await _error(responder, 503, jsonrpc.request_id(msg), jsonrpc.INTERNAL_ERROR, f"Too many sessions: {exc}")
            return
        route.sessions.add(session)
        result = route.initialize_result(version)
        body = jsonrpc.encode(jsonrpc.result(msg.id, Raw(jsonrpc.encoder.encode(result))))  # type: ignore[arg-type]
        client = session.client_info.get("name") if isinstance(session.client_info, dict) else None
        log.info("session %s… initialized (%s, client %s)", session.id[:8], version,
                 logsafe.clean(str(client), 100))
        await responder.send(200, [*JSON_HEADERS, (b"mcp-session-id", session.id.encode())], body)

    async def _unsupported_version(self, msg: Message, version: bytes | None, responder: Responder) -> None:
        requested = version.decode("latin-1") if version is not None else "unknown"
        await _error(responder, 400, jsonrpc.request_id(msg), jsonrpc.UNSUPPORTED_PROTOCOL_VERSION,
                     f"Unsupported protocol version {requested}: this gateway speaks the initialize "
                     f"handshake ({', '.join(mcp.HANDSHAKE_VERSIONS)})",
                     {"supported": list(mcp.HANDSHAKE_VERSIONS), "requested": requested})

    def _client_notification(self, session: Session, msg: Message) -> None:
        if msg.method == "notifications/cancelled":
            try:
                params = jsonrpc.decode_params(msg)
            except ProtocolError:
                return  # a notification gets no answer, not even an error
            request_id = jsonrpc.decode_any(params.get("requestId"))
            call = session.inflight.get(request_id) if isinstance(request_id, (int, str)) else None
            if call is not None:
                call.cancel(CANCELLED)
        # notifications/initialized, roots/list_changed, progress: nothing to do (we
        # declare no server-to-client requests upstream), and responses likewise.

    async def _request(self, session: Session, msg: Message, responder: Responder,
                       accepts_json: bool, accepts_sse: bool) -> None:
        admitted = self._admit(session, msg)
        if not isinstance(admitted, InFlight):
            await responder.send(admitted[0], JSON_HEADERS, admitted[1])
            return
        use_sse = accepts_sse and (not accepts_json or _wants_progress(msg))
        try:
            if use_sse:
                await self._answer_sse(session, msg, responder, admitted)
            else:
                await self._answer_json(session, msg, responder, admitted)
        finally:
            _release(session, msg, admitted)

    def _admit(self, session: Session, msg: Message) -> InFlight | tuple[int, bytes]:
        """Register a request as in flight (its scope is what notifications/cancelled cancels),
        or the HTTP status and JSON-RPC error that refuse it."""
        request_id = msg.id
        assert request_id is not None and request_id is not UNSET
        if request_id in session.inflight:
            return 400, jsonrpc.encode_error(
                request_id, INVALID_REQUEST, f"Invalid request: id {request_id!r} is already in flight in this session")
        if len(session.inflight) >= self.max_inflight:
            return 429, jsonrpc.encode_error(
                request_id, INVALID_REQUEST, f"Too many requests in flight in this session (limit {self.max_inflight})")
        call = InFlight()
        session.inflight[request_id] = call
        return call

    async def _answer_json(self, session: Session, msg: Message, responder: Responder,
                           call: InFlight) -> None:
        body: bytes | None = None
        with call.scope:
            body = await self._result(session, msg, None)
        if body is None:  # cancelled: a POST still needs an answer
            body = _cancelled_answer(msg, call)
        await responder.send(200, JSON_HEADERS, body)

    async def _answer_sse(self, session: Session, msg: Message, responder: Responder,
                          call: InFlight) -> None:
        send, recv = trio.open_memory_channel[bytes](64)

        def emit(data: bytes) -> None:
            try:
                send.send_nowait(data)
            except trio.WouldBlock:
                pass  # progress is advisory; a slow reader loses some, never the result

        await responder.start(200, SSE_HEADERS)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pump_sse, recv, responder)
            body: bytes | None = None
            with call.scope:
                body = await self._result(session, msg, emit)
            if body is None and call.reason == SHUTDOWN:
                body = _cancelled_answer(msg, call)  # said, unlike a client's own cancel
            if body is not None:  # cancelled by the client: the stream ends without an answer
                await send.send(body)
            send.close()
        await responder.end()

    async def _result(self, session: Session, msg: Message, emit: Callable[[bytes], None] | None) -> bytes:
        try:
            result = await self.router.handle(session, msg, emit)
        except ProtocolError as exc:
            return jsonrpc.encode_error(msg.id, exc.code, exc.message)  # type: ignore[arg-type]
        except CallError as exc:
            return jsonrpc.encoder.encode(jsonrpc.Message(
                jsonrpc="2.0", id=msg.id,
                error=jsonrpc.ErrorObject(code=exc.code, message=exc.message, data=exc.data)))
        return jsonrpc.encode(jsonrpc.result(msg.id, result))  # type: ignore[arg-type]

    async def _batch(self, route: Route, request: Request, responder: Responder,
                     accepts_json: bool, accepts_sse: bool) -> None:
        # Parsed before anything else, as for a single message: a body that is not JSON (or nested
        # too deeply to read) is -32700 whatever the session, never a batch-rule -32600.
        try:
            items = _batch_decoder.decode(request.body)
        except jsonrpc.DECODE_FAILURES as exc:
            text = "JSON is nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            await _error(responder, 400, None, jsonrpc.PARSE_ERROR, f"Parse error: {text}")
            return
        version = request.header(mcp.VERSION_HEADER)
        session = self.sessions.get(request.header(mcp.SESSION_HEADER))
        negotiated = session.version if session is not None else (
            version.decode("latin-1") if version is not None else None)
        if negotiated is None or not mcp.supports_batches(negotiated):
            await _error(responder, 400, None, INVALID_REQUEST,
                         "Invalid request: JSON-RPC batches are not supported "
                         f"in protocol version {negotiated or mcp.LATEST_HANDSHAKE}")
            return
        session = await self._session(request, responder, version)
        if session is None:
            return
        if not items or len(items) > self.max_inflight:
            await _error(responder, 400, None, INVALID_REQUEST,
                         f"Invalid request: a batch holds 1 to {self.max_inflight} messages")
            return
        answers: list[bytes | None] = [None] * len(items)
        admitted: list[tuple[int, Message, InFlight]] = []
        # Decode and admit in order before anything runs, so a repeated id is always the
        # later item's error, whatever order the calls would be scheduled in.
        for i, item in enumerate(items):
            try:
                msg = jsonrpc.decode_message(item)
            except ProtocolError as exc:
                answers[i] = jsonrpc.encode_error(exc.id, exc.code, exc.message)
                continue
            if not msg.is_request:
                self._client_notification(session, msg)
                continue
            call = self._admit(session, msg)
            if isinstance(call, InFlight):
                admitted.append((i, msg, call))
            else:
                answers[i] = call[1]

        async def one(i: int, msg: Message, call: InFlight) -> None:
            try:
                with call.scope:
                    answers[i] = await self._result(session, msg, None)
                if answers[i] is None:
                    answers[i] = _cancelled_answer(msg, call)
            finally:
                _release(session, msg, call)

        async with trio.open_nursery() as nursery:
            for i, msg, call in admitted:
                nursery.start_soon(one, i, msg, call)
        out = [a for a in answers if a is not None]
        if not out:
            await responder.send(202, [], b"")
            return
        await responder.send(200, JSON_HEADERS, b"[" + b",".join(out) + b"]")

    # -- GET / DELETE ---------------------------------------------------------------------
    async def _get(self, route: Route, request: Request, responder: Responder) -> None:
        _, accepts_sse = _accepts(request)
        accept = request.header(b"accept")
        if not accepts_sse or accept is None:
            await _error(responder, 406, None, INVALID_REQUEST, "Not Acceptable: GET needs Accept: text/event-stream")
            return
        session = await self._session(request, responder, request.header(mcp.VERSION_HEADER))
        if session is None:
            return
        outbox = session.outbox()
        session.streams += 1  # an open stream keeps its session alive and un-evictable
        try:
            await responder.start(200, SSE_HEADERS)
            await responder.write(b": stream open\n\n")
            while not session.closed:
                with trio.move_on_after(_KEEPALIVE) as idle:
                    try:
                        data = await outbox.receive()
                    except (trio.EndOfChannel, trio.ClosedResourceError):
                        break
                    await responder.write(sse_event(data))
                if idle.cancelled_caught:
                    session.touch()
                    await responder.write(b": ping\n\n")
            await responder.end()
        finally:
            session.streams -= 1

    async def _delete(self, request: Request, responder: Responder) -> None:
        header = request.header(mcp.SESSION_HEADER)
        session = self.sessions.get(header)
        if session is None:
            status = 400 if header is None else 404
            await _error(responder, status, None, INVALID_REQUEST,
                         "Missing Mcp-Session-Id header" if header is None else "Session not found")
            return
        session.route.sessions.discard(session)
        self.sessions.end(session)
        await responder.send(200, [], b"")


def _release(session: Session, msg: Message, call: InFlight) -> None:
    if session.inflight.get(msg.id) is call:  # type: ignore[arg-type]
        del session.inflight[msg.id]  # type: ignore[arg-type]
    session.touch()


def _cancelled_answer(msg: Message, call: InFlight) -> bytes:
    """The answer to a request that was cancelled: it says why."""
    if call.reason == SHUTDOWN:
        return jsonrpc.encode_error(msg.id, jsonrpc.GATEWAY_SHUTTING_DOWN,  # type: ignore[arg-type]
                                    "The gateway is shutting down: the call did not finish within its grace period")
    return jsonrpc.encode_error(msg.id, jsonrpc.REQUEST_CANCELLED, "Request cancelled")  # type: ignore[arg-type]


def _is_json(ctype: bytes | None) -> bool:
    """Whether a Content-Type is application/json (parameters such as charset allowed)."""
    if ctype is None:
        return False
    return ctype.split(b";", 1)[0].strip().lower() == b"application/json"


async def _pump_sse(recv: trio.MemoryReceiveChannel[bytes], responder: Responder) -> None:
    try:
        async for data in recv:
            await responder.write(sse_event(data))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the client left; the connection's reader cancels the request


class _MetaOnly(msgspec.Struct):
    meta: dict[str, Raw] | None = msgspec.field(default=None, name="_meta")


_meta_only = msgspec.json.Decoder(_MetaOnly)


def _wants_progress(msg: Message) -> bool:
    """Whether the request carries ``_meta.progressToken`` (msgspec skips the other members)."""
    if msg.params is UNSET:
        return False
    try:
        meta = _meta_only.decode(msg.params).meta
    except jsonrpc.DECODE_FAILURES:
        return False
    return meta is not None and "progressToken" in meta


async def _error(responder: Responder, status: int, request_id: jsonrpc.RequestId | None, code: int,
                 message: str, data: object = UNSET) -> None:
    await responder.send(status, JSON_HEADERS, jsonrpc.encode_error(request_id, code, message, data))


async def _text(responder: Responder, status: int, text: str) -> None:
    await responder.send(status, [(b"content-type", b"text/plain; charset=utf-8")], (text + "\n").encode())
