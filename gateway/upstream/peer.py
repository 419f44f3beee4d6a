"""The message-level seam between the gateway and one upstream server, whatever carries it.

An :class:`UpstreamPeer` is one live connection at the level of JSON-RPC messages: calls
with their answers, notifications both ways, and the server's own requests (sampling,
elicitation, roots) handed to the gateway. Two kinds implement it:

- :class:`~gateway.upstream.connection.UpstreamConnection`: newline-delimited JSON-RPC over a
  byte :class:`~gateway.upstream.channel.Channel` (process pipes, a container's attach socket);
- an HTTP client connection to a remote server (Streamable HTTP or the legacy SSE transport).

A :class:`Connector` makes peers: one per start (and restart) of the server. Lifecycles,
pools, restarts, timeouts, ``max_instances`` and liveness only ever see this seam.

Each call may carry an ``origin`` (the gateway's :class:`~gateway.dispatch.CallContext` of the
client request it serves): a server request or log notification that belongs to a call is
handed over with the origins it may belong to: exactly one when the transport says (an HTTP
upstream's request arrives on the call's own stream), else the origins of every call in flight
(a stdio server says nothing), so that the relay can decide, or refuse when it cannot tell.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio
from msgspec import UNSET, Raw, UnsetType

from .. import logsafe
from ..protocol import jsonrpc
from ..protocol.errors import CallError, ProtocolError
from ..protocol.jsonrpc import Message

log = logging.getLogger("mcp_gateway.upstream")

#: An upstream's own requests (sampling, ...) being relayed at once; beyond, they are refused.
MAX_SERVER_REQUESTS = 64


@dataclass(slots=True)
class ServerRequest:
    """A request an upstream sent the gateway (as a client): answer it with the result, or raise."""

    method: str
    params: Raw | UnsetType
    origins: list[Any] = field(default_factory=list)  # the calls it may belong to (see the module docstring)
    exact: bool = False  # True: the transport said which call it belongs to (origins has one)


def answer_now(msg: Message, *, relaying: bool, serving: int) -> Message | None:
    """The answer to an upstream's request that needs no relay: ``ping``'s, or a refusal (the gateway
    relays nothing, or already relays :data:`MAX_SERVER_REQUESTS`); None: relay it."""
    assert msg.id is not UNSET and msg.id is not None
    if msg.method == "ping":
        return jsonrpc.result(msg.id, jsonrpc.RAW_EMPTY_OBJECT)
    if not relaying:
        return jsonrpc.error(msg.id, jsonrpc.METHOD_NOT_FOUND,
                             f"the gateway does not relay {msg.method!r} from upstream servers")
    if serving >= MAX_SERVER_REQUESTS:
        return jsonrpc.error(msg.id, jsonrpc.INTERNAL_ERROR,
                             f"too many requests from this server at once (limit {MAX_SERVER_REQUESTS})")
    return None


async def relayed_answer(server: str, handler: Callable[[ServerRequest], Awaitable[Raw]], msg: Message,
                         request: ServerRequest) -> bytes:
    """The encoded answer to an upstream's request, from the client it was relayed to; never raises
    (a relay's bug answers the server with an error and ends nothing)."""
    request_id: jsonrpc.RequestId = msg.id  # type: ignore[assignment]
    try:
        out = jsonrpc.result(request_id, await handler(request))
    except (ProtocolError, CallError) as exc:
        out = jsonrpc.error(request_id, exc.code, exc.message)
    except Exception:
        log.exception("%s: relaying %s failed", server, logsafe.clean(str(msg.method), 100))
        out = jsonrpc.error(request_id, jsonrpc.INTERNAL_ERROR, "the gateway failed to relay this request")
    return jsonrpc.encode(out)


@dataclass(slots=True)
class PeerHandlers:
    """What a peer hands to the gateway."""

    notification: Callable[[Message, list[Any]], None] | None = None  # (message, origins in flight)
    request: Callable[[ServerRequest], Awaitable[Raw]] | None = None  # None: only ping is answered


class UpstreamPeer(Protocol):
    name: str
    closed: trio.Event
    close_reason: str | None
    # liveness (see liveness.py)
    last_received: float
    consecutive_timeouts: int
    suspect: trio.Event

    @property
    def in_flight(self) -> int: ...

    async def run(self, *, task_status: trio.TaskStatus[None] = ...) -> None:
        """Pump until the peer closes or :meth:`abort`; then every call in flight fails at once.
        Never raises an exception from the server's side."""

    async def call(self, method: str, params: Raw | dict[str, Raw] | UnsetType = UNSET, *,
                   timeout: float = math.inf, origin: Any = None) -> Raw:
        """A request and its result; raises :class:`~gateway.protocol.errors.CallError`."""

    async def notify(self, method: str, params: Raw | dict[str, Raw] | UnsetType = UNSET) -> None: ...

    def abort(self, reason: str) -> None:
        """End the connection now; its calls fail with ``reason``."""


class Connector(Protocol):
    """Makes one peer per start of a server (the process or container it runs in, or the HTTP session)."""

    name: str

    def connect(self, handlers: PeerHandlers) -> AbstractAsyncContextManager[UpstreamPeer]:
        """Start the server (or open the connection) and yield its running peer's parts; on exit,
        stop and release everything (bounded in time). Raises :class:`LaunchError` on failure."""
        ...
