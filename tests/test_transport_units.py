"""Pure parts of the HTTP wires: SSE framing, Origin and Host policy."""

from __future__ import annotations

import json

from gateway.http.policy import OriginPolicy
from gateway.session import sse_frame as sse_event


def test_sse_event_frames_one_json_message() -> None:
    assert sse_event(b'{"a":1}') == b'event: message\ndata: {"a":1}\n\n'


def test_raw_line_breaks_between_json_tokens_cannot_split_an_event() -> None:
    data = b'{"jsonrpc":"2.0",\r"id":1,\n"result":{"content":[]}}'
    event = sse_event(data)
    lines = event.split(b"\n")
    assert lines[0] == b"event: message" and lines[1].startswith(b"data: ") and lines[2:] == [b"", b""]
    assert json.loads(lines[1][6:]) == json.loads(data)


def test_origin_policy() -> None:
    policy = OriginPolicy(["https://app.example.com"], "127.0.0.1")
    assert policy.origin_ok(None)
    assert policy.origin_ok(b"http://localhost:5173") and policy.origin_ok(b"http://127.0.0.1")
    assert policy.origin_ok(b"http://[::1]:8080") and policy.origin_ok(b"https://app.example.com")
    assert not policy.origin_ok(b"https://evil.example") and not policy.origin_ok(b"null")
    assert not policy.origin_ok(b"http://localhost.evil.example")
    assert OriginPolicy(["*"], "127.0.0.1").origin_ok(b"https://anything.example")


def test_host_policy_against_dns_rebinding() -> None:
    policy = OriginPolicy([], "127.0.0.1")
    for ok in (b"127.0.0.1:8080", b"localhost", b"[::1]:8080", b"127.0.0.2"):
        assert policy.host_ok(ok), ok
    for bad in (b"evil.example", b"127.attacker.example", b"localhost.evil.example:8080"):
        assert not policy.host_ok(bad), bad
    assert OriginPolicy([], "0.0.0.0").host_ok(b"gateway.internal:8080")  # not bound to loopback: no check


def test_the_sse_post_finds_its_session_id_sliced_or_parsed() -> None:
    from gateway.transports.sse import _session_id

    assert _session_id(b"/message?sessionId=abc_-9") == "abc_-9"  # our own ids: sliced
    assert _session_id(b"/message?sessionId=a%2Bb") == "a+b"  # anything else: parsed as a query
    assert _session_id(b"/message?x=1&sessionId=zz") == "zz"
    assert _session_id(b"/message") == "" and _session_id(b"/message?sessionId=") == ""
