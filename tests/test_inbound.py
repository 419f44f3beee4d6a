"""The pure parts of the request pipeline, without sockets: the inbound ladder, the 2026-07-28
ladder and result rewrite, Mcp-Param-* headers, and the one error-to-status table."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from gateway.protocol import errors, inbound, jsonrpc, modern
from gateway.protocol.errors import ProtocolError
from gateway.protocol.inbound import Rejection

JSON = b"application/json"


@pytest.mark.parametrize(("accept", "content_type", "expect"), [
    (None, JSON, "handshake"),
    (b"application/json, text/event-stream", b"application/json; charset=utf-8", "handshake"),
    (b"text/event-stream", b"Application/JSON", "handshake"),
    (b"*/*", JSON, "handshake"),
    (b"text/html", JSON, 406),
    (b"application/json", None, 415),
    (b"application/json", b"application/jsonx", 415),
    (b"application/json", b"text/plain", 415),
])
def test_post_ladder_accept_then_content_type(accept: bytes | None, content_type: bytes | None,
                                              expect: object) -> None:
    got = inbound.check_post(accept, content_type, None, b"{}")
    if isinstance(expect, int):
        assert isinstance(got, Rejection) and got.status == expect
    else:
        assert isinstance(got, inbound.Post) and got.era == expect


def test_post_ladder_utf8_then_era_and_batch() -> None:
    bad = inbound.check_post(None, JSON, None, b'{"a":"\xff"}')
    assert isinstance(bad, Rejection) and (bad.status, bad.code) == (400, errors.PARSE_ERROR)
    for header, era in ((None, "handshake"), (b"2025-03-26", "handshake"), (b"2026-07-28", "modern"),
                        (b"1999-01-01", "modern")):  # unknown versions go to the ladder that names what we speak
        post = inbound.check_post(None, JSON, header, b" [{}]")
        assert isinstance(post, inbound.Post) and post.era == era and post.batch
    assert inbound.batch_allowed("2025-03-26") is None
    refused = inbound.batch_allowed("2025-11-25")
    assert refused is not None and refused.code == errors.INVALID_REQUEST and "2025-11-25" in refused.message


def test_get_needs_an_explicit_sse_accept() -> None:
    assert inbound.check_get(b"text/event-stream") is None
    assert inbound.check_get(None) == inbound.GET_NOT_ACCEPTABLE
    assert inbound.check_get(b"application/json") == inbound.GET_NOT_ACCEPTABLE


@pytest.mark.parametrize(("code", "status"), [
    (errors.PARSE_ERROR, 400), (errors.INVALID_REQUEST, 400), (errors.INVALID_PARAMS, 400),
    (errors.HEADER_MISMATCH, 400), (errors.MISSING_REQUIRED_CLIENT_CAPABILITY, 400),
    (errors.UNSUPPORTED_PROTOCOL_VERSION, 400), (errors.METHOD_NOT_FOUND, 404), (errors.INTERNAL_ERROR, 200),
    (errors.UPSTREAM_UNAVAILABLE, 200), (errors.REQUEST_TIMEOUT, 200), (-1, 200),
])
def test_one_table_from_code_to_status(code: int, status: int) -> None:
    assert errors.http_status(code) == status


def test_the_error_tree_tells_closed_from_broken() -> None:
    assert issubclass(errors.UpstreamGone, errors.CallError) and not issubclass(errors.UpstreamGone, errors.Stopped)
    for stopped, code in ((errors.Cancelled, errors.REQUEST_CANCELLED), (errors.ShuttingDown,
                                                                        errors.GATEWAY_SHUTTING_DOWN)):
        assert issubclass(stopped, errors.Stopped) and stopped().code == code
    assert errors.UpstreamTimeout("x").code == errors.REQUEST_TIMEOUT
    assert errors.UpstreamInvalid("x").code == errors.UPSTREAM_INVALID
    assert isinstance(ProtocolError(errors.PARSE_ERROR, "x"), errors.GatewayError)


def _msg(method: str = "tools/call", meta: dict[str, Any] | None = None, **params: Any) -> jsonrpc.Message:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 9, "method": method, "params": dict(params)}
    if meta is not None:
        body["params"]["_meta"] = meta
    return jsonrpc.decode_message(json.dumps(body).encode())


META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
HEADERS = {b"mcp-protocol-version": b"2026-07-28", b"mcp-method": b"tools/call", b"mcp-name": b"a__b"}


def test_modern_ladder_rungs_in_order() -> None:
    ok = modern.classify(_msg(meta=META, name="a__b", arguments={"x": [1]}), HEADERS)
    assert ok.version == "2026-07-28" and ok.client_capabilities == {} and ok.log_level is None
    cases: list[tuple[jsonrpc.Message, dict[bytes, bytes] | None, int]] = [
        (_msg(name="a__b"), HEADERS, errors.INVALID_PARAMS),  # rung 1: no envelope
        (_msg(meta={"io.modelcontextprotocol/protocolVersion": "2026-07-28"}, name="a__b"), HEADERS,
         errors.INVALID_PARAMS),  # rung 1: capabilities missing
        (_msg(meta=META, name="a__b"), {**HEADERS, b"mcp-name": b"a__c"}, errors.HEADER_MISMATCH),
        (_msg(meta=META, name="a__b"), {**HEADERS, b"mcp-method": b"tools/list"}, errors.HEADER_MISMATCH),
        (_msg(meta=META, name="a__b"), {k: v for k, v in HEADERS.items() if k != b"mcp-protocol-version"},
         errors.HEADER_MISMATCH),
        # rung 2 before rung 3: a client that disagrees with itself is told so
        (_msg(meta={**META, "io.modelcontextprotocol/protocolVersion": "2099-01-01"}, name="a__b"), HEADERS,
         errors.HEADER_MISMATCH),
        (_msg(meta={**META, "io.modelcontextprotocol/protocolVersion": "2099-01-01"}, name="a__b"), None,
         errors.UNSUPPORTED_PROTOCOL_VERSION),
        (_msg(meta={**META, "io.modelcontextprotocol/logLevel": "loud"}, name="a__b"), HEADERS,
         errors.INVALID_PARAMS),
    ]
    for msg, headers, code in cases:
        with pytest.raises(ProtocolError) as info:
            modern.classify(msg, headers)
        assert info.value.code == code and info.value.id == 9, (headers, info.value.message)
    with pytest.raises(ProtocolError) as info:
        modern.classify(_msg(meta={**META, "io.modelcontextprotocol/protocolVersion": "2099-01-01"}), None)
    assert info.value.data == {"supported": modern.supported_versions(), "requested": "2099-01-01"}


def test_header_values_may_be_base64_sentinels() -> None:
    for text in ("Hello, 世界", " padded ", "=?base64?literal?=", "plain"):
        assert modern.decode_header_value(modern.encode_header_value(text).encode()) == text
    assert modern.encode_header_value("plain") == "plain"
    assert modern.decode_header_value(b"=?base64?not base64?=") is None
    assert modern.decode_header_value(b"=?base64?SGk=?=") == "Hi"
    assert modern.decode_header_value(b"=?base64?SGl=?=") is None  # not canonical


def test_results_become_2026_results_by_splicing_bytes() -> None:
    meta = modern.server_info_meta({"name": "gw", "version": "1"})
    out = json.loads(bytes(modern.complete_result("tools/call", msgspec.Raw(b'{"content":[]}'), meta)))
    assert out == {"resultType": "complete", "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "gw",
                                                                                              "version": "1"}},
                   "content": []}
    listed = json.loads(bytes(modern.complete_result("tools/list", msgspec.Raw(b"{ }"), meta)))
    assert listed["ttlMs"] == 0 and listed["cacheScope"] == "private" and listed["resultType"] == "complete"
    merged = json.loads(bytes(modern.complete_result("tools/call", msgspec.Raw(b'{"_meta":{"k":1},"x":2}'), meta)))
    assert merged["_meta"]["k"] == 1 and "io.modelcontextprotocol/serverInfo" in merged["_meta"] and merged["x"] == 2
    assert modern.modern_error_code(-32002) == errors.INVALID_PARAMS and modern.modern_error_code(-1) == -1


def test_mcp_param_annotations_and_their_check() -> None:
    schema = {"type": "object", "properties": {
        "region": {"type": "string", "x-mcp-header": "Region"},
        "opts": {"type": "object", "properties": {"n": {"type": "integer", "x-mcp-header": "N"},
                                                  "fast": {"type": "boolean", "x-mcp-header": "Fast"}}},
        "free": {"type": "string"}}}
    annotations = modern.param_header_map(schema)
    assert annotations == {("region",): (b"mcp-param-region", "string"), ("opts", "n"): (b"mcp-param-n", "integer"),
                           ("opts", "fast"): (b"mcp-param-fast", "boolean")}
    args = {"region": "us-west1", "opts": {"n": 42, "fast": True}, "free": "x"}
    good = {b"mcp-param-region": b"us-west1", b"mcp-param-n": b"42", b"mcp-param-fast": b"true"}
    assert modern.check_param_headers(annotations, args, good) is None
    assert modern.check_param_headers(annotations, {**args, "opts": {"n": 42.0, "fast": True}}, good) is None
    problems = [
        modern.check_param_headers(annotations, args, {**good, b"mcp-param-region": b"eu"}),
        modern.check_param_headers(annotations, args, {k: v for k, v in good.items() if k != b"mcp-param-n"}),
        modern.check_param_headers(annotations, {"opts": {"n": 42, "fast": True}}, good),  # header, no argument
        modern.check_param_headers(annotations, args, {**good, b"mcp-param-region": b"=?base64?%%?="}),
    ]
    assert all(p is not None and "Mcp-Param-" in p for p in problems), problems
    for invalid in ({"type": "object", "x-mcp-header": "Root"},  # the root itself
                    {"properties": {"a": {"type": "number", "x-mcp-header": "A"}}},  # numbers are not allowed
                    {"properties": {"a": {"type": "string", "x-mcp-header": "A"},
                                    "b": {"type": "string", "x-mcp-header": "a"}}},  # not unique
                    {"properties": {"a": {"type": "string", "x-mcp-header": "bad name"}}}):
        assert modern.param_header_map(invalid) == {}
