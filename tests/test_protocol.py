"""Sans-IO protocol core: envelope, errors, paging, naming, aggregation, id/progress mapping."""

from __future__ import annotations

import msgspec
import pytest
from msgspec import UNSET, Raw

from gateway.protocol import jsonrpc, mcp, paging
from gateway.protocol.catalog import ServerCatalog, aggregate, template_regex
from gateway.protocol.jsonrpc import ProtocolError
from gateway.protocol.naming import fits, public_name
from gateway.router import ProgressTable


def test_payload_stays_raw_and_is_forwarded_byte_for_byte() -> None:
    body = b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","arguments":{"b":[1, 2.50]}}}'
    msg = jsonrpc.decode_message(body)
    assert isinstance(msg.params, Raw)
    assert bytes(msg.params) == b'{"name":"x","arguments":{"b":[1, 2.50]}}'  # not normalized
    assert jsonrpc.encode(msg) == body


def test_raw_or_none_loses_the_raw_value_so_the_envelope_uses_unset() -> None:
    # Pinned msgspec behaviour: `Raw | None` decodes JSON null as None, and the
    # envelope relies on `Raw | UnsetType` instead to keep `"result": null` raw.
    class Bad(msgspec.Struct):
        result: Raw | None = None

    assert msgspec.json.decode(b'{"result":null}', type=Bad).result is None
    msg = jsonrpc.decode_message(b'{"jsonrpc":"2.0","id":1,"result":null}')
    assert isinstance(msg.result, Raw) and bytes(msg.result) == b"null"
    assert msg.is_response


@pytest.mark.parametrize(("body", "code"), [
    (b"{not json", jsonrpc.PARSE_ERROR),
    (b"", jsonrpc.PARSE_ERROR),
    (b'"a string"', jsonrpc.INVALID_REQUEST),
    (b'{"id":1,"method":"ping"}', jsonrpc.INVALID_REQUEST),  # no jsonrpc member
    (b'{"jsonrpc":"1.0","id":1,"method":"ping"}', jsonrpc.INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":1,"method":3}', jsonrpc.INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}', jsonrpc.INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":null,"method":"ping"}', jsonrpc.INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}', jsonrpc.INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}', jsonrpc.INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","id":1}', jsonrpc.INVALID_REQUEST),
    (b'{"jsonrpc":"2.0","result":{}}', jsonrpc.INVALID_REQUEST),
])
def test_bad_messages_get_the_right_code(body: bytes, code: int) -> None:
    with pytest.raises(ProtocolError) as info:
        jsonrpc.decode_message(body)
    assert info.value.code == code


def test_invalid_request_keeps_the_id_when_it_can() -> None:
    with pytest.raises(ProtocolError) as info:
        jsonrpc.decode_message(b'{"jsonrpc":"2.0","id":"abc","method":42}')
    assert info.value.id == "abc"


def test_message_kinds() -> None:
    assert jsonrpc.decode_message(b'{"jsonrpc":"2.0","id":"x","method":"ping"}').is_request
    assert jsonrpc.decode_message(b'{"jsonrpc":"2.0","method":"notifications/initialized"}').is_notification
    err = jsonrpc.decode_message(b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"bad"}}')
    assert err.is_response and err.error is not UNSET and err.error.code == -32700


def test_batch_detection() -> None:
    assert jsonrpc.is_batch(b'  \n[{"jsonrpc":"2.0"}]')
    assert not jsonrpc.is_batch(b'{"jsonrpc":"2.0"}')


def test_error_encoding_has_null_id_when_unknown() -> None:
    assert msgspec.json.decode(jsonrpc.encode_error(None, -32700, "x")) == {
        "jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "x"}}
    out = msgspec.json.decode(jsonrpc.encode_error(3, -32022, "v", {"supported": ["a"]}))
    assert out["error"]["data"] == {"supported": ["a"]}


def test_version_negotiation() -> None:
    assert mcp.negotiate_version("2025-03-26") == "2025-03-26"
    assert mcp.negotiate_version("2024-11-05") == "2024-11-05"
    assert mcp.negotiate_version("2099-01-01") == mcp.LATEST_HANDSHAKE
    assert mcp.negotiate_version(None) == mcp.LATEST_HANDSHAKE
    assert mcp.supports_batches("2025-03-26") and not mcp.supports_batches("2025-06-18")


def test_paging_walks_every_item_once() -> None:
    items = list(range(25))
    seen, cursor = [], None
    while True:
        chunk, cursor = paging.page(items, cursor, version=3, size=10)
        seen += chunk
        if cursor is None:
            break
    assert seen == items


@pytest.mark.parametrize("cursor", ["garbage!", paging.make_cursor(2, 0), paging.make_cursor(3, 99), "", "Zm9v"])
def test_stale_or_foreign_cursors_are_invalid_params(cursor: str) -> None:
    with pytest.raises(ProtocolError) as info:
        paging.page(list(range(5)), cursor, version=3, size=2)
    assert info.value.code == jsonrpc.INVALID_PARAMS


def test_public_names() -> None:
    assert public_name("time", "__", "get_current_time") == "time__get_current_time"
    long = public_name("server", "__", "x" * 80)
    assert len(long) == 64 and fits(long)
    assert long != public_name("server", "__", "x" * 81)  # hash keeps them apart
    dotted = public_name("fs", "__", "read.file")
    assert fits(dotted) and dotted.startswith("fs__read_file_")
    assert public_name("fs", "__", "read.file") == dotted  # deterministic


def _tools(*names: str) -> list[dict[str, Raw]]:
    return [{"name": Raw(msgspec.json.encode(n)), "inputSchema": Raw(b'{"type":"object"}')} for n in names]


def test_aggregate_namespaces_tools_and_keeps_other_fields_raw() -> None:
    a = ServerCatalog(capabilities={"tools": {}}, tools=_tools("x", "y"))
    b = ServerCatalog(capabilities={"tools": {}, "resources": {"subscribe": True}}, tools=_tools("x"),
                      resources=[{"uri": Raw(b'"file:///a"'), "name": Raw(b'"a"')}],
                      resource_templates=[{"uriTemplate": Raw(b'"notes://{id}"'), "name": Raw(b'"n"')}])
    cat = aggregate([("a", a), ("b", b)], "__", version=1)
    names = [msgspec.json.decode(t["name"]) for t in cat.tools]
    assert names == ["a__x", "a__y", "b__x"]
    assert cat.tool_index["b__x"] == ("b", "x")
    assert bytes(cat.tools[0]["inputSchema"]) == b'{"type":"object"}'
    assert cat.server_for_uri("file:///a") == "b"
    assert cat.server_for_uri("notes://42") == "b"
    assert cat.server_for_uri("notes://42/x") is None
    assert cat.capabilities["tools"] == {"listChanged": True}
    assert cat.capabilities["resources"]["subscribe"] is True
    assert "prompts" not in cat.capabilities


def test_aggregate_reports_renamed_tools() -> None:
    cat = aggregate([("s", ServerCatalog(capabilities={"tools": {}}, tools=_tools("has space")))], "__", 1)
    (public,) = cat.tool_index
    assert fits(public) and cat.renamed[public] == "s__has space"


def test_template_regex() -> None:
    assert template_regex("file:///{path}").fullmatch("file:///a")
    assert not template_regex("file:///{path}").fullmatch("file:///a/b")
    assert template_regex("file:///{+path}").fullmatch("file:///a/b")


def test_progress_tokens_are_translated_both_ways() -> None:
    table = ProgressTable()
    got: list[bytes] = []
    t1 = table.register("a", Raw(b'"client-token"'), got.append)
    t2 = table.register("a", Raw(b"7"), got.append)
    assert t1 != t2
    assert table.deliver("a", {"progressToken": Raw(msgspec.json.encode(t2)), "progress": Raw(b"1")})
    assert msgspec.json.decode(got[-1])["params"] == {"progressToken": 7, "progress": 1}
    # another server cannot report progress on a's calls
    assert not table.deliver("b", {"progressToken": Raw(msgspec.json.encode(t1)), "progress": Raw(b"1")})
    table.release(t2)
    assert not table.deliver("a", {"progressToken": Raw(msgspec.json.encode(t2)), "progress": Raw(b"2")})
    assert not table.deliver("a", {"progress": Raw(b"2")})
    assert len(got) == 1
