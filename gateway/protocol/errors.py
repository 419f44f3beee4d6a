"""Every error the gateway raises on purpose: one tree, and one table to the wire.

::

    GatewayError
    ├── ProtocolError             a peer sent something we cannot accept; ``code`` says what
    │                             (-32700 parse, -32600 shape, -32601 method, -32602 params,
    │                             -32020 header mismatch, -32022 unsupported version,
    │                             -32005 rate limited: HTTP 429 with Retry-After in both eras)
    └── CallError                 a call ended without a result
        ├── UpstreamError         the upstream answered with a JSON-RPC error: its code, passed through
        ├── UpstreamTimeout       -32001  no answer within the call's timeout
        ├── UpstreamInvalid       -32003  the upstream's answer could not be read
        ├── UpstreamGone          -32000  Broken: the peer broke it (exited, crashed, unresponsive,
        │   └── StartError                cannot start, connection lost)
        └── Stopped                       Closed: we ended it
            ├── Cancelled         -32800  the client cancelled it
            ├── SessionEnded      -32000  its session ended (DELETE, expiry, eviction)
            └── ShuttingDown      -32004  still running when the shutdown grace ended

Broken is the peer's doing and worth a restart; Closed is ours and never is. At the edge, a
JSON-RPC error code becomes an HTTP status through :func:`http_status`: in the handshake era
an error answered after dispatch rides a 200 (the JSON-RPC error is the answer), while errors
of the edge itself (the body, the headers, the session) and every error of a 2026-07-28
request use the table the spec and the official SDK (``mcp.shared.inbound``) define.

Pure: no trio, no I/O.
"""

from __future__ import annotations

from typing import Final

from msgspec import UNSET, Raw, UnsetType

# Standard JSON-RPC and MCP error codes.
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
HEADER_MISMATCH: Final = -32020  # 2026-07-28: HTTP headers disagree with the body
MISSING_REQUIRED_CLIENT_CAPABILITY: Final = -32021  # 2026-07-28
UNSUPPORTED_PROTOCOL_VERSION: Final = -32022  # 2026-07-28
# Implementation-defined server errors (-32000..-32019; -32002 is retired and never reused).
UPSTREAM_UNAVAILABLE: Final = -32000  # the upstream server crashed, exited, is unresponsive or cannot start
REQUEST_TIMEOUT: Final = -32001  # the upstream did not answer within the call timeout
UPSTREAM_INVALID: Final = -32003  # the upstream answered with a message that cannot be read
GATEWAY_SHUTTING_DOWN: Final = -32004  # the call was still running when the shutdown grace ended
RATE_LIMITED: Final = -32005  # a rate limit refused the call; data.retryAfter: seconds until one is free
REQUEST_CANCELLED: Final = -32800  # LSP's RequestCancelled; used only where an answer is unavoidable

RequestId = int | str

#: HTTP status of an error answered by the edge (and of every 2026-07-28 error); unlisted codes ride 200.
_HTTP_STATUS: Final = {
    PARSE_ERROR: 400, INVALID_REQUEST: 400, INVALID_PARAMS: 400, HEADER_MISMATCH: 400,
    MISSING_REQUIRED_CLIENT_CAPABILITY: 400, UNSUPPORTED_PROTOCOL_VERSION: 400, METHOD_NOT_FOUND: 404,
    RATE_LIMITED: 429,
}


def http_status(code: int, *, default: int = 200) -> int:
    """The HTTP status for a JSON-RPC error code, per the table above."""
    return _HTTP_STATUS.get(code, default)


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose; ``code`` is its JSON-RPC code."""

    code: int = INTERNAL_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ProtocolError(GatewayError):
    """A message we cannot accept; carries the JSON-RPC code and the id to answer with.

    ``salvaged_id`` is the id the bytes seemed to carry even when the message as a whole
    could not be read (a parse error is answered with id null, as JSON-RPC says, but an
    upstream answer that names one of our calls must still end that call at once).
    """

    def __init__(self, code: int, message: str, id: RequestId | None = None,
                 salvaged_id: RequestId | None = None, data: object = UNSET) -> None:
        super().__init__(message)
        self.code = code
        self.id = id
        self.salvaged_id = salvaged_id if salvaged_id is not None else id
        self.data = data


class CallError(GatewayError):
    """A call did not produce a result; maps to a JSON-RPC error for the client."""

    def __init__(self, code: int, message: str, data: Raw | UnsetType = UNSET) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


class UpstreamError(CallError):
    """The upstream answered with a JSON-RPC error (passed through to the client unchanged)."""


class UpstreamTimeout(CallError):
    def __init__(self, message: str) -> None:
        super().__init__(REQUEST_TIMEOUT, message)


class UpstreamInvalid(CallError):
    def __init__(self, message: str) -> None:
        super().__init__(UPSTREAM_INVALID, message)


class UpstreamGone(CallError):
    """Broken: the server exited, crashed, closed its output or stopped answering."""

    def __init__(self, message: str) -> None:
        super().__init__(UPSTREAM_UNAVAILABLE, message)


class Stopped(CallError):
    """Closed: the gateway ended the call (never a reason to restart anything)."""


class Cancelled(Stopped):
    def __init__(self, message: str = "Request cancelled") -> None:
        super().__init__(REQUEST_CANCELLED, message)


class SessionEnded(Stopped):
    def __init__(self, message: str = "The session ended") -> None:
        super().__init__(UPSTREAM_UNAVAILABLE, message)


class ShuttingDown(Stopped):
    def __init__(self, message: str = "The gateway is shutting down: the call did not finish within its "
                                      "grace period") -> None:
        super().__init__(GATEWAY_SHUTTING_DOWN, message)
