"""The conformance fixture: an MCP server written with the official Python SDK (`MCPServer`) that
implements what the server scenarios of the official conformance suite (npm
@modelcontextprotocol/conformance) ask for, so the suite can run against it directly and through
the gateway.

    python tests/servers/conformance_server.py --port N    Streamable HTTP on 127.0.0.1:N/mcp
    python tests/servers/conformance_server.py --stdio     stdio (how the gateway runs it)

What it serves (names and texts as the scenarios describe them):
- tools: test_simple_text, test_image_content, test_audio_content, test_embedded_resource,
  test_multiple_content_types, test_tool_with_logging (3 info logs, ~50 ms apart),
  test_tool_with_progress (0, 50, 100 of 100), test_error_handling (isError), test_sampling,
  test_elicitation, test_elicitation_sep1034_defaults, test_elicitation_sep1330_enums,
  test_reconnection (closes its SSE stream mid-call, SEP-1699), json_schema_2020_12_tool;
- resources: test://static-text, test://static-binary, test://watched-resource (subscribable),
  the template test://template/{id}/data;
- prompts: test_simple_prompt, test_prompt_with_arguments, test_prompt_with_embedded_resource,
  test_prompt_with_image; completions for prompt and template arguments; logging/setLevel.

The SDK's own pieces do the protocol work: its Streamable HTTP server (with DNS rebinding
protection on for a loopback host, an event store for resumability and a retry interval), its
stdio transport, its tool/resource/prompt machinery, `ctx.report_progress`, `ctx.log`,
`ctx.session.create_message` and `ctx.session.elicit_form`.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import struct
import warnings
import wave
import zlib
from collections import OrderedDict
from typing import Any

import anyio
import mcp_types as types
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts.base import Message, UserMessage
from mcp.server.mcpserver.tools.base import Tool
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.shared.exceptions import MCPDeprecationWarning

# Logging, sampling and elicitation are deprecated from 2026-07-28 on, but they are exactly what the
# suite's handshake-era scenarios (2025-06-18, 2025-11-25) test: say so once instead of on every call.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)


# -- media, made here rather than shipped as opaque blobs ------------------------------------------

def _png_1x1_red() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    pixels = zlib.compress(b"\x00\xff\x00\x00")  # filter byte 0, then one red pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def _wav_silence(frames: int = 800, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x00" * frames)  # 0.1 s of silence
    return buf.getvalue()


PNG = _png_1x1_red()
PNG_B64 = base64.b64encode(PNG).decode()
WAV_B64 = base64.b64encode(_wav_silence()).decode()


def text(value: str) -> types.TextContent:
    return types.TextContent(type="text", text=value)


def image() -> types.ImageContent:
    return types.ImageContent(type="image", data=PNG_B64, mime_type="image/png")


def embedded(uri: str, mime_type: str, body: str) -> types.EmbeddedResource:
    return types.EmbeddedResource(
        type="resource", resource=types.TextResourceContents(uri=uri, mime_type=mime_type, text=body))


def result(*content: types.ContentBlock, is_error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=list(content), is_error=is_error)


# -- resumability: a bounded in-memory event store for the HTTP transport ---------------------------

class MemoryEventStore(EventStore):
    """Keeps the last ``limit`` SSE events (all streams together), so a client whose stream was closed
    (test_reconnection) can resume with ``Last-Event-ID``. Event ids are a global counter."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self.events: OrderedDict[str, tuple[str, types.JSONRPCMessage | None]] = OrderedDict()
        self.counter = 0

    async def store_event(self, stream_id: str, message: types.JSONRPCMessage | None) -> str:
        self.counter += 1
        event_id = str(self.counter)
        self.events[event_id] = (stream_id, message)
        while len(self.events) > self.limit:
            self.events.popitem(last=False)
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        if last_event_id not in self.events:
            return None
        stream_id = self.events[last_event_id][0]
        later = False
        for event_id, (stream, message) in list(self.events.items()):
            if later and stream == stream_id and message is not None:  # priming events carry no message
                await send_callback(EventMessage(message, event_id))
            later = later or event_id == last_event_id
        return stream_id


# -- the server ---------------------------------------------------------------------------------

def _json_schema_2020_12_tool() -> Tool:
    def json_schema_2020_12_tool(name: str | None = None, address: dict[str, Any] | None = None) -> str:
        """Tool with JSON Schema 2020-12 features"""
        return f"name={name!r}, address={json.dumps(address)}"

    tool = Tool.from_function(json_schema_2020_12_tool)
    # The SDK derives inputSchema from the signature (pydantic's dialect, no $schema); SEP-1613
    # wants these 2020-12 keywords advertised exactly, so the advertised schema is written here.
    # Arguments are still validated against the signature above.
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {"address": {"type": "object", "properties": {
            "street": {"type": "string"}, "city": {"type": "string"}}}},
        "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
        "additionalProperties": False,
    }
    return tool.model_copy(update={"parameters": schema})


server = MCPServer(
    "mcp-conformance-fixture", version="1.0.0",
    instructions="The gateway's conformance fixture (official Python SDK).",
    tools=[_json_schema_2020_12_tool()],
)


@server.tool()
def test_simple_text() -> types.CallToolResult:
    """Returns a simple text response."""
    return result(text("This is a simple text response for testing."))


@server.tool()
def test_image_content() -> types.CallToolResult:
    """Returns a 1x1 red PNG image."""
    return result(image())


@server.tool()
def test_audio_content() -> types.CallToolResult:
    """Returns a short WAV clip (silence)."""
    return result(types.AudioContent(type="audio", data=WAV_B64, mime_type="audio/wav"))


@server.tool()
def test_embedded_resource() -> types.CallToolResult:
    """Returns an embedded text resource."""
    return result(embedded("test://embedded-resource", "text/plain", "This is an embedded resource content."))


@server.tool()
def test_multiple_content_types() -> types.CallToolResult:
    """Returns text, an image and an embedded resource together."""
    return result(
        text("Multiple content types test:"),
        image(),
        embedded("test://mixed-content-resource", "application/json", json.dumps({"test": "data", "value": 123})),
    )


# logging/setLevel per client session (the Mcp-Session-Id header; one client per process on stdio)
LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]
log_levels: dict[str | None, str] = {}


def _session_key(headers: Any) -> str | None:
    return headers.get("mcp-session-id") if headers is not None else None


@server.tool()
async def test_tool_with_logging(ctx: Context) -> types.CallToolResult:
    """Sends three info log notifications about 50 ms apart while it runs."""
    threshold = log_levels.get(_session_key(ctx.headers), "debug")
    for i, message in enumerate(["Tool execution started", "Tool processing data", "Tool execution completed"]):
        if i:
            await anyio.sleep(0.05)
        if LEVELS.index("info") >= LEVELS.index(threshold):
            await ctx.log("info", message, logger_name="conformance")
    return result(text("Tool with logging executed successfully"))


@server.tool()
async def test_tool_with_progress(ctx: Context) -> types.CallToolResult:
    """Reports progress 0, 50 and 100 of 100 (when the call carries a progress token)."""
    for i, value in enumerate([0, 50, 100]):
        if i:
            await anyio.sleep(0.05)
        await ctx.report_progress(value, 100, f"{value}% done")
    return result(text("Tool with progress executed successfully"))


@server.tool()
def test_error_handling() -> types.CallToolResult:
    """Always fails: the result has isError true."""
    raise ToolError("This tool intentionally returns an error for testing")


@server.tool()
async def test_sampling(prompt: str, ctx: Context) -> types.CallToolResult:
    """Asks the client's LLM (sampling/createMessage) and returns its answer."""
    caps = ctx.session.client_capabilities
    if caps is None or caps.sampling is None:
        return result(text("The client does not support sampling"), is_error=True)
    answer = await ctx.session.create_message(
        [types.SamplingMessage(role="user", content=text(prompt))], max_tokens=100,
        related_request_id=ctx.request_context.request_id)
    said = answer.content.text if isinstance(answer.content, types.TextContent) else answer.content.type
    return result(text(f"LLM response: {said}"))


async def _elicit(ctx: Context, message: str, schema: dict[str, Any]) -> types.ElicitResult | None:
    caps = ctx.session.client_capabilities
    if caps is None or caps.elicitation is None:
        return None
    answer: types.ElicitResult = await ctx.session.elicit_form(
        message, schema, related_request_id=ctx.request_context.request_id)
    return answer


NO_ELICITATION = "The client does not support elicitation"


@server.tool()
async def test_elicitation(message: str, ctx: Context) -> types.CallToolResult:
    """Asks the user (elicitation/create) for a username and an email address."""
    answer = await _elicit(ctx, message, {
        "type": "object",
        "properties": {
            "username": {"type": "string", "description": "User's response"},
            "email": {"type": "string", "description": "User's email address"},
        },
        "required": ["username", "email"],
    })
    if answer is None:
        return result(text(NO_ELICITATION), is_error=True)
    return result(text(f"User response: action={answer.action}, content={json.dumps(answer.content or {})}"))


@server.tool()
async def test_elicitation_sep1034_defaults(ctx: Context) -> types.CallToolResult:
    """Elicits with a default value for every primitive type (SEP-1034)."""
    answer = await _elicit(ctx, "Please review your details", {
        "type": "object",
        "properties": {
            "name": {"type": "string", "title": "Name", "default": "John Doe"},
            "age": {"type": "integer", "title": "Age", "default": 30},
            "score": {"type": "number", "title": "Score", "default": 95.5},
            "status": {"type": "string", "title": "Status", "enum": ["active", "inactive", "pending"],
                       "default": "active"},
            "verified": {"type": "boolean", "title": "Verified", "default": True},
        },
    })
    if answer is None:
        return result(text(NO_ELICITATION), is_error=True)
    return result(text(f"Elicitation completed: action={answer.action}, content={json.dumps(answer.content or {})}"))


def _titled(prefix: str, titles: list[str]) -> list[dict[str, str]]:
    return [{"const": f"{prefix}{i}", "title": title} for i, title in enumerate(titles, 1)]


@server.tool()
async def test_elicitation_sep1330_enums(ctx: Context) -> types.CallToolResult:
    """Elicits with each of the five enum shapes of SEP-1330."""
    answer = await _elicit(ctx, "Please pick some options", {
        "type": "object",
        "properties": {
            "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
            "titledSingle": {"type": "string",
                             "oneOf": _titled("value", ["First Option", "Second Option", "Third Option"])},
            "legacyEnum": {"type": "string", "enum": ["opt1", "opt2", "opt3"],
                           "enumNames": ["Option One", "Option Two", "Option Three"]},
            "untitledMulti": {"type": "array", "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
            "titledMulti": {"type": "array",
                            "items": {"anyOf": _titled("value", ["First Choice", "Second Choice", "Third Choice"])}},
        },
    })
    if answer is None:
        return result(text(NO_ELICITATION), is_error=True)
    return result(text(f"Elicitation completed: action={answer.action}, content={json.dumps(answer.content or {})}"))


@server.tool()
async def test_reconnection(ctx: Context) -> types.CallToolResult:
    """Closes its own SSE stream mid-call, then answers (the client resumes with Last-Event-ID).

    The SDK offers the close only on Streamable HTTP with an event store and a client at
    2025-11-25 or later; elsewhere the answer simply arrives on the open stream."""
    await ctx.close_sse_stream()
    await anyio.sleep(0.2)  # the client reconnects after the retry interval
    return result(text("Reconnection test completed successfully. If you received this, "
                       "the client properly reconnected after stream closure."))


# -- resources ----------------------------------------------------------------------------------

@server.resource("test://static-text", name="static-text", description="A static text resource",
                 mime_type="text/plain")
def static_text() -> str:
    return "This is the content of the static text resource."


@server.resource("test://static-binary", name="static-binary", description="A static binary resource (PNG)",
                 mime_type="image/png")
def static_binary() -> bytes:
    return PNG


@server.resource("test://watched-resource", name="watched-resource",
                 description="A resource clients may subscribe to", mime_type="text/plain")
def watched_resource() -> str:
    return "Watched resource content"


@server.resource("test://template/{id}/data", name="template-data",
                 description="Data for an id (a resource template)", mime_type="application/json")
def template_data(id: str) -> str:
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


# resources/subscribe per client session, like the log level
subscriptions: dict[str | None, set[str]] = {}


async def handle_subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
    subscriptions.setdefault(_session_key(_request_headers(ctx)), set()).add(str(params.uri))
    return types.EmptyResult()


async def handle_unsubscribe(ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
    subscriptions.get(_session_key(_request_headers(ctx)), set()).discard(str(params.uri))
    return types.EmptyResult()


async def handle_set_level(ctx: Any, params: types.SetLevelRequestParams) -> types.EmptyResult:
    log_levels[_session_key(_request_headers(ctx))] = params.level
    return types.EmptyResult()


def _request_headers(ctx: Any) -> Any:
    return getattr(ctx.request, "headers", None)  # the HTTP request; None on stdio


# MCPServer has no public registration for these three methods (the SDK's own example server does
# the same); the low-level server derives the `logging` and `resources.subscribe` capabilities from
# the registered handlers.
_lowlevel = server._lowlevel_server
_lowlevel.add_request_handler("resources/subscribe", types.SubscribeRequestParams, handle_subscribe)
_lowlevel.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, handle_unsubscribe)
_lowlevel.add_request_handler("logging/setLevel", types.SetLevelRequestParams, handle_set_level)


# -- prompts and completions --------------------------------------------------------------------

@server.prompt()
def test_simple_prompt() -> str:
    """A simple prompt without arguments"""
    return "This is a simple prompt for testing."


@server.prompt()
def test_prompt_with_arguments(arg1: str, arg2: str) -> str:
    """A prompt with two required arguments"""
    return f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"


@server.prompt()
def test_prompt_with_embedded_resource(resourceUri: str) -> list[Message]:
    """A prompt that embeds a resource"""
    return [UserMessage(embedded(resourceUri, "text/plain", "Embedded resource content for testing.")),
            UserMessage("Please process the embedded resource above.")]


@server.prompt()
def test_prompt_with_image() -> list[Message]:
    """A prompt that includes an image"""
    return [UserMessage(image()), UserMessage("Please analyze the image above.")]


COMPLETIONS = {
    ("test_prompt_with_arguments", "arg1"): ["paris", "park", "party", "test", "testValue1"],
    ("test_prompt_with_arguments", "arg2"): ["world", "wonder", "testValue2"],
    ("test://template/{id}/data", "id"): ["1", "42", "123"],
}


@server.completion()
async def complete(ref: types.PromptReference | types.ResourceTemplateReference,
                   argument: types.CompletionArgument, context: Any) -> types.Completion:
    key = ref.name if isinstance(ref, types.PromptReference) else ref.uri
    values = [v for v in COMPLETIONS.get((key, argument.name), []) if v.startswith(argument.value)]
    return types.Completion(values=values, total=len(values), has_more=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--stdio", action="store_true", help="serve over stdio")
    mode.add_argument("--port", type=int, help="serve Streamable HTTP on 127.0.0.1:PORT/mcp")
    args = parser.parse_args()
    if args.stdio:
        server.run("stdio")
    else:
        # host 127.0.0.1: the SDK turns on its DNS rebinding protection (Host and Origin checks)
        server.run("streamable-http", host="127.0.0.1", port=args.port,
                   event_store=MemoryEventStore(), retry_interval=100)


if __name__ == "__main__":
    main()
