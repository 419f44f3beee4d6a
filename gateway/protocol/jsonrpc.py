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
from msgspec import UNSET as UNSET, Raw, UnsetType as UnsetType

# Error codes and ProtocolError live in errors.py (the one error tree); re-exported here because
# every message-level module speaks in them.
from .errors import (
    GATEWAY_SHUTTING_DOWN as GATEWAY_SHUTTING_DOWN,
    HEADER_MISMATCH as HEADER_MISMATCH,
    INTERNAL_ERROR as INTERNAL_ERROR,
    INVALID_PARAMS as INVALID_PARAMS,
    INVALID_REQUEST as INVALID_REQUEST,
    METHOD_NOT_FOUND as METHOD_NOT_FOUND,
    PARSE_ERROR as PARSE_ERROR,
    REQUEST_CANCELLED as REQUEST_CANCELLED,
    REQUEST_TIMEOUT as REQUEST_TIMEOUT,
    UNSUPPORTED_PROTOCOL_VERSION as UNSUPPORTED_PROTOCOL_VERSION,
    UPSTREAM_INVALID as UPSTREAM_INVALID,
    UPSTREAM_UNAVAILABLE as UPSTREAM_UNAVAILABLE,
    ProtocolError as ProtocolError,
    RequestId as RequestId,
)
from .salvage import repair_surrogates, salvage_id


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
