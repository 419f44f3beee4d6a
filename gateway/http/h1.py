"""HTTP/1.1, server side, sans I/O: llhttp (through ``httptools``) parses, this module frames.

:class:`H1Parser` is fed the bytes a connection reads and queues the requests they complete
(pipelined ones wait their turn); it enforces the limits the server is configured with while it
parses, so a request over a limit is refused before its body is buffered. llhttp is the parser
Node.js and uvicorn use: written in C, strict where request smuggling lives (a Content-Length
beside a Transfer-Encoding, two Content-Lengths, bare LF line ends, bad chunk sizes and header
tokens are all errors). What h11 gave the server besides parsing is here too: a missing Host on
HTTP/1.1 is a 400, ``Expect: 100-continue`` is seen, keep-alive follows the request's version
and ``Connection`` header, and an ``Upgrade`` hands over the bytes read past the request.

The writing side is :func:`head`, :func:`chunk` and :data:`LAST_CHUNK`: the handlers' headers
are byte constants of the gateway's own or values that passed through a parser, and
:func:`head` refuses any with CR or LF in it (no response splitting, whatever a bug passes in).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final

import httptools

Headers = list[tuple[bytes, bytes]]

_REASONS: Final = {s.value: s.phrase.encode() for s in HTTPStatus}
_STATUS_LINES: dict[int, bytes] = {}
LAST_CHUNK: Final = b"0\r\n\r\n"
_VERSIONS: Final = {"1.1": b"1.1", "1.0": b"1.0"}
READ_SIZE: Final = 65536  # bytes the server reads at a time


class Refusal(Exception):
    """The request cannot be served: answer ``status`` with ``text``, then close."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(status, text)
        self.status, self.text = status, text


@dataclass(slots=True)
class Request:
    """One complete request, as the parser queued it and the handlers get it."""

    method: bytes
    target: bytes
    headers: dict[bytes, bytes]  # lowercase name -> first value
    body: bytes
    http_version: bytes = b"1.1"
    peer: str = ""  # the client's IP address ("" if unknown), set by the server
    identity: Any = None  # who sent it (gateway.auth.Identity), set by the mount table on MCP endpoints
    keep_alive: bool = True  # the connection may serve another request after this one
    upgrade: bool = False  # asked for another protocol (the bytes past it: H1Parser.take_rest)

    @property
    def path(self) -> str:
        return self.target.split(b"?", 1)[0].decode("latin-1")

    def header(self, name: bytes) -> bytes | None:
        """First value of a header (``name`` lowercase: the parser lowercases names)."""
        return self.headers.get(name)


class H1Parser:
    """Requests from a connection's bytes, within the limits; see the module docstring."""

    __slots__ = ("_parser", "_max_header", "_max_body", "ready", "error", "in_message", "expects_continue",
                 "_url", "_headers", "_head_size", "_chunks", "_body_size", "_head_done", "_rest", "_buffered",
                 "_closing", "_head_raw")

    def __init__(self, *, max_header: int, max_body: int) -> None:
        self._max_header = max_header
        self._max_body = max_body
        self._parser = httptools.HttpRequestParser(self)
        self.ready: deque[Request] = deque()  # complete requests, oldest first
        self.error: Refusal | None = None  # what ends the connection once the requests before it are served
        self.in_message = False  # a request has begun and is not complete yet (the read timeout runs)
        self.expects_continue = False  # its head asked for 100 Continue and its body has not come yet
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._head_size = 0
        self._chunks: list[bytes] = []
        self._body_size = 0
        self._head_done = False
        self._rest: bytes | None = None  # past an Upgrade request: not HTTP of ours
        self._buffered = 0  # bytes of the queued requests' bodies (what a pipelining client made us hold)
        self._closing = False  # a queued request ends the connection: what follows it is never parsed
        self._head_raw = 0  # bytes fed while the current head was incomplete

    @property
    def buffered(self) -> int:
        return self._buffered + self._body_size

    @property
    def idle(self) -> bool:
        """Between requests with nothing read ahead: the keep-alive (idle) timeout applies."""
        return not self.in_message and not self.ready and self.error is None

    def feed(self, data: bytes) -> None:
        """Parse ``data``; complete requests go to :attr:`ready`, a refusal to :attr:`error`."""
        if self.error is not None or self._closing:
            return  # nothing after a refusal or a closing request is ever read as a request
        if self._rest is not None:
            self._rest += data
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._rest = data[exc.args[0]:]
            if self.ready:
                self.ready[-1].upgrade = True
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self.error = cause if isinstance(cause, Refusal) else Refusal(400, f"Bad request: {exc}")
        except httptools.HttpParserError as exc:
            if not self._closing:  # bytes after a request that closes the connection are never read
                self.error = Refusal(400, f"Bad request: {_SMUGGLING if _is_smuggling(str(exc)) else exc}")
        if self.in_message and not self._head_done:
            # A head that never ends is refused by size, not buffered until the read timeout. llhttp
            # reports a header only once it is whole, so the bytes fed are counted: at most one read
            # more than the head (the read it began in), hence the allowance of one read.
            self._head_raw += len(data)
            if self._head_raw > self._max_header + READ_SIZE and self.error is None:
                self.error = Refusal(431, f"Request header fields exceed the limit of {self._max_header} bytes")

    def take_rest(self) -> bytes:
        """The bytes read past an Upgrade request (the new protocol's first bytes)."""
        rest, self._rest = self._rest or b"", None
        return rest

    def resume_http(self) -> None:
        """The upgrade was not taken (no 101): go on parsing HTTP from the bytes past it."""
        rest = self.take_rest()
        self._parser = httptools.HttpRequestParser(self)
        if rest:
            self.feed(rest)

    def taken(self, request: Request) -> None:
        """The server took ``request`` off :attr:`ready`."""
        self._buffered -= len(request.body)

    # -- llhttp's callbacks (called inside feed_data) ----------------------------------------------
    def on_message_begin(self) -> None:
        self.in_message = True
        self._url = b""
        self._headers = {}
        self._head_size = 0
        self._chunks = []
        self._body_size = 0
        self._head_done = False
        self._head_raw = 0

    def on_url(self, url: bytes) -> None:
        self._url += url  # may come in pieces
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        self._headers.setdefault(name.lower(), value)

    def on_headers_complete(self) -> None:
        self._head_done = True
        headers = self._headers
        if self._head_size > self._max_header:
            raise Refusal(431, f"Request header fields exceed the limit of {self._max_header} bytes")
        version = self._parser.get_http_version()
        if version not in _VERSIONS:
            raise Refusal(505, f"HTTP version {version} is not supported")
        if version == "1.1" and b"host" not in headers:
            raise Refusal(400, "Bad request: missing Host header")  # RFC 9112 section 3.2
        length = headers.get(b"content-length")
        if length is not None and int(length) > self._max_body:  # llhttp checked it is digits
            raise Refusal(413, f"Request body of {int(length)} bytes exceeds the limit of {self._max_body}")
        expect = headers.get(b"expect")
        if expect is not None and expect.lower() == b"100-continue" and length not in (None, b"0"):
            self.expects_continue = True

    def on_body(self, body: bytes) -> None:
        self.expects_continue = False
        self._body_size += len(body)
        if self._body_size > self._max_body:
            raise Refusal(413, f"Request body exceeds the limit of {self._max_body} bytes")
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        parser = self._parser
        chunks = self._chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        version = parser.get_http_version()
        keep_alive = version == "1.1" and parser.should_keep_alive()  # HTTP/1.0: one request (as h11 does)
        self.ready.append(Request(parser.get_method(), self._url, self._headers, body, _VERSIONS[version],
                                  keep_alive=keep_alive))
        self._buffered += len(body)
        self._body_size = 0
        self._chunks = []
        self.in_message = False
        self.expects_continue = False
        if not keep_alive:
            self._closing = True


_SMUGGLING: Final = "both Content-Length and Transfer-Encoding"  # RFC 9112 section 6.1


def _is_smuggling(text: str) -> bool:
    """llhttp's words for a request that carries both framings (a smuggling attempt or a broken proxy)."""
    return "Content-Length" in text and "Transfer-Encoding" in text


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))
    return line


def head(status: int, headers: Headers, *, close: bool = False, chunked: bool = False) -> bytes:
    """A response's status line and headers (the caller says how the body is framed)."""
    lines = b"".join([b"%s: %s\r\n" % (name, value) for name, value in headers])
    if lines.count(b"\n") != len(headers) or lines.count(b"\r") != len(headers):  # one scan, not four per header
        bad = next(name for name, value in headers if any(c in name + value for c in b"\r\n"))
        raise ValueError(f"header {bad!r} holds a line break")
    parts = [status_line(status), lines]
    if chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    if close:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (``data`` not empty: an empty chunk ends the body)."""
    return b"%x\r\n%s\r\n" % (len(data), data)
