"""JSON-RPC 2.0 envelope: one msgspec Struct for every message kind.

``params`` and ``result`` stay :class:`msgspec.Raw` so a payload crosses the
gateway as the bytes it arrived as: decoding the envelope never decodes the
payload, and encoding an envelope copies the raw bytes verbatim.

Note the union is ``Raw | UnsetType`` and never ``Raw | None``: msgspec treats
``Raw | None`` like ``None`` for a JSON ``null`` and would lose the raw value
(pinned by a test).
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec
from msgspec import UNSET as UNSET
from msgspec import Raw
from msgspec import UnsetType as UnsetType

from .salvage import repair_surrogates, salvage_id

RequestId = int | str

# Standard JSON-RPC and MCP error codes.
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
# Implementation-defined server errors (-32000..-32099).
UPSTREAM_UNAVAILABLE: Final = -32000  # the upstream server crashed, exited or cannot start
REQUEST_TIMEOUT: Final = -32001  # the upstream did not answer within the call timeout
UPSTREAM_INVALID: Final = -32003  # the upstream answered with a message that cannot be read
GATEWAY_SHUTTING_DOWN: Final = -32004  # the call was still running when the shutdown grace ended
UNSUPPORTED_PROTOCOL_VERSION: Final = -32022  # 2026-07-28
REQUEST_CANCELLED: Final = -32800  # LSP's RequestCancelled; used only where an answer is unavoidable


class ErrorObject(msgspec.Struct, omit_defaults=True):
    code: int
    message: str
    data: Raw | UnsetType = UNSET


class Message(msgspec.Struct, omit_defaults=True):
    """Any JSON-RPC message: request, notification, response or error.

    Which one it is follows from the fields present; see :func:`kind`.
    """

    jsonrpc: Literal["2.0"]
    id: int | str | None | UnsetType = UNSET
    method: str | UnsetType = UNSET
    params: Raw | UnsetType = UNSET
    result: Raw | UnsetType = UNSET
    error: ErrorObject | UnsetType = UNSET

    @property
    def is_request(self) -> bool:
        return self.method is not UNSET and self.id is not UNSET

    @property
    def is_notification(self) -> bool:
        return self.method is not UNSET and self.id is UNSET

    @property
    def is_response(self) -> bool:
        """A result or an error answering a request."""
        return self.method is UNSET and (self.result is not UNSET or self.error is not UNSET)


class ProtocolError(Exception):
    """A message we cannot accept; carries the JSON-RPC code and the id to answer with.

    ``salvaged_id`` is the id the bytes seemed to carry even when the message as a whole
    could not be read (a parse error is answered with id null, as JSON-RPC says, but an
    upstream answer that names one of our calls must still end that call at once).
    """

    def __init__(self, code: int, message: str, id: RequestId | None = None,
                 salvaged_id: RequestId | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id
        self.salvaged_id = salvaged_id if salvaged_id is not None else id


# Built once and reused (msgspec encoders/decoders are reusable and thread-safe).
encoder: Final = msgspec.json.Encoder()
_message_decoder: Final = msgspec.json.Decoder(Message)
_raw_dict_decoder: Final = msgspec.json.Decoder(dict[str, Raw])
_any_decoder: Final = msgspec.json.Decoder()

RAW_EMPTY_OBJECT: Final = Raw(b"{}")

#: Everything decoding untrusted bytes can raise. msgspec raises DecodeError for bad JSON, but a
#: value nested deeper than the interpreter's recursion limit raises RecursionError, and a huge
#: allocation MemoryError: every decode of peer bytes catches all of them, so no peer can turn a
#: message into an exception that ends a connection (or the gateway).
DECODE_FAILURES: Final = (msgspec.DecodeError, RecursionError, MemoryError, UnicodeError, ValueError,
                          OverflowError)


def _failure_text(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "JSON is nested too deeply"
    if isinstance(exc, MemoryError):
        return "JSON value too large to decode"
    return str(exc)


def check_utf8(data: bytes) -> None:
    """Raise a -32700 :class:`ProtocolError` unless ``data`` is UTF-8 (RFC 8259 section 8.1).

    Payloads are forwarded raw and msgspec does not look inside them, so without this check a
    client's invalid bytes would reach the upstream unchecked. The ASCII case costs one scan.
    """
    if data.isascii():
        return
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(PARSE_ERROR, f"Parse error: invalid UTF-8 at byte {exc.start}") from None


def decode_message(data: bytes | memoryview) -> Message:
    """Decode one JSON-RPC message and check its shape.

    Raises :class:`ProtocolError` with -32700 for bad JSON and -32600 for a
    valid JSON value that is not a well-formed JSON-RPC message (including
    batches, which are checked for separately by :func:`is_batch`). Never raises
    anything else, whatever the bytes.
    """
    try:
        msg = _message_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise ProtocolError(INVALID_REQUEST, f"Invalid request: {exc}", salvage_id(data)) from None
    except DECODE_FAILURES as exc:
        raise ProtocolError(PARSE_ERROR, f"Parse error: {_failure_text(exc)}",
                            salvaged_id=salvage_id(data)) from None
    _check_shape(msg)
    return msg


def decode_untrusted(data: bytes | memoryview, *, ascii_only: bool = False) -> tuple[Message, str | None]:
    """Decode a message from an upstream, repairing what can be repaired without guessing.

    Returns the message and, if it had to be repaired, what was wrong with it: bytes that are
    not UTF-8 and lone UTF-16 surrogate escapes (which Python's ``json.dumps`` writes for
    undecodable bytes) both become U+FFFD, so a result that carries them is delivered rather
    than dropped. ``ascii_only`` says the caller already knows the bytes are ASCII. Raises
    :class:`ProtocolError` (with ``salvaged_id``) when the message cannot be read.
    """
    repaired: str | None = None
    if not ascii_only:
        try:
            str(data, "utf-8")
        except UnicodeDecodeError:
            data = str(data, "utf-8", "replace").encode("utf-8")
            repaired = "bytes that are not UTF-8 were replaced by U+FFFD"
    try:
        return decode_message(data), repaired
    except ProtocolError as exc:
        if exc.code != PARSE_ERROR or "surrogate" not in exc.message:
            raise
        fixed = repair_surrogates(data)
        if fixed is None:
            raise
        try:
            msg = decode_message(fixed)
        except ProtocolError:
            raise exc from None
        return msg, "lone UTF-16 surrogate escapes were replaced by U+FFFD"


def _check_shape(msg: Message) -> None:
    if msg.method is not UNSET:
        if msg.result is not UNSET or msg.error is not UNSET:
            raise ProtocolError(INVALID_REQUEST, "Invalid request: a request cannot carry result or error",
                                request_id(msg))
        if msg.id is None:
            raise ProtocolError(INVALID_REQUEST, "Invalid request: id must be a string or an integer")
        if msg.params is not UNSET and bytes(memoryview(msg.params)[:1]) != b"{":
            raise ProtocolError(INVALID_REQUEST, "Invalid request: params must be an object",
                                request_id(msg))
        return
    if msg.result is not UNSET and msg.error is not UNSET:
        raise ProtocolError(INVALID_REQUEST, "Invalid response: both result and error", request_id(msg))
    if msg.result is UNSET and msg.error is UNSET:
        raise ProtocolError(INVALID_REQUEST, "Invalid request: no method, result or error", request_id(msg))
    if msg.id is UNSET:
        raise ProtocolError(INVALID_REQUEST, "Invalid response: missing id")


def request_id(msg: Message) -> RequestId | None:
    """The message's id, or None when it has none (for error answers)."""
    return None if msg.id is UNSET or msg.id is None else msg.id


def is_batch(data: bytes | memoryview) -> bool:
    """True if the body is a JSON array (a JSON-RPC batch)."""
    for byte in bytes(data[:64]):
        if byte in b" \t\r\n":
            continue
        return byte == ord("[")
    return False


def decode_params(msg: Message) -> dict[str, Raw]:
    """The top-level members of ``params`` with their values left raw."""
    if msg.params is UNSET:
        return {}
    try:
        return raw_members(msg.params)
    except DECODE_FAILURES:
        raise ProtocolError(INVALID_PARAMS, "Invalid params: expected an object", request_id(msg)) from None


def raw_members(value: Raw | bytes) -> dict[str, Raw]:
    """The members of a JSON object, each left raw. Raises one of DECODE_FAILURES if not an object."""
    return _raw_dict_decoder.decode(value)


def decode_any(value: Raw | None) -> Any:
    """A small raw value as Python objects, or None if absent or not JSON."""
    if value is None:
        return None
    try:
        return _any_decoder.decode(value)
    except DECODE_FAILURES:
        return None


def raw(value: object) -> Raw:
    return Raw(encoder.encode(value))


def encode(msg: Message) -> bytes:
    return encoder.encode(msg)


def request(id: RequestId, method: str, params: Raw | dict[str, Raw] | UnsetType = UNSET) -> Message:
    if isinstance(params, dict):
        params = Raw(encoder.encode(params))
    return Message(jsonrpc="2.0", id=id, method=method, params=params)


def notification(method: str, params: Raw | dict[str, Raw] | UnsetType = UNSET) -> Message:
    if isinstance(params, dict):
        params = Raw(encoder.encode(params))
    return Message(jsonrpc="2.0", method=method, params=params)


def result(id: RequestId | None, value: Raw) -> Message:
    return Message(jsonrpc="2.0", id=id, result=value)


def error(id: RequestId | None, code: int, message: str, data: object = UNSET) -> Message:
    err = ErrorObject(code=code, message=message, data=UNSET if data is UNSET else raw(data))
    return Message(jsonrpc="2.0", id=id, error=err)


def encode_error(id: RequestId | None, code: int, message: str, data: object = UNSET) -> bytes:
    return encoder.encode(error(id, code, message, data))
