"""The stdio front: the gateway itself as a local stdio MCP server (``mcp-gateway stdio``).

Claude Desktop and most IDEs launch their MCP servers as commands and speak newline-delimited
JSON-RPC over stdin/stdout; run as that command, the gateway serves one client there (one
route), with every upstream behind it. stdout carries protocol bytes only (logs go to
stderr); when stdin closes, the client is gone: the session ends, and the caller stops the
gateway (every upstream process and container with it).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from ..auth import LOCAL
from .lines import LineReader, MessageTooLarge
from .wire import WireSession

if TYPE_CHECKING:
    from ..app import Gateway

log = logging.getLogger("mcp_gateway.stdio")


async def serve_stdio(gateway: Gateway, route: str, stdin: trio.abc.ReceiveStream, stdout: trio.abc.SendStream,
                      *, max_message: int | None = None) -> None:
    """Serve one client on ``stdin``/``stdout`` until stdin ends."""
    wire = WireSession(gateway.routes[route], gateway.dispatcher, gateway.sessions, wire="stdio",
                       drain_on_eof=gateway.config.timeouts.shutdown_grace, identity=LOCAL)  # the local user
    reader = LineReader(stdin, max_message or gateway.config.limits.max_message)

    async def write() -> None:
        try:
            async for data in wire.outbox:
                await stdout.send_all(data + b"\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client closed its end of stdout

    async def receive() -> bytes | None:
        try:
            line = await reader.next_line()
            while line is not None and not line.strip():
                line = await reader.next_line()
        except MessageTooLarge as exc:
            log.error("stdio: the client sent %s; closing", exc)
            return None
        return line

    gateway.stdio_clients += 1
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            await wire.run(receive)
            # run() closed the channel: the writer ends once what was queued is out, or soon anyway
            scope.deadline = trio.current_time() + 2
