"""Locust users for MCP gateways (or any MCP peer): Streamable HTTP, legacy HTTP+SSE, WebSocket and
2026-07-28 stateless requests.

    locust -f bench/locustfile.py --headless -u 20 -r 10 -t 10s --host http://127.0.0.1:8080 --csv out
    locust -f bench/locustfile.py --headless -u 10 -r 10 -t 10s --host URL SSEUser WebSocketUser

Users that run by default (by weight), all over Streamable HTTP in the handshake era:
  SessionReuseUser  initialize once, then tools/call again and again
  SessionChurnUser  initialize, 3 tools/call, DELETE, again
  DiscoveryUser     initialize once, then tools/list
  ToolMixUser       initialize once, then a weighted mix of tools/call over several tools,
                    tools/list and ping
Users that run only when named on the command line (``opt_in``):
  SSEUser           the legacy HTTP+SSE transport: GET /sse, POST /message?sessionId=..., answers on
                    the stream; the tool mix, tools/list and ping
  WebSocketUser     WebSocket at /ws (subprotocol ``mcp``, one message per text frame); the same tasks
  StatelessUser     2026-07-28: no initialize, no session; ``params._meta`` and the ``MCP-Protocol-
                    Version``/``Mcp-Method``/``Mcp-Name`` headers on every request; the tool mix,
                    tools/list and server/discover

Which tool: MCP_BENCH_TOOL names it (arguments MCP_BENCH_ARGS, JSON; default suits the bench's
fast upstream: ``add`` gets numbers, anything else ``{"text": "hello"}``). Unset, each locust process
lists the tools once (following ``nextCursor``), ranks them (read-only ones first, never destructive
ones), generates arguments from each ``inputSchema``, tries the best few with one call each and takes
the first that answers without error; it logs one line naming its pick. MCP_BENCH_MIX
(comma-separated) names the tools of the mix (ToolMixUser and the opt-in users); default: the (up
to 3) picked tools that answered, or with MCP_BENCH_TOOL set the tool, and its ``add`` sibling when
it is an ``echo``. MCP_BENCH_PATH (default ``/mcp``; the SSE and
WebSocket paths follow from it: ``/team-a/mcp`` gives ``/team-a/sse`` and ``/team-a/ws``, or set
MCP_BENCH_SSE_PATH and MCP_BENCH_WS_PATH), MCP_BENCH_TOKEN (an API key or a JWT, sent as
``Authorization: Bearer``), MCP_BENCH_TIMEOUT (seconds one answer may take on SSE/WebSocket; 60).

Every request has a unique JSON-RPC id; a request fails when the HTTP status is wrong, the body
(JSON or SSE) or stream holds no answer with that id, the answer is a JSON-RPC error, or a tool
result has ``isError``. SSE and WebSocket requests are timed from the send to the answer on the
stream and reported to locust's event system with request types ``SSE`` and ``WS``. Locust cannot
saturate the gateway on 2 cores: use ``bench.load`` for peak rates.
"""

from __future__ import annotations

import base64
import datetime
import itertools
import json
import logging
import math
import os
import re
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import gevent
import gevent.lock
import h11
from gevent.event import AsyncResult
from locust import FastHttpUser, User, constant, events, task
from locust.runners import WorkerRunner
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request as WSRequest,
    TextMessage,
)

log = logging.getLogger("bench.locustfile")

PATH = os.environ.get("MCP_BENCH_PATH", "/mcp")
_ROUTE = PATH.removesuffix("/mcp")
SSE_PATH = os.environ.get("MCP_BENCH_SSE_PATH", _ROUTE + "/sse")
WS_PATH = os.environ.get("MCP_BENCH_WS_PATH", _ROUTE + "/ws")
TIMEOUT = float(os.environ.get("MCP_BENCH_TIMEOUT", "60"))
VERSION = "2025-11-25"
MODERN_VERSION = "2026-07-28"
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "locust", "version": "1"},
}
BASE_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
AUTH_HEADERS: dict[str, str] = {}
if os.environ.get("MCP_BENCH_TOKEN"):
    AUTH_HEADERS["Authorization"] = f"Bearer {os.environ['MCP_BENCH_TOKEN']}"
    BASE_HEADERS.update(AUTH_HEADERS)
INIT_PARAMS = {"protocolVersion": VERSION, "capabilities": {}, "clientInfo": {"name": "locust", "version": "1"}}


def default_args(tool: str) -> dict[str, Any]:
    """Arguments that suit the fast upstream's tools (``add`` gets numbers, anything else text)."""
    return {"a": 1, "b": 2} if tool.endswith("add") else {"text": "hello"}


TOOL = os.environ.get("MCP_BENCH_TOOL") or None  # None: pick one from tools/list
TOOL_ARGS = json.loads(os.environ["MCP_BENCH_ARGS"]) if "MCP_BENCH_ARGS" in os.environ else None
MIX_NAMES = [t for t in os.environ.get("MCP_BENCH_MIX", "").split(",") if t]
# Ids need only be unique per session; one counter per locust process gives more than that.
_ids = itertools.count(1)


class RpcFailure(Exception):
    """A request that got a wrong status, no answer, an error or a tool error (locust's failure text)."""


# -- answers -----------------------------------------------------------------------------------------


def sse_events(buffer: bytearray) -> Iterator[tuple[str, str]]:
    """Take the complete events out of ``buffer`` (SSE bytes as they arrive): (event type, data)."""
    while True:
        data = bytes(buffer).replace(b"\r\n", b"\n")
        end = data.find(b"\n\n")
        if end < 0:
            buffer[:] = data
            return
        buffer[:] = data[end + 2:]
        kind, lines = "message", []
        for line in data[:end].split(b"\n"):
            if line.startswith(b"data:"):
                lines.append(line[5:].removeprefix(b" "))
            elif line.startswith(b"event:"):
                kind = line[6:].strip().decode() or "message"
        if lines:  # comments (keep-alives) and priming events carry no data
            yield kind, b"\n".join(lines).decode()


def find_answer(content_type: str, body: bytes, want_id: int) -> dict[str, Any] | None:
    """The JSON-RPC message answering ``want_id`` in a JSON or SSE body, or None."""
    if content_type.startswith("application/json"):
        msg = json.loads(body)
        return msg if isinstance(msg, dict) and msg.get("id") == want_id else None
    if content_type.startswith("text/event-stream"):
        for _kind, data in sse_events(bytearray(body)):
            if data.startswith("{"):
                msg = json.loads(data)
                if isinstance(msg, dict) and msg.get("id") == want_id:
                    return msg  # skip notifications and server requests sent before it
    return None


def answer_error(method: str, answer: dict[str, Any] | None, rid: int) -> str | None:
    """Why ``answer`` does not count as a good answer to ``method`` (None: it does)."""
    if answer is None:
        return f"no answer with id {rid}"
    if "error" in answer:
        return f"JSON-RPC error {answer['error']}"
    result = answer.get("result")
    if not isinstance(result, dict):
        return "no result"
    if method == "tools/call" and result.get("isError"):
        return f"tool error: {str(result)[:200]}"
    if result.get("resultType", "complete") != "complete":  # 2026-07-28: e.g. input_required
        return f"result type {result['resultType']!r}"
    return None


# -- arguments from a tool's inputSchema ---------------------------------------------------------------


class Unsatisfiable(ValueError):
    """A schema this generator cannot produce a valid value for."""


_STRING_TRIES = ("hello", "12:00", "1", "a", "A", "UTC", "2026-01-01", "https://example.com/", "hello world")


def _resolve(ref: str, root: dict[str, Any]) -> Any:
    if not ref.startswith("#"):
        raise Unsatisfiable(f"remote $ref {ref!r}")
    node: Any = root
    for part in ref[1:].split("/")[1:] if ref != "#" else []:
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise Unsatisfiable(f"unresolvable $ref {ref!r}")
        node = node[part]
    return node


def _merge(branches: list[Any]) -> dict[str, Any]:
    """allOf: the branches' keywords together (properties and required united)."""
    merged: dict[str, Any] = {}
    for branch in branches:
        if not isinstance(branch, dict):
            continue
        for key, value in branch.items():
            if key == "properties" and isinstance(value, dict):
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required" and isinstance(value, list):
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged.setdefault(key, value)
    return merged


def _string(schema: dict[str, Any], name: str) -> str:
    fmt = schema.get("format", "")
    words = name.lower()
    desc = str(schema.get("description", "")).lower()
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    by_format = {
        "date-time": now.isoformat().replace("+00:00", "Z"), "date": now.date().isoformat(), "time": "12:00:00",
        "email": "bench@example.com", "idn-email": "bench@example.com", "uri": "https://example.com/",
        "url": "https://example.com/", "iri": "https://example.com/", "uri-reference": "/",
        "uuid": "00000000-0000-4000-8000-000000000000", "ipv4": "127.0.0.1", "ipv6": "::1",
        "hostname": "localhost", "duration": "PT1S", "regex": ".*",
    }
    if fmt in by_format:
        value = by_format[fmt]
    elif "timezone" in words or "time_zone" in words or words in ("tz", "zone") or "iana time" in desc:
        value = "UTC"
    elif "hh:mm" in desc or words == "time":
        value = "12:00"
    elif "datetime" in words.replace("_", ""):
        value = by_format["date-time"]
    elif "date" in words:
        value = by_format["date"]
    elif words.endswith(("url", "uri")):
        value = "https://example.com/"
    elif "email" in words:
        value = "bench@example.com"
    else:
        value = "hello"
    lo, hi = schema.get("minLength", 0), schema.get("maxLength")
    pattern = schema.get("pattern")
    for candidate in (value, *_STRING_TRIES):
        candidate = candidate + "o" * max(0, lo - len(candidate))
        if hi is not None:
            candidate = candidate[:hi]
        try:
            if len(candidate) >= lo and (pattern is None or re.search(pattern, candidate)):
                return candidate
        except re.error as exc:
            raise Unsatisfiable(f"pattern {pattern!r}: {exc}") from None
    raise Unsatisfiable(f"no string of mine matches {pattern!r}")


def _number(schema: dict[str, Any], integer: bool) -> int | float:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if xlo is True:  # draft 4: a flag on minimum
        xlo, lo = lo, None
    if xhi is True:
        xhi, hi = hi, None
    xlo = None if isinstance(xlo, bool) else xlo
    xhi = None if isinstance(xhi, bool) else xhi
    step = schema.get("multipleOf")

    def fits(v: float) -> bool:
        return ((lo is None or v >= lo) and (hi is None or v <= hi) and (xlo is None or v > xlo)
                and (xhi is None or v < xhi) and (not integer or float(v).is_integer())
                and (not step or math.isclose(v / step, round(v / step))))

    lower = max((b for b in (lo, xlo) if b is not None), default=None)
    upper = min((b for b in (hi, xhi) if b is not None), default=None)
    tries: list[float] = [1, 0]
    for bound in (lower, upper):
        if bound is not None:
            tries += [bound, math.ceil(bound), math.floor(bound), bound + 1, bound - 1, bound + 0.5, bound - 0.5]
    if lower is not None and upper is not None:
        tries += [(lower + upper) / 2, math.floor((lower + upper) / 2)]
    if step:
        base = lower if lower is not None else 1
        tries += [step, step * math.ceil(base / step), step * (math.floor(base / step) + 1)]
    for v in tries:
        if fits(v):
            return int(v) if integer or float(v).is_integer() else v
    raise Unsatisfiable(f"no number fits {schema}")


def example_value(schema: Any, name: str = "", root: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A value valid against ``schema``: its const, enum's first value, default or first example, else
    one made up by type (strings by format and property name), within the schema's bounds."""
    if schema is True or schema == {}:
        return "hello"
    if not isinstance(schema, dict):
        raise Unsatisfiable(f"schema {schema!r}")
    root = schema if root is None else root
    if depth > 32:
        raise Unsatisfiable("the schema nests too deeply (a recursive $ref?)")
    if "$ref" in schema:
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        return example_value({**_resolve(schema["$ref"], root), **rest}, name, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    if isinstance(schema.get("examples"), list) and schema["examples"]:
        return schema["examples"][0]
    if "example" in schema:  # OpenAPI's spelling
        return schema["example"]
    if isinstance(schema.get("allOf"), list):
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        return example_value(_merge([rest, *schema["allOf"]]), name, root, depth + 1)
    for key in ("oneOf", "anyOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            rest = {k: v for k, v in schema.items() if k != key}
            # the first branch that is not just null (Optional[X] is anyOf [X, null])
            branch = next((b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")),
                          branches[0])
            if isinstance(branch, dict):
                return example_value({**rest, **branch}, name, root, depth + 1)
            return example_value(branch, name, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = ("object" if "properties" in schema or "required" in schema else
                "array" if "items" in schema else "string")
    if kind == "string":
        return _string(schema, name)
    if kind in ("integer", "number"):
        return _number(schema, kind == "integer")
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    if kind == "array":
        if schema.get("maxItems") == 0:
            return []
        count = max(1, schema.get("minItems", 1))
        if count > 1 and schema.get("uniqueItems"):
            raise Unsatisfiable("several unique items")
        prefix = schema.get("prefixItems") if isinstance(schema.get("prefixItems"), list) else []
        items = [example_value(p, name, root, depth + 1) for p in prefix[:count]]
        item = schema.get("items", {})
        items += [example_value(item, name, root, depth + 1) for _ in range(count - len(items))]
        return items
    if kind == "object":
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        extra = schema.get("additionalProperties", {})
        value: dict[str, Any] = {}
        for key in schema.get("required") or []:
            sub = props.get(key, extra if isinstance(extra, dict) else {})
            value[key] = example_value(sub, key, root, depth + 1)
        for key, sub in props.items():  # minProperties beyond the required ones
            if len(value) >= schema.get("minProperties", 0):
                break
            value.setdefault(key, example_value(sub, key, root, depth + 1))
        return value
    raise Unsatisfiable(f"type {kind!r}")


def tool_arguments(input_schema: Any) -> dict[str, Any]:
    """Arguments for a tool from its ``inputSchema``: its required properties, recursively."""
    if not isinstance(input_schema, dict) or input_schema.get("type", "object") != "object":
        raise Unsatisfiable("inputSchema is not an object schema")
    args = example_value(input_schema)
    if not isinstance(args, dict):
        raise Unsatisfiable("inputSchema does not describe an object")
    return args


# -- picking a tool ---------------------------------------------------------------------------------


# Stems that mark a tool as destructive (never called), matched at a word's start.
_DESTRUCTIVE_STEMS = ("delete", "remove", "destroy", "crash", "purge", "wipe", "erase", "truncate", "terminate",
                      "shutdown", "uninstall", "revoke", "drop", "kill", "exit", "rm", "reset", "stop", "unlink")
# Words of a read-only look (get_, list_, search_ ...), and of a write or of a poor fit for a load test.
_READ_WORDS = {"get", "list", "search", "read", "find", "query", "describe", "show", "fetch", "lookup", "echo",
               "ping", "count", "check", "status", "info", "view", "whoami", "health", "version"}
_WRITE_WORDS = {"create", "update", "set", "write", "put", "post", "insert", "send", "upload", "register",
                "install", "edit", "modify", "patch", "rename", "move", "push", "commit", "deploy", "start",
                "restart", "redefine", "publish", "save", "run", "exec", "execute", "grow", "add_tool"}
_UNFIT_WORDS = {"sleep", "wait", "slow", "delay", "fail", "error", "raise", "hang", "timeout", "block"}


def name_words(name: str) -> list[str]:
    """A tool name's words: ``time__getCurrentTime`` -> time, get, current, time."""
    return [w for w in re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()) if w]


def _is_destructive_word(word: str) -> bool:
    for stem in _DESTRUCTIVE_STEMS:
        if word == stem or (word.startswith(stem) and (len(stem) > 4 or word[len(stem):] in ("s", "ed", "ing"))):
            return True
    return False


def looks_destructive(tool: dict[str, Any]) -> bool:
    """destructiveHint (on a tool not marked read-only) or a name like delete_/remove_/kill/crash/exit."""
    notes = tool.get("annotations") if isinstance(tool.get("annotations"), dict) else {}
    if notes.get("destructiveHint") is True and notes.get("readOnlyHint") is not True:
        return True
    return any(_is_destructive_word(w) for w in name_words(str(tool.get("name", ""))))


def rank_tools(tools: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """The tools worth a try, best first, each with arguments from its schema.

    Never a destructive one nor one whose schema we cannot satisfy. Order: poor fits for a load
    test (sleep, fail ...) last; then readOnlyHint true, unset, false; then names that read
    (get_, list_, search_ ...), neutral ones, ones that write; then fewer required arguments.
    """
    ranked = []
    for index, tool in enumerate(tools):
        name = tool.get("name")
        if not isinstance(name, str) or looks_destructive(tool):
            continue
        try:
            args = tool_arguments(tool.get("inputSchema", {"type": "object"}))
        except Unsatisfiable:
            continue
        notes = tool.get("annotations") if isinstance(tool.get("annotations"), dict) else {}
        hint = notes.get("readOnlyHint")
        words = set(name_words(name))
        writes = bool(words & _WRITE_WORDS)
        key = (bool(words & _UNFIT_WORDS), 0 if hint is True else 2 if hint is False else 1,
               0 if words & _READ_WORDS and not writes else 2 if writes else 1, len(args), index)
        ranked.append((key, name, args))
    ranked.sort(key=lambda item: item[0])
    return [(name, args) for _key, name, args in ranked]


# -- a small HTTP/1.1 client (h11 over a socket: cooperative under locust's gevent) --------------------


def open_socket(base: str, timeout: float | None) -> tuple[socket.socket, str]:
    """A TCP (or TLS, for https) connection to ``base``'s host, and its authority for Host."""
    url = urlsplit(base)
    tls = url.scheme in ("https", "wss")
    host = url.hostname or "127.0.0.1"
    sock = socket.create_connection((host, url.port or (443 if tls else 80)), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls:
        sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
    return sock, url.netloc


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


class HttpConnection:
    """One keep-alive HTTP/1.1 connection, reopened when the server closes it."""

    def __init__(self, base: str, timeout: float | None = TIMEOUT) -> None:
        self.base = base
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.conn = h11.Connection(h11.CLIENT)
        self.authority = ""

    def start(self, method: str, target: str, headers: dict[str, str], body: bytes = b"") -> Reply:
        """Send a request and read the response head (``body`` stays empty: read it with chunks())."""
        if self.sock is not None and self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
        elif self.sock is None or self.conn.our_state is not h11.IDLE:
            self.close()
            self.sock, self.authority = open_socket(self.base, self.timeout)
            self.conn = h11.Connection(h11.CLIENT)
        hdrs = [("Host", self.authority), *headers.items()]
        if body or method == "POST":
            hdrs.append(("Content-Length", str(len(body))))
        out = self.conn.send(h11.Request(method=method, target=target, headers=hdrs))
        out += self.conn.send(h11.Data(data=body)) if body else b""
        out += self.conn.send(h11.EndOfMessage())
        self.sock.sendall(out)
        while True:
            event = self._next()
            if isinstance(event, h11.Response):
                return Reply(event.status_code, {k.decode().lower(): v.decode("latin-1")
                                                 for k, v in event.headers}, b"")
            if isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the server closed the connection before answering")

    def chunks(self) -> Iterator[bytes]:
        """The response body as it arrives."""
        while True:
            event = self._next()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return

    def request(self, method: str, target: str, headers: dict[str, str], body: bytes = b"") -> Reply:
        reply = self.start(method, target, headers, body)
        reply.body = b"".join(self.chunks())
        return reply

    def _next(self) -> Any:
        assert self.sock is not None
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.conn.receive_data(self.sock.recv(65536))

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class McpClient:
    """A handshake-era Streamable HTTP session for the tool discovery (not timed, not reported)."""

    def __init__(self, base: str, timeout: float = 10.0) -> None:
        self.http = HttpConnection(base, timeout)
        self.headers = dict(BASE_HEADERS)

    def rpc(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        rid = next(_ids)
        body = json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}).encode()
        reply = self.http.request("POST", PATH, self.headers, body)
        if reply.status != 200:
            raise RpcFailure(f"{method}: HTTP {reply.status} {reply.body[:200]!r}")
        answer = find_answer(reply.headers.get("content-type", ""), reply.body, rid)
        if error := answer_error(method, answer, rid):
            raise RpcFailure(f"{method}: {error}")
        assert answer is not None
        if method == "initialize":
            self.headers["MCP-Protocol-Version"] = answer["result"].get("protocolVersion", VERSION)
            if sid := reply.headers.get("mcp-session-id"):
                self.headers["Mcp-Session-Id"] = sid
            note = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode()
            self.http.request("POST", PATH, self.headers, note)
        result: dict[str, Any] = answer["result"]
        return result

    def list_tools(self) -> list[dict[str, Any]]:
        tools: list[dict[str, Any]] = []
        cursor = None
        for _page in range(1000):  # a bound against a server that hands out cursors forever
            result = self.rpc("tools/list", {"cursor": cursor} if cursor else {})
            tools += [t for t in result.get("tools", []) if isinstance(t, dict)]
            cursor = result.get("nextCursor")
            if not cursor:
                break
        return tools

    def close(self) -> None:
        if "Mcp-Session-Id" in self.headers:
            try:
                self.http.request("DELETE", PATH, self.headers)
            except OSError:
                pass  # the session expires on its own
        self.http.close()


# -- the plan: which tools with which arguments (once per locust process) ----------------------------


@dataclass
class Plan:
    tool: str
    args: dict[str, Any]
    mix: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


_plan: Plan | None = None
_plan_lock = gevent.lock.Semaphore()
_TRIES = 8  # candidates called at most during the discovery
_MIX_SIZE = 3


def discover(base: str) -> Plan:
    """List the tools, rank them and keep the first few that answer one call without error."""
    client = McpClient(base)
    try:
        client.rpc("initialize", INIT_PARAMS)
        tools = client.list_tools()
        ok: list[tuple[str, dict[str, Any]]] = []
        refused: list[str] = []
        for name, args in rank_tools(tools)[:_TRIES]:
            try:
                client.rpc("tools/call", {"name": name, "arguments": args})
            except (RpcFailure, OSError, ValueError) as exc:
                refused.append(f"{name}: {str(exc)[:120]}")
                continue
            ok.append((name, args))
            if len(ok) == _MIX_SIZE:
                break
        if not ok:
            raise RpcFailure(f"none of the {len(tools)} tools suits a benchmark (MCP_BENCH_TOOL names one); "
                             f"tried: {'; '.join(refused) or 'nothing callable'}")
        by_name = {t.get("name"): t for t in tools}
        mix = ok
        if MIX_NAMES:
            mix = [(n, _args_for(by_name.get(n), n)) for n in MIX_NAMES]
        tool, args = ok[0]
        log.info("MCP_BENCH_TOOL unset: calling %s with %s (picked from %d tools; mix: %s%s)", tool,
                 json.dumps(args), len(tools), ", ".join(n for n, _ in mix),
                 f"; refused: {'; '.join(refused)}" if refused else "")
        return Plan(tool, args, mix)
    finally:
        client.close()


def _args_for(tool: dict[str, Any] | None, name: str) -> dict[str, Any]:
    try:
        return tool_arguments(tool.get("inputSchema")) if tool else default_args(name)
    except Unsatisfiable:
        return default_args(name)


def fixed_plan(tool: str) -> Plan:
    """MCP_BENCH_TOOL's plan, as the bench has always run it."""
    args = TOOL_ARGS if TOOL_ARGS is not None else default_args(tool)
    names = MIX_NAMES or ([tool, tool.removesuffix("echo") + "add"] if tool.endswith("echo") else [tool])
    return Plan(tool, args, [(n, args if n == tool else default_args(n)) for n in names])


def bench_plan(base: str) -> Plan:
    """The process's plan: MCP_BENCH_TOOL's, or discovered by the first user that asks."""
    global _plan
    if _plan is None:
        with _plan_lock:  # the other users wait for the first one's discovery
            if _plan is None:
                if TOOL_ARGS is not None and TOOL is None:
                    log.warning("MCP_BENCH_ARGS is ignored without MCP_BENCH_TOOL")
                _plan = fixed_plan(TOOL) if TOOL else discover(base)
    return _plan


class PlannedUser(User):
    """Base: a user that calls the plan's tools."""

    abstract = True
    wait_time = constant(0)
    opt_in = False  # True: runs only when named on the command line
    plan: Plan | None = None

    def ready(self) -> bool:
        """Whether the plan is known (a failed discovery is reported as a failure, then retried)."""
        if self.plan is None:
            start = time.perf_counter()
            try:
                self.plan = bench_plan(self.host or "")
            except (RpcFailure, OSError, ValueError, h11.ProtocolError) as exc:
                self.environment.events.request.fire(
                    request_type="MCP", name="tool discovery", response_time=(time.perf_counter() - start) * 1000,
                    response_length=0, exception=exc, context={})
                gevent.sleep(1)
                return False
        return True

    def next_call(self) -> tuple[str, dict[str, Any]]:
        assert self.plan is not None
        return self.plan.mix[next(_ids) % len(self.plan.mix)]


@events.init.add_listener
def _default_users(environment: Any, **_kwargs: Any) -> None:
    """Without user classes named on the command line, run only the Streamable HTTP ones.

    (Workers keep every class: the master tells them which to spawn.)
    """
    options = environment.parsed_options
    if (options is not None and getattr(options, "user_classes", None)) or isinstance(environment.runner,
                                                                                     WorkerRunner):
        return
    environment.user_classes[:] = [u for u in environment.user_classes if not getattr(u, "opt_in", False)]


# -- Streamable HTTP, handshake era ----------------------------------------------------------------------


class McpUser(FastHttpUser, PlannedUser):
    """Base: an MCP session over Streamable HTTP and checked JSON-RPC calls."""

    abstract = True
    headers: dict[str, str] | None = None  # None: no session yet (or it was lost)

    def rpc(self, method: str, params: dict[str, Any] | None = None, name: str | None = None,
            headers: dict[str, str] | None = None) -> Any:
        """POST one request; returns its result, or None after marking the request failed."""
        rid = next(_ids)
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        with self.client.post(PATH, data=json.dumps(msg), headers=headers or self.headers or BASE_HEADERS,
                              name=name or method, catch_response=True) as resp:
            answer = None
            if resp.status_code != 200:
                error: str | None = f"HTTP {resp.status_code}"
                if resp.status_code == 404:
                    self.headers = None  # session gone: open a new one next time
            else:
                try:
                    answer = find_answer(resp.headers.get("content-type", ""), resp.content or b"", rid)
                    error = answer_error(method, answer, rid)
                except ValueError as exc:
                    error = f"bad JSON: {exc}"
            if error or answer is None:
                resp.failure(error)
                return None
            resp.success()
            return answer["result"]

    def open_session(self) -> bool:
        """initialize + notifications/initialized; sets the session headers."""
        self.headers = None
        rid = next(_ids)
        body = json.dumps({"jsonrpc": "2.0", "id": rid, "method": "initialize", "params": INIT_PARAMS})
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
        """Know the plan and open a session unless one is open."""
        return self.ready() and (self.headers is not None or self.open_session())

    def call(self, tool: str | None = None, args: dict[str, Any] | None = None) -> Any:
        """tools/call (the plan's tool by default), named by tool in the statistics."""
        assert self.plan is not None
        if tool is None:
            tool, args = self.plan.tool, self.plan.args
        return self.rpc("tools/call", {"name": tool, "arguments": args or {}}, name=f"tools/call {tool}")


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
        if self.ready() and self.open_session():
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
    """One session, a mix: calls spread over the plan's mix, some tools/list and ping."""

    weight = 2

    @task(8)
    def call_mixed(self) -> None:
        if self.ensure_session():
            self.call(*self.next_call())

    @task(1)
    def list_tools(self) -> None:
        if self.ensure_session():
            self.rpc("tools/list", {})

    @task(1)
    def ping(self) -> None:
        if self.ensure_session():
            self.rpc("ping", {})


# -- 2026-07-28: stateless ------------------------------------------------------------------------------


def header_value(value: str) -> str:
    """A header-safe Mcp-Name: as it is if printable ASCII, else ``=?base64?<UTF-8>?=`` (the spec's form)."""
    if re.fullmatch(r"[\x20-\x7e]*", value) and value == value.strip() and not value.startswith("=?base64?"):
        return value
    return f"=?base64?{base64.b64encode(value.encode()).decode('ascii')}?="


class StatelessUser(McpUser):
    """2026-07-28 requests: no initialize, no session; every request carries its envelope."""

    opt_in = True

    def modern(self, method: str, params: dict[str, Any]) -> Any:
        headers = {**BASE_HEADERS, "MCP-Protocol-Version": MODERN_VERSION, "Mcp-Method": method}
        if method == "tools/call":
            headers["Mcp-Name"] = header_value(params["name"])
        label = f"{MODERN_VERSION} {method}" + (f" {params['name']}" if method == "tools/call" else "")
        return self.rpc(method, {**params, "_meta": MODERN_META}, name=label, headers=headers)

    @task(8)
    def call_mixed(self) -> None:
        if self.ready():
            tool, args = self.next_call()
            self.modern("tools/call", {"name": tool, "arguments": args})

    @task(1)
    def list_tools(self) -> None:
        if self.ready():
            self.modern("tools/list", {})

    @task(1)
    def discover(self) -> None:
        if self.ready():
            self.modern("server/discover", {})


# -- stream transports: legacy HTTP+SSE and WebSocket ------------------------------------------------------


class StreamUser(PlannedUser):
    """Base: one MCP session on a long-lived stream whose answers a reader greenlet hands out by id.

    Each request is timed from its send to its answer and reported to locust's event system; when
    the stream breaks every pending request fails at once and the next task opens a new session.
    """

    abstract = True
    request_type = "STREAM"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: dict[int, AsyncResult] = {}
        self._reader: gevent.Greenlet | None = None
        self._open = False

    # what each transport provides
    def connect(self) -> None:
        """Open the stream and start the reader (which calls deliver and broken)."""
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def disconnect(self) -> None:
        if self._reader is not None:
            self._reader.kill(block=False)
            self._reader = None

    def deliver(self, msg: Any) -> None:
        if isinstance(msg, dict) and ("result" in msg or "error" in msg):
            waiter = self._pending.pop(msg.get("id"), None)  # type: ignore[arg-type]
            if waiter is not None:
                waiter.set(msg)
        # notifications (and server requests: none, since we offer no capabilities) are skipped

    def broken(self, exc: BaseException) -> None:
        self._open = False
        pending, self._pending = self._pending, {}
        for waiter in pending.values():
            waiter.set_exception(ConnectionError(f"the stream ended: {exc}"))

    def report(self, name: str, start: float, length: int, exc: Exception | None) -> None:
        self.environment.events.request.fire(
            request_type=self.request_type, name=name, response_time=(time.perf_counter() - start) * 1000,
            response_length=length, exception=exc, context={})

    def request(self, method: str, params: dict[str, Any], name: str | None = None) -> Any:
        """One request on the stream; its result, or None after reporting a failure."""
        rid = next(_ids)
        waiter: AsyncResult = AsyncResult()
        self._pending[rid] = waiter
        data = json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}).encode()
        start = time.perf_counter()
        answer, error = None, None
        try:
            self.send(data)
            answer = waiter.get(timeout=TIMEOUT)
            if problem := answer_error(method, answer, rid):
                error = RpcFailure(problem)
        except gevent.Timeout:
            error = RpcFailure(f"no answer within {TIMEOUT:g} s")
        except (OSError, RpcFailure, ValueError, h11.ProtocolError) as exc:
            error = exc if isinstance(exc, RpcFailure) else RpcFailure(f"{type(exc).__name__}: {exc}")
            self._open = False
        finally:
            self._pending.pop(rid, None)
        self.report(name or method, start, len(json.dumps(answer)) if answer else 0, error)
        return None if error or answer is None else answer["result"]

    def ensure_session(self) -> bool:
        """Know the plan and have an initialized session on an open stream."""
        if self._open:
            return True
        if not self.ready():
            return False
        self.disconnect()
        self._open = True  # until the reader says otherwise
        start = time.perf_counter()
        try:
            self.connect()
        except (OSError, RpcFailure, ValueError, h11.ProtocolError, gevent.Timeout) as exc:
            self.report(self.connect_name, start, 0, RpcFailure(f"{type(exc).__name__}: {exc}"))
            self.disconnect()
            self._open = False
            gevent.sleep(0.5)  # not a tight loop against a gateway that refuses
            return False
        self.report(self.connect_name, start, 0, None)
        if self.request("initialize", INIT_PARAMS) is None:
            self.disconnect()
            self._open = False
            return False
        try:
            self.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode())
        except (OSError, RpcFailure) as exc:
            self.report("notifications/initialized", time.perf_counter(), 0, RpcFailure(str(exc)))
            self.disconnect()
            self._open = False
        return self._open

    connect_name = "connect"

    def on_stop(self) -> None:
        self.disconnect()
        self._open = False

    @task(8)
    def call_mixed(self) -> None:
        if self.ensure_session():
            tool, args = self.next_call()
            self.request("tools/call", {"name": tool, "arguments": args}, name=f"tools/call {tool}")

    @task(1)
    def list_tools(self) -> None:
        if self.ensure_session():
            self.request("tools/list", {})

    @task(1)
    def ping(self) -> None:
        if self.ensure_session():
            self.request("ping", {})


class SSEUser(StreamUser):
    """The legacy HTTP+SSE transport: answers arrive on the GET /sse stream, POSTs get 202."""

    opt_in = True
    request_type = "SSE"
    connect_name = "GET /sse (until the endpoint event)"

    def connect(self) -> None:
        base = self.host or ""
        self._stream = HttpConnection(base)
        reply = self._stream.start("GET", SSE_PATH, {"Accept": "text/event-stream", **AUTH_HEADERS})
        if reply.status != 200:
            raise RpcFailure(f"GET {SSE_PATH}: HTTP {reply.status}")
        assert self._stream.sock is not None
        # The stream idles between answers (keep-alive comments every few seconds): no read timeout.
        self._stream.sock.settimeout(None)
        endpoint: AsyncResult = AsyncResult()
        self._reader = gevent.spawn(self._read, endpoint)
        url = urlsplit(urljoin(base.rstrip("/") + SSE_PATH, endpoint.get(timeout=TIMEOUT)))
        self._target = url.path + (f"?{url.query}" if url.query else "")
        self._post = HttpConnection(f"{url.scheme}://{url.netloc}" if url.netloc else base)

    def _read(self, endpoint: AsyncResult) -> None:
        buffer = bytearray()
        try:
            for chunk in self._stream.chunks():
                buffer += chunk
                for kind, data in sse_events(buffer):
                    if kind == "endpoint":
                        endpoint.set(data)
                    elif kind == "message" and data.startswith("{"):
                        self.deliver(json.loads(data))
            raise ConnectionError("the server ended the stream")
        except (OSError, ValueError, h11.ProtocolError) as exc:
            if not endpoint.ready():
                endpoint.set_exception(ConnectionError(f"no endpoint event: {exc}"))
            self.broken(exc)

    def send(self, data: bytes) -> None:
        reply = self._post.request("POST", self._target, {"Content-Type": "application/json", **AUTH_HEADERS},
                                   data)
        if reply.status not in (200, 202, 204):
            raise RpcFailure(f"POST {self._target.partition('?')[0]}: HTTP {reply.status} {reply.body[:200]!r}")

    def disconnect(self) -> None:
        super().disconnect()
        for conn in (getattr(self, "_stream", None), getattr(self, "_post", None)):
            if conn is not None:
                conn.close()


class WebSocketUser(StreamUser):
    """MCP over WebSocket (subprotocol ``mcp``): one JSON-RPC message per text frame, wsproto on a socket."""

    opt_in = True
    request_type = "WS"
    connect_name = "WebSocket upgrade"

    def connect(self) -> None:
        sock, authority = open_socket(self.host or "", TIMEOUT)
        self._sock = sock
        self._write_lock = gevent.lock.Semaphore()  # the reader answers pings: keep frames whole
        ws = self._ws = WSConnection(ConnectionType.CLIENT)
        extra = [(k.lower().encode(), v.encode()) for k, v in AUTH_HEADERS.items()]
        sock.sendall(ws.send(WSRequest(host=authority, target=WS_PATH, subprotocols=["mcp"], extra_headers=extra)))
        while True:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed during the upgrade")
            ws.receive_data(data)
            events_ = ws.events()
            for event in events_:
                if isinstance(event, AcceptConnection):
                    sock.settimeout(None)  # idle between answers: the reader waits as long as it takes
                    self._reader = gevent.spawn(self._read, list(events_))
                    return
                if isinstance(event, (RejectConnection, RejectData)):
                    raise RpcFailure(f"upgrade refused: HTTP {getattr(event, 'status_code', '?')}")

    def _read(self, first: list[Any]) -> None:
        parts: list[str] = []
        try:
            batch = first
            while True:
                for event in batch:
                    if isinstance(event, TextMessage):
                        parts.append(event.data)
                        if event.message_finished:
                            self.deliver(json.loads("".join(parts)))
                            parts = []
                    elif isinstance(event, Ping):
                        self._write(self._ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        if self._ws.state is ConnectionState.REMOTE_CLOSING:
                            self._write(self._ws.send(event.response()))
                        raise ConnectionError(f"closed by the server: {event.code} {event.reason}")
                data = self._sock.recv(65536)
                self._ws.receive_data(data or None)
                if not data:
                    raise ConnectionError("the connection ended without a Close frame")
                batch = list(self._ws.events())
        except (OSError, ValueError) as exc:
            self.broken(exc)

    def _write(self, data: bytes) -> None:
        with self._write_lock:
            self._sock.sendall(data)

    def send(self, data: bytes) -> None:
        self._write(self._ws.send(TextMessage(data=data.decode())))

    def disconnect(self) -> None:
        super().disconnect()
        sock = getattr(self, "_sock", None)
        if sock is not None:
            try:
                if self._ws.state is ConnectionState.OPEN:
                    sock.sendall(self._ws.send(CloseConnection(code=1000, reason="done")))
            except (OSError, ValueError):
                pass  # closing anyway
            sock.close()
            self._sock = None
