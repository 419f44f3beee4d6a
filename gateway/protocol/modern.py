"""MCP 2026-07-28, the stateless era, for clients: the request ladder and the result rewrite.

A 2026-07-28 request carries everything in itself: ``params._meta`` holds the protocol version
and the client's capabilities (and optionally its info and a log level), and on HTTP the
``MCP-Protocol-Version``, ``Mcp-Method`` and (for ``tools/call``, ``prompts/get``,
``resources/read``) ``Mcp-Name`` headers mirror the body, so that an intermediary can route
without reading it. The gateway rewrites the body on its way upstream (names, ids, progress
tokens), so it must also check that the headers agree with it (``-32020`` otherwise). Only the
envelope, the name and ``_meta`` are decoded: ``arguments`` stay raw bytes.

Upstreams still speak the handshake era, so results are rewritten for the client: every result
says ``resultType: "complete"``, cacheable ones carry ``ttlMs``/``cacheScope`` (0 and private:
the gateway cannot promise more), each carries the gateway's ``serverInfo`` in ``_meta``, and
codes the 2026 spec retired are translated (-32002 resource not found becomes -32602).

Pure: no trio, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any, Final

import msgspec
from msgspec import UNSET, Raw, UnsetType

from . import jsonrpc
from .errors import HEADER_MISMATCH, INVALID_PARAMS, UNSUPPORTED_PROTOCOL_VERSION, ProtocolError
from .mcp import HANDSHAKE_VERSIONS, MODERN_VERSIONS

PROTOCOL_VERSION_KEY: Final = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_KEY: Final = "io.modelcontextprotocol/clientCapabilities"
CLIENT_INFO_KEY: Final = "io.modelcontextprotocol/clientInfo"
LOG_LEVEL_KEY: Final = "io.modelcontextprotocol/logLevel"
SERVER_INFO_KEY: Final = "io.modelcontextprotocol/serverInfo"
SUBSCRIPTION_ID_KEY: Final = "io.modelcontextprotocol/subscriptionId"

METHOD_HEADER: Final = b"mcp-method"
NAME_HEADER: Final = b"mcp-name"
PARAM_HEADER_PREFIX: Final = b"mcp-param-"
#: Which params member ``Mcp-Name`` mirrors, per method.
NAME_BEARING: Final = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
#: Results that must carry caching hints (``ttlMs``, ``cacheScope``).
CACHEABLE: Final = frozenset({"server/discover", "tools/list", "prompts/list", "resources/list",
                              "resources/templates/list", "resources/read"})
#: Methods of the 2026-07-28 era (anything else is -32601, as the spec and the SDK answer).
METHODS: Final = frozenset({"server/discover", "subscriptions/listen", "tools/list", "tools/call", "prompts/list",
                            "prompts/get", "resources/list", "resources/templates/list", "resources/read",
                            "completion/complete"})
LOG_LEVELS: Final = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
RESOURCE_NOT_FOUND_2025: Final = -32002  # retired in 2026-07-28: said as -32602 instead


class _Meta(msgspec.Struct):
    protocol_version: Any = msgspec.field(default=UNSET, name=PROTOCOL_VERSION_KEY)
    client_capabilities: Any = msgspec.field(default=UNSET, name=CLIENT_CAPABILITIES_KEY)
    client_info: Any = msgspec.field(default=UNSET, name=CLIENT_INFO_KEY)
    log_level: Any = msgspec.field(default=UNSET, name=LOG_LEVEL_KEY)


class _Envelope(msgspec.Struct):
    """The parts of ``params`` the ladder reads; every other member (``arguments``) is skipped."""

    meta: _Meta | None | UnsetType = msgspec.field(default=UNSET, name="_meta")
    name: Any = UNSET
    uri: Any = UNSET


_envelope_decoder: Final = msgspec.json.Decoder(_Envelope)


class ModernRequest(msgspec.Struct, frozen=True):
    """A 2026-07-28 request that passed the ladder (a Struct: built per request, a frozen
    dataclass's field-by-field set costs several times more)."""

    version: str
    client_capabilities: Any  # decoded; {} when the client offers nothing optional
    client_info: Any
    log_level: str | None


_PROTOCOL_VERSION_KEY_BYTES: Final = PROTOCOL_VERSION_KEY.encode()


def is_modern_version(version: str) -> bool:
    return version in MODERN_VERSIONS


def has_envelope(msg: jsonrpc.Message) -> bool:
    """Whether a request carries the 2026-07-28 per-request ``_meta`` (a cheap substring test first)."""
    params = msg.params
    if isinstance(params, UnsetType):
        return False
    if _PROTOCOL_VERSION_KEY_BYTES not in bytes(memoryview(params)):
        return False
    envelope = _decode_envelope(params)
    return envelope is not None and isinstance(envelope.meta, _Meta) and not isinstance(
        envelope.meta.protocol_version, UnsetType)


def _decode_envelope(params: Raw) -> _Envelope | None:
    try:
        return _envelope_decoder.decode(params)
    except jsonrpc.DECODE_FAILURES:
        return None


def decode_header_value(value: bytes | None) -> str | None:
    """A header value as the client meant it: ``=?base64?...?=`` carries UTF-8 that is not header-safe.

    None for an absent, malformed or non-canonical value (so it never matches a body value by accident).
    """
    if value is None:
        return None
    text = value.decode("latin-1")
    if not (text.startswith("=?base64?") and text.endswith("?=")):
        return text
    payload = text[9:-2]
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None
    if base64.b64encode(raw).decode("ascii") != payload:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


_HEADER_SAFE: Final = re.compile(r"[\x20-\x7e]*")


def encode_header_value(value: str) -> str:
    """The inverse of :func:`decode_header_value` (for the gateway's own requests upstream)."""
    if _HEADER_SAFE.fullmatch(value) and value == value.strip() and not (
            value.startswith("=?base64?") and value.endswith("?=")):
        return value
    return f"=?base64?{base64.b64encode(value.encode('utf-8')).decode('ascii')}?="


def supported_versions() -> list[str]:
    """What the gateway speaks, newest first: both eras."""
    return [*reversed(MODERN_VERSIONS), *reversed(HANDSHAKE_VERSIONS)]


def unsupported_version(msg_id: jsonrpc.RequestId | None, requested: object) -> ProtocolError:
    return ProtocolError(UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version", msg_id,
                         data={"supported": supported_versions(), "requested": requested})


def classify(msg: jsonrpc.Message, headers: Mapping[bytes, bytes] | None) -> ModernRequest:
    """Run the 2026-07-28 ladder over a request (``headers`` None: a wire without headers).

    Rungs, first failure wins (as ``mcp.shared.inbound.classify_inbound_request``):
    1. ``params._meta`` carries the protocol version and the client capabilities (-32602);
    2. on HTTP, ``MCP-Protocol-Version``, ``Mcp-Method`` and ``Mcp-Name`` equal the body (-32020);
       this rung comes before the version's, so a client that disagrees with itself is told so;
    3. the version is one we speak (-32022, naming what we speak); a log level is a known one (-32602).
    """
    # (The request id is looked up only for an error: this runs for every 2026-07-28 request.)
    envelope = _decode_envelope(msg.params) if not isinstance(msg.params, UnsetType) else None
    meta = envelope.meta if envelope is not None else UNSET
    if not isinstance(meta, _Meta):
        raise ProtocolError(INVALID_PARAMS, f"params._meta must be an object carrying the required "
                                            f"{PROTOCOL_VERSION_KEY!r} and {CLIENT_CAPABILITIES_KEY!r} keys",
                            jsonrpc.request_id(msg))
    version = meta.protocol_version
    if isinstance(version, UnsetType) or isinstance(meta.client_capabilities, UnsetType):
        missing = [key for key, value in ((PROTOCOL_VERSION_KEY, version),
                                          (CLIENT_CAPABILITIES_KEY, meta.client_capabilities))
                   if isinstance(value, UnsetType)]
        raise ProtocolError(INVALID_PARAMS, f"params._meta is missing the required key(s): {', '.join(missing)}",
                            jsonrpc.request_id(msg))
    if headers is not None:
        header = headers.get(b"mcp-protocol-version")
        if header is None or header.decode("latin-1") != version:
            raise ProtocolError(HEADER_MISMATCH, "MCP-Protocol-Version header does not match the request's "
                                                 "protocol version", jsonrpc.request_id(msg))
        method = msg.method
        method_header = headers.get(METHOD_HEADER)
        if method_header is None or method_header.decode("latin-1") != method:
            raise ProtocolError(HEADER_MISMATCH, "Mcp-Method header does not match the request's method",
                                jsonrpc.request_id(msg))
        key = NAME_BEARING.get(method) if isinstance(method, str) else None
        if key is not None and envelope is not None:
            body_value = envelope.name if key == "name" else getattr(envelope, key)
            if not isinstance(body_value, UnsetType) and body_value is not None and \
                    decode_header_value(headers.get(NAME_HEADER)) != body_value:
                raise ProtocolError(HEADER_MISMATCH, f"Mcp-Name header does not match the request's {key!r}",
                                    jsonrpc.request_id(msg))
    if not isinstance(version, str):
        raise ProtocolError(INVALID_PARAMS, f"{PROTOCOL_VERSION_KEY} must be a string", jsonrpc.request_id(msg))
    if version not in MODERN_VERSIONS:
        raise unsupported_version(jsonrpc.request_id(msg), version)
    level = meta.log_level
    if level is not UNSET and level not in LOG_LEVELS:
        raise ProtocolError(INVALID_PARAMS, f"Invalid params: unknown {LOG_LEVEL_KEY} {str(level)[:40]!r}",
                            jsonrpc.request_id(msg))
    caps = meta.client_capabilities
    return ModernRequest(version=version, client_capabilities=caps if isinstance(caps, dict) else {},
                         client_info=None if isinstance(meta.client_info, UnsetType) else meta.client_info,
                         log_level=level if isinstance(level, str) else None)


# -- results ----------------------------------------------------------------------------------------

_meta_decoder: Final = msgspec.json.Decoder(dict[str, Raw])


def server_info_meta(server_info: Mapping[str, Any]) -> bytes:
    return jsonrpc.encoder.encode({SERVER_INFO_KEY: server_info})


def complete_result(method: str, result: Raw, server_meta: bytes) -> Raw:
    """A handshake-era result as a 2026-07-28 one: ``resultType``, caching hints, ``_meta.serverInfo``.

    The common case (an object without ``_meta``, as upstream results are) is a splice of
    bytes at the front, without decoding the result; otherwise its top level is merged.
    """
    data = bytes(memoryview(result))
    hints = b'"ttlMs":0,"cacheScope":"private",' if method in CACHEABLE else b""
    head = b'{"resultType":"complete",' + hints + b'"_meta":' + server_meta
    if data.startswith(b"{") and b'"_meta"' not in data and b'"resultType"' not in data:
        rest = data[1:].lstrip()
        return Raw(head + (b"}" if rest.startswith(b"}") else b"," + rest))
    try:
        members = jsonrpc.raw_members(data)
    except jsonrpc.DECODE_FAILURES:
        return result  # not an object: nothing to add to (the client will say so)
    meta: dict[str, Raw] = {}
    if "_meta" in members:
        try:
            meta = _meta_decoder.decode(members["_meta"])
        except jsonrpc.DECODE_FAILURES:
            meta = {}
    meta.update(_meta_decoder.decode(server_meta))
    members["_meta"] = Raw(jsonrpc.encoder.encode(meta))
    members.setdefault("resultType", Raw(b'"complete"'))
    if method in CACHEABLE:
        members.setdefault("ttlMs", Raw(b"0"))
        members.setdefault("cacheScope", Raw(b'"private"'))
    return Raw(jsonrpc.encoder.encode(members))


def modern_error_code(code: int) -> int:
    """An upstream's error code as a 2026-07-28 client may see it."""
    return INVALID_PARAMS if code == RESOURCE_NOT_FOUND_2025 else code


def discover_result(capabilities: Mapping[str, Any], server_info: Mapping[str, Any],
                    instructions: str | None) -> dict[str, Any]:
    """The answer to ``server/discover`` (it is cacheable: hints included)."""
    caps = {k: v for k, v in capabilities.items() if k != "tasks"}
    out: dict[str, Any] = {
        "resultType": "complete", "supportedVersions": supported_versions(), "capabilities": caps,
        "ttlMs": 0, "cacheScope": "private", "_meta": {SERVER_INFO_KEY: dict(server_info)},
    }
    if instructions:
        out["instructions"] = instructions
    return out


# -- Mcp-Param-* headers ----------------------------------------------------------------------------

ParamHeaders = dict[tuple[str, ...], tuple[bytes, Any]]  # argument path -> (lowercase header name, schema type)
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_TYPES: Final = frozenset({"string", "integer", "boolean"})


def param_header_map(input_schema: Any) -> ParamHeaders:
    """The ``x-mcp-header`` annotations of a tool's input schema, by argument path.

    Only properties reached through a chain of ``properties`` count, each on a string, integer or
    boolean property with a header-token name unique in the schema; a schema with any invalid
    annotation maps nothing (conforming clients drop such a tool and send no headers for it).
    """
    out: ParamHeaders = {}
    seen: set[str] = set()
    stack: list[tuple[tuple[str, ...], Any]] = [((), input_schema)]
    while stack:
        path, node = stack.pop()
        if not isinstance(node, dict):
            continue
        token = node.get("x-mcp-header")
        if token is not None:
            if (not path or not isinstance(token, str) or not _TOKEN.fullmatch(token)
                    or node.get("type") not in _HEADER_TYPES or token.lower() in seen):
                return {}
            seen.add(token.lower())
            out[path] = (b"mcp-param-" + token.lower().encode(), node.get("type"))
        props = node.get("properties")
        if isinstance(props, dict):
            stack.extend(((*path, str(name)), sub) for name, sub in props.items())
    return out


def _render(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return None


def param_headers(annotations: ParamHeaders, arguments: Raw) -> dict[str, str]:
    """The ``Mcp-Param-*`` headers of a call to a tool whose schema annotates some arguments (the
    gateway as a client of a 2026-07-28 server)."""
    values = jsonrpc.decode_any(arguments)
    out: dict[str, str] = {}
    for path, (header, _) in annotations.items():
        value: Any = values
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        rendered = _render(value) if value is not None else None
        if rendered is not None:
            out[header.decode("latin-1")] = encode_header_value(rendered)
    return out


def check_param_headers(annotations: ParamHeaders, arguments: Any,
                        headers: Mapping[bytes, bytes]) -> str | None:
    """Why the ``Mcp-Param-*`` headers of a ``tools/call`` disagree with its arguments (None: they agree).

    Each annotated argument and its header are present together and equal after decoding, or
    absent together (null counts as absent); an integer compares by value (``42`` and ``42.0``).
    """
    for path, (header, kind) in annotations.items():
        value: Any = arguments
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        raw = headers.get(header)
        name = "Mcp-Param-" + header[10:].decode("latin-1")
        where = ".".join(path)
        if value is None:
            if raw is not None:
                return f"{name} header is present but the {where!r} argument is absent"
            continue
        rendered = _render(value)
        if raw is None:
            return None if rendered is None else f"{name} header is missing but the {where!r} argument is present"
        text = decode_header_value(raw)
        if text is None:
            return f"{name} header carries a malformed base64 value"
        if text == rendered:
            continue
        if kind == "integer" and not isinstance(value, bool) and isinstance(value, int | float):
            try:
                if int(text) == value:
                    continue
            except ValueError:
                pass
        return f"{name} header does not match the {where!r} argument"
    return None
