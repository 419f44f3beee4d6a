"""An in-process MCP client of one route: the admin page's playground calls through it.

No wire and no socket, but nothing skipped either: each :func:`call` is one
:class:`~gateway.transports.wire.WireSession` (the pipeline stdio and WebSocket use) that
initializes a session as ``identity``, sends one request and reads what comes back until its
answer. So policy, rate limits, pinning, redaction, metrics and the audit log apply as to any
client, and the call is attributed to that identity. The session exists for the call only.

What the upstream sends on the way (progress, log messages, list_changed) is collected in
order. The session offers no client capabilities, so an upstream's sampling, elicitation or
roots request is refused by the relay (the upstream hears why), never left waiting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import msgspec
import trio
from msgspec import UNSET, Raw

from ..protocol import jsonrpc, mcp
from .wire import WireSession

if TYPE_CHECKING:
    from ..dispatch import Dispatcher
    from ..router import Route
    from ..session import SessionManager

_CALL_ID: Final = 1
PROGRESS_TOKEN: Final = "playground"
MAX_NOTIFICATIONS: Final = 1000  # kept per call; beyond, counted only (a flood must not fill memory)


@dataclass(slots=True)
class Exchange:
    """What one call produced: the JSON-RPC answer (None if there was none), the notifications
    received before it, and how long the call took (request sent to answer received)."""

    answer: Raw | None
    notifications: list[Raw] = field(default_factory=list)
    dropped: int = 0  # notifications beyond MAX_NOTIFICATIONS
    seconds: float = 0.0
    failure: str | None = None  # why there is no answer (timeout, the session could not open)


_head = msgspec.json.Decoder(jsonrpc.Message)


async def call(route: Route, dispatcher: Dispatcher, sessions: SessionManager, method: str,
               params: dict[str, Any], *, identity: Any, peer: str, timeout: float,
               client_name: str = "mcp-gateway admin page") -> Exchange:
    """Send one request (``tools/call``, ``prompts/get``, ...) through the pipeline and wait for
    its answer, at most ``timeout`` seconds (then the call is cancelled, upstream too)."""
    wire = WireSession(route, dispatcher, sessions, wire="internal", peer=peer, identity=identity)
    inbox, inbound = trio.open_memory_channel[bytes](4)
    out = Exchange(answer=None)

    async def receive() -> bytes | None:
        try:
            return await inbound.receive()
        except trio.EndOfChannel:
            return None

    params = {**params, "_meta": {**(params.get("_meta") or {}), "progressToken": PROGRESS_TOKEN}}
    started: float | None = None
    async with trio.open_nursery() as nursery:
        await nursery.start(wire.run, receive)
        with trio.move_on_after(timeout) as deadline:
            await inbox.send(jsonrpc.encoder.encode({
                "jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {"protocolVersion": mcp.LATEST_HANDSHAKE, "capabilities": {},
                           "clientInfo": {"name": client_name, "version": "1"}}}))
            opened = _head.decode(await wire.outbox.receive())
            started = trio.current_time()
            if opened.error is not UNSET:
                out.failure = f"the session could not open: {opened.error.message}"
            else:
                await inbox.send(jsonrpc.encoder.encode({"jsonrpc": "2.0", "method": "notifications/initialized"}))
                await inbox.send(jsonrpc.encoder.encode(
                    {"jsonrpc": "2.0", "id": _CALL_ID, "method": method, "params": params}))
                async for data in wire.outbox:
                    msg = _head.decode(data)
                    if msg.id == _CALL_ID and msg.method is UNSET:
                        out.answer = Raw(data)
                        break
                    if len(out.notifications) < MAX_NOTIFICATIONS:
                        out.notifications.append(Raw(data))
                    else:
                        out.dropped += 1
                else:
                    out.failure = "the session ended before the call was answered"
        if deadline.cancelled_caught:
            out.failure = f"no answer within {timeout:g} s (the call was cancelled)"
        out.seconds = trio.current_time() - started if started is not None else 0.0
        inbox.close()  # the wire's run ends: the session ends, a call still running is cancelled
    return out
