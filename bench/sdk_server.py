"""The official SDK's Streamable HTTP server with the fast upstream's tools, as a benchmark peer.

``python -m bench.sdk_server [--port 8000] [--server uvicorn|hypercorn] [--json-response]``
serves ``echo`` and ``add`` at http://127.0.0.1:PORT/mcp. uvicorn (asyncio) is what the SDK itself
uses; hypercorn runs it on trio. Tests use :func:`serve` inside their own trio loop.
"""

from __future__ import annotations

import argparse
from typing import Any

import trio
from mcp.server.mcpserver import MCPServer


def make_app(json_response: bool = False) -> Any:
    """A Starlette app serving the ``echo`` and ``add`` tools at ``/mcp``."""
    server = MCPServer("sdk-bench", log_level="WARNING")

    @server.tool()
    def echo(text: str) -> str:
        """Return the given text."""
        return text

    @server.tool()
    def add(a: float, b: float) -> float:
        """Return the sum of two numbers."""
        return a + b

    return server.streamable_http_app(json_response=json_response)


async def serve(
    port: int = 0,
    json_response: bool = False,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve under hypercorn on trio until cancelled; reports the URL (``.../mcp``) when listening."""
    from hypercorn.config import Config
    from hypercorn.trio import serve as hyper_serve

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(hyper_serve, make_app(json_response), config)
        task_status.started(binds[0] + "/mcp")


def main() -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--server", choices=("uvicorn", "hypercorn"), default="uvicorn")
    ap.add_argument("--json-response", action="store_true", help="answer POSTs with JSON, not SSE")
    opts = ap.parse_args()
    if opts.server == "hypercorn":
        trio.run(serve, opts.port, opts.json_response)
    else:
        import uvicorn

        uvicorn.run(
            make_app(opts.json_response),
            host="127.0.0.1",
            port=opts.port,
            log_level="warning",
            access_log=False,
        )


if __name__ == "__main__":
    main()
