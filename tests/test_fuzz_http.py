"""Property tests of the data-plane HTTP server over real sockets: whatever a client sends, every
answer is valid HTTP/1.1 and never a 500 (or the connection is closed), nothing is logged at ERROR,
no connection or call is left behind, and the gateway still serves a real tools/call afterwards.

One gateway serves the whole run, as it serves real clients: hypothesis runs in a worker thread
(``trio.to_thread.run_sync``) and each example drives the trio loop with ``trio.from_thread.run``,
one fresh connection per example, half-closed after the request so every exchange ends by itself.
Bounded by ``max_examples`` and small sizes: the whole run takes seconds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import h11
import pytest
import trio
from hypothesis import HealthCheck, example, given, settings, strategies as st

from tests.helpers import HTTPClient, config
from tests.test_hostile_client import (
    assert_no_error_logs,
    echo_works,
    exchange,
    gateway,
    ledger,
    new_session,
    parse_responses,
)

T = TypeVar("T")
FUZZ = settings(deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SESSION = b"@SESSION@"  # replaced by the live session id (2025-11-25) when an example is sent
SESSION_0326 = b"@SESSION0326@"  # ...and by one that negotiated 2025-03-26 (batches allowed)

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=20)


def _poison() -> st.SearchStrategy[bytes]:
    depth = st.sampled_from([2, 50, 5_000, 100_000])
    return st.one_of(
        st.sampled_from([
            b'"\\udcff"', b'"\\ud800\\u0041"', b'"\xff\xfe"', b'"a\x00b"', b"\x00" * 8, b"1" * 5000,
            b"-" + b"9" * 400, b"1e999999", b"-0.0e-99999", b'"\\u12"', b"nul", b"tru", b"", b"{}", b"[]",
            b'"' + b"w" * 100_000 + b'"', b"[" + b"0," * 30_000 + b"0]",
            b"{" + b",".join(b'"k%d":1' % i for i in range(5_000)) + b"}",
        ]),
        depth.map(lambda d: b"[" * d + b"]" * d), depth.map(lambda d: b"[" * d),
        depth.map(lambda d: b'{"a":' * d + b"1" + b"}" * d),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=40),
    )


poison = _poison()
METHODS = ["initialize"] * 3 + ["tools/call"] * 3 + [
    "ping", "tools/list", "resources/list", "resources/read", "resources/templates/list", "resources/subscribe",
    "resources/unsubscribe", "prompts/list", "prompts/get", "completion/complete", "logging/setLevel",
    "notifications/initialized", "notifications/cancelled", "notifications/progress", "server/discover",
    "sampling/createMessage"]
TOOLS = ["l__echo", "l__ledger", "l__nope", "", "echo"]  # never l__sleep: every example ends at once


def mostly(draw: st.DrawFn, usual: T, other: st.SearchStrategy[T], percent: int = 85) -> T:
    """``usual`` most of the time, else a draw from ``other`` (shrinks towards ``usual``), so most
    examples get past the early checks and reach the code behind them."""
    return usual if draw(st.integers(0, 99)) < percent else draw(other)


@st.composite
def jsonrpc_ish(draw: st.DrawFn) -> bytes:
    """A JSON-RPC message with poison where values go (or a batch of those)."""
    def value(strategy: st.SearchStrategy[Any]) -> bytes:
        good = json.dumps(draw(strategy)).encode()
        return mostly(draw, good, poison)

    members = [b'"jsonrpc":' + mostly(draw, b'"2.0"', st.sampled_from([b'"1.0"', b"2", b"null"]), 95)]
    if draw(st.integers(0, 9)):
        members.append(b'"id":' + value(st.one_of(st.integers(-(2**70), 2**70), st.text(max_size=8))))
    members.append(b'"method":' + value(st.sampled_from(METHODS)))
    params = []
    for key, strategy in (("name", st.sampled_from(TOOLS)), ("arguments", json_values),
                          ("_meta", st.fixed_dictionaries({"progressToken": json_scalars})),
                          ("uri", st.text(max_size=10)), ("cursor", st.text(max_size=10)),
                          ("protocolVersion", st.sampled_from(["2025-11-25", "2025-03-26", "1999-01-01"])),
                          ("requestId", json_scalars), ("level", st.text(max_size=6)),
                          ("ref", json_values), ("capabilities", json_values), ("clientInfo", json_values)):
        if draw(st.integers(0, 2)) == 0:
            params.append(f'"{key}":'.encode() + value(strategy))
    if draw(st.integers(0, 5)):
        members.append(b'"params":' + mostly(draw, b"{" + b",".join(params) + b"}", st.one_of(
            json_values.map(lambda v: json.dumps(v).encode()), poison), 80))
    message = b"{" + b",".join(draw(st.permutations(members))) + b"}"
    if draw(st.integers(0, 7)) == 0:
        return b"[" + b",".join([message] * draw(st.integers(1, 3))) + b"]"
    return message


bodies = st.one_of(jsonrpc_ish(), jsonrpc_ish(), jsonrpc_ish(), st.binary(max_size=300),
                   json_values.map(lambda v: json.dumps(v).encode()))


@st.composite
def http_ish(draw: st.DrawFn) -> bytes:
    """Bytes shaped like an HTTP/1.1 request, with junk wherever junk can go (never HEAD: the answers
    are parsed as answers to GET)."""
    eol = mostly(draw, b"\r\n", st.sampled_from([b"\n", b"\r", b"\r\r\n"]))
    method = mostly(draw, draw(st.sampled_from([b"POST", b"GET", b"DELETE", b"OPTIONS"])), st.one_of(
        st.sampled_from([b"PUT", b"CONNECT", b"TRACE", b"G\x00T", b""]), st.binary(max_size=6)))
    target = mostly(draw, draw(st.sampled_from([b"/mcp", b"/healthz"])), st.one_of(st.sampled_from(
        [b"/", b"*", b"http://127.0.0.1/mcp", b"/mcp?x=1", b"/%00", b"/" + b"a" * 5000, b"127.0.0.1:1"]),
        st.binary(max_size=20)))
    version = mostly(draw, b"HTTP/1.1", st.sampled_from([b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b""]))
    names = st.one_of(st.sampled_from([b"content-length", b"transfer-encoding", b"content-type", b"accept",
                                       b"mcp-session-id", b"mcp-protocol-version", b"origin", b"expect",
                                       b"connection", b"upgrade", b"host"]),
                      st.sampled_from([b"x-\xff", b"bad name", b"", b"content-length "]))
    values = st.one_of(st.sampled_from([
        b"@LEN@", b"0", b"5", b"-1", b"99999999999999999999", b"chunked", b"gzip, chunked", b"application/json",
        b"text/plain", b"text/event-stream", b"application/json, text/event-stream", SESSION, SESSION_0326,
        b"2025-11-25", b"2025-03-26", b"1999-01-01", b"http://localhost:1", b"https://evil.example",
        b"100-continue", b"close", b"keep-alive", b"websocket", b"127.0.0.1", b"\xff\xfe", b"a" * 70_000]),
        st.binary(max_size=20))
    headers = draw(st.lists(st.tuples(names, values), max_size=8))
    if draw(st.integers(0, 9)):
        headers.insert(0, (b"host", b"127.0.0.1"))
    body = draw(st.one_of(bodies, st.just(b"5\r\nhello\r\n0\r\n\r\n")))
    head = method + b" " + target + b" " + version + eol + b"".join(n + b": " + v + eol for n, v in headers)
    tail = draw(st.sampled_from([b""] * 4 + [b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n", b"\r\n", b"\x00"]))
    return head.replace(b"@LEN@", b"%d" % len(body)) + eol + body + tail


@st.composite
def well_formed_post(draw: st.DrawFn) -> tuple[str, str, dict[str, bytes], bytes]:
    """A valid HTTP request (mostly a POST to /mcp in a session) whose body and MCP headers are anything."""
    method = mostly(draw, "POST", st.sampled_from(["GET", "DELETE", "HEAD", "OPTIONS"]), 90)
    path = mostly(draw, "/mcp", st.sampled_from(["/mcp/", "/healthz", "/other"]), 90)
    headers: dict[str, bytes] = {}
    for name, usual, others in (
            ("content-type", b"application/json", [None, b"application/json; charset=utf-8", b"text/plain"]),
            ("accept", draw(st.sampled_from([b"application/json, text/event-stream", b"application/json"])),
             [None, b"text/event-stream", b"*/*", b"text/html"]),
            ("mcp-session-id", draw(st.sampled_from([SESSION, SESSION_0326])), [None, b"not-a-session", b"\xff"]),
            ("mcp-protocol-version", None, [b"2025-11-25", b"2025-03-26", b"2024-11-05", b"2026-07-28", b"junk"]),
            ("origin", None, [b"http://localhost:3000", b"https://evil.example"])):
        chosen = mostly(draw, usual, st.sampled_from(others), 90)
        if chosen is not None:
            headers[name] = chosen
    return method, path, headers, draw(bodies)


KNOWN = [  # always tried, whatever hypothesis draws: one of each kind of poison the issue names
    b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":[]}',
    b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":' + b"[" * 100_000 + b"}}",
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":5}',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"l__echo","arguments":{"text":"\xff"}}}',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"l__echo","arguments":{"text":"\\udcff"}}}',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"l__echo\x00","arguments":{}}}',
    b'{"jsonrpc":"2.0","id":' + b"9" * 5000 + b',"method":"ping"}',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"l__echo","arguments":{"text":1e999999}}}',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":' + b'{"a":' * 100_000 + b"}}",
    b"[" + b",".join([b'{"jsonrpc":"2.0","id":1,"method":"ping"}'] * 300) + b"]",
    b'{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":[],"argument":5}}',
]


def example_messages(test: Callable[..., None]) -> Callable[..., None]:
    for message in KNOWN:
        for session in (SESSION, SESSION_0326, None):
            test = example(session=session, message=message)(test)
    return test


def _check(replies: list[Any], *, at_most_one: bool, mcp: bool) -> None:
    """Statuses are valid and never 500; on an MCP endpoint, a JSON answer is JSON-RPC."""
    assert not at_most_one or len(replies) <= 1, replies
    for reply in replies:
        assert 100 <= reply.status <= 599 and reply.status != 500, reply
        ctype = reply.headers.get("content-type", "")
        if mcp and ctype == "application/json" and reply.body:
            answer = json.loads(reply.body)  # a JSON answer is JSON, and JSON-RPC
            for item in answer if isinstance(answer, list) else [answer]:
                assert item["jsonrpc"] == "2.0" and ("result" in item) != ("error" in item), item
                if reply.status >= 400:
                    assert isinstance(item["error"]["code"], int), item


async def test_any_bytes_and_any_body_get_valid_http_never_500(caplog: pytest.LogCaptureFixture) -> None:
    async with gateway(config(ledger()), timeout=60) as gw, HTTPClient.connect(gw.port) as http:
        sessions = {SESSION: "2025-11-25", SESSION_0326: "2025-03-26"}
        live: dict[bytes, str] = {}

        async def send(data: bytes) -> bytes:
            for placeholder, version in sessions.items():
                if gw.gateway.sessions.get(live.get(placeholder)) is None:  # first, or ended by a DELETE
                    live[placeholder] = await new_session(http, version)
                data = data.replace(placeholder, live[placeholder].encode())
            return await exchange(gw.port, data, timeout=10)

        def run(fn: Callable[..., Any], *args: Any) -> Any:
            return trio.from_thread.run(fn, *args)

        @settings(FUZZ, max_examples=500)
        @given(data=st.one_of(st.binary(max_size=600), http_ish()))
        def any_bytes(data: bytes) -> None:
            _check(parse_responses(run(send, data), allow_truncated=True), at_most_one=False, mcp=False)

        def post(method: str, path: str, headers: dict[str, bytes], body: bytes) -> None:
            client = h11.Connection(h11.CLIENT)
            head = [(b"host", b"127.0.0.1"), *((k.encode(), v) for k, v in headers.items()),
                    (b"content-length", b"%d" % len(body))]
            out = client.send(h11.Request(method=method, target=path, headers=head)) or b""
            out += (client.send(h11.Data(data=body)) or b"") + (client.send(h11.EndOfMessage()) or b"")
            replies = parse_responses(run(send, out), method, allow_truncated=True)
            _check(replies, at_most_one=True, mcp=path.startswith("/mcp"))

        @settings(FUZZ, max_examples=500)
        @given(request=well_formed_post())
        @example(request=("HEAD", "/healthz", {}, b""))  # HEAD answers carry no body, whatever the path
        @example(request=("HEAD", "/other", {}, b""))
        @example(request=("HEAD", "/mcp", {"mcp-session-id": SESSION}, b""))
        def any_request(request: tuple[str, str, dict[str, bytes], bytes]) -> None:
            post(*request)

        @settings(FUZZ, max_examples=1000)
        @given(session=st.sampled_from([SESSION, SESSION_0326, None]), message=jsonrpc_ish())
        @example_messages
        def any_message(session: bytes | None, message: bytes) -> None:
            headers = {"content-type": b"application/json", "accept": b"application/json, text/event-stream"}
            post("POST", "/mcp", headers | ({"mcp-session-id": session} if session else {}), message)

        for prop in (any_bytes, any_request, any_message):
            await trio.to_thread.run_sync(prop)

        # Afterwards: nothing is left behind (no connection held but ours, no call in flight)...
        with trio.fail_after(5):
            while gw.gateway.http.statistics().connections > 1 or any(s.inflight for s in gw.gateway.sessions):
                await trio.sleep(0.02)
        # ...and a real call still goes to the upstream and back.
        await echo_works(http, await new_session(http))
    assert_no_error_logs(caplog)

