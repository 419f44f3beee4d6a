"""An MCP server of the official SDK served over HTTP on 127.0.0.1 by uvicorn (the SDK's own app).

``python tests/servers/http_server.py --transport streamable-http|sse [--port N] [options]``

Prints ``LISTENING <port>`` on stdout once it accepts connections. Options:

- ``--legacy-only``: answer a 2026-07-28 request (``MCP-Protocol-Version: 2026-07-28``) as a server
  from before that revision does (400, no session), so a client must use the handshake;
- ``--record FILE``: append one JSON line per HTTP request (method, path, headers) to FILE;
- ``--redirect HOST``: answer every request with ``307`` to the same path on HOST;
- ``--no-get``: answer GET on the MCP endpoint with 405 (a server without a standalone stream);
- ``--foreign-endpoint``: (sse) name an endpoint on another origin in the ``endpoint`` event;
- ``--tls CERT KEY``: serve HTTPS with this certificate;
- ``--chunked``: send answers without Content-Length (chunked), so a client cannot size them up front;
- ``--resumable``: keep events in memory so a stream can be resumed (``Last-Event-ID``); the tool
  ``hop`` then closes its call's stream mid-call and answers on the resumed one;
- ``--name NAME``: the server's name.

Tools: ``add``, ``echo``, ``whoami`` (process id), ``session`` (the call's Mcp-Session-Id), ``sleep`` (a cancellation is written in the
ledger), ``ledger`` (JSON: the sleeps cancelled, in order), ``huge`` (a text of ``size`` bytes),
``sample`` and ``ask`` (a sampling request on the call's own stream), ``roots`` (a roots request on
the session's standalone stream), ``clarify`` (the same through ``Resolve``: sent mid-call in the
handshake era, batched into an ``InputRequiredResult`` in 2026-07-28), ``notify_change`` (adds a
tool and sends ``tools/list_changed`` on the standalone stream).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import warnings
from typing import Annotated, Any

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.resolve import Resolve, Sample
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp_types import CreateMessageResult, JSONRPCMessage, SamplingMessage, TextContent
from pydantic import Field

warnings.simplefilter("ignore")  # the SDK marks sampling and roots deprecated in 2026-07-28

parser = argparse.ArgumentParser()
parser.add_argument("--transport", choices=["streamable-http", "sse"], default="streamable-http")
parser.add_argument("--port", type=int, default=0)
parser.add_argument("--name", default="remote")
parser.add_argument("--legacy-only", action="store_true")
parser.add_argument("--record")
parser.add_argument("--redirect")
parser.add_argument("--no-get", action="store_true")
parser.add_argument("--foreign-endpoint", action="store_true")
parser.add_argument("--tls", nargs=2)
parser.add_argument("--chunked", action="store_true")
parser.add_argument("--resumable", action="store_true")
args = parser.parse_args()

server = MCPServer(args.name, instructions="A remote test server.")
cancelled: list[str] = []


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def whoami() -> str:
    """The server's process id."""
    return str(os.getpid())


@server.tool()
def session(ctx: Context) -> str:
    """The Mcp-Session-Id this call came with ("" without one)."""
    return (ctx.headers or {}).get("mcp-session-id", "")


@server.tool()
async def sleep(seconds: float, tag: str = "") -> str:
    """Sleep, then answer; a cancellation is written in the ledger (under ``tag``)."""
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        cancelled.append(tag)
        raise
    return f"slept {seconds:g}"


@server.tool()
def ledger() -> str:
    """The tags of the sleeps that were cancelled, in order (JSON)."""
    return json.dumps({"cancelled": cancelled})


@server.tool()
def huge(size: int) -> str:
    """A text of ``size`` bytes."""
    return "x" * size


async def _sample(ctx: Context, prompt: str) -> str:
    message = SamplingMessage(role="user", content=TextContent(type="text", text=prompt))
    result = await ctx.session.create_message([message], max_tokens=16, related_request_id=ctx.request_id)
    content = result.content
    return content.text if isinstance(content, TextContent) else str(content)


@server.tool()
async def sample(prompt: str, ctx: Context) -> str:
    """Ask the client's model (sampling/createMessage on this call's stream); returns its text."""
    return await _sample(ctx, prompt)


@server.tool()
async def ask(prompt: str, delay: float, ctx: Context) -> str:
    """Wait ``delay`` seconds, then sample like ``sample`` (two clients' calls overlap this way)."""
    await anyio.sleep(delay)
    return await _sample(ctx, prompt)


@server.tool()
async def roots(ctx: Context) -> str:
    """The client's roots (roots/list on the session's standalone stream), as JSON."""
    result = await ctx.session.list_roots()
    return json.dumps([str(r.uri) for r in result.roots])


def _clarifying(prompt: str) -> Sample:
    return Sample([SamplingMessage(role="user", content=TextContent(type="text", text=prompt))], max_tokens=16)


@server.tool()
async def clarify(prompt: str, answer: Annotated[CreateMessageResult, Resolve(_clarifying)]) -> str:
    """Sample through Resolve: mid-call in the handshake era, an InputRequiredResult in 2026-07-28."""
    content = answer.content
    return f"clarified: {content.text if isinstance(content, TextContent) else content}"


@server.tool()
async def notify_change(name: str, ctx: Context) -> str:
    """Add a tool ``name`` and announce it with tools/list_changed."""

    def extra() -> str:
        return f"I am {name}"

    server.add_tool(extra, name=name, description="added at runtime")
    if ctx.protocol_version == "2026-07-28":
        await ctx.notify_tools_changed()  # to subscriptions/listen streams
    else:
        await ctx.session.send_tool_list_changed()  # on the session's standalone (GET) stream
    return f"added {name}"


@server.tool()
def region(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})]) -> str:
    """Echo an argument that 2026-07-28 clients must also send as the Mcp-Param-Region header."""
    return f"region {region}"


@server.tool()
async def hop(ctx: Context) -> str:
    """Close this call's stream (with --resumable the client resumes it), then answer."""
    await ctx.report_progress(1, 2, "before the hop")
    await ctx.info("hopping")
    await ctx.close_sse_stream()
    await anyio.sleep(0.3)
    return "landed"


class MemoryEventStore(EventStore):
    """Every event of every stream, for replay after a Last-Event-ID."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, JSONRPCMessage | None]] = []

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        event_id = str(len(self.events) + 1)
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        ids = [event[0] for event in self.events]
        if last_event_id not in ids:
            return None
        start = ids.index(last_event_id)
        stream = self.events[start][1]
        for event_id, stream_id, message in self.events[start + 1:]:
            if stream_id == stream and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream


def _wrap(app: Any) -> Any:
    """The SDK's app behind the test's options (recording, redirects, refusing 2026-07-28)."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if args.record:
            _record({"method": scope["method"], "path": scope["path"], "headers": headers})
        if args.redirect:
            await _respond(send, 307, b"", [(b"location", f"http://{args.redirect}{scope['path']}".encode())])
            return
        if args.no_get and scope["method"] == "GET" and scope["path"] == "/mcp":
            await _respond(send, 405, b"", [(b"allow", b"POST, DELETE")])
            return
        if args.foreign_endpoint:
            await app(scope, receive, _foreign(send))
            return
        if args.chunked:
            await app(scope, receive, _unsized(send))
            return
        if args.legacy_only and scope["method"] == "POST" and headers.get("mcp-protocol-version") == "2026-07-28":
            body = json.dumps({"jsonrpc": "2.0", "id": None,
                               "error": {"code": -32600, "message": "Bad Request: Missing session ID"}})
            await _respond(send, 400, body.encode(), [(b"content-type", b"application/json")])
            return
        await app(scope, receive, send)

    return wrapped


def _foreign(send: Any) -> Any:
    async def rewritten(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            body = message.get("body", b"")
            message = {**message, "body": body.replace(b"data: /messages/", b"data: http://evil.example/messages/")}
        await send(message)

    return rewritten


def _unsized(send: Any) -> Any:
    async def unsized(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [(k, v) for k, v in message["headers"] if k.lower() != b"content-length"]}
        await send(message)

    return unsized


def _record(entry: dict[str, Any]) -> None:
    with open(args.record, "a", encoding="utf-8") as f:  # one short line: written before the request goes on
        f.write(json.dumps(entry) + "\n")


async def _respond(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    resumable: dict[str, Any] = {"event_store": MemoryEventStore(), "retry_interval": 100} if args.resumable else {}
    app = server.sse_app() if args.transport == "sse" else server.streamable_http_app(**resumable)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(128)
    tls = {"ssl_certfile": args.tls[0], "ssl_keyfile": args.tls[1]} if args.tls else {}
    config = uvicorn.Config(_wrap(app), log_level="warning", lifespan="on", timeout_graceful_shutdown=1, **tls)
    userver = uvicorn.Server(config)
    original_startup = userver.startup

    async def startup(sockets: list[socket.socket] | None = None) -> None:
        await original_startup(sockets=sockets)
        sys.stdout.write(f"LISTENING {sock.getsockname()[1]}\n")
        sys.stdout.flush()

    userver.startup = startup  # type: ignore[method-assign]
    userver.run(sockets=[sock])


if __name__ == "__main__":
    main()
