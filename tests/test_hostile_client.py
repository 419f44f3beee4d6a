"""Hostile clients over real sockets (issue 7): an untrusted client must never take the gateway
down, hang a call, or forge its logs.

Every test talks to a real gateway (in-process, or the ``mcp-gateway`` CLI in a subprocess) over
real TCP sockets, in front of a real upstream process: ``tests/servers/ledger_server.py``, which
also records which of its calls the gateway cancelled, so "the upstream call was cancelled" is
asserted where it happens, not inferred.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import h11
import pytest
import trio

from gateway.config import GatewayConfig
from gateway.protocol import jsonrpc
from tests.helpers import (
    ACCEPT_BOTH,
    PY,
    ROOT,
    HTTPClient,
    Reply,
    Running,
    config,
    free_port,
    log_file,
    running_gateway,
    wait_healthy,
)

LEDGER = str(ROOT / "tests" / "servers" / "ledger_server.py")
CLI = [PY, "-m", "gateway.cli"]
DEEP = 100_000  # far past any recursion limit, well under limits.max_body (4 MB)


def ledger(**extra: Any) -> dict[str, Any]:
    """The server table of every test here: one ledger server named ``l`` (tools ``l__*``)."""
    return {"l": {"command": PY, "args": [LEDGER], **extra}}


def init_msg(request_id: int | str = 0, version: str = "2025-11-25") -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "hostile", "version": "0"}}}


def call_msg(request_id: int | str, tool: str, **arguments: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": f"l__{tool}", "arguments": arguments}}


def ping(request_id: int | str = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "ping"}


def raw_request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    """Request bytes exactly as given (no header added but host and, with a body, content-length)."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"host: 127.0.0.1",
             *(f"{name}: {value}".encode() for name, value in headers.items())]
    if body:
        lines.append(b"content-length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def read_to_eof(stream: trio.SocketStream, timeout: float = 5.0) -> bytes:
    """Everything the gateway sends until it closes its side (fails the test after ``timeout``)."""
    data = b""
    with trio.fail_after(timeout):
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:  # a reset is a close too
                return data
            if not chunk:
                return data
            data += chunk


async def exchange(port: int, data: bytes, *, half_close: bool = True, timeout: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection (then half-close, by default) and read until EOF."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        if half_close:
            await stream.send_eof()
        return await read_to_eof(stream, timeout)


def parse_responses(data: bytes, method: str = "GET", *, allow_truncated: bool = False) -> list[Reply]:
    """Every HTTP response in ``data`` (all the gateway sent before it closed), parsed strictly by h11
    as answers to ``method`` requests.

    Raises h11.RemoteProtocolError if the bytes are not valid HTTP/1.1 responses, and AssertionError
    if one is cut short, unless ``allow_truncated`` and it is an event stream (ended when the client
    left) or nothing but ``100 Continue`` (the client left instead of sending its body).
    """
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(data)
    conn.receive_data(b"")
    replies: list[Reply] = []
    while conn.trailing_data[0]:
        conn.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
        conn.send(h11.EndOfMessage())
        status, headers, chunks, informational = 0, {}, [], False
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                if conn.trailing_data[0]:
                    raise  # bytes that are not HTTP
                event = h11.ConnectionClosed()  # every byte was valid, the rest never came
            if isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode(): v.decode("latin-1") for k, v in event.headers}
            elif isinstance(event, h11.Data):
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.InformationalResponse):
                informational = True  # 100 Continue
            else:  # the connection closed mid-response
                streaming = headers.get("content-type", "").startswith("text/event-stream")
                assert allow_truncated and (streaming or (informational and not status)), \
                    f"truncated response: {data[:300]!r}"
                if status:
                    replies.append(Reply(status, headers, b"".join(chunks)))
                return replies
        replies.append(Reply(status, headers, b"".join(chunks)))
        if conn.their_state is h11.MUST_CLOSE:
            assert not conn.trailing_data[0], f"bytes after a response that closes: {conn.trailing_data[0][:200]!r}"
            break
        conn.start_next_cycle()
    return replies


def assert_no_error_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing at ERROR and no traceback: a client must not be able to write those into our log."""
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [f"{r.levelname} {r.name}: {r.getMessage()}" for r in bad]


@asynccontextmanager
async def gateway(cfg: GatewayConfig, timeout: float = 15) -> AsyncIterator[Running]:
    """:func:`running_gateway` with a deadline: a regression fails the test instead of hanging it."""
    with trio.fail_after(timeout):
        async with running_gateway(cfg) as running:
            yield running


async def connect_from(address: str, port: int) -> trio.SocketStream:
    """A connection to the gateway (127.0.0.1) from another loopback source address: Linux routes
    all of 127/8 to lo, so 127.0.0.2 is a second peer on the same machine."""
    sock = trio.socket.socket()
    try:
        await sock.bind((address, 0))
        await sock.connect(("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


@asynccontextmanager
async def client_from(address: str, port: int) -> AsyncIterator[HTTPClient]:
    stream = await connect_from(address, port)
    async with stream:
        yield HTTPClient(stream)


async def echo_works(http: HTTPClient, session: str, text: str = "still here") -> None:
    reply = await http.post("/mcp", call_msg(99, "echo", text=text), session, {"accept": "application/json"})
    assert reply.status == 200, reply
    assert reply.json()["result"]["content"][0]["text"] == text


async def new_session(http: HTTPClient, version: str = "2025-11-25") -> str:
    reply = await http.post("/mcp", init_msg(version=version))
    assert reply.status == 200, reply
    return reply.headers["mcp-session-id"]


# -- 1. deep nesting -------------------------------------------------------------------------------

DEEP_BODIES = {
    "deep object": b'{"a":' * DEEP + b"1" + b"}" * DEEP,
    "deep array in params": (b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"l__echo",'
                             b'"arguments":{"text":' + b"[" * DEEP + b"]" * DEEP + b"}}}"),
    "deep object in params": (b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"l__echo",'
                              b'"arguments":' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}}"),
    "deep batch": b"[" * DEEP + b"]" * DEEP,
    "deep unclosed batch": b"[" * DEEP,
    "batch with a deep item": (b'[{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":'
                               + b"[" * DEEP + b"]" * DEEP + b"}}]"),
}


async def test_deeply_nested_bodies_are_400_parse_errors_with_no_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    async with gateway(config(ledger())) as gw, HTTPClient.connect(gw.port) as http:
        sessions: dict[str, tuple[str | None, dict[str, str]]] = {
            "no session": (None, {}),
            "no session, batch version header": (None, {"mcp-protocol-version": "2025-03-26"}),
            "2025-11-25 session": (await new_session(http), {}),
            "2025-03-26 session (batches allowed)": (await new_session(http, "2025-03-26"),
                                                     {"mcp-protocol-version": "2025-03-26"}),
        }
        for what, body in DEEP_BODIES.items():
            for where, (session, headers) in sessions.items():
                reply = await http.post("/mcp", body, session, headers)
                case = f"{what}, {where}: {reply.status} {reply.body[:200]!r}"
                assert reply.status == 400, case
                assert reply.json()["error"]["code"] == jsonrpc.PARSE_ERROR, case
                assert reply.json()["id"] is None, case
        session = sessions["2025-11-25 session"][0]
        assert session is not None
        await echo_works(http, session)  # the same keep-alive connection, the same session
    assert_no_error_logs(caplog)


# -- 2. invalid UTF-8 and lone surrogates -----------------------------------------------------------

def _echo_body(text: bytes) -> bytes:
    return (b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"l__echo","arguments":{"text":"'
            + text + b'"}}}')


async def test_invalid_utf8_and_lone_surrogates_in_params_are_400_parse_errors(
        caplog: pytest.LogCaptureFixture) -> None:
    # Params are forwarded raw (never decoded by the gateway), so without its own UTF-8 check
    # (jsonrpc.check_utf8, run on every client body) these bytes would reach the upstream as they are.
    # Lone surrogate escapes are plain ASCII: msgspec refuses them while it validates the raw params.
    invalid = {
        "raw 0xFF": b"bad \xff byte",
        "truncated sequence": b"euro \xe2\x82",
        "overlong '/'": b"\xc0\xaf",
        "UTF-8-encoded surrogate (CESU-8)": b"\xed\xb3\xbf",
        "lone low surrogate escape": b"\\udcff",
        "unpaired high surrogate escape": b"\\ud800x",
    }
    async with gateway(config(ledger())) as gw, HTTPClient.connect(gw.port) as http:
        session = await http.initialize()
        for what, text in invalid.items():
            for sid in (session, None):
                reply = await http.post("/mcp", _echo_body(text), sid)
                case = f"{what} (session {sid is not None}): {reply.status} {reply.body[:200]!r}"
                assert reply.status == 400, case
                assert reply.json()["error"]["code"] == jsonrpc.PARSE_ERROR, case
        # Valid UTF-8 and a valid surrogate pair are not refused: the checks are exact, not broad.
        reply = await http.post("/mcp", _echo_body("héllo ✓ 😀 ".encode() + b"\\ud83d\\ude00"), session,
                                {"accept": "application/json"})
        assert reply.status == 200 and reply.json()["result"]["content"][0]["text"] == "héllo ✓ 😀 😀"
    assert_no_error_logs(caplog)


# -- 3. Content-Type --------------------------------------------------------------------------------

async def test_post_requires_application_json() -> None:
    body = json.dumps(init_msg()).encode()
    refused: list[str | None] = [None, "application/jsonx", "text/plain", "application/json-seq",
                                 "text/plain; charset=application/json", "application/x-www-form-urlencoded"]
    accepted = ["application/json", "application/json; charset=utf-8", "Application/JSON",
                "application/json;charset=UTF-8"]
    async with gateway(config(ledger())) as gw:
        for ctype in refused + accepted:
            headers = {"accept": ACCEPT_BOTH} | ({"content-type": ctype} if ctype is not None else {})
            [reply] = parse_responses(await exchange(gw.port, raw_request("POST", "/mcp", headers, body)))
            if ctype in accepted:
                assert reply.status == 200 and "mcp-session-id" in reply.headers, (ctype, reply)
            else:
                assert reply.status == 415, (ctype, reply)
                assert "Content-Type must be application/json" in reply.json()["error"]["message"]
        assert len(gw.gateway.sessions) == len(accepted)  # a refused initialize opened no session


# -- 4. request smuggling ---------------------------------------------------------------------------

SMUGGLED = b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


@pytest.mark.parametrize("order", ["content-length first", "transfer-encoding first"])
@pytest.mark.parametrize("chunked", [
    b"0\r\n\r\n" + SMUGGLED,  # CL.TE: the whole is one body by Content-Length, two requests by chunks
    _chunk(json.dumps(ping()).encode()) + b"0\r\n\r\n" + SMUGGLED,
], ids=["empty body then a request", "a ping then a request"])
async def test_content_length_with_transfer_encoding_is_400_and_closed(order: str, chunked: bytes) -> None:
    async with gateway(config(ledger())) as gw:
        framing = [f"content-length: {len(chunked)}", "transfer-encoding: chunked"]
        if order != "content-length first":
            framing.reverse()
        head = ("POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                f"accept: {ACCEPT_BOTH}\r\n" + "\r\n".join(framing) + "\r\n\r\n").encode()
        # No half-close from us: the gateway must close by itself, having answered exactly once.
        data = await exchange(gw.port, head + chunked, half_close=False)
        [reply] = parse_responses(data)
        assert reply.status == 400 and b"Content-Length and Transfer-Encoding" in reply.body
        assert data.count(b"HTTP/1.1 ") == 1 and b'"status"' not in data  # the smuggled GET was never read
        # Control: the same chunked body without Content-Length is served, and so is the request
        # after it on the same connection, so the framing above would have smuggled it.
        head = head.replace(f"content-length: {len(chunked)}\r\n".encode(), b"")
        replies = parse_responses(await exchange(gw.port, head + chunked))
        assert [r.status for r in replies] == [400, 200]  # 400: a ping without a session
        assert replies[1].json()["status"] == "ok"


# -- HEAD (found by tests/test_fuzz_http.py) ---------------------------------------------------------

async def test_head_is_answered_without_a_body_and_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    async with gateway(config(ledger())) as gw:
        stream = await trio.open_tcp_stream("127.0.0.1", gw.port)
        async with stream:
            await stream.send_all(raw_request("HEAD", "/healthz", {}) + raw_request("HEAD", "/mcp", {}))
            await stream.send_eof()
            data = await read_to_eof(stream)
        head_healthz, head_mcp = parse_responses(data, "HEAD")
        assert head_healthz.status == 200 and head_healthz.body == b""
        assert int(head_healthz.headers["content-length"]) > 0  # what GET would have sent
        assert head_mcp.status == 405 and head_mcp.body == b""
        async with HTTPClient.connect(gw.port) as http:
            assert (await http.request("GET", "/healthz")).status == 200
    assert_no_error_logs(caplog)


# -- 5. fair session eviction -----------------------------------------------------------------------

async def test_initialize_flood_from_one_peer_evicts_its_own_sessions_not_others() -> None:
    async with gateway(config(ledger(), limits={"max_sessions": 50})) as gw:
        async with client_from("127.0.0.2", gw.port) as legit:
            mine = await legit.initialize()  # the oldest session, idle while the flood runs
            async with HTTPClient.connect(gw.port) as flood:
                flooded = [await new_session(flood) for _ in range(60)]
                statuses = [(await flood.post("/mcp", ping(), sid)).status for sid in flooded]
            reply = await legit.post("/mcp", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, mine)
            assert reply.status == 200 and "l__echo" in {t["name"] for t in reply.json()["result"]["tools"]}
        # 1 + 60 initializes into 50 places: the flood's 11 oldest sessions gave way, in order.
        assert statuses == [404] * 11 + [200] * 49
        stats = gw.gateway.sessions.statistics()
        assert (stats.sessions, stats.peers, stats.evicted, stats.refused) == (50, 2, 11, 0)


async def _open_get_stream(port: int, session: str) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(raw_request("GET", "/mcp", {"accept": "text/event-stream", "mcp-session-id": session}))
    with trio.fail_after(5):
        assert (await stream.receive_some(4096)).startswith(b"HTTP/1.1 200")
    return stream


async def test_per_peer_quota_ends_that_peers_lru_idle_session_then_refuses_when_all_are_busy() -> None:
    cfg = config(ledger(), limits={"max_sessions": 50, "max_sessions_per_peer": 3})
    async with gateway(cfg) as gw, client_from("127.0.0.2", gw.port) as other, \
            HTTPClient.connect(gw.port) as http:
        theirs = await other.initialize()  # the least recently used session of the whole gateway
        a, b, c = [await new_session(http) for _ in range(3)]
        assert (await http.post("/mcp", ping(), a)).status == 200  # b is now this peer's LRU
        d = await new_session(http)  # a 4th from this peer
        status = {name: (await http.post("/mcp", ping(), sid)).status
                  for name, sid in {"a": a, "b": b, "c": c, "d": d}.items()}
        assert status == {"a": 200, "b": 404, "c": 200, "d": 200}
        assert (await other.post("/mcp", ping(), theirs)).status == 200
        # Now every session of this peer is busy: two GET streams and a call in flight.
        streams = [await _open_get_stream(gw.port, sid) for sid in (a, c)]
        async with trio.open_nursery() as nursery, HTTPClient.connect(gw.port) as caller:
            nursery.start_soon(caller.post, "/mcp", call_msg(5, "sleep", seconds=30), d)
            with trio.fail_after(5):
                while not gw.gateway.sessions.get(d).inflight:  # type: ignore[union-attr]
                    await trio.sleep(0.01)
            reply = await http.post("/mcp", init_msg(request_id="fifth"))
            assert reply.status == 503, reply
            assert reply.json()["id"] == "fifth"
            assert "limits.max_sessions_per_peer (3)" in reply.json()["error"]["message"]
            assert all(gw.gateway.sessions.get(sid) is not None for sid in (a, c, d, theirs))
            # The quota is per peer: another address still gets a session.
            assert (await other.post("/mcp", init_msg())).status == 200
            nursery.cancel_scope.cancel()
        for stream in streams:
            await stream.aclose()
        assert gw.gateway.sessions.statistics().refused == 1


# -- 6. shutdown --------------------------------------------------------------------------------------

def _assert_shutting_down(answer: dict[str, Any], request_id: int) -> None:
    assert answer["id"] == request_id, answer
    assert answer["error"]["code"] == jsonrpc.GATEWAY_SHUTTING_DOWN, answer
    assert "shutting down" in answer["error"]["message"], answer


async def test_shutdown_answers_running_calls_over_json_sse_and_batch_then_closes(
        caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(ledger(), timeouts={"shutdown_grace": "500ms"})
    async with gateway(cfg) as gw:
        async with HTTPClient.connect(gw.port) as http:
            session = await http.initialize()
            batch_session = await http.initialize(version="2025-03-26")
        replies: dict[str, Reply] = {}
        after: dict[str, bytes] = {}

        async def call(kind: str, message: Any, accept: str, sid: str = session, **headers: str) -> None:
            async with HTTPClient.connect(gw.port) as client:
                replies[kind] = await client.post("/mcp", message, sid, {"accept": accept, **headers})
                after[kind] = await read_to_eof(client.stream)  # then the gateway closes the connection

        async def get_stream() -> None:  # a GET stream open at shutdown ends cleanly (drain hook)
            stream = await trio.open_tcp_stream("127.0.0.1", gw.port)
            async with stream:
                await stream.send_all(raw_request("GET", "/mcp", {"accept": "text/event-stream",
                                                                  "mcp-session-id": session}))
                after["get"] = await read_to_eof(stream)

        sse_call = call_msg(12, "sleep", seconds=30)
        sse_call["params"]["_meta"] = {"progressToken": "p"}  # with Accept: both, the answer is SSE
        one, batched = gw.gateway.sessions.get(session), gw.gateway.sessions.get(batch_session)
        assert one is not None and batched is not None
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call, "json", call_msg(11, "sleep", seconds=30), "application/json")
                nursery.start_soon(call, "sse", sse_call, ACCEPT_BOTH)
                batch = functools.partial(call, "batch", [call_msg(13, "sleep", seconds=30)], ACCEPT_BOTH,
                                          batch_session, **{"mcp-protocol-version": "2025-03-26"})
                nursery.start_soon(batch)
                nursery.start_soon(get_stream)
                while len(one.inflight) < 2 or not batched.inflight or one.streams < 1:
                    await trio.sleep(0.01)
                started = trio.current_time()
                await gw.gateway.shutdown()
                took = trio.current_time() - started
    assert 0.5 <= took < 3, took  # the grace was given, then the calls were ended
    assert replies["json"].status == 200 and replies["json"].headers["content-type"] == "application/json"
    _assert_shutting_down(replies["json"].json(), 11)
    assert replies["sse"].status == 200 and replies["sse"].headers["content-type"] == "text/event-stream"
    _assert_shutting_down(replies["sse"].sse_messages()[-1], 12)
    assert replies["batch"].status == 200
    [answer] = replies["batch"].json()
    _assert_shutting_down(answer, 13)
    [stream_reply] = parse_responses(after.pop("get"))  # complete (not cut): the stream was ended
    assert stream_reply.status == 200 and stream_reply.headers["content-type"] == "text/event-stream"
    assert after == {"json": b"", "sse": b"", "batch": b""}
    assert_no_error_logs(caplog)


def _write_config(path: Path, extra: str = "") -> Path:
    path.write_text(f"servers:\n  l: {{command: {json.dumps(PY)}, args: [{json.dumps(LEDGER)}]}}\n{extra}")
    return path


async def test_sigterm_to_the_cli_answers_running_calls_then_exits(tmp_path: Path) -> None:
    cfg = _write_config(tmp_path / "gw.yaml", "timeouts: {shutdown_grace: 500ms}\n")
    port = free_port()
    with log_file(tmp_path / "gw.log") as sink:
        proc = await trio.lowlevel.open_process([*CLI, "run", "--config", str(cfg), "--port", str(port)],
                                                stderr=sink)
    try:
        await wait_healthy(port, proc)
        async with HTTPClient.connect(port) as http:
            session = await http.initialize()
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(lambda: _sigterm_soon(proc))
                    reply = await http.post("/mcp", call_msg(21, "sleep", seconds=30), session,
                                            {"accept": "application/json"})
                assert reply.status == 200
                _assert_shutting_down(reply.json(), 21)
                assert await read_to_eof(http.stream) == b""
                assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = (tmp_path / "gw.log").read_text()
    assert "received SIGTERM: draining" in log and "shutdown grace over" in log


async def _sigterm_soon(proc: trio.Process) -> None:
    await trio.sleep(0.3)  # the call is in flight by then (the ledger answers it only after 30 s)
    proc.send_signal(signal.SIGTERM)


# -- 7. half-close --------------------------------------------------------------------------------------

async def test_half_close_during_a_slow_call_cancels_it_upstream_without_an_answer() -> None:
    async with gateway(config(ledger())) as gw, HTTPClient.connect(gw.port) as http:
        session = await http.initialize()
        slow = json.dumps(call_msg(5, "sleep", seconds=3)).encode()
        stream = await trio.open_tcp_stream("127.0.0.1", gw.port)
        async with stream:
            await stream.send_all(raw_request("POST", "/mcp", {
                "content-type": "application/json", "accept": "application/json", "mcp-session-id": session}, slow))
            await stream.send_eof()  # shutdown(SHUT_WR): the client is gone, like nginx's 499
            started = trio.current_time()
            data = await read_to_eof(stream, timeout=2.5)
            took = trio.current_time() - started
        assert data == b"" and took < 1.5, (data, took)
        assert not gw.gateway.sessions.get(session).inflight  # type: ignore[union-attr]
        reply = await http.post("/mcp", call_msg(6, "ledger"), session, {"accept": "application/json"})
        ledger_state = json.loads(reply.json()["result"]["content"][0]["text"])
        assert ledger_state["running"] == [] and len(ledger_state["cancelled"]) == 1, ledger_state


async def test_half_close_after_a_quick_request_is_answered() -> None:
    async with gateway(config(ledger())) as gw, HTTPClient.connect(gw.port) as http:
        session = await http.initialize()
        headers = {"content-type": "application/json", "accept": "application/json", "mcp-session-id": session}
        body = json.dumps({"jsonrpc": "2.0", "id": 8, "method": "tools/list"}).encode()
        [reply] = parse_responses(await exchange(gw.port, raw_request("POST", "/mcp", headers, body)))
        assert reply.status == 200 and reply.json()["id"] == 8
        assert "l__sleep" in {t["name"] for t in reply.json()["result"]["tools"]}


# -- 8. file descriptors -----------------------------------------------------------------------------------

async def _idle_connection(port: int, with_request: bool, out: list[trio.SocketStream]) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    out.append(stream)
    if with_request:  # one request answered, then idle in keep-alive
        data = b""
        with trio.move_on_after(10):
            try:
                await stream.send_all(raw_request("GET", "/healthz", {}))
                while b'"sessions"' not in data:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    data += chunk
            except trio.BrokenResourceError:
                return  # already closed to make room for a later one (before its request was read): fine


async def _closed_by_peer(stream: trio.SocketStream, closed: list[trio.SocketStream]) -> None:
    with trio.move_on_after(1):
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
        closed.append(stream)


async def test_descriptor_limit_caps_connections_and_idle_ones_make_room(tmp_path: Path) -> None:
    cfg = _write_config(tmp_path / "gw.yaml")
    port = free_port()
    log_path = tmp_path / "gw.log"
    with log_file(log_path) as sink:
        proc = await trio.lowlevel.open_process(
            ["prlimit", "--nofile=400:400", *CLI, "run", "--config", str(cfg), "--port", str(port)], stderr=sink)
    streams: list[trio.SocketStream] = []
    try:
        await wait_healthy(port, proc)
        found = re.search(r"limits.max_connections 20000 capped at (\d+): the file-descriptor limit is 400",
                          log_path.read_text())
        assert found, log_path.read_text()
        cap = int(found.group(1))
        assert cap < 400
        # More idle connections than descriptors: without the cap, accept() fails (EMFILE) long
        # before the guard engages and the client below is never served.
        async with trio.open_nursery() as nursery:
            for i in range(450):
                nursery.start_soon(_idle_connection, port, i % 2 == 0, streams)
        with trio.fail_after(10):
            async with HTTPClient.connect(port) as http:
                assert (await http.request("GET", "/healthz")).status == 200
        closed: list[trio.SocketStream] = []
        async with trio.open_nursery() as nursery:
            for stream in streams:
                nursery.start_soon(_closed_by_peer, stream, closed)
        # The gateway never held more than `cap` client connections: the longest idle gave way.
        assert len(closed) >= len(streams) + 1 - cap, (len(closed), cap)
        assert proc.returncode is None
        assert "accept failed" not in log_path.read_text()
    finally:
        for stream in streams:
            await stream.aclose()
        proc.kill()
        await proc.wait()


EMFILE_SCRIPT = """
import errno, logging, os, resource, sys
import trio
sys.path.insert(0, {root!r})
from gateway.app import Gateway
from tests.helpers import config

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
release = sys.argv[1]


async def main():
    gateway = Gateway(config({{"l": {{"command": sys.executable, "args": [{ledger!r}]}}}}), port=0)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(gateway.run)
        # Gateway() raised the soft limit to the hard one; lower it again so exhausting it is quick.
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        held = []
        try:
            while True:
                held.append(os.open(os.devnull, os.O_RDONLY))
        except OSError as exc:
            assert exc.errno == errno.EMFILE, exc
        print("EXHAUSTED", port, len(held), flush=True)
        while not os.path.exists(release):
            await trio.sleep(0.02)
        for fd in held:
            os.close(fd)
        print("RELEASED", flush=True)
        await trio.sleep_forever()


trio.run(main)
"""


async def test_accept_backs_off_on_emfile_with_one_log_line_per_episode(tmp_path: Path) -> None:
    script = tmp_path / "emfile_gateway.py"
    script.write_text(EMFILE_SCRIPT.format(root=str(ROOT), ledger=LEDGER))
    release = tmp_path / "release"
    log_path = tmp_path / "gw.log"
    with log_file(log_path) as sink:
        proc = await trio.lowlevel.open_process([PY, str(script), str(release)], stdout=subprocess.PIPE,
                                                stderr=sink)
    try:
        assert proc.stdout is not None
        out = b""
        with trio.fail_after(20):
            while b"EXHAUSTED" not in out or not out.endswith(b"\n"):
                chunk = await proc.stdout.receive_some(4096)
                assert chunk, log_path.read_text()
                out += chunk
        port = int(out.split()[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)  # the kernel completes it; accept() fails
        async with stream:
            await stream.send_all(raw_request("GET", "/healthz", {}))
            with trio.move_on_after(1) as waited:
                await stream.receive_some(4096)
            assert waited.cancelled_caught, "served while the gateway had no descriptor to accept with"
            release.touch()
            with trio.fail_after(5):
                data = await stream.receive_some(65536)
            assert data.startswith(b"HTTP/1.1 200"), data
        async with HTTPClient.connect(port) as http:  # and new connections are served as usual
            assert (await http.request("GET", "/healthz")).status == 200
    finally:
        proc.kill()
        await proc.wait()
    log = log_path.read_text().splitlines()
    failed = [line for line in log if "accept failed" in line]
    again = [line for line in log if "accepting again" in line]
    assert len(failed) == 1 and "Too many open files" in failed[0], log
    assert len(again) == 1, log
    retries = int(re.search(r"after (\d+) failed accepts", again[0]).group(1))  # type: ignore[union-attr]
    assert retries >= 5, again  # it kept retrying (every 0.1 s) through the second of shortage, quietly


# -- 10. MCP-Protocol-Version ---------------------------------------------------------------------------------

async def test_protocol_version_header_other_supported_is_served_unsupported_is_32022() -> None:
    async with gateway(config(ledger())) as gw, HTTPClient.connect(gw.port) as http:
        session = await http.initialize(version="2025-11-25")
        reply = await http.post("/mcp", call_msg(41, "echo", text="v"), session,
                                {"accept": "application/json", "mcp-protocol-version": "2025-03-26"})
        assert reply.status == 200 and reply.json()["result"]["content"][0]["text"] == "v"
        for request_id in (42, "forty-two"):
            reply = await http.post("/mcp", call_msg(request_id, "echo", text="v"), session,
                                    {"mcp-protocol-version": "1999-01-01"})
            assert reply.status == 400, reply
            error = reply.json()["error"]
            assert reply.json()["id"] == request_id and error["code"] == jsonrpc.UNSUPPORTED_PROTOCOL_VERSION
            assert error["data"]["requested"] == "1999-01-01" and "2025-11-25" in error["data"]["supported"]
            # 2026-07-28 is spoken, statelessly: a request that claims it must carry its envelope
            reply = await http.post("/mcp", call_msg(request_id, "echo", text="v"), session,
                                    {"mcp-protocol-version": "2026-07-28"})
            assert reply.status == 400 and reply.json()["id"] == request_id, reply
            assert reply.json()["error"]["code"] == jsonrpc.INVALID_PARAMS and "_meta" in reply.json()["error"]["message"]

