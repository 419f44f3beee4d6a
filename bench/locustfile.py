"""Locust users for MCP Streamable HTTP (the gateway or any peer).

    locust -f bench/locustfile.py --headless -u 20 -r 10 -t 10s --host http://127.0.0.1:8080 --csv out

Users (all run, by weight, unless named on the command line):
  SessionReuseUser  initialize once, then tools/call again and again
  SessionChurnUser  initialize, 3 tools/call, DELETE, again
  DiscoveryUser     initialize once, then tools/list
  ToolMixUser       initialize once, then a weighted mix of tools/call over several tools,
                    tools/list and ping
Environment: MCP_BENCH_TOOL (default ``fast__echo``), MCP_BENCH_PATH (default ``/mcp``),
MCP_BENCH_MIX (comma-separated tools for ToolMixUser; default the tool and its ``add`` sibling),
MCP_BENCH_ARGS (JSON arguments for MCP_BENCH_TOOL; default suits echo/add), MCP_BENCH_TOKEN (an API key
or a JWT, sent as ``Authorization: Bearer``).

Every request has a unique JSON-RPC id; a request fails when the HTTP status is wrong, the body
(JSON or SSE) holds no answer with that id, the answer is a JSON-RPC error, or a tool result has
``isError``. Locust cannot saturate the gateway on 2 cores: use ``bench.load`` for peak rates.
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Any

from locust import FastHttpUser, constant, task

TOOL = os.environ.get("MCP_BENCH_TOOL", "fast__echo")
PATH = os.environ.get("MCP_BENCH_PATH", "/mcp")
VERSION = "2025-11-25"
BASE_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
if os.environ.get("MCP_BENCH_TOKEN"):
    BASE_HEADERS["Authorization"] = f"Bearer {os.environ['MCP_BENCH_TOKEN']}"


def default_args(tool: str) -> dict[str, Any]:
    """Arguments that suit the fast upstream's tools (``add`` gets numbers, anything else text)."""
    return {"a": 1, "b": 2} if tool.endswith("add") else {"text": "hello"}


TOOL_ARGS = json.loads(os.environ["MCP_BENCH_ARGS"]) if "MCP_BENCH_ARGS" in os.environ else default_args(TOOL)
MIX = [t for t in os.environ.get("MCP_BENCH_MIX", "").split(",") if t] or (
    [TOOL, TOOL.removesuffix("echo") + "add"] if TOOL.endswith("echo") else [TOOL]
)
# Ids need only be unique per session; one counter per locust process gives more than that.
_ids = itertools.count(1)


def find_answer(content_type: str, body: bytes, want_id: int) -> dict[str, Any] | None:
    """The JSON-RPC message answering ``want_id`` in a JSON or SSE body, or None."""
    if content_type.startswith("application/json"):
        msg = json.loads(body)
        return msg if isinstance(msg, dict) and msg.get("id") == want_id else None
    if content_type.startswith("text/event-stream"):
        for event in body.replace(b"\r\n", b"\n").split(b"\n\n"):
            data = b"\n".join(
                line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")
            )
            if data.startswith(b"{"):
                msg = json.loads(data)
                if isinstance(msg, dict) and msg.get("id") == want_id:
                    return msg  # skip notifications and server requests sent before it
    return None


class McpUser(FastHttpUser):
    """Base: an MCP session over Streamable HTTP and checked JSON-RPC calls."""

    abstract = True
    wait_time = constant(0)
    headers: dict[str, str] | None = None  # None: no session yet (or it was lost)

    def rpc(self, method: str, params: dict[str, Any] | None = None, name: str | None = None) -> Any:
        """POST one request; returns its result, or None after marking the request failed."""
        rid = next(_ids)
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        headers = self.headers or BASE_HEADERS
        with self.client.post(
            PATH, data=json.dumps(msg), headers=headers, name=name or method, catch_response=True
        ) as resp:
            error = None
            if resp.status_code != 200:
                error = f"HTTP {resp.status_code}"
                if resp.status_code == 404:
                    self.headers = None  # session gone: open a new one next time
            else:
                try:
                    answer = find_answer(resp.headers.get("content-type", ""), resp.content or b"", rid)
                except ValueError as exc:
                    answer, error = None, f"bad JSON: {exc}"
                if answer is None:
                    error = error or f"no answer with id {rid}"
                elif "error" in answer:
                    error = f"JSON-RPC error {answer['error']}"
                elif not isinstance(answer.get("result"), dict):
                    error = "no result"
                elif method == "tools/call" and answer["result"].get("isError"):
                    error = f"tool error: {str(answer['result'])[:200]}"
            if error or answer is None:
                resp.failure(error)
                return None
            resp.success()
            return answer["result"]

    def open_session(self) -> bool:
        """initialize + notifications/initialized; sets the session headers."""
        self.headers = None
        rid = next(_ids)
        params = {
            "protocolVersion": VERSION,
            "capabilities": {},
            "clientInfo": {"name": "locust", "version": "1"},
        }
        body = json.dumps({"jsonrpc": "2.0", "id": rid, "method": "initialize", "params": params})
        with self.client.post(
            PATH, data=body, headers=BASE_HEADERS, name="initialize", catch_response=True
        ) as resp:
            try:
                answer = find_answer(resp.headers.get("content-type", ""), resp.content or b"", rid)
            except ValueError:
                answer = None
            if resp.status_code != 200 or not answer or "result" not in answer:
                resp.failure(f"initialize failed: HTTP {resp.status_code} {(resp.content or b'')[:200]!r}")
                return False
            resp.success()
            headers = dict(BASE_HEADERS)
            headers["MCP-Protocol-Version"] = answer["result"].get("protocolVersion", VERSION)
            if sid := resp.headers.get("mcp-session-id"):
                headers["Mcp-Session-Id"] = sid
        note = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
        with self.client.post(
            PATH, data=note, headers=headers, name="notifications/initialized", catch_response=True
        ) as resp:
            if resp.status_code not in (200, 202, 204):
                resp.failure(f"HTTP {resp.status_code}")
                return False
            resp.success()
        self.headers = headers
        return True

    def close_session(self) -> None:
        """DELETE the session."""
        if self.headers is None:
            return
        with self.client.delete(
            PATH, headers=self.headers, name="DELETE session", catch_response=True
        ) as resp:
            if resp.status_code in (200, 202, 204):
                resp.success()
            else:
                resp.failure(f"HTTP {resp.status_code}")
        self.headers = None

    def ensure_session(self) -> bool:
        """Open a session unless one is open."""
        return self.headers is not None or self.open_session()

    def call(self, tool: str = TOOL, args: dict[str, Any] | None = None) -> Any:
        """tools/call, named by tool in the statistics."""
        arguments = args if args is not None else (TOOL_ARGS if tool == TOOL else default_args(tool))
        return self.rpc("tools/call", {"name": tool, "arguments": arguments}, name=f"tools/call {tool}")


class SessionReuseUser(McpUser):
    """One session, many tools/call."""

    weight = 4

    @task
    def call_tool(self) -> None:
        if self.ensure_session():
            self.call()


class SessionChurnUser(McpUser):
    """initialize, a few calls, DELETE."""

    weight = 1

    @task
    def lifecycle(self) -> None:
        if self.open_session():
            for _ in range(3):
                self.call()
            self.close_session()


class DiscoveryUser(McpUser):
    """One session, tools/list again and again."""

    weight = 1

    @task
    def list_tools(self) -> None:
        if self.ensure_session():
            self.rpc("tools/list", {})


class ToolMixUser(McpUser):
    """One session, a mix: calls spread over MCP_BENCH_MIX, some tools/list and ping."""

    weight = 2

    @task(8)
    def call_mixed(self) -> None:
        if self.ensure_session():
            tool = MIX[next(_ids) % len(MIX)]
            self.call(tool)

    @task(1)
    def list_tools(self) -> None:
        if self.ensure_session():
            self.rpc("tools/list", {})

    @task(1)
    def ping(self) -> None:
        if self.ensure_session():
            self.rpc("ping", {})
