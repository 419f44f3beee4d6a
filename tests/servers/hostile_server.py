"""A stdio MCP server that attacks its client, one tool per attack (for the robustness tests).

Stdlib only and written by hand (the SDK would refuse to send most of this), so it runs on the host
(``python tests/servers/hostile_server.py``) and in the test image (``python3 -m hostile_server``).
It answers ``initialize``, ``tools/list`` and ``ping`` correctly; each tool then misbehaves:

- ``echo(text)``: a correct answer, to show the connection still works after an attack.
- ``weather(region, city)``: a correct answer; its schema mirrors ``region`` as the 2026-07-28
  ``Mcp-Param-Region`` header (``x-mcp-header``), which the gateway must check.
- ``deep(depth)``: an answer whose result is ``depth`` nested arrays (msgspec's RecursionError).
- ``deep_id_last``: the same with ``id`` after the result, as the TypeScript SDK orders members.
- ``surrogate``: a result text with a lone surrogate escape (what ``json.dumps`` writes for bad bytes).
- ``invalid_utf8``: a result with a raw 0xFF byte in a string.
- ``raw_nul``: a result with a raw NUL inside a string (invalid JSON that still shows its id).
- ``truncated``: half a message that names its id, then a newline.
- ``junk``: lines of garbage (deep, wide, NULs, huge numbers), then a correct answer.
- ``flood_logs(count)``: ``count`` log notifications and stderr lines with forged log lines in them,
  then a correct answer.
- ``hang``: never answers, and stops reading stdin (a wedged server).
- ``freeze``: answers, then stops itself with SIGSTOP (a stopped process: pipes open, nothing moves).

``--deep-at-start`` prints a deeply nested value before reading anything.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

OUT = sys.stdout.buffer
TOOLS = ["echo", "weather", "deep", "deep_id_last", "surrogate", "invalid_utf8", "raw_nul", "truncated", "junk",
         "flood_logs", "hang", "freeze"]


SCHEMAS = {"weather": {"type": "object", "properties": {
    "region": {"type": "string", "x-mcp-header": "Region"}, "city": {"type": "string"}}, "required": ["city"]}}


def send(obj: object) -> None:
    OUT.write(json.dumps(obj).encode() + b"\n")
    OUT.flush()


def raw(data: bytes) -> None:
    OUT.write(data + b"\n")
    OUT.flush()


def text_result(text: str) -> dict[str, object]:
    return {"content": [{"type": "text", "text": text}], "isError": False}


def call(request_id: object, name: str, args: dict[str, object]) -> None:
    rid = json.dumps(request_id).encode()
    if name == "echo":
        send({"jsonrpc": "2.0", "id": request_id, "result": text_result(str(args.get("text", "")))})
    elif name == "weather":
        send({"jsonrpc": "2.0", "id": request_id, "result": text_result(f"sunny in {args.get('city')} "
                                                                         f"({args.get('region')})")})
    elif name == "deep":
        depth = int(args.get("depth", 200_000))  # type: ignore[call-overload]
        raw(b'{"jsonrpc":"2.0","id":' + rid + b',"result":' + b"[" * depth + b"]" * depth + b"}")
    elif name == "deep_id_last":
        raw(b'{"result":' + b"[" * 200_000 + b"]" * 200_000 + b',"jsonrpc":"2.0","id":' + rid + b"}")
    elif name == "surrogate":
        # json.dumps of a str holding a lone surrogate (surrogateescape of byte 0xFF) writes \udcff
        send({"jsonrpc": "2.0", "id": request_id, "result": text_result("bad byte: \udcff")})
    elif name == "invalid_utf8":
        raw(b'{"jsonrpc":"2.0","id":' + rid + b',"result":{"content":[{"type":"text","text":"bad \xff byte"}]}}')
    elif name == "raw_nul":
        raw(b'{"jsonrpc":"2.0","id":' + rid + b',"result":{"content":[{"type":"text","text":"nul \x00 here"}]}}')
    elif name == "truncated":
        raw(b'{"jsonrpc":"2.0","id":' + rid + b',"result":{"content":[{"type":"te')
    elif name == "junk":
        for line in (b"[" * 100_000, b"{" * 50_000, b'{"a":' * 30_000, b"\x00\x00\x00", b"\xff\xfe\xfd",
                     b"1" * 100_000, b'"\\udcff\\ud800"', b'{"jsonrpc":"2.0","id":' + b"9" * 5000 + b',"result":{}}',
                     b'{"jsonrpc":"2.0","method":"notifications/message","params":' + b"[" * 100_000 + b"}",
                     b"[" + b"0," * 200_000 + b"0]"):
            raw(line)
        send({"jsonrpc": "2.0", "id": request_id, "result": text_result("after junk")})
    elif name == "flood_logs":
        count = int(args.get("count", 5000))  # type: ignore[call-overload]
        forged = "ok\n2026-01-01 00:00:00 CRITICAL mcp_gateway: FORGED admin token is hunter2\x1b[2J\x00"
        for i in range(count):
            send({"jsonrpc": "2.0", "method": "notifications/message",
                  "params": {"level": "error", "data": f"{i} {forged}"}})
            sys.stderr.write(f"stderr {i} {forged}\n")
        sys.stderr.flush()
        send({"jsonrpc": "2.0", "id": request_id, "result": text_result(f"flooded {count}")})
    elif name == "hang":
        while True:  # stop reading stdin, never answer
            time.sleep(3600)
    elif name == "freeze":
        send({"jsonrpc": "2.0", "id": request_id, "result": text_result("freezing")})
        os.kill(os.getpid(), signal.SIGSTOP)
    else:
        send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32602, "message": f"Unknown tool: {name}"}})


def main() -> None:
    if "--deep-at-start" in sys.argv:
        raw(b"[" * 300_000)
    for line in sys.stdin.buffer:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        method, request_id = msg.get("method"), msg.get("id")
        if request_id is None:
            continue  # notifications
        if method == "initialize":
            send({"jsonrpc": "2.0", "id": request_id, "result": {
                "protocolVersion": msg["params"]["protocolVersion"], "capabilities": {"tools": {}},
                "serverInfo": {"name": "hostile", "version": "1"}}})
        elif method == "tools/list":
            send({"jsonrpc": "2.0", "id": request_id, "result": {"tools": [
                {"name": n, "inputSchema": SCHEMAS.get(n, {"type": "object"})} for n in TOOLS]}})
        elif method == "ping":
            send({"jsonrpc": "2.0", "id": request_id, "result": {}})
        elif method == "tools/call":
            params = msg.get("params") or {}
            call(request_id, str(params.get("name")), params.get("arguments") or {})
        else:
            send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": "Method not found"}})


if __name__ == "__main__":
    main()
