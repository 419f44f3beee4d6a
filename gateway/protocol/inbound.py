"""The pure checks a Streamable HTTP request passes before anything runs (the inbound ladder).

Each check either lets the request on, saying what it learned (which era it speaks, what the
client accepts, whether the body is a batch), or returns a :class:`Rejection`: the HTTP status
and the JSON-RPC error of the first rung that failed. The transport only acts on the outcome.

Rungs of a POST, first failure wins:

1. ``Accept`` names JSON or SSE (or is absent, which accepts both) -> else 406;
2. ``Content-Type`` is ``application/json`` (parameters allowed; required, so that a browser
   page cannot send a CORS "simple request") -> else 415;
3. the body is UTF-8 (RFC 8259; payloads are forwarded raw, so this is the one place it is
   checked) -> else 400 -32700;
4. the era: a ``MCP-Protocol-Version`` that is not a handshake version selects 2026-07-28 (its
   own ladder then runs, :func:`gateway.protocol.modern.classify`); none, or a handshake one,
   the handshake era. A supported handshake version other than the session's is accepted (the
   spec asks for 400 only for an unsupported one).

Pure: no trio, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from msgspec import UNSET

from ..memo import Memo
from . import jsonrpc, mcp
from .errors import INVALID_REQUEST, PARSE_ERROR, ProtocolError, RequestId

Era = Literal["handshake", "modern"]


@dataclass(frozen=True, slots=True)
class Rejection:
    """The answer to a request that failed a rung."""

    status: int
    code: int
    message: str
    id: RequestId | None = None
    data: object = UNSET

    def body(self) -> bytes:
        return jsonrpc.encode_error(self.id, self.code, self.message, self.data)

    @classmethod
    def of(cls, status: int, exc: ProtocolError) -> Rejection:
        return cls(status, exc.code, exc.message, exc.id, exc.data)


@dataclass(frozen=True, slots=True)
class Post:
    """A POST that passed the ladder."""

    era: Era
    accepts_json: bool
    accepts_sse: bool
    batch: bool
    version: str | None  # the MCP-Protocol-Version header, if any


NOT_ACCEPTABLE: Final = Rejection(406, INVALID_REQUEST,
                                  "Not Acceptable: Accept must include application/json or text/event-stream")
UNSUPPORTED_MEDIA_TYPE: Final = Rejection(415, INVALID_REQUEST,
                                          "Unsupported Media Type: Content-Type must be application/json")
GET_NOT_ACCEPTABLE: Final = Rejection(406, INVALID_REQUEST, "Not Acceptable: GET needs Accept: text/event-stream")
MISSING_SESSION: Final = Rejection(400, INVALID_REQUEST,
                                   "Bad Request: missing Mcp-Session-Id header (send initialize first)")
UNKNOWN_SESSION: Final = Rejection(404, INVALID_REQUEST, "Session not found: it ended or expired; initialize a new one")


_MEMO: Final = 256  # distinct Accept / Content-Type values remembered (clients send the same few)
_accepts_memo: Memo[bytes, tuple[bool, bool]] = Memo(_MEMO)
_json_memo: Memo[bytes, bool] = Memo(_MEMO)


def accepts(accept: bytes | None) -> tuple[bool, bool]:
    """(accepts JSON, accepts SSE); a missing Accept header accepts both."""
    if accept is None:
        return True, True
    known = _accepts_memo.get(accept)
    if known is not None:
        return known
    lower = accept.lower()
    wild = b"*/*" in lower
    return _accepts_memo.keep(accept, (wild or b"application/json" in lower or b"application/*" in lower,
                                       wild or b"text/event-stream" in lower or b"text/*" in lower))


def is_json(content_type: bytes | None) -> bool:
    """Whether a Content-Type is application/json (parameters such as charset allowed)."""
    if content_type is None:
        return False
    known = _json_memo.get(content_type)
    if known is None:
        known = _json_memo.keep(content_type, content_type.split(b";", 1)[0].strip().lower() == b"application/json")
    return known


def check_post(accept: bytes | None, content_type: bytes | None, version: bytes | None,
               body: bytes) -> Post | Rejection:
    """Rungs 1-4 of a POST (see the module docstring)."""
    accepts_json, accepts_sse = accepts(accept)
    if not (accepts_json or accepts_sse):
        return NOT_ACCEPTABLE
    if not is_json(content_type):
        return UNSUPPORTED_MEDIA_TYPE
    try:
        jsonrpc.check_utf8(body)
    except ProtocolError as exc:
        return Rejection(400, PARSE_ERROR, exc.message)
    text = version.decode("latin-1") if version is not None else None
    era: Era = "modern" if text is not None and text not in mcp.HANDSHAKE_VERSIONS else "handshake"
    return Post(era, accepts_json, accepts_sse, jsonrpc.is_batch(body), text)


def check_get(accept: bytes | None) -> Rejection | None:
    """A GET opens the server-to-client stream: it must ask for SSE, explicitly."""
    if accept is None or not accepts(accept)[1]:
        return GET_NOT_ACCEPTABLE
    return None


def batch_allowed(version: str | None) -> Rejection | None:
    """JSON-RPC batches exist in exactly one revision (2025-03-26)."""
    if version is not None and mcp.supports_batches(version):
        return None
    return Rejection(400, INVALID_REQUEST, "Invalid request: JSON-RPC batches are not supported "
                                           f"in protocol version {version or mcp.LATEST_HANDSHAKE}")
