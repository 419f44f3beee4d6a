"""What can still be read from a message that does not decode: its id, and a repair.

Used only on the failure path of :func:`gateway.protocol.jsonrpc.decode_message`, for bytes
from untrusted peers. Everything here is linear in the input, never recursive (a value
nested a million levels deep costs a counter, not a stack frame) and never raises: the
scans run as C regular expressions over the raw bytes, whatever those bytes are (invalid
UTF-8, NULs, unbalanced brackets).
"""

from __future__ import annotations

import re
from typing import Final

# Strings (escapes included, any bytes inside; an unterminated one runs to the end, so a scan never
# restarts inside it) and runs of brackets (a million '[' are one token, not a million).
_TOKEN: Final = re.compile(rb'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)|[\[{]+|[\]}]+', re.DOTALL)
_AFTER_KEY: Final = re.compile(rb'[ \t\r\n]*:[ \t\r\n]*(-?[0-9]{1,20}(?![.eE0-9])|"[^"\\]{0,256}")')
_WS = rb"[ \t\r\n]*"
_JSONRPC_MEMBER = rb'"jsonrpc"' + _WS + rb":" + _WS + rb'"2\.0"' + _WS
# The layouts real servers write, read in O(1): the id first (after "jsonrpc", as the Python SDK
# writes), or last (as the TypeScript SDK writes `{result, jsonrpc, id}`).
_ID_FIRST: Final = re.compile(_WS + rb"\{" + _WS + rb"(?:" + _JSONRPC_MEMBER + rb"," + _WS + rb')?"id"')
_ID_LAST: Final = re.compile(rb'"id"' + _WS + rb":" + _WS + rb'(-?[0-9]{1,20})' + _WS
                             + rb"(?:," + _WS + _JSONRPC_MEMBER + rb")?\}" + _WS + rb"\Z")
_TAIL = 160  # bytes the id-last layout can take
MAX_TOKENS: Final = 100_000  # the general scan gives up beyond this (a line crafted to be slow to scan)
# A backslash pair (skipped, so the "u" after an escaped backslash is text), a valid
# surrogate pair (kept), or a lone surrogate escape (replaced).
_SURROGATES: Final = re.compile(
    rb"\\\\|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_REPLACEMENT: Final = rb"\ufffd"


def salvage_id(data: bytes | bytearray | memoryview) -> int | str | None:
    """The top-level ``id`` of a JSON object that may be invalid JSON; None if there is none.

    Only an integer or a string counts (the only ids JSON-RPC allows besides null); a
    string id is returned only when it is plain ASCII without escapes, since a malformed
    message's escapes cannot be trusted to decode. The usual layouts are read at once; any
    other costs one scan bounded by :data:`MAX_TOKENS` tokens (then None).
    """
    buf = bytes(data)
    first = _ID_FIRST.match(buf)
    if first is not None:
        value = _AFTER_KEY.match(buf, first.end())
        if value is not None:
            return _id_value(value.group(1))
    last = _ID_LAST.search(buf, max(0, len(buf) - _TAIL))
    if last is not None:
        return _id_value(last.group(1))
    depth = 0
    for count, match in enumerate(_TOKEN.finditer(buf)):
        if count >= MAX_TOKENS:
            return None
        token = match.group()
        first_byte = token[0]
        if first_byte == 0x22:  # a string
            if depth == 1 and token == b'"id"':
                value = _AFTER_KEY.match(buf, match.end())
                if value is not None:
                    return _id_value(value.group(1))
        elif first_byte in (0x7B, 0x5B):  # a run of { and [
            if depth == 0 and first_byte != 0x7B:
                return None  # a batch or another array, not one message
            depth += len(token)
        else:
            depth -= len(token)
            if depth <= 0:
                return None  # the top-level object ended without an id
    return None


def _id_value(raw: bytes) -> int | str | None:
    if raw[0] == 0x22:
        text = raw[1:-1]
        if b"\\" in text or not text.isascii():
            return None
        return text.decode("ascii")
    return int(raw)


def repair_surrogates(data: bytes | bytearray | memoryview) -> bytes | None:
    """``data`` with every lone UTF-16 surrogate escape (``"\\udcff"``) replaced by U+FFFD.

    Such escapes are valid JSON syntax, and Python's ``json.dumps`` writes them for bytes it
    could not decode, but they name no character and strict decoders (msgspec among them)
    refuse them. Valid surrogate pairs are kept. None when there was nothing to repair.
    """
    buf = bytes(data)
    if b"\\u" not in buf or buf.count(b"\\") > MAX_TOKENS:  # bounded work, like salvage_id
        return None
    changed = False

    def fix(match: re.Match[bytes]) -> bytes:
        nonlocal changed
        token = match.group()
        if len(token) == 6:  # a lone surrogate (pairs are 12 bytes, backslash pairs 2)
            changed = True
            return _REPLACEMENT
        return token

    out = _SURROGATES.sub(fix, buf)
    return out if changed else None
