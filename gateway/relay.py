"""What an upstream asks of the client, relayed to the client whose call it belongs to.

Upstreams act as servers to the gateway and the gateway acts as their client, so their
requests (``sampling/createMessage``, ``elicitation/create``, ``roots/list``) and their log
messages (``notifications/message``) arrive at the gateway, not at the user's client. MCP says
such requests belong to a client request (SEP-2260: "during tools/call, resources/read or
prompts/get processing"), so each one goes to the client of that call:

- which call: the peer says when its transport does (an HTTP upstream's request arrives on
  the call's own stream); a stdio server says nothing, so the call is the only one in flight
  on that connection, or every call in flight belongs to one client session (any of its calls'
  streams reaches that client). Otherwise the gateway cannot tell whose it is, and says so;
- whether that client can answer: it must have offered the capability (``sampling``,
  ``elicitation``, ``roots``) when it initialized; a 2026-07-28 request has no session to carry
  a server request and gets none (the upstream hears why);
- the answer (or error) goes back to that upstream only; ids are the gateway's on both sides.

Log messages follow the same association and reach the client on its call's stream, in order,
before the result, filtered by the level that client asked for (``logging/setLevel``, kept per
session; each upstream is set to the most verbose level any of its clients asked for). A log
message that belongs to no call, or to a call the gateway cannot tell, stays in the gateway's log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

import msgspec
import trio
from msgspec import Raw

from . import logsafe
from .protocol import jsonrpc
from .protocol.errors import METHOD_NOT_FOUND, CallError, UpstreamError, UpstreamTimeout
from .protocol.jsonrpc import Message
from .upstream.peer import ServerRequest

if TYPE_CHECKING:
    from .dispatch import CallContext

log = logging.getLogger("mcp_gateway.relay")

CAPABILITY: Final = {"sampling/createMessage": "sampling", "elicitation/create": "elicitation",
                     "roots/list": "roots"}
#: What the gateway offers upstreams as their client: it can relay each to a client that offers it.
OFFERED: Final = {"sampling": {}, "elicitation": {"form": {}, "url": {}}, "roots": {"listChanged": False}}


def offer_for(configured: dict[str, Any], client_capabilities: Any) -> dict[str, Any]:
    """What to offer an instance that serves one client only (``lifecycle: session`` or ``call``):
    the configured capabilities that client offered too, with its own sub-capabilities (sampling
    with tools, elicitation modes: the gateway relays those requests unchanged); roots as the
    gateway's, since it does not forward the client's roots list_changed."""
    client = client_capabilities if isinstance(client_capabilities, dict) else {}
    return {key: (value if key == "roots" or not isinstance(client[key], dict) else client[key])
            for key, value in configured.items() if key in client}


LEVELS: Final = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
_RANK: Final = {name: i for i, name in enumerate(LEVELS)}
_LOG_UPSTREAM: Final = {"debug": logging.DEBUG, "info": logging.INFO, "notice": logging.INFO,
                        "warning": logging.WARNING, "error": logging.WARNING, "critical": logging.WARNING,
                        "alert": logging.WARNING, "emergency": logging.WARNING}


class _LogParams(msgspec.Struct):
    level: str = "info"
    data: Raw | None = None


_log_params = msgspec.json.Decoder(_LogParams)


class Unanswerable(CallError):
    """No client can answer this server request (the message says why)."""

    def __init__(self, message: str) -> None:
        super().__init__(METHOD_NOT_FOUND, message)


def owner(origins: list[Any], exact: bool) -> CallContext | None:
    """The call a server request or log message belongs to, if the gateway can tell."""
    found: CallContext | None = None
    if exact or len(origins) == 1:
        found = origins[0] if origins else None
    elif origins and all(o.session is not None for o in origins) and len({id(o.session) for o in origins}) == 1:
        found = origins[0]  # several calls, one client session: any of them reaches that client
    return found


class Relay:
    """Relays server requests and log messages; see the module docstring."""

    def __init__(self, *, timeout: float = 300.0) -> None:
        self.timeout = timeout  # the longest a client may take to answer (its call's own deadline applies too)
        self.relayed = 0
        self.refused = 0

    async def request(self, server: str, request: ServerRequest) -> Raw:
        ctx = owner(request.origins, request.exact)
        capability = CAPABILITY.get(request.method)
        if capability is None:
            self.refused += 1
            raise Unanswerable(f"the gateway does not relay {request.method!r} (it is not a client request "
                               "an MCP client answers)")
        if ctx is None:
            self.refused += 1
            why = ("it arrived outside any call" if not request.origins else
                   "several clients have calls in flight on this server and a stdio server does not say "
                   "which call a request belongs to (lifecycle: session gives each client its own instance)")
            raise Unanswerable(f"no client can answer {request.method}: {why}")
        if ctx.modern is not None:  # a 2026-07-28 client: the question goes as an input_required result
            caps = ctx.modern.client_capabilities
            if not isinstance(caps, dict) or capability not in caps or ctx.exchange is None:
                self.refused += 1
                raise Unanswerable(f"the client did not declare the {capability} capability in this request")
            self.relayed += 1
            return await ctx.exchange.ask(request.method, request.params, self.timeout)  # type: ignore[no-any-return]
        if ctx.session is None or ctx.back is None or not hasattr(ctx.back, "request"):
            self.refused += 1
            raise Unanswerable(f"the client cannot answer {request.method} on this stream (it accepts no SSE, "
                               "or its session ended)")
        caps = ctx.session.client_capabilities
        if not isinstance(caps, dict) or capability not in caps:
            self.refused += 1
            raise Unanswerable(f"the client did not offer the {capability} capability")
        self.relayed += 1
        return await ctx.back.request(request.method, request.params, timeout=self.timeout)

    def notification(self, server: str, msg: Message, origins: list[Any]) -> bool:
        """Deliver a log message to the client of its call; False if it stays in the gateway's log."""
        try:
            params = _log_params.decode(msg.params) if not isinstance(msg.params, msgspec.UnsetType) else _LogParams()
        except jsonrpc.DECODE_FAILURES:
            params = _LogParams()
        ctx = owner(origins, exact=False)
        level = params.level if params.level in _RANK else "info"
        if ctx is not None and ctx.back is not None and _wants(ctx, level):
            ctx.back.send(jsonrpc.encode(msg))
            return True
        _log_locally(server, level, params.data)
        return False


def _wants(ctx: CallContext, level: str) -> bool:
    """Whether this client asked for log messages of ``level`` (2026-07-28: per request, else per session)."""
    if ctx.modern is not None:
        asked = ctx.modern.log_level
        return asked is not None and _RANK[level] >= _RANK.get(asked, 0)
    asked = ctx.session.log_level if ctx.session is not None else None
    return asked is None or _RANK[level] >= _RANK.get(asked, 0)


def _log_locally(server: str, level: str, data: Raw | None) -> None:
    size = 0 if data is None else len(memoryview(data))
    # The server's words: escaped, capped and rate-limited by its PeerLog (never whole: a message
    # may be 16 MB; never raw: a newline would forge a log line). Capped at WARNING: a server's
    # own error is not the gateway's.
    text = jsonrpc.decode_any(data) if 0 < size <= 65536 else None
    payload: str | bytes = text if isinstance(text, str) else (b"" if data is None else bytes(memoryview(data)[:8192]))
    logsafe.peer_log(server).log(_LOG_UPSTREAM[level], payload, what=f"log ({level}): ")


def most_verbose(levels: Iterable[str | None]) -> str | None:
    """The level an upstream shared by clients should send at: the most verbose one asked for.

    A client that asked for none takes whatever the server sends, so it counts as the most verbose
    (``debug``) once any client asked for a level: one client's ``error`` must not starve it.
    None when no client asked for a level (the upstream is left at its own default).
    """
    seen = list(levels)
    asked = [lv for lv in seen if lv in _RANK]
    if not asked:
        return None
    if any(lv is None for lv in seen):
        return LEVELS[0]
    return min(asked, key=_RANK.__getitem__)


class ClientRequests:
    """Requests the gateway sent one client session, waiting for its answers (lives on the session)."""

    __slots__ = ("_next", "_waiting")

    def __init__(self) -> None:
        self._next = 1
        self._waiting: dict[int, list[Any]] = {}  # id -> [event, answer message]

    def open(self, method: str, params: Raw | msgspec.UnsetType) -> tuple[int, bytes]:
        request_id, self._next = self._next, self._next + 1
        self._waiting[request_id] = [trio.Event(), None]
        return request_id, jsonrpc.encode(jsonrpc.request(request_id, method, params))

    async def wait(self, request_id: int, method: str, timeout: float) -> Raw:
        event, _ = self._waiting[request_id]
        try:
            with trio.move_on_after(timeout):
                await event.wait()
            answer = self._waiting[request_id][1]
        finally:
            self._waiting.pop(request_id, None)
        if answer is None:
            if event.is_set():
                raise UpstreamError(jsonrpc.INTERNAL_ERROR, "the client's session ended before it answered")
            raise UpstreamTimeout(f"the client did not answer {method} within {timeout:g}s")
        if not isinstance(answer.error, msgspec.UnsetType):
            raise UpstreamError(answer.error.code, answer.error.message, answer.error.data)
        result: Raw = answer.result
        return result

    def resolve(self, msg: Message) -> bool:
        """A response from the client: True if it answered one of ours."""
        entry = self._waiting.get(msg.id) if isinstance(msg.id, int) else None
        if entry is None:
            return False
        entry[1] = msg
        entry[0].set()
        return True

    def fail_all(self) -> None:
        for event, _ in self._waiting.values():
            event.set()
