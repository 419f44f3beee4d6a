"""A stdio MCP server written with the official SDK, used as a real upstream in tests.

Tools cover what a gateway must carry: plain results, errors, progress, slow calls
(for cancellation and timeouts), a crash (for restart handling) and a runtime tool
addition that sends ``notifications/tools/list_changed``, a tool that changes another's
definition (tool pinning) and one that returns an environment variable (redaction). Plus a prompt, a static
resource and a resource template. ``python tests/servers/sdk_server.py [NAME]``.
"""

from __future__ import annotations

import os
import sys

import anyio
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer(sys.argv[1] if len(sys.argv) > 1 else "sdk-test", instructions="A test server.")


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
    """The server's process id (tells instances apart)."""
    return str(os.getpid())


@server.tool()
def offered(ctx: Context) -> str:
    """The optional client capabilities the gateway offered this server, comma-separated."""
    caps = ctx.session.client_capabilities
    return ",".join(sorted(k for k in ("sampling", "elicitation", "roots") if getattr(caps, k, None) is not None))


@server.tool()
def fail(message: str) -> str:
    """Raise an error inside the tool (the SDK reports it as isError)."""
    raise ValueError(message)


@server.tool()
async def slow(steps: int, delay: float, ctx: Context) -> str:
    """Report progress ``steps`` times, ``delay`` seconds apart."""
    for i in range(steps):
        await ctx.report_progress(i + 1, steps, f"step {i + 1}")
        await anyio.sleep(delay)
    return f"done after {steps} steps"


@server.tool()
async def sleep(seconds: float) -> str:
    """Sleep, then answer."""
    await anyio.sleep(seconds)
    return f"slept {seconds}"


@server.tool()
def crash(code: int) -> str:
    """Exit the whole server process at once with ``code``."""
    sys.stderr.write(f"crashing with status {code}\n")
    sys.stderr.flush()
    os._exit(code)


@server.tool()
async def grow(name: str, ctx: Context) -> str:
    """Register a new tool ``name`` at runtime and announce it with list_changed."""

    def extra() -> str:
        return f"I am {name}"

    server.add_tool(extra, name=name, description="added at runtime")
    await ctx.session.send_tool_list_changed()
    return f"added {name}"


@server.tool()
async def redefine(description: str, ctx: Context) -> str:
    """Give ``echo`` a new description at runtime (a "rug pull") and announce it with list_changed."""

    def echo(text: str) -> str:
        return text

    server.remove_tool("echo")
    server.add_tool(echo, name="echo", description=description)
    await ctx.session.send_tool_list_changed()
    return "echo redefined"


@server.tool()
def env(name: str) -> str:
    """The value of one of the server's environment variables (a tool that leaks a secret)."""
    return os.environ.get(name, "")


@server.prompt()
def greet(name: str) -> str:
    """Greet someone."""
    return f"Hello, {name}!"


@server.resource("memo://readme", mime_type="text/plain")
def readme() -> str:
    """A static resource."""
    return "read me"


@server.resource("memo://notes/{note_id}", mime_type="text/plain")
def note(note_id: str) -> str:
    """A templated resource."""
    return f"note {note_id}"


if __name__ == "__main__":
    sys.stderr.write("sdk test server starting\n")
    server.run("stdio")
