"""Property tests: no bytes from a peer make the JSON-RPC decoding raise anything but ProtocolError.

Hypothesis draws arbitrary bytes and arbitrary JSON (deep, wide, huge numbers, invalid UTF-8, lone
surrogate escapes, NULs); every run is bounded (max_examples, deadline), so it fits the test command.
"""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from gateway.protocol import jsonrpc
from gateway.protocol.jsonrpc import ProtocolError
from gateway.protocol.salvage import repair_surrogates, salvage_id

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)),
    max_leaves=30)


@st.composite
def hostile_lines(draw: st.DrawFn) -> bytes:
    """A line a hostile peer might send: built from JSON-RPC-ish parts and poison."""
    request_id = draw(st.one_of(st.integers(-5, 2**64), st.text(max_size=5), st.none()))
    depth = draw(st.sampled_from([1, 10, 900, 5_000, 100_000]))
    poison = draw(st.sampled_from([
        b'"\\udcff"', b'"\\ud800\\u0041"', b'"\xff\xfe"', b'"a\x00b"', b"1" * 5000, b"-" + b"9" * 400,
        b"1e999999", b"[" * depth + b"]" * depth, b"[" * depth, b'{"a":' * depth, b"\x00" * 10, b"",
        b'"\\u12"', b"nul", b"tru", b"{}", b"[]",
    ]))
    shape = draw(st.sampled_from(["result", "params", "error", "toplevel", "id_last"]))
    rid = json.dumps(request_id).encode()
    if shape == "result":
        return b'{"jsonrpc":"2.0","id":' + rid + b',"result":' + poison + b"}"
    if shape == "params":
        return b'{"jsonrpc":"2.0","id":' + rid + b',"method":"tools/call","params":{"x":' + poison + b"}}"
    if shape == "error":
        return b'{"jsonrpc":"2.0","id":' + rid + b',"error":{"code":' + poison + b',"message":"m"}}'
    if shape == "id_last":
        return b'{"result":' + poison + b',"jsonrpc":"2.0","id":' + rid + b"}"
    return poison


def _decode_all_ways(data: bytes) -> None:
    for decode in (jsonrpc.decode_message, lambda d: jsonrpc.decode_untrusted(d)[0]):
        try:
            msg = decode(data)
        except ProtocolError as exc:
            assert exc.code in (jsonrpc.PARSE_ERROR, jsonrpc.INVALID_REQUEST)
            assert exc.salvaged_id is None or isinstance(exc.salvaged_id, int | str)
        else:
            assert isinstance(msg, jsonrpc.Message)
    salvage_id(data)
    repair_surrogates(data)
    jsonrpc.is_batch(data)
    jsonrpc.decode_any(msgspec.Raw(data))


@FUZZ
@given(st.binary(max_size=2000))
@example(b"[" * 300_000)
@example(b'{"jsonrpc":"2.0","id":1,"result":' + b"[" * 300_000)
@example(b'{"jsonrpc":"2.0","id":1,"result":{"t":"\\udcff"}}')
def test_arbitrary_bytes_never_raise_anything_but_protocol_errors(data: bytes) -> None:
    _decode_all_ways(data)


@FUZZ
@given(hostile_lines())
def test_hostile_messages_never_raise_anything_but_protocol_errors(data: bytes) -> None:
    _decode_all_ways(data)


@FUZZ
@given(json_values)
def test_arbitrary_json_values_decode_or_fail_cleanly(value: object) -> None:
    data = json.dumps(value).encode()
    _decode_all_ways(data)
    # And as a result of a response: a well-formed envelope decodes, the payload stays raw.
    msg = jsonrpc.decode_message(b'{"jsonrpc":"2.0","id":7,"result":' + data + b"}")
    assert bytes(msg.result) == data  # type: ignore[arg-type]


@FUZZ
@given(st.integers(min_value=0, max_value=2**63), json_values, st.sampled_from([1, 50, 2_000, 200_000]))
def test_salvage_finds_the_id_of_any_answer_whatever_follows(request_id: int, value: object, depth: int) -> None:
    payload = json.dumps(value).encode()
    first = b'{"jsonrpc":"2.0","id":%d,"result":' % request_id + b"[" * depth + payload + b"]" * depth + b"}"
    last = (b'{"result":' + b"[" * depth + payload + b"]" * depth
            + b',"x":"\\udcff","jsonrpc":"2.0","id":%d}' % request_id)
    assert salvage_id(first) == request_id
    assert salvage_id(last) == request_id


def test_deeply_nested_message_is_a_parse_error_that_keeps_its_id() -> None:
    deep = b'{"jsonrpc":"2.0","id":41,"result":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    with pytest.raises(ProtocolError) as info:
        jsonrpc.decode_message(deep)
    assert info.value.code == jsonrpc.PARSE_ERROR and "nested too deeply" in info.value.message
    assert info.value.id is None and info.value.salvaged_id == 41


@pytest.mark.parametrize(("data", "expected"), [
    (b'{"jsonrpc":"2.0","id":"abc","x":[{"id":5}]}', "abc"),
    (b'{"x":{"id":5},"id":6}', 6),
    (b'{"x":"{\\"id\\":5}","id":7}', 7),  # an id inside a string is not the id
    (b'{"jsonrpc":"2.0","result":{"id":5}}', None),  # only the top level counts
    (b'[{"id":5}]', None),  # a batch is not one message
    (b'{"id":1.5}', None),
    (b'{"id":"a\\"b"}', None),  # escaped string ids are not trusted
    (b'{"id":' + b"9" * 30 + b"}", None),
    (b'{"id" : -3 }', -3),
])
def test_salvage_id_cases(data: bytes, expected: object) -> None:
    assert salvage_id(data) == expected


def test_repair_surrogates_keeps_pairs_and_escaped_backslashes() -> None:
    assert repair_surrogates(b'"\\ud83d\\ude00"') is None  # a valid pair (an emoji)
    assert repair_surrogates(b'"\\\\udcff"') is None  # an escaped backslash, then text
    assert repair_surrogates(b'"a\\udcffb"') == b'"a\\ufffdb"'
    assert repair_surrogates(b'"\\ud800\\ud800\\udc00"') == b'"\\ufffd\\ud800\\udc00"'
    fixed = repair_surrogates(b'{"jsonrpc":"2.0","id":1,"result":{"t":"\\udcff"}}')
    assert fixed is not None
    assert jsonrpc.decode_message(fixed).result == msgspec.Raw(b'{"t":"\\ufffd"}')


def test_untrusted_decoding_repairs_text_and_says_so() -> None:
    msg, why = jsonrpc.decode_untrusted(b'{"jsonrpc":"2.0","id":1,"result":{"t":"bad \xff byte"}}')
    assert why is not None and "UTF-8" in why
    assert json.loads(bytes(msg.result))["t"] == "bad \ufffd byte"  # type: ignore[arg-type]
    msg, why = jsonrpc.decode_untrusted(b'{"jsonrpc":"2.0","id":1,"result":{"t":"\\udcff"}}')
    assert why is not None and "surrogate" in why
    msg, why = jsonrpc.decode_untrusted(b'{"jsonrpc":"2.0","id":1,"result":{}}')
    assert why is None


def test_client_bodies_must_be_utf8() -> None:
    jsonrpc.check_utf8('{"t":"é"}'.encode())
    with pytest.raises(ProtocolError) as info:
        jsonrpc.check_utf8(b'{"t":"\xff"}')
    assert info.value.code == jsonrpc.PARSE_ERROR and "byte 6" in info.value.message
