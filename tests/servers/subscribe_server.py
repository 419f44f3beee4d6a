"""A stdio MCP server with resource subscriptions, written with the official SDK's low-level API.

It serves ``note://a`` and ``note://b``; ``resources/subscribe`` is recorded, and the tool
``edit(uri, text)`` changes a note and sends ``notifications/resources/updated`` for it when
subscribed. ``python tests/servers/subscribe_server.py``.
"""

from __future__ import annotations

import anyio
import mcp_types as types
from mcp.server.lowlevel.server import Server
from mcp.server.stdio import stdio_server

notes = {"note://a": "alpha", "note://b": "beta"}
subscribed: set[str] = set()


async def list_resources(ctx, params):  # type: ignore[no-untyped-def]
    return types.ListResourcesResult(resources=[types.Resource(uri=u, name=u) for u in notes])


async def read_resource(ctx, params):  # type: ignore[no-untyped-def]
    uri = str(params.uri)
    return types.ReadResourceResult(contents=[types.TextResourceContents(uri=uri, text=notes[uri])])


async def subscribe(ctx, params):  # type: ignore[no-untyped-def]
    subscribed.add(str(params.uri))
    return types.EmptyResult()


async def unsubscribe(ctx, params):  # type: ignore[no-untyped-def]
    subscribed.discard(str(params.uri))
    return types.EmptyResult()


async def list_tools(ctx, params):  # type: ignore[no-untyped-def]
    schema = {"type": "object", "properties": {"uri": {"type": "string"}, "text": {"type": "string"}}}
    return types.ListToolsResult(tools=[
        types.Tool(name="edit", description="Change a note", input_schema=schema),
        types.Tool(name="subscriptions", description="What is subscribed", input_schema={"type": "object"}),
    ])


async def call_tool(ctx, params):  # type: ignore[no-untyped-def]
    args = params.arguments or {}
    if params.name == "subscriptions":
        return types.CallToolResult(content=[types.TextContent(type="text", text=",".join(sorted(subscribed)))])
    notes[args["uri"]] = args["text"]
    if args["uri"] in subscribed:
        await ctx.session.send_resource_updated(args["uri"])
    return types.CallToolResult(content=[types.TextContent(type="text", text="ok")])


server = Server("subscribe-test", on_list_resources=list_resources, on_read_resource=read_resource,
                on_subscribe_resource=subscribe, on_unsubscribe_resource=unsubscribe,
                on_list_tools=list_tools, on_call_tool=call_tool)


async def main() -> None:
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
