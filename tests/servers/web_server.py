"""A stdio MCP server for the admin page's browser tests (tests/test_web.py). Stdlib only, by hand,
so its schemas and descriptions are exactly what a test needs. ``python tests/servers/web_server.py``.

- ``order``: an inputSchema with a nested object, an array of objects, an enum, a boolean, an
  integer and a number; answers with the arguments it received as JSON (sorted keys), text and
  ``structuredContent``, so a test can assert on exactly what the form sent.
- ``hostile``: its description, title and a property's description are an XSS payload; it answers
  with the payload as text, in an embedded resource, and as an "image" whose MIME type is text/html.
- ``report``: sends two progress notifications (when given a progress token) and two log messages,
  then answers with text, a PNG image and an embedded text resource.
- a prompt and a resource with the payload in their descriptions.
"""

from __future__ import annotations

import json
import sys

PAYLOAD = "<img src=x onerror=alert(1)><script>alert(2)</script>"
# A 1x1 red PNG.
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")

TOOLS = [
    {"name": "order", "description": "Place an order (echoes what it received).",
     "inputSchema": {
         "type": "object",
         "properties": {
             "customer": {"type": "object", "description": "Who orders",
                          "properties": {"name": {"type": "string"},
                                         "address": {"type": "object",
                                                     "properties": {"city": {"type": "string"},
                                                                    "zip": {"type": "string"}},
                                                     "required": ["city"]}},
                          "required": ["name"]},
             "items": {"type": "array", "items": {"type": "object",
                                                  "properties": {"sku": {"type": "string"},
                                                                 "qty": {"type": "integer", "minimum": 1}},
                                                  "required": ["sku", "qty"]}},
             "priority": {"type": "string", "enum": ["low", "normal", "high"]},
             "gift": {"type": "boolean"},
             "discount": {"type": "number"},
         },
         "required": ["customer", "items", "priority"]}},
    {"name": "hostile", "title": PAYLOAD, "description": f"Looks harmless. {PAYLOAD}",
     "inputSchema": {"type": "object", "properties": {"note": {"type": "string", "description": PAYLOAD}}}},
    {"name": "report", "description": "Reports progress and logs, then answers with text, an image and a resource.",
     "inputSchema": {"type": "object", "properties": {}}},
]


def send(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def result(request_id: object, value: object) -> None:
    send({"jsonrpc": "2.0", "id": request_id, "result": value})


def call(request_id: object, name: str, args: dict[str, object], meta: dict[str, object]) -> None:
    if name == "order":
        result(request_id, {"content": [{"type": "text", "text": json.dumps(args, sort_keys=True)}],
                            "structuredContent": {"received": args}})
    elif name == "hostile":
        result(request_id, {"content": [
            {"type": "text", "text": f"result: {PAYLOAD}"},
            {"type": "resource", "resource": {"uri": "memo://x", "mimeType": "text/html", "text": PAYLOAD}},
            {"type": "image", "mimeType": "text/html", "data": "PHNjcmlwdD5hbGVydCgzKTwvc2NyaXB0Pg=="}]})
    elif name == "report":
        token = meta.get("progressToken")
        for step in (1, 2):
            if token is not None:
                send({"jsonrpc": "2.0", "method": "notifications/progress",
                      "params": {"progressToken": token, "progress": step, "total": 2, "message": f"step {step}"}})
            send({"jsonrpc": "2.0", "method": "notifications/message",
                  "params": {"level": "warning" if step == 2 else "info", "logger": "web", "data": f"log {step} {PAYLOAD}"}})
        result(request_id, {"content": [
            {"type": "text", "text": "reported"},
            {"type": "image", "mimeType": "image/png", "data": PNG},
            {"type": "resource", "resource": {"uri": "memo://report", "mimeType": "text/plain", "text": "the report"}}]})
    else:
        send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32602, "message": f"Unknown tool: {name}"}})


def main() -> None:
    for line in sys.stdin:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        method, request_id = msg.get("method"), msg.get("id")
        if request_id is None or method is None:
            continue  # notifications, answers
        params = msg.get("params") or {}
        if method == "initialize":
            result(request_id, {"protocolVersion": params.get("protocolVersion"),
                                "capabilities": {"tools": {}, "prompts": {}, "resources": {}, "logging": {}},
                                "serverInfo": {"name": "web", "version": "1"}})
        elif method == "tools/list":
            result(request_id, {"tools": TOOLS})
        elif method == "prompts/list":
            result(request_id, {"prompts": [{"name": "greet", "description": f"Greets. {PAYLOAD}",
                                             "arguments": [{"name": "who", "required": True}]}]})
        elif method == "resources/list":
            result(request_id, {"resources": [{"uri": "memo://web/readme", "name": "readme", "mimeType": "text/plain",
                                               "description": f"A file. {PAYLOAD}"}]})
        elif method == "resources/templates/list":
            result(request_id, {"resourceTemplates": []})
        elif method == "tools/call":
            call(request_id, str(params.get("name")), params.get("arguments") or {}, params.get("_meta") or {})
        elif method in ("ping", "logging/setLevel"):
            result(request_id, {})
        else:
            send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": "Method not found"}})


if __name__ == "__main__":
    main()
