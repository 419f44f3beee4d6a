"""A trio load generator for MCP servers (the gateway, or any peer) on each of the gateway's wires.

    python -m bench.load --url http://127.0.0.1:8080/mcp --sessions N --inflight M --duration D
        [--wire streamable|sse|ws|stateless] [--warmup S] [--mode call|list|churn] [--tool echo]
        [--args JSON] [--timeout T] [--rate R] [--header 'NAME: VALUE']
        [--idle-sessions K [--idle-hold S]] [--open-session] [--json out.json]

Opens N sessions (initialize, then notifications/initialized, then ``Mcp-Session-Id`` and
``MCP-Protocol-Version`` on every request) and M keep-alive HTTP/1.1 connections, one request at a
time on each, so M requests are in flight; connection ``i`` belongs to session ``i % N``. For D
seconds after S seconds of warm-up it sends ``tools/call`` (mode call), ``tools/list`` (mode list) or
whole session lifecycles: initialize, initialized, 3 calls, DELETE (mode churn; every HTTP exchange
counts as a request). Every JSON-RPC request carries a unique id, and an answer counts only if it
carries that id and a ``result``; everything else is an error. Prints (and with ``--json`` writes)
a report: requests, errors, error_samples, throughput_rps, latency_ms {p50, p90, p99, max, mean},
duration_s, sessions, inflight, mode, wire.

``--wire`` picks the client wire (default ``streamable``, described above). The other three run
modes call and list with the same M connections, one request in flight on each, unique ids, the
same answer checks, report and ``--rate`` pacing; ``--header`` goes on every HTTP request and on
the WebSocket upgrade. ``<base>`` is the URL's path without its trailing ``/mcp``:

- ``sse``: legacy HTTP+SSE (MCP 2024-11-05). Each of the M "connections" is a ``GET <base>/sse``
  stream plus a second keep-alive connection: the stream's ``endpoint`` event names the path
  (``/message?sessionId=...``) that initialize, notifications/initialized and then the requests
  are POSTed to (answered 202), and each answer is read as a ``message`` event on the stream.
  Every stream is its own session, so ``--sessions`` is ignored (the report's sessions = M).
- ``ws``: WebSocket at ``<base>/ws``, subprotocol ``mcp``, one JSON-RPC message per text frame
  (wsproto on a trio socket, the server's pings answered); initialize + initialized on each
  connection, then the requests; one session per connection, ``--sessions`` ignored.
- ``stateless``: MCP 2026-07-28 on the URL itself: no initialize and no session (``--sessions``
  ignored, the report's sessions = 0); every request carries ``params._meta`` (protocol version,
  client capabilities, client info) and the ``MCP-Protocol-Version``, ``Mcp-Method`` and (for
  tools/call) ``Mcp-Name`` headers, and its result must also have ``resultType: "complete"``.

On these wires a failed request closes its connection (for sse and ws: ends its session), and the
next one reconnects (and re-initializes) before it is timed. Mode churn, ``--idle-sessions`` and
``--open-session`` are for the streamable wire only.

``--rate R`` paces the load (modes call and list): request ``k`` is due at ``start + k/R`` (one
schedule shared by all connections, warm-up included), so the offered rate is R as long as the M
connections keep up; a connection whose slot has passed sends at once. Latency is measured from the
actual send, and the report gains ``rate`` (target) and ``schedule_lag_ms`` {p50, p99, max} (how
late sends left: M too small for R, or a busy load generator) and ``late_pct`` (sends > 1 ms late).
Sends are timed precisely (the last 2 ms before a slot spin on the event loop), so a paced run keeps
the load generator's core busy.

``--idle-sessions K`` first opens K sessions, each on a connection that is then closed (or held
open for ``--idle-hold`` seconds), so a benchmark can sample the server's RSS per idle session; the
report gains ``idle``. ``--duration 0`` skips the load phase. ``--open-session`` prints the id of one
new session and exits (for wrk). Traffic goes only to loopback addresses.

The HTTP client is minimal on purpose (raw trio sockets, Content-Length or chunked framing, reads
each body to its end so the connection can be reused) so that one core drives thousands of
requests per second; an SSE body yields the first ``data:`` event that answers our id.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import itertools
import json
import math
import resource
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import msgspec
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    Request as WSRequest,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

VERSION = "2025-11-25"
MODERN_VERSION = "2026-07-28"  # the stateless wire
WIRES = ("streamable", "sse", "ws", "stateless")
MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
_EMPTY = msgspec.Raw()


class Reply(msgspec.Struct):
    """The part of a JSON-RPC answer we check."""

    id: int | str | None = None
    result: msgspec.Raw = _EMPTY
    error: msgspec.Raw = _EMPTY


class InitResult(msgspec.Struct, rename="camel"):
    """The part of an initialize result we need."""

    protocol_version: str = VERSION


class CallResult(msgspec.Struct, rename="camel"):
    """The part of a tools/call result we check: a tool that failed is an error too."""

    is_error: bool = False


class StreamReply(Reply):
    """A message on a stream (sse, ws): a notification or server request has a method, no answer does."""

    method: str | None = None


class ModernResult(msgspec.Struct, rename="camel"):
    """The part of a 2026-07-28 result we check."""

    is_error: bool = False
    result_type: str = "complete"


_reply = msgspec.json.Decoder(Reply)
_stream_reply = msgspec.json.Decoder(StreamReply)
_call_result = msgspec.json.Decoder(CallResult)
_modern_result = msgspec.json.Decoder(ModernResult)
_init_result = msgspec.json.Decoder(InitResult)
_ids = itertools.count(1)  # one process, one trio thread: a global counter makes ids unique


class LoadError(Exception):
    """A request that failed: bad status, framing, id or JSON-RPC error."""


# --------------------------------------------------------------------------- HTTP/1.1 client


@dataclass
class Response:
    """A complete HTTP response; header names are lower case."""

    status: int
    headers: dict[bytes, bytes]
    body: bytes


class Connection:
    """One keep-alive HTTP/1.1 connection to a loopback server; one request at a time."""

    def __init__(self, host: str, port: int, hostport: bytes) -> None:
        self.host, self.port, self.hostport = host, port, hostport
        self.stream: trio.SocketStream | None = None
        self.buf = bytearray()

    async def aclose(self) -> None:
        """Close the socket (the next request reconnects)."""
        if self.stream is not None:
            stream, self.stream = self.stream, None
            await stream.aclose()

    async def request(self, method: bytes, path: bytes, headers: bytes, body: bytes = b"") -> Response:
        """Send one request and read its whole response. ``headers`` are ready-made CRLF lines."""
        if self.stream is None:
            self.stream = await trio.open_tcp_stream(self.host, self.port)  # sets TCP_NODELAY
            self.buf.clear()
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n%s\r\n" % (
            method,
            path,
            self.hostport,
            len(body),
            headers,
        )
        try:
            await self.stream.send_all(head + body)
            resp = await self._read_response(method == b"HEAD")
        except BaseException:
            await trio.aclose_forcefully(self.stream)
            self.stream = None
            raise
        if resp.headers.get(b"connection", b"").lower() == b"close":
            await self.aclose()
        return resp

    async def _fill(self) -> None:
        assert self.stream is not None
        data = await self.stream.receive_some(65536)
        if not data:
            raise LoadError("connection closed by server")
        self.buf += data

    async def _read_until(self, sep: bytes, limit: int) -> bytes:
        while (i := self.buf.find(sep)) < 0:
            if len(self.buf) > limit:
                raise LoadError("response head too large")
            await self._fill()
        out = bytes(self.buf[:i])
        del self.buf[: i + len(sep)]
        return out

    async def _read_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def start(self, head: bytes) -> tuple[int, dict[bytes, bytes]]:
        """Send a ready-made request head and read the response head only: the body (an event
        stream) is then read from ``stream`` and ``buf`` by the caller."""
        if self.stream is None:
            self.stream = await trio.open_tcp_stream(self.host, self.port)
            self.buf.clear()
        try:
            await self.stream.send_all(head)
            return await self._read_head()
        except BaseException:
            await trio.aclose_forcefully(self.stream)
            self.stream = None
            raise

    async def _read_head(self) -> tuple[int, dict[bytes, bytes]]:
        while True:
            lines = (await self._read_until(b"\r\n\r\n", MAX_HEAD)).split(b"\r\n")
            try:
                status = int(lines[0].split(b" ", 2)[1])
            except (IndexError, ValueError):
                raise LoadError(f"bad status line {lines[0][:80]!r}") from None
            if status >= 200 or status == 101:
                break  # 1xx interim answers are skipped
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    async def _read_response(self, head_only: bool) -> Response:
        status, headers = await self._read_head()
        if head_only or status in (204, 304):
            body = b""
        elif b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            parts = []
            while size := int((await self._read_until(b"\r\n", MAX_HEAD)).split(b";")[0], 16):
                if size > MAX_BODY:
                    raise LoadError("chunk too large")
                parts.append(await self._read_exactly(size + 2))  # + CRLF
                parts[-1] = parts[-1][:-2]
            while await self._read_until(b"\r\n", MAX_HEAD):  # trailers up to the blank line
                pass
            body = b"".join(parts)
        elif (length := headers.get(b"content-length")) is not None:
            if int(length) > MAX_BODY:
                raise LoadError("body too large")
            body = await self._read_exactly(int(length))
        else:  # framed by close
            assert self.stream is not None
            while data := await self.stream.receive_some(65536):
                self.buf += data
                if len(self.buf) > MAX_BODY:
                    raise LoadError("body too large")
            body = bytes(self.buf)
            self.buf.clear()
            headers[b"connection"] = b"close"
        return Response(status, headers, body)


def find_reply(resp: Response, want_id: int) -> Reply:
    """The JSON-RPC answer to ``want_id`` in a JSON or SSE body; raises LoadError if absent."""
    if resp.status != 200:
        raise LoadError(f"HTTP {resp.status}: {resp.body[:120]!r}")
    ctype = resp.headers.get(b"content-type", b"")
    try:
        if ctype.startswith(b"application/json"):
            reply = _reply.decode(resp.body)
            if reply.id != want_id:
                raise LoadError(f"id mismatch: sent {want_id}, got {reply.id!r}")
            return reply
        if ctype.startswith(b"text/event-stream"):
            # Skip server requests and notifications the server may send before the answer.
            for event in resp.body.replace(b"\r\n", b"\n").split(b"\n\n"):
                data = b"\n".join(
                    line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")
                )
                if data.startswith(b"{"):
                    reply = _reply.decode(data)
                    if reply.id == want_id:
                        return reply
            raise LoadError(f"no answer with id {want_id} in the event stream")
    except msgspec.DecodeError as exc:
        raise LoadError(f"bad JSON: {exc}") from None
    raise LoadError(f"unexpected content-type {ctype!r}")


# --------------------------------------------------------------------------- MCP over it


@dataclass
class Target:
    """Where to send requests, and the fixed parts of each request."""

    host: str
    port: int
    hostport: bytes
    path: bytes
    call_params: bytes
    timeout: float
    headers: bytes = b""  # extra request header lines (e.g. Authorization), CRLF-terminated
    base: bytes = b""  # path without its trailing /mcp: <base>/sse and <base>/ws
    tool: str = ""

    @classmethod
    def from_url(cls, url: str, tool: str, args: str, timeout: float, headers: list[str] | None = None) -> Target:
        """Parse and check ``url`` (loopback only)."""
        u = urlsplit(url)
        host = "127.0.0.1" if u.hostname == "localhost" else (u.hostname or "")
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False  # a name other than localhost: never resolved, never contacted
        if u.scheme != "http" or not loopback:
            raise SystemExit(f"refusing {url!r}: only http:// to a loopback address")
        port = u.port or 80
        params = msgspec.json.encode({"name": tool, "arguments": msgspec.json.decode(args)})
        extra = b"".join(_header_line(h) for h in headers or ())
        path = u.path or "/"
        base = path.removesuffix("/mcp").rstrip("/").encode()
        return cls(host, port, u.netloc.encode(), path.encode(), params, timeout, extra, base=base, tool=tool)

    def connection(self) -> Connection:
        """A new (lazily connected) connection to the target."""
        return Connection(self.host, self.port, self.hostport)


BASE_HEADERS = b"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"


def _header_line(header: str) -> bytes:
    name, sep, value = header.partition(":")
    if not sep or not name.strip() or any(c in header for c in "\r\n"):
        raise SystemExit(f"--header {header.split(':')[0]!r}...: expected NAME: VALUE on one line")
    return f"{name.strip()}: {value.strip()}\r\n".encode("latin-1")


@dataclass
class Session:
    """A server-side MCP session: its id and the header lines every request carries."""

    sid: bytes | None
    headers: bytes


async def rpc(
    conn: Connection, target: Target, headers: bytes, method: str, params: bytes | None
) -> tuple[Reply, Response]:
    """One JSON-RPC request with a fresh unique id; returns the verified successful reply."""
    rid = next(_ids)
    body = b'{"jsonrpc":"2.0","id":%d,"method":"%s"%s}' % (
        rid,
        method.encode(),
        b',"params":' + params if params is not None else b"",
    )
    resp = await conn.request(b"POST", target.path, headers, body)
    reply = find_reply(resp, rid)
    if reply.error or not reply.result:
        raise LoadError(f"JSON-RPC error: {bytes(reply.error)[:160]!r}" if reply.error else "no result")
    if method == "tools/call" and _call_result.decode(reply.result).is_error:
        raise LoadError(f"tool error: {bytes(reply.result)[:160]!r}")
    return reply, resp


_INIT_PARAMS = msgspec.json.encode(
    {"protocolVersion": VERSION, "capabilities": {}, "clientInfo": {"name": "bench.load", "version": "1"}}
)
_INITIALIZED = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'


async def open_session(conn: Connection, target: Target, stats: Stats | None = None) -> Session:
    """initialize + notifications/initialized on ``conn``; both timed into ``stats`` if given."""
    t0 = time.perf_counter()
    reply, resp = await rpc(conn, target, BASE_HEADERS + target.headers, "initialize", _INIT_PARAMS)
    t1 = time.perf_counter()
    sid = resp.headers.get(b"mcp-session-id")  # absent: a stateless server
    version = _init_result.decode(reply.result).protocol_version
    headers = BASE_HEADERS + target.headers + b"MCP-Protocol-Version: %s\r\n" % version.encode()
    if sid is not None:
        headers += b"Mcp-Session-Id: %s\r\n" % sid
    resp = await conn.request(b"POST", target.path, headers, _INITIALIZED)
    if resp.status not in (200, 202, 204):
        raise LoadError(f"notifications/initialized: HTTP {resp.status}")
    if stats is not None:
        stats.record(t0, t1)
        stats.record(t1, time.perf_counter())
    return Session(sid, headers)


async def close_session(conn: Connection, target: Target, session: Session) -> None:
    """DELETE the session."""
    resp = await conn.request(b"DELETE", target.path, session.headers)
    if resp.status not in (200, 202, 204):
        raise LoadError(f"DELETE: HTTP {resp.status}")


# --------------------------------------------------------------------------- the other wires


class Template:
    """A JSON-RPC request made once with its id left out: ``body(id)`` is one %-format."""

    __slots__ = ("tail",)

    def __init__(self, method: str, params: bytes | None) -> None:
        self.tail = b',"method":"%s"%s}' % (method.encode(), b',"params":' + params if params is not None else b"")

    def body(self, rid: int) -> bytes:
        return b'{"jsonrpc":"2.0","id":%d%s' % (rid, self.tail)


_INIT = Template("initialize", _INIT_PARAMS)
_MODERN_META = msgspec.json.encode(
    {
        "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
    }
)


def check(reply: Reply, rid: int, method: str, modern: bool = False) -> None:
    """Raise LoadError unless ``reply`` answers ``rid`` with a result (no ``isError``; for
    2026-07-28, ``resultType`` complete)."""
    if reply.id != rid:
        raise LoadError(f"id mismatch: sent {rid}, got {reply.id!r}")
    if reply.error or not reply.result:
        raise LoadError(f"JSON-RPC error: {bytes(reply.error)[:160]!r}" if reply.error else "no result")
    if modern:
        result = _modern_result.decode(reply.result)
        if result.result_type != "complete":
            raise LoadError(f"result type {result.result_type!r}: {bytes(reply.result)[:160]!r}")
        if result.is_error:
            raise LoadError(f"tool error: {bytes(reply.result)[:160]!r}")
    elif method == "tools/call" and _call_result.decode(reply.result).is_error:
        raise LoadError(f"tool error: {bytes(reply.result)[:160]!r}")


def header_value(value: str) -> str:
    """A header-safe ``Mcp-Name``: as it is if printable ASCII, else ``=?base64?<UTF-8>?=``."""
    if value.isascii() and value.isprintable() and value == value.strip() and not value.startswith("=?base64?"):
        return value
    return f"=?base64?{base64.b64encode(value.encode()).decode('ascii')}?="


class Channel:
    """One connection (sse, ws: one session) carrying one request at a time, for the wires other
    than streamable: ``open`` (reconnect + handshake), ``call`` (one checked request), ``aclose``."""

    is_open = False

    def __init__(self, target: Target, method: str) -> None:
        self.target, self.method = target, method

    async def open(self) -> None:
        raise NotImplementedError

    async def call(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError


class StatelessChannel(Channel):
    """2026-07-28 requests on one keep-alive connection: no handshake, the envelope on each request."""

    def __init__(self, target: Target, method: str) -> None:
        super().__init__(target, method)
        self.conn = target.connection()
        self.headers = BASE_HEADERS + target.headers + b"MCP-Protocol-Version: %s\r\nMcp-Method: %s\r\n" % (
            MODERN_VERSION.encode(),
            method.encode(),
        )
        if method == "tools/call":
            self.headers += b"Mcp-Name: %s\r\n" % header_value(target.tool).encode()
            assert target.call_params.endswith(b"}")
            params = target.call_params[:-1] + b',"_meta":' + _MODERN_META + b"}"
        else:
            params = b'{"_meta":' + _MODERN_META + b"}"
        self.template = Template(method, params)

    async def open(self) -> None:
        self.is_open = True  # the connection opens with the first request

    async def call(self) -> None:
        rid = next(_ids)
        resp = await self.conn.request(b"POST", self.target.path, self.headers, self.template.body(rid))
        check(find_reply(resp, rid), rid, self.method, modern=True)

    async def aclose(self) -> None:
        self.is_open = False
        await self.conn.aclose()


class StreamChannel(Channel):
    """A session on a long-lived stream (sse, ws): requests go out one at a time and the next
    answer on the stream must be ours (notifications and server requests are skipped)."""

    def __init__(self, target: Target, method: str) -> None:
        super().__init__(target, method)
        self.template = Template(method, target.call_params if method == "tools/call" else None)

    async def connect(self) -> None:
        raise NotImplementedError

    async def send(self, body: bytes) -> None:
        raise NotImplementedError

    async def receive(self) -> bytes | str:
        """The next JSON-RPC message on the stream."""
        raise NotImplementedError

    async def disconnect(self) -> None:
        raise NotImplementedError

    async def answer(self, rid: int, method: str) -> None:
        """Read up to the next answer on the stream and check it."""
        while True:
            try:
                msg = _stream_reply.decode(await self.receive())
            except msgspec.DecodeError as exc:
                raise LoadError(f"bad JSON: {exc}") from None
            if msg.method is None:
                check(msg, rid, method)
                return

    async def open(self) -> None:
        await self.aclose()
        await self.connect()
        rid = next(_ids)
        await self.send(_INIT.body(rid))
        await self.answer(rid, "initialize")
        await self.send(_INITIALIZED)
        self.is_open = True

    async def call(self) -> None:
        rid = next(_ids)
        await self.send(self.template.body(rid))
        await self.answer(rid, self.method)

    async def aclose(self) -> None:
        self.is_open = False
        await self.disconnect()


class EventReader:
    """The ``(event type, data)`` events of an SSE body on ``conn`` (chunked or framed by close)."""

    def __init__(self, conn: Connection, chunked: bool) -> None:
        self.conn, self.chunked = conn, chunked
        self.raw = bytearray()  # chunked framing not yet taken off
        self.text = bytearray()  # the body, CR and CRLF line ends made LF
        self.left = 0  # bytes left of the current chunk, its CRLF included
        self.cr = False  # the body so far ended in CR (maybe half of a CRLF)
        leftover, conn.buf = conn.buf, bytearray()
        self._feed(bytes(leftover))

    def _feed(self, data: bytes) -> None:
        if not self.chunked:
            self._append(data)
            return
        raw = self.raw
        raw += data
        while raw:
            if self.left > 2:  # chunk data
                n = min(self.left - 2, len(raw))
                self._append(bytes(raw[:n]))
                del raw[:n]
                self.left -= n
            elif self.left > 0:  # the CRLF after it
                n = min(self.left, len(raw))
                del raw[:n]
                self.left -= n
            else:  # a chunk-size line
                i = raw.find(b"\r\n")
                if i < 0:
                    if len(raw) > MAX_HEAD:
                        raise LoadError("bad chunked framing on the event stream")
                    return
                try:
                    size = int(bytes(raw[:i]).split(b";")[0], 16)
                except ValueError:
                    raise LoadError(f"bad chunk size {bytes(raw[:i])[:40]!r}") from None
                del raw[: i + 2]
                if size == 0:
                    raise LoadError("the server ended the event stream")
                self.left = size + 2

    def _append(self, data: bytes) -> None:
        if self.cr or b"\r" in data:
            if self.cr:
                data = b"\r" + data
            self.cr = data.endswith(b"\r")
            if self.cr:
                data = data[:-1]
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        self.text += data
        if len(self.text) > MAX_BODY:
            raise LoadError("event too large")

    async def next(self) -> tuple[bytes, bytes]:
        """The next event that has data (comments such as keep-alives are skipped)."""
        text = self.text
        while True:
            while (i := text.find(b"\n\n")) >= 0:
                block = bytes(text[:i])
                del text[: i + 2]
                kind, data = b"message", []
                for line in block.split(b"\n"):
                    if line.startswith(b"data:"):
                        data.append(line[5:].removeprefix(b" "))
                    elif line.startswith(b"event:"):
                        kind = line[6:].strip()
                if data:
                    return kind, b"\n".join(data)
            stream = self.conn.stream
            if stream is None:
                raise LoadError("the event stream is closed")
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise LoadError("the server closed the event stream")
            self._feed(chunk)


class SSEChannel(StreamChannel):
    """Legacy HTTP+SSE: answers on the ``GET <base>/sse`` stream, requests POSTed on a second connection."""

    def __init__(self, target: Target, method: str) -> None:
        super().__init__(target, method)
        self.get = target.connection()
        self.post = target.connection()
        self.path = target.base + b"/sse"
        self.post_headers = b"Content-Type: application/json\r\n" + target.headers
        self.events: EventReader | None = None
        self.endpoint = b""

    async def connect(self) -> None:
        t = self.target
        status, headers = await self.get.start(
            b"GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n%s\r\n" % (self.path, t.hostport, t.headers)
        )
        if status != 200 or not headers.get(b"content-type", b"").startswith(b"text/event-stream"):
            raise LoadError(f"GET {self.path.decode()}: HTTP {status} {headers.get(b'content-type', b'')!r}")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if not chunked and b"content-length" in headers:
            raise LoadError(f"GET {self.path.decode()}: an event stream with a Content-Length")
        self.events = EventReader(self.get, chunked)
        kind, data = await self.events.next()
        if kind != b"endpoint":
            raise LoadError(f"the stream's first event is {kind!r}, not endpoint")
        here = f"http://{t.hostport.decode()}{self.path.decode()}"
        url = urlsplit(urljoin(here, data.strip().decode("latin-1")))
        if url.netloc != t.hostport.decode():
            raise LoadError(f"endpoint {data[:120]!r} is on another host")
        self.endpoint = (url.path + (f"?{url.query}" if url.query else "")).encode()

    async def send(self, body: bytes) -> None:
        resp = await self.post.request(b"POST", self.endpoint, self.post_headers, body)
        if resp.status not in (200, 202, 204):
            raise LoadError(f"POST {self.endpoint.partition(b'?')[0].decode()}: HTTP {resp.status} {resp.body[:120]!r}")

    async def receive(self) -> bytes:
        assert self.events is not None
        while True:
            kind, data = await self.events.next()
            if kind == b"message":
                return data

    async def disconnect(self) -> None:
        self.events = None
        await self.get.aclose()  # ends the session
        await self.post.aclose()


class WSChannel(StreamChannel):
    """MCP over WebSocket at ``<base>/ws`` (subprotocol ``mcp``): one message per text frame.

    wsproto makes the upgrade, every frame we send, and reads every frame but one kind: we split
    the server's frames ourselves (wsproto is given exactly the 101 head, so it never holds a part
    of a frame) and take a final unmasked text frame outside a fragmented message as it is (that
    cuts the client's cost per answer from ~15 us to ~1 us); pings, closes, fragments and anything
    else go whole to wsproto, whose events we act on (a ping is answered with what it produces).
    """

    def __init__(self, target: Target, method: str) -> None:
        super().__init__(target, method)
        self.path = (target.base + b"/ws").decode()
        self.extra = [
            (name.strip().lower(), value.strip())
            for name, _, value in (line.partition(b":") for line in target.headers.split(b"\r\n") if line)
        ]
        self.stream: trio.SocketStream | None = None
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.rbuf = bytearray()  # received bytes not yet taken as a frame
        self.pending: deque[Event] = deque()  # wsproto's events not yet acted on
        self.parts: list[str] = []  # a fragmented message so far

    async def _recv(self) -> None:
        assert self.stream is not None
        data = await self.stream.receive_some(65536)
        if not data:
            raise LoadError("connection closed by server")
        self.rbuf += data

    def _feed(self, data: bytes) -> None:
        try:
            self.ws.receive_data(data)
            self.pending.extend(self.ws.events())
        except RemoteProtocolError as exc:
            raise LoadError(f"WebSocket: {exc}") from None

    async def _write(self, event: Event) -> None:
        assert self.stream is not None
        try:
            data = self.ws.send(event)
        except LocalProtocolError as exc:
            raise LoadError(f"WebSocket: {exc}") from None
        await self.stream.send_all(data)

    def _frame(self) -> bytes | bool:
        """Take the next whole frame from ``rbuf``: a plain text message's payload, True when the
        frame went to wsproto (its events are in ``pending``), False when no whole frame is there."""
        buf = self.rbuf
        if len(buf) < 2:
            return False
        b0, b1 = buf[0], buf[1]
        n, head = b1 & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                return False
            n, head = int.from_bytes(buf[2:4], "big"), 4
        elif n == 127:
            if len(buf) < 10:
                return False
            n, head = int.from_bytes(buf[2:10], "big"), 10
        if n > MAX_BODY:
            raise LoadError("frame too large")
        if b1 & 0x80:
            head += 4  # a masked frame from a server: wsproto will refuse it
        end = head + n
        if len(buf) < end:
            return False
        if b0 == 0x81 and not b1 & 0x80 and not self.parts:  # FIN, no RSV, text, unmasked
            payload = bytes(buf[head:end])
            del buf[:end]
            return payload
        frame = bytes(buf[:end])
        del buf[:end]
        self._feed(frame)
        return True

    async def connect(self) -> None:
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.rbuf.clear()
        self.pending.clear()
        self.parts.clear()
        self.stream = await trio.open_tcp_stream(self.target.host, self.target.port)
        host = self.target.hostport.decode()
        await self._write(WSRequest(host=host, target=self.path, subprotocols=["mcp"], extra_headers=self.extra))
        while (i := self.rbuf.find(b"\r\n\r\n")) < 0:
            if len(self.rbuf) > MAX_HEAD:
                raise LoadError("upgrade: response head too large")
            await self._recv()
        head = bytes(self.rbuf[: i + 4])
        del self.rbuf[: i + 4]
        self._feed(head)
        while self.pending:
            event = self.pending.popleft()
            if isinstance(event, AcceptConnection):
                if event.subprotocol != "mcp":
                    raise LoadError(f"upgrade accepted with subprotocol {event.subprotocol!r}, not mcp")
                self.pending.clear()
                return
            if isinstance(event, RejectConnection):
                raise LoadError(f"upgrade refused: HTTP {event.status_code}")
        raise LoadError(f"upgrade: unexpected answer {head[:80]!r}")

    async def send(self, body: bytes) -> None:
        await self._write(TextMessage(data=body.decode()))

    async def receive(self) -> bytes | str:
        pending = self.pending
        while True:
            while pending:
                event = pending.popleft()
                if isinstance(event, TextMessage):
                    self.parts.append(event.data)
                    if event.message_finished:
                        data = "".join(self.parts)
                        self.parts.clear()
                        return data
                elif isinstance(event, Ping):
                    await self._write(event.response())
                elif isinstance(event, CloseConnection):
                    if self.ws.state is ConnectionState.REMOTE_CLOSING:
                        await self._write(event.response())
                    raise LoadError(f"closed by the server: {event.code} {event.reason}")
                elif isinstance(event, BytesMessage):
                    raise LoadError("a binary message")
            frame = self._frame()
            if isinstance(frame, bytes):
                return frame
            if not frame:
                await self._recv()

    async def disconnect(self) -> None:
        stream, self.stream = self.stream, None
        if stream is None:
            return
        if self.ws.state is ConnectionState.OPEN:
            with trio.move_on_after(1):
                try:
                    await stream.send_all(self.ws.send(CloseConnection(code=1000, reason="done")))
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, LocalProtocolError):
                    pass  # closing anyway
        await trio.aclose_forcefully(stream)


CHANNELS: dict[str, type[Channel]] = {"sse": SSEChannel, "ws": WSChannel, "stateless": StatelessChannel}


# --------------------------------------------------------------------------- the load


# What a failed request may raise; anything else is a bug and propagates.
FAILURES = (LoadError, OSError, trio.TooSlowError, trio.BrokenResourceError, msgspec.ValidationError)


SPIN_S = 0.002  # a paced send spins for its last 2 ms instead of trusting a timer


class Pacer:
    """One send schedule shared by every connection: slot ``k`` is due at ``start + k / rate``."""

    def __init__(self, rate: float, start: float) -> None:
        self.interval = 1.0 / rate
        self.next = start  # in trio's clock

    async def wait(self) -> float:
        """Claim the next slot and wait until it is due; return how late we woke (seconds).

        Timers alone would bunch sends at millisecond ticks (epoll's timeout is in ms, rounded
        up), and a burst of sends queues in the server: that would be the load generator's
        latency, not the server's. So sleep until shortly before the slot, then spin on trio
        checkpoints (the event loop keeps polling I/O without blocking) until it is due.
        """
        due = self.next
        self.next += self.interval
        if due - trio.current_time() > SPIN_S:
            await trio.sleep_until(due - SPIN_S)
        while trio.current_time() < due:
            await trio.lowlevel.checkpoint()
        return trio.current_time() - due


@dataclass
class Stats:
    """Latencies of requests that completed inside the measured window, and every error."""

    start: float = math.inf
    stop: float = math.inf
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    iterations: int = 0
    samples: list[str] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)

    def record(self, t0: float, t1: float, lag: float | None = None) -> None:
        """Count one success that started at ``t0`` and ended at ``t1`` (sent ``lag`` s late)."""
        if self.start <= t1 <= self.stop:
            self.latencies.append(t1 - t0)
            if lag is not None:
                self.lags.append(lag)

    def error(self, exc: BaseException) -> None:
        """Count one failure (warm-up included: errors are never hidden)."""
        self.errors += 1
        text = f"{type(exc).__name__}: {exc}"[:300]
        if len(self.samples) < 10 and text not in self.samples:
            self.samples.append(text)


async def _failed(stats: Stats, closable: Connection | Channel, exc: BaseException) -> None:
    """A failed request: count it, drop the connection (the next request reconnects), and pause
    briefly so a dead server does not get a hot loop."""
    stats.error(exc)
    await closable.aclose()
    await trio.sleep(0.01)


async def call_worker(
    conn: Connection, target: Target, session: Session, mode: str, stats: Stats, pacer: Pacer | None = None
) -> None:
    """Send requests on ``conn`` back to back (or when ``pacer`` says) until the window ends."""
    method, params = ("tools/list", None) if mode == "list" else ("tools/call", target.call_params)
    clock = time.perf_counter
    lag = None
    while clock() < stats.stop:
        if pacer is not None:
            lag = await pacer.wait()
            if clock() >= stats.stop:
                break
        t0 = clock()
        try:
            with trio.fail_after(target.timeout):
                await rpc(conn, target, session.headers, method, params)
        except FAILURES as exc:
            await _failed(stats, conn, exc)
            continue
        stats.record(t0, clock(), lag)


async def churn_worker(conn: Connection, target: Target, stats: Stats) -> None:
    """Run whole session lifecycles on ``conn`` until the window ends."""
    clock = time.perf_counter
    while clock() < stats.stop:
        try:
            with trio.fail_after(target.timeout):
                session = await open_session(conn, target, stats)
                for _ in range(3):
                    t0 = clock()
                    await rpc(conn, target, session.headers, "tools/call", target.call_params)
                    stats.record(t0, clock())
                t0 = clock()
                await close_session(conn, target, session)
                stats.record(t0, clock())
        except FAILURES as exc:
            await _failed(stats, conn, exc)
            continue
        if stats.start <= clock() <= stats.stop:
            stats.iterations += 1


async def channel_worker(chan: Channel, target: Target, stats: Stats, pacer: Pacer | None = None) -> None:
    """call_worker for the other wires: (re)open ``chan`` when needed, then requests until the end."""
    clock = time.perf_counter
    lag = None
    while clock() < stats.stop:
        if not chan.is_open:
            try:
                with trio.fail_after(target.timeout):
                    await chan.open()
            except FAILURES as exc:
                await _failed(stats, chan, exc)
                continue
        if pacer is not None:
            lag = await pacer.wait()
            if clock() >= stats.stop:
                break
        t0 = clock()
        try:
            with trio.fail_after(target.timeout):
                await chan.call()
        except FAILURES as exc:
            await _failed(stats, chan, exc)
            continue
        stats.record(t0, clock(), lag)


async def open_channels(target: Target, wire: str, method: str, count: int, stats: Stats) -> list[Channel]:
    """``count`` channels of ``wire``, opened (64 at a time); exits if none could be."""
    chans = [CHANNELS[wire](target, method) for _ in range(count)]
    limiter = trio.CapacityLimiter(64)

    async def opener(chan: Channel) -> None:
        async with limiter:
            try:
                with trio.fail_after(target.timeout):
                    await chan.open()
            except FAILURES as exc:
                stats.error(exc)
                await chan.aclose()

    async with trio.open_nursery() as nursery:
        for chan in chans:
            nursery.start_soon(opener, chan)
    if not any(chan.is_open for chan in chans):
        raise SystemExit(json.dumps({"error": f"no {wire} connection could be opened", "error_samples": stats.samples}))
    return chans


async def run_load(
    target: Target,
    sessions: int,
    inflight: int,
    mode: str,
    warmup: float,
    duration: float,
    rate: float = 0.0,
    wire: str = "streamable",
) -> dict[str, Any]:
    """Open the sessions, run the workers (paced at ``rate`` requests/s if > 0), and summarize."""
    if wire != "streamable":
        if mode == "churn":
            raise ValueError("mode churn is for the streamable wire only")
        return await run_channels(target, wire, inflight, mode, warmup, duration, rate)
    stats = Stats()
    conns = [target.connection() for _ in range(inflight)]
    opened: list[Session | None] = [None] * sessions
    limiter = trio.CapacityLimiter(64)  # don't stampede the server's accept queue

    async def opener(i: int) -> None:
        conn = conns[i] if i < inflight else target.connection()
        async with limiter:
            try:
                with trio.fail_after(target.timeout):
                    opened[i] = await open_session(conn, target)
            except FAILURES as exc:
                stats.error(exc)
            finally:
                if i >= inflight:
                    await conn.aclose()

    if mode != "churn":
        async with trio.open_nursery() as nursery:
            for i in range(sessions):
                nursery.start_soon(opener, i)
        live = [s for s in opened if s is not None]
        if not live:
            raise SystemExit(
                json.dumps({"error": "no session could be opened", "error_samples": stats.samples})
            )
    stats.start = time.perf_counter() + warmup
    stats.stop = stats.start + duration
    pacer = Pacer(rate, trio.current_time()) if rate > 0 and mode != "churn" else None
    async with trio.open_nursery() as nursery:
        for i, conn in enumerate(conns):
            if mode == "churn":
                nursery.start_soon(churn_worker, conn, target, stats)
            else:
                session = opened[i % sessions] or live[i % len(live)]
                nursery.start_soon(call_worker, conn, target, session, mode, stats, pacer)
    for conn in conns:
        await conn.aclose()
    return summarize(stats, duration, sessions, inflight, mode, "streamable", rate if pacer is not None else 0.0)


async def run_channels(
    target: Target, wire: str, inflight: int, mode: str, warmup: float, duration: float, rate: float = 0.0
) -> dict[str, Any]:
    """run_load for the wires other than streamable (modes call and list)."""
    stats = Stats()
    method = "tools/list" if mode == "list" else "tools/call"
    chans = await open_channels(target, wire, method, inflight, stats)
    stats.start = time.perf_counter() + warmup
    stats.stop = stats.start + duration
    pacer = Pacer(rate, trio.current_time()) if rate > 0 else None
    async with trio.open_nursery() as nursery:
        for chan in chans:
            nursery.start_soon(channel_worker, chan, target, stats, pacer)
    for chan in chans:
        await chan.aclose()
    sessions = 0 if wire == "stateless" else inflight  # sse, ws: one session per stream
    return summarize(stats, duration, sessions, inflight, mode, wire, rate)


def summarize(
    stats: Stats, duration: float, sessions: int, inflight: int, mode: str, wire: str, rate: float
) -> dict[str, Any]:
    """The report of a load run (``rate`` > 0: it was paced)."""
    lat = sorted(stats.latencies)

    def pct(p: float) -> float:
        return round(1000 * lat[min(len(lat) - 1, max(0, math.ceil(p * len(lat)) - 1))], 3) if lat else 0.0

    report: dict[str, Any] = {
        "requests": len(lat),
        "errors": stats.errors,
        "error_samples": stats.samples,
        "throughput_rps": round(len(lat) / duration, 1),
        "latency_ms": {
            "p50": pct(0.5),
            "p90": pct(0.9),
            "p99": pct(0.99),
            "max": pct(1.0),
            "mean": round(1000 * sum(lat) / len(lat), 3) if lat else 0.0,
        },
        "duration_s": duration,
        "sessions": sessions,
        "inflight": inflight,
        "mode": mode,
        "wire": wire,
    }
    if rate > 0:
        lags = sorted(stats.lags)

        def lag_pct(p: float) -> float:
            return round(1000 * lags[min(len(lags) - 1, max(0, math.ceil(p * len(lags)) - 1))], 3) if lags else 0.0

        report["rate"] = rate
        report["schedule_lag_ms"] = {"p50": lag_pct(0.5), "p99": lag_pct(0.99), "max": lag_pct(1.0)}
        report["late_pct"] = round(100 * sum(1 for x in lags if x > 0.001) / len(lags), 2) if lags else 0.0
    if mode == "churn":
        report["iterations"] = stats.iterations
        report["iterations_per_s"] = round(stats.iterations / duration, 1)
    return report


async def open_idle(target: Target, count: int, hold: float, concurrency: int = 100) -> dict[str, Any]:
    """Open ``count`` sessions, each on its own connection, closed at once or after ``hold`` s."""
    stats = Stats()
    limiter = trio.CapacityLimiter(concurrency)
    held: list[Connection] = []
    ok = 0

    async def one() -> None:
        nonlocal ok
        conn = target.connection()
        async with limiter:
            try:
                with trio.fail_after(target.timeout):
                    await open_session(conn, target)
                ok += 1
            except FAILURES as exc:
                stats.error(exc)
        if hold > 0 and conn.stream is not None:
            held.append(conn)
        else:
            await conn.aclose()

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)
    seconds = time.perf_counter() - t0
    if hold > 0:
        # A line on stderr tells a driver (bench/run) that it may sample the server now.
        print(
            f"idle sessions open: {ok}, holding {len(held)} connections for {hold}s",
            file=sys.stderr,
            flush=True,
        )
        await trio.sleep(hold)
    for conn in held:
        await conn.aclose()
    return {
        "requested": count,
        "opened": ok,
        "errors": stats.errors,
        "error_samples": stats.samples,
        "open_s": round(seconds, 3),
        "held_connections": len(held),
    }


def raise_nofile() -> int:
    """Raise the soft RLIMIT_NOFILE as far as allowed; return the resulting soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        return want
    except (ValueError, OSError):
        return soft


def default_args(tool: str) -> str:
    """Arguments that suit the fast upstream's tools (``add`` gets numbers, anything else text)."""
    return '{"a": 1, "b": 2}' if tool.endswith("add") else '{"text": "hello"}'


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The CLI."""
    ap = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080/mcp")
    ap.add_argument("--sessions", type=int, default=1, help="sessions opened up front (N)")
    ap.add_argument("--inflight", type=int, default=10, help="connections = requests in flight (M)")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds (0: no load phase)")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    ap.add_argument("--mode", choices=("call", "list", "churn"), default="call")
    ap.add_argument("--wire", choices=WIRES, default="streamable",
                    help="streamable (default), sse (legacy HTTP+SSE), ws (WebSocket), stateless (2026-07-28)")
    ap.add_argument("--tool", default="echo")
    ap.add_argument("--args", help="tool arguments as JSON (default suits echo/add)")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    ap.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                    help="an extra header on every request, e.g. 'Authorization: Bearer KEY' (repeatable)")
    ap.add_argument(
        "--rate", type=float, default=0.0, metavar="R", help="pace at R requests/s in all (0: as fast as possible)"
    )
    ap.add_argument("--idle-sessions", type=int, default=0, metavar="K")
    ap.add_argument(
        "--idle-hold", type=float, default=0.0, metavar="S", help="keep idle connections open S s"
    )
    ap.add_argument("--idle-concurrency", type=int, default=100)
    ap.add_argument("--open-session", action="store_true", help="print a new session's id and exit")
    ap.add_argument("--json", metavar="FILE", help="also write the report here")
    opts = ap.parse_args(argv)
    if opts.sessions < 1 or opts.inflight < 1 or opts.duration < 0 or opts.warmup < 0 or opts.rate < 0:
        ap.error("--sessions and --inflight must be >= 1, --duration, --warmup and --rate >= 0")
    if opts.wire != "streamable" and (opts.mode == "churn" or opts.idle_sessions or opts.open_session):
        ap.error("--mode churn, --idle-sessions and --open-session are for --wire streamable only")
    return opts


async def amain(opts: argparse.Namespace) -> dict[str, Any] | None:
    """Run what the options ask for; return the report (None for --open-session)."""
    target = Target.from_url(opts.url, opts.tool, opts.args or default_args(opts.tool), opts.timeout, opts.header)
    if opts.open_session:
        conn = target.connection()
        with trio.fail_after(opts.timeout):
            session = await open_session(conn, target)
        await conn.aclose()
        print((session.sid or b"").decode())
        return None
    report: dict[str, Any] = {"url": opts.url, "tool": opts.tool, "nofile_limit": raise_nofile()}
    if opts.idle_sessions > 0:
        report["idle"] = await open_idle(target, opts.idle_sessions, opts.idle_hold, opts.idle_concurrency)
    if opts.duration > 0:
        report |= await run_load(
            target, opts.sessions, opts.inflight, opts.mode, opts.warmup, opts.duration, opts.rate, opts.wire
        )
    return report


def main(argv: list[str] | None = None) -> None:
    """Entry point: prints the JSON report; exit status 1 if nothing succeeded."""
    opts = parse_args(argv)
    report = trio.run(amain, opts)
    if report is None:
        return
    text = json.dumps(report, indent=2)
    print(text)
    if opts.json:
        with open(opts.json, "w") as f:
            f.write(text + "\n")
    ok = report.get("requests", 1) > 0 and report.get("idle", {}).get("opened", 1) > 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
