"""The request pipeline every client wire shares: admit, run, answer, release.

A transport (Streamable HTTP, legacy SSE, WebSocket, stdio) only turns its wire into
JSON-RPC messages and back. For each client request it builds a :class:`CallContext` and
awaits :meth:`Dispatcher.request`, which

1. admits it: its id must not already be in flight in its session, and the session must be
   under ``max_inflight`` (refusals are answered at once, with the HTTP status the edge uses);
2. runs it cancellably (an :class:`~gateway.session.InFlight`: a plain call's wait for its
   upstream's answer is woken directly, anything else runs in a cancel scope), so that
   ``notifications/cancelled`` cancels exactly that request, a session that ends cancels its
   requests, and a shutdown that runs out of grace ends them with an answer that says so;
3. hands it to the router with the context (route, session, the request's back-channel for
   notifications, its headers, its peer and later its identity), and encodes the result or
   maps the error through the one error tree (:mod:`gateway.protocol.errors`);
4. releases it, whatever happened.

Requests without a session (MCP 2026-07-28 is stateless) are tracked too, for shutdown.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec
import trio
from msgspec import Raw

from . import mrtr
from .protocol import jsonrpc
from .protocol.errors import (
    INVALID_REQUEST,
    RATE_LIMITED,
    CallError,
    ProtocolError,
    Stopped,
    UpstreamTimeout,
    http_status,
)
from .protocol.jsonrpc import Message
from .protocol.modern import ModernRequest, complete_result, modern_error_code
from .session import CANCELLED, InFlight, Session
from .stats import RequestStats

if TYPE_CHECKING:
    from .router import Route, Router

log = logging.getLogger("mcp_gateway.dispatch")

_batch_decoder: Final = msgspec.json.Decoder(list[Raw])


class BackChannel(Protocol):
    """Where the notifications of one request go (its SSE stream, the socket, stdout)."""

    def send(self, data: bytes) -> None:
        """Queue one encoded message for the client; never blocks (a full queue drops it)."""

    def open(self) -> None:
        """The request will report progress: a wire that answers with a stream starts it now
        (long calls then get keep-alives at once). Nothing to do for a wire that always streams."""

    async def request(self, method: str, params: Raw | msgspec.UnsetType, *, timeout: float) -> Raw:
        """Send the client a request on this request's stream and wait for its answer (relayed for an
        upstream: sampling, elicitation, roots); raises CallError."""


@dataclass(slots=True)
class CallContext:
    """What the router knows of the request it serves, whatever wire it came on."""

    route: Route
    session: Session | None
    back: BackChannel | None = None  # None: the wire cannot carry notifications for this request
    headers: Mapping[bytes, bytes] | None = None
    version: str = ""  # the protocol version this request speaks
    peer: str = ""  # the client's address ("" when the wire has none, as stdio)
    identity: Any = None  # who is calling, once authentication exists
    modern: ModernRequest | None = None  # a 2026-07-28 request: its envelope (the result is rewritten)
    exchange: Any = None  # mrtr.Exchange: where an upstream's questions go for a 2026-07-28 client
    # Set by the router for metrics: the tool a tools/call went to (server, public name), and how long
    # the upstream took.
    tool: tuple[str, str] | None = None
    upstream_seconds: float | None = None
    # Set by the router for the audit log when a tools/call reaches another tool through a search-mode
    # route's call_tool: that tool's name and raw arguments (what the record names, not call_tool's).
    inner_call: tuple[str, Raw | None] | None = None
    retry_after: float | None = None  # set with a rate limit's refusal: seconds until a call may pass
    # Set by the router once it has the params decoded: the call's raw arguments (None: none), so
    # the audit record does not decode them again.
    arguments: Raw | None | msgspec.UnsetType = msgspec.UNSET
    inflight: InFlight | None = None  # the request being served (set by the dispatcher): how it is cancelled


Answer = tuple[int, bytes]  # (HTTP status the edge would use, encoded JSON-RPC answer)


def answer_headers(status: int, ctx: CallContext) -> list[tuple[bytes, bytes]]:
    """Headers an answer's status needs besides the content type: a 429 says when to retry."""
    if status != 429 or ctx.retry_after is None:
        return []
    return [(b"retry-after", str(max(1, math.ceil(ctx.retry_after))).encode())]


def encode_result(request_id: jsonrpc.RequestId, result: Raw) -> bytes:
    return jsonrpc.encode(jsonrpc.result(request_id, result))


def encode_failure(request_id: jsonrpc.RequestId | None, exc: ProtocolError | CallError) -> bytes:
    """The JSON-RPC error answer for an error of the tree (upstream error data passes through)."""
    if isinstance(exc, ProtocolError):
        return jsonrpc.encode_error(request_id, exc.code, exc.message, exc.data)
    return jsonrpc.encoder.encode(jsonrpc.Message(
        jsonrpc="2.0", id=request_id, error=jsonrpc.ErrorObject(code=exc.code, message=exc.message, data=exc.data)))


_UNSCOPED: Final = contextlib.nullcontext()  # reusable: a plain call's "scope"


AUDITED: Final = frozenset({"tools/call", "prompts/get", "resources/read"})


@dataclass(slots=True)
class CallRecord:
    """What happened to one audited call (tools/call, prompts/get, resources/read); observers read
    it and never change it (not frozen: a frozen dataclass sets each field through
    object.__setattr__, which cost more than the rest of the record)."""

    time: float  # when it ended (Unix seconds)
    route: str
    session: str | None
    identity: Any  # who called, once authentication exists
    client: str | None  # the client's own name for itself (clientInfo.name)
    method: str
    server: str | None
    name: str | None  # the tool or prompt as the client named it, or the resource URI
    duration: float
    outcome: str  # ok, tool_error, error <code>, timeout, cancelled
    request_bytes: int
    response_bytes: int
    arguments: Raw | None  # the raw arguments (the audit log stores a digest unless told otherwise)
    peer: str


def _target(msg: Message, ctx: CallContext) -> str | None:
    if ctx.tool is not None:
        return ctx.tool[1]
    if ctx.inner_call is not None:
        return ctx.inner_call[0][:500]
    try:
        params = jsonrpc.decode_params(msg)
    except ProtocolError:
        return None
    value = jsonrpc.decode_any(params.get("uri" if msg.method == "resources/read" else "name"))
    return value[:500] if isinstance(value, str) else None


def _params_bytes(msg: Message) -> bytes:
    return b"" if isinstance(msg.params, msgspec.UnsetType) else bytes(memoryview(msg.params))


def _arguments(params: bytes) -> Raw | None:
    if not params:
        return None
    try:
        value = jsonrpc.raw_members(params).get("arguments")
    except jsonrpc.DECODE_FAILURES:
        return None
    return value


class Dispatcher:
    """Runs client requests through the router; owns their in-flight bookkeeping."""

    def __init__(self, router: Router, *, max_inflight: int) -> None:
        self.router = router
        self.max_inflight = max_inflight
        self._stateless: set[InFlight] = set()  # requests without a session, for shutdown
        self._sessions: Callable[[], Any] | None = None
        self.exchanges = mrtr.Exchanges()  # run by the gateway: 2026-07-28 calls waiting for the client's input
        self.stats = RequestStats()  # read by gateway/metrics.py at scrape time
        self.observers: list[Callable[[CallRecord], None]] = []  # e.g. the audit log: one record per call
        self.exchange_timeout = 300.0  # how long such a call waits for the client's retry, in all
        self.answered = 0
        self.refused = 0

    def track_sessions(self, sessions: Callable[[], Any]) -> None:
        """Where :meth:`cancel_all` finds the sessions (the SessionManager's iterator)."""
        self._sessions = sessions

    def admit(self, ctx: CallContext, msg: Message) -> InFlight | Answer:
        """Register a request as in flight, or the refusal to answer at once."""
        request_id = msg.id
        assert request_id is not None and not isinstance(request_id, msgspec.UnsetType)
        call = InFlight()
        session = ctx.session
        if session is None:
            self._stateless.add(call)
            return call
        if request_id in session.inflight:
            self.refused += 1
            self.stats.reject("duplicate_id")
            return 400, jsonrpc.encode_error(
                request_id, INVALID_REQUEST, f"Invalid request: id {request_id!r} is already in flight in this session")
        if len(session.inflight) >= self.max_inflight:
            self.refused += 1
            self.stats.reject("429")
            return 429, jsonrpc.encode_error(
                request_id, INVALID_REQUEST, f"Too many requests in flight in this session (limit {self.max_inflight})")
        session.inflight[request_id] = call
        return call

    def release(self, ctx: CallContext, msg: Message, call: InFlight) -> None:
        session = ctx.session
        if session is None:
            self._stateless.discard(call)
            return
        if session.inflight.get(msg.id) is call:  # type: ignore[arg-type]
            del session.inflight[msg.id]  # type: ignore[arg-type]
        session.touch()

    async def request(self, ctx: CallContext, msg: Message) -> Answer:
        """Admit, run and release one request; the answer to send (never raises for its errors)."""
        admitted = self.admit(ctx, msg)
        if not isinstance(admitted, InFlight):
            return admitted
        try:
            return await self.run(ctx, msg, admitted)
        finally:
            self.release(ctx, msg, admitted)

    async def run(self, ctx: CallContext, msg: Message, call: InFlight) -> Answer:
        """Run an admitted request in its scope; the HTTP status and encoded answer, whatever happened.

        A request cancelled by the client is answered -32800 here; wires that must say
        nothing in that case (an SSE stream) check ``call.reason`` first. A 2026-07-28 request
        gets its result rewritten for its era and an error status from the one table.
        """
        request_id: jsonrpc.RequestId = msg.id  # type: ignore[assignment]
        body: bytes | None = None
        failure: ProtocolError | CallError | None = None
        started = trio.current_time()
        ctx.inflight = call
        # A 2026-07-28 call that may need the client's input goes through rounds (gateway/mrtr.py).
        rounds = ctx.modern is not None and msg.method in mrtr.METHODS and not self._no_rounds(ctx, msg)
        # The usual call waits only for its upstream's answer, and the router makes that wait
        # cancellable itself (InFlight): no cancel scope per request. Everything else gets one.
        plain = msg.method in mrtr.METHODS and not rounds
        try:
            with _UNSCOPED if plain else call.cancellable():
                try:
                    result = await (self._rounds(ctx, msg) if rounds else self.router.handle(ctx, msg))
                    if ctx.modern is not None and not bytes(memoryview(result)).startswith(mrtr.INPUT_REQUIRED):
                        result = complete_result(msg.method, result, ctx.route.server_meta)  # type: ignore[arg-type]
                    body = encode_result(request_id, result)
                except (ProtocolError, CallError) as exc:
                    failure = exc
        except trio.Cancelled:
            # Cancelled from outside (its connection or the gateway is gone, e.g. at the end of the
            # shutdown grace): no answer will be sent, but the call is still counted and audited.
            gone, elapsed = call.stopped(), trio.current_time() - started
            self._count(ctx, msg, gone.code, elapsed)
            if self.observers and msg.method in AUDITED:
                self._observe(ctx, msg, gone, call, b"", elapsed)
            raise
        self.answered += 1
        if body is None and failure is None:  # cancelled: say why
            failure = call.stopped()
        elapsed = trio.current_time() - started
        self._count(ctx, msg, None if failure is None else failure.code, elapsed)
        if body is None:
            assert failure is not None
            if ctx.modern is not None:
                failure.code = modern_error_code(failure.code)
            body = encode_failure(request_id, failure)
        if self.observers and msg.method in AUDITED:
            self._observe(ctx, msg, failure, call, body, elapsed)
        if failure is None:
            return 200, body
        if ctx.modern is None and failure.code != RATE_LIMITED:
            return 200, body  # the handshake era: the JSON-RPC error is the answer
        return http_status(failure.code), body

    def _observe(self, ctx: CallContext, msg: Message, failure: ProtocolError | CallError | None,
                 call: InFlight, body: bytes, elapsed: float) -> None:
        """One record per audited call, to whoever observes (the audit log); never raises into the call."""
        raw_params = msg.params
        request_bytes = 0 if isinstance(raw_params, msgspec.UnsetType) else len(raw_params)
        if failure is None:
            outcome = "tool_error" if b'"isError":true' in body else "ok"
        elif isinstance(failure, UpstreamTimeout):
            outcome = "timeout"
        elif call.reason is not None or isinstance(failure, Stopped):
            outcome = "cancelled"
        else:
            outcome = f"error {failure.code}"
        if ctx.inner_call is not None:
            arguments = ctx.inner_call[1]
        elif ctx.arguments is not msgspec.UNSET:
            arguments = ctx.arguments
        else:
            arguments = _arguments(_params_bytes(msg))
        session = ctx.session
        client = session.client_info if session is not None else (ctx.modern.client_info if ctx.modern else None)
        tool = ctx.tool
        record = CallRecord(
            time.time(), ctx.route.prefix, session.id if session is not None else None, ctx.identity,
            client.get("name") if isinstance(client, dict) else None, str(msg.method),
            tool[0] if tool else None, tool[1] if tool is not None else _target(msg, ctx), elapsed, outcome,
            request_bytes, len(body), arguments, ctx.peer)
        for observe in self.observers:
            try:
                observe(record)
            except Exception:  # an observer's bug must not fail the call it observes
                log.exception("an observer of calls failed")

    def _count(self, ctx: CallContext, msg: Message, code: int | None, seconds: float) -> None:
        stats = self.stats
        stats.request(ctx.route.prefix, msg.method, code, seconds)
        if ctx.identity is not None and msg.method in AUDITED:
            stats.caller(ctx.identity.key)
        if msg.method == "tools/call":
            server, tool = ctx.tool if ctx.tool is not None else ("unknown", "unknown")
            stats.tool(ctx.route.prefix, server, tool, code, ctx.upstream_seconds)

    def _no_rounds(self, ctx: CallContext, msg: Message) -> bool:
        """A 2026-07-28 call that is no retry (the key cannot hide behind an escape either) and can
        be asked no question: a plain call, without decoding params once more here."""
        assert ctx.modern is not None
        raw = _params_bytes(msg)
        return b"requestState" not in raw and b"\\u" not in raw and not self.exchanges.open(ctx.modern.client_capabilities)

    async def _rounds(self, ctx: CallContext, msg: Message) -> Raw:
        """A 2026-07-28 call that may need the client's input (see gateway/mrtr.py): the result, or an
        InputRequiredResult with the upstream's question; a retry carries the answer to it."""
        assert ctx.modern is not None
        params = jsonrpc.decode_params(msg)
        state = jsonrpc.decode_any(params.get("requestState"))
        binding = (str(msg.method), jsonrpc.decode_any(params.get("uri" if msg.method == "resources/read" else "name")))
        if state is not None:
            try:
                responses = jsonrpc.raw_members(params["inputResponses"]) if "inputResponses" in params else {}
            except jsonrpc.DECODE_FAILURES:
                raise ProtocolError(jsonrpc.INVALID_PARAMS, "Invalid params: inputResponses must be an object",
                                    jsonrpc.request_id(msg)) from None
            exchange = self.exchanges.resume(str(state), binding, responses)
        elif self.exchanges.open(ctx.modern.client_capabilities):
            # The call outlives this request (its stream, its cancellation: the exchange has its own scope).
            inner = dataclasses.replace(ctx, back=None, inflight=None)

            def call(ex: mrtr.Exchange) -> Awaitable[Raw]:
                ex.context = dataclasses.replace(inner, exchange=ex)
                return self.router.handle(ex.context, msg)

            exchange = self.exchanges.start(binding, self.exchange_timeout, call)
        else:
            return await self.router.handle(ctx, msg)
        try:
            kind, value = await exchange.next_event()
        finally:
            # The call runs on a context of its own across the client's rounds: what it went to (and
            # how long the upstream took) counts for the request that is answered now.
            found = exchange.context
            if found is not None:
                ctx.tool, ctx.upstream_seconds, ctx.inner_call = found.tool, found.upstream_seconds, found.inner_call
        if kind == "input":
            return mrtr.input_required(value, exchange.handle)
        result, failure = value
        if failure is not None:
            raise failure
        assert result is not None
        return result  # type: ignore[no-any-return]

    def response(self, ctx: CallContext, msg: Message) -> bool:
        """A client's answer to a request the gateway relayed to it; False if nothing waited for it."""
        session = ctx.session
        return session is not None and session.client_requests().resolve(msg)

    def notification(self, ctx: CallContext, msg: Message) -> None:
        """A client notification: ``notifications/cancelled`` cancels exactly one request."""
        if msg.method != "notifications/cancelled" or ctx.session is None:
            return  # initialized, roots/list_changed, progress: nothing to do (yet)
        try:
            params = jsonrpc.decode_params(msg)
        except ProtocolError:
            return  # a notification gets no answer, not even an error
        request_id = jsonrpc.decode_any(params.get("requestId"))
        call = ctx.session.inflight.get(request_id) if isinstance(request_id, int | str) else None
        if call is not None:
            call.cancel(CANCELLED)

    @staticmethod
    def parse_batch(body: bytes) -> list[Raw]:
        """A batch body's items, left raw; ProtocolError -32700 if it is not JSON.

        Parsed before any batch rule is checked, as a single message is: a body that cannot be
        read is -32700 whatever the session, never a batch-rule -32600.
        """
        try:
            return _batch_decoder.decode(body)
        except jsonrpc.DECODE_FAILURES as exc:
            text = "JSON is nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise ProtocolError(jsonrpc.PARSE_ERROR, f"Parse error: {text}") from None

    async def batch(self, ctx: CallContext, items: list[Raw]) -> list[bytes]:
        """A JSON-RPC batch (2025-03-26 only): the answers, in order (none for notifications).

        Items are decoded and admitted in order before any runs, so a repeated id is always
        the later item's error, whatever order the calls would be scheduled in.
        """
        if not items or len(items) > self.max_inflight:
            raise ProtocolError(INVALID_REQUEST, f"Invalid request: a batch holds 1 to {self.max_inflight} messages")
        answers: list[bytes | None] = [None] * len(items)
        admitted: list[tuple[int, Message, InFlight]] = []
        for i, item in enumerate(items):
            try:
                msg = jsonrpc.decode_message(item)
            except ProtocolError as exc:
                answers[i] = jsonrpc.encode_error(exc.id, exc.code, exc.message)
                continue
            if not msg.is_request:
                self.notification(ctx, msg)
                continue
            call = self.admit(ctx, msg)
            if isinstance(call, InFlight):
                admitted.append((i, msg, call))
            else:
                answers[i] = call[1]

        async def one(i: int, msg: Message, call: InFlight) -> None:
            try:  # each item its own context: the router records per-call facts in it
                answers[i] = (await self.run(dataclasses.replace(ctx), msg, call))[1]
            finally:
                self.release(ctx, msg, call)

        async with trio.open_nursery() as nursery:
            for i, msg, call in admitted:
                nursery.start_soon(one, i, msg, call)
        return [a for a in answers if a is not None]

    def cancel_all(self, reason: str) -> int:
        """Cancel every request in flight (shutdown); how many there were."""
        count = 0
        for call in list(self._stateless):
            call.cancel(reason)
            count += 1
        if self._sessions is not None:
            for session in self._sessions():
                count += len(session.inflight)
                session.cancel_all(reason)
        return count
