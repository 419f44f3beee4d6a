"""A stdio MCP server that keeps a ledger of what its client cancelled (for the client-side tests).

Stdlib only and starts in a few milliseconds. It answers ``initialize``, ``tools/list`` and ``ping``;
its tools:

- ``echo(text)``: returns ``text``.
- ``sleep(seconds)``: answers after ``seconds``, without blocking other calls (many may run at once).
  A ``notifications/cancelled`` for the call ends it without an answer and is written in the ledger.
- ``ledger()``: JSON ``{"running": [ids], "cancelled": [ids]}``: the (upstream) request ids of the
  sleeps still running and of those the client cancelled, in order.
"""

from __future__ import annotations

import heapq
import json
import os
import select
import sys
import time

TOOLS = ["echo", "sleep", "ledger"]


def send(obj: object) -> None:
    sys.stdout.buffer.write(json.dumps(obj).encode() + b"\n")
    sys.stdout.buffer.flush()


def text(request_id: object, value: str) -> None:
    send({"jsonrpc": "2.0", "id": request_id,
          "result": {"content": [{"type": "text", "text": value}], "isError": False}})


def main() -> None:
    sleeping: list[tuple[float, int, object, float]] = []  # (deadline, seq, request id, seconds)
    running: dict[str, object] = {}  # json.dumps(id) -> id, for the sleeps not yet answered
    cancelled: list[object] = []
    seq = 0
    buffer = b""
    fd = sys.stdin.fileno()
    while True:
        timeout = max(0.0, sleeping[0][0] - time.monotonic()) if sleeping else None
        readable, _, _ = select.select([fd], [], [], timeout)
        now = time.monotonic()
        while sleeping and sleeping[0][0] <= now:
            _, _, request_id, seconds = heapq.heappop(sleeping)
            if running.pop(json.dumps(request_id), None) is not None:
                text(request_id, f"slept {seconds:g}")
        if not readable:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            try:
                msg = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if not isinstance(msg, dict):
                continue
            method, request_id = msg.get("method"), msg.get("id")
            params = msg.get("params")
            if not isinstance(params, dict):
                params = {}
            if method == "notifications/cancelled":
                target = params.get("requestId")
                if running.pop(json.dumps(target), None) is not None:
                    cancelled.append(target)
                continue
            if request_id is None:
                continue  # other notifications
            if method == "initialize":
                send({"jsonrpc": "2.0", "id": request_id, "result": {
                    "protocolVersion": params.get("protocolVersion", "2025-11-25"),
                    "capabilities": {"tools": {}}, "serverInfo": {"name": "ledger", "version": "1"}}})
            elif method == "tools/list":
                send({"jsonrpc": "2.0", "id": request_id, "result": {"tools": [
                    {"name": n, "inputSchema": {"type": "object"}} for n in TOOLS]}})
            elif method == "ping":
                send({"jsonrpc": "2.0", "id": request_id, "result": {}})
            elif method == "tools/call":
                name, args = params.get("name"), params.get("arguments")
                args = args if isinstance(args, dict) else {}  # whatever a fuzzed client sent
                if name == "echo":
                    text(request_id, str(args.get("text", "")))
                elif name == "sleep":
                    seconds = float(args.get("seconds", 1))
                    seq += 1
                    heapq.heappush(sleeping, (time.monotonic() + seconds, seq, request_id, seconds))
                    running[json.dumps(request_id)] = request_id
                elif name == "ledger":
                    text(request_id, json.dumps({"running": list(running.values()), "cancelled": cancelled}))
                else:
                    send({"jsonrpc": "2.0", "id": request_id,
                          "error": {"code": -32602, "message": f"Unknown tool: {name}"}})
            else:
                send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": "Method not found"}})


if __name__ == "__main__":
    main()
