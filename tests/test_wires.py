"""The same client body over every wire the gateway serves, with the official SDK client.

Streamable HTTP in each of the SDK's modes (legacy handshake, auto, pinned 2026-07-28), the
legacy HTTP+SSE transport, and the stdio front (`mcp-gateway stdio`, launched by the SDK's
stdio client as Claude Desktop launches it). One pipeline behind them all, so one body.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
import trio
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.shared.exceptions import MCPError

from tests.helpers import PY, ROOT, Running, config, running_gateway, sdk_server, time_server

SERVERS = {"time": time_server(), "sdk": sdk_server()}
ROUTES = {"/": ["time", "sdk"], "/team-a": ["time"]}


@pytest.fixture
async def gw() -> AsyncIterator[Running]:
    async with running_gateway(config(SERVERS, routes=ROUTES)) as running:
        yield running


def _stdio_config(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps({"servers": SERVERS, "routes": ROUTES}))
    return path


Opener = Callable[[Running, Path, str], AbstractAsyncContextManager[Client]]


def _http(mode: str) -> Opener:
    def open_(gw: Running, _: Path, route: str) -> AbstractAsyncContextManager[Client]:
        return Client(gw.route_url(route) if route != "/" else gw.url, mode=mode)
    return open_


def _sse(gw: Running, _: Path, route: str) -> AbstractAsyncContextManager[Client]:
    base = "" if route == "/" else route
    return Client(sse_client(f"http://127.0.0.1:{gw.port}{base}/sse"), mode="legacy")


def _stdio(mode: str) -> Opener:
    def open_(_: Running, tmp_path: Path, route: str) -> AbstractAsyncContextManager[Client]:
        exe = str(Path(PY).with_name("mcp-gateway"))
        params = StdioServerParameters(command=exe, args=["stdio", "--config", str(_stdio_config(tmp_path)),
                                                         "--route", route], cwd=str(ROOT))
        return Client(params, mode=mode)
    return open_


WIRES: dict[str, tuple[Opener, str]] = {
    "streamable-http legacy": (_http("legacy"), "2025-11-25"),
    "streamable-http auto": (_http("auto"), "2026-07-28"),
    "streamable-http 2026-07-28": (_http("2026-07-28"), "2026-07-28"),
    "legacy sse": (_sse, "2025-11-25"),
    "stdio legacy": (_stdio("legacy"), "2025-11-25"),
    "stdio auto": (_stdio("auto"), "2026-07-28"),
}


@pytest.mark.parametrize("wire", list(WIRES))
async def test_every_wire_serves_the_same_body(gw: Running, tmp_path: Path, wire: str) -> None:
    opener, version = WIRES[wire]
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    with trio.fail_after(60):
        async with opener(gw, tmp_path, "/") as client:
            assert client.protocol_version == version
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"time__get_current_time", "sdk__add", "sdk__slow"} <= names
            added = await client.call_tool("sdk__add", {"a": 2, "b": 40})
            assert added.structured_content == {"result": 42}
            now = await client.call_tool("time__get_current_time", {"timezone": "Asia/Tokyo"})
            assert json.loads(now.content[0].text)["timezone"] == "Asia/Tokyo"
            slow = await client.call_tool("sdk__slow", {"steps": 3, "delay": 0.01}, progress_callback=on_progress)
            assert "3" in slow.content[0].text and progress == [1, 2, 3]
            prompt = await client.get_prompt("sdk__greet", {"name": "Ada"})
            assert "Hello, Ada!" in prompt.messages[0].content.text  # type: ignore[union-attr]
            read = await client.read_resource("memo://readme")
            assert isinstance(read.contents[0], types.TextResourceContents) and read.contents[0].text
            with pytest.raises(MCPError) as info:
                await client.call_tool("nope__nothing", {})
            assert info.value.error.code == -32602 and "nope__nothing" in info.value.error.message
        async with opener(gw, tmp_path, "/team-a") as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert names == {"time__get_current_time", "time__convert_time"}


async def test_legacy_sse_answers_many_calls_at_once_each_after_its_own_progress(gw: Running, tmp_path: Path) -> None:
    """SSE answers go out from the task that has them when the stream's writer is idle, and behind
    it otherwise: thirty concurrent calls through the SDK's SSE client all get their own result,
    each after its progress notifications."""
    async with _sse(gw, tmp_path, "/") as client:
        results: dict[int, Any] = {}
        progress: dict[int, list[float]] = {}

        async def one(i: int) -> None:
            if i % 3 == 0:
                progress[i] = []

                async def on_progress(value: float, total: float | None, message: str | None) -> None:
                    progress[i].append(value)

                results[i] = await client.call_tool("sdk__slow", {"steps": 3, "delay": 0.001},
                                                    progress_callback=on_progress)
            else:
                results[i] = await client.call_tool("sdk__add", {"a": i, "b": 1000})

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for i in range(30):
                    nursery.start_soon(one, i)
        for i, result in results.items():
            if i % 3 == 0:
                assert "3" in result.content[0].text and progress[i] == [1, 2, 3]
            else:
                assert result.structured_content == {"result": i + 1000}
        assert len(results) == 30


async def test_sessions_of_connection_wires_end_with_their_connection(gw: Running, tmp_path: Path) -> None:
    async with _sse(gw, tmp_path, "/") as client:
        await client.list_tools()
        assert len(gw.gateway.sessions) == 1
    with trio.fail_after(5):
        while len(gw.gateway.sessions):  # the stream's close is noticed by the HTTP watcher
            await trio.sleep(0.02)


async def test_stdio_front_logs_on_stderr_only_and_stops_its_servers_when_stdin_closes(tmp_path: Path) -> None:
    exe = str(Path(PY).with_name("mcp-gateway"))
    cfg = _stdio_config(tmp_path)
    init = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}})
    call = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                       "params": {"name": "sdk__add", "arguments": {"a": 1, "b": 2}}})
    with trio.fail_after(30):
        result = await trio.run_process([exe, "stdio", "--config", str(cfg), "--log-level", "info"],
                                        stdin=(init + "\n" + call + "\n").encode(), capture_stdout=True,
                                        capture_stderr=True, cwd=str(ROOT), check=False)
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [1, 2]  # stdout: the protocol, nothing else
    assert json.loads(lines[1])["result"]["structuredContent"] == {"result": 3}
    assert b"session" in result.stderr and b"initialized" in result.stderr  # the logs went to stderr


async def test_stdio_front_refuses_an_unknown_route(tmp_path: Path) -> None:
    exe = str(Path(PY).with_name("mcp-gateway"))
    result = await trio.run_process([exe, "stdio", "--config", str(_stdio_config(tmp_path)), "--route", "/nope"],
                                    stdin=b"", capture_stdout=True, capture_stderr=True, check=False)
    assert result.returncode == 2 and b"no route '/nope'" in result.stderr and result.stdout == b""


def _modern(method: str, request_id: int = 1, **params: Any) -> dict[str, Any]:
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {**params, "_meta": meta}}


def _modern_headers(method: str, name: str | None = None) -> dict[str, str]:
    headers = {"mcp-protocol-version": "2026-07-28", "mcp-method": method, "accept": "application/json"}
    if name is not None:
        headers["mcp-name"] = name
    return headers


async def test_modern_requests_are_stateless_and_checked_against_their_headers(gw: Running) -> None:
    from tests.helpers import HTTPClient

    async with HTTPClient.connect(gw.port) as http:
        call = _modern("tools/call", name="sdk__add", arguments={"a": 1, "b": 2})
        reply = await http.post("/mcp", call, headers=_modern_headers("tools/call", "sdk__add"))
        assert reply.status == 200 and "mcp-session-id" not in reply.headers
        result = reply.json()["result"]
        assert result["resultType"] == "complete" and result["structuredContent"] == {"result": 3}
        assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "mcp-gateway"
        listed = (await http.post("/mcp", _modern("tools/list"), headers=_modern_headers("tools/list"))).json()
        assert listed["result"]["ttlMs"] == 0 and listed["result"]["cacheScope"] == "private"
        # the headers must say what the body says: the gateway rewrites the body, so it checks
        for headers in (_modern_headers("tools/call", "sdk__echo"), _modern_headers("tools/list", "sdk__add"),
                        {**_modern_headers("tools/call", "sdk__add"), "mcp-protocol-version": "2099-01-01"}):
            reply = await http.post("/mcp", call, headers=headers)
            assert reply.status == 400 and reply.json()["error"]["code"] == -32020, (headers, reply)
        base64_name = "=?base64?c2RrX19hZGQ=?="  # "sdk__add", sentinel-encoded as clients may send it
        assert (await http.post("/mcp", call, headers=_modern_headers("tools/call", base64_name))).status == 200
        # era rules: no initialize, no ping, no GET stream; notifications accepted and dropped
        for method in ("ping", "logging/setLevel", "resources/subscribe"):
            reply = await http.post("/mcp", _modern(method), headers=_modern_headers(method))
            assert reply.status == 404 and reply.json()["error"]["code"] == -32601, method
        note = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}
        assert (await http.post("/mcp", note, headers=_modern_headers("notifications/cancelled"))).status == 202
        get = await http.request("GET", "/mcp", headers={"accept": "text/event-stream",
                                                         "mcp-protocol-version": "2026-07-28"})
        assert get.status == 405 and get.headers["allow"] == "POST"
        unknown = await http.post("/mcp", _modern("tools/call", name="nope__x", arguments={}),
                                  headers=_modern_headers("tools/call", "nope__x"))
        assert unknown.status == 400 and unknown.json()["error"]["code"] == -32602


async def test_modern_progress_streams_and_a_closed_stream_cancels_the_call(gw: Running) -> None:
    from tests.helpers import HTTPClient

    async with HTTPClient.connect(gw.port) as http:
        call = _modern("tools/call", name="sdk__slow", arguments={"steps": 2, "delay": 0.01})
        call["params"]["_meta"]["progressToken"] = "t"
        reply = await http.post("/mcp", call, headers={**_modern_headers("tools/call", "sdk__slow"),
                                                       "accept": "application/json, text/event-stream"})
        assert reply.headers["content-type"] == "text/event-stream"
        body = reply.body.decode()
        assert "id:" not in body  # nothing to resume without a session: no event ids
        messages = reply.sse_messages()
        assert [m["params"]["progressToken"] for m in messages[:-1]] == ["t", "t"]
        assert messages[-1]["result"]["resultType"] == "complete"


async def test_subscriptions_listen_streams_the_list_changes_asked_for(gw: Running) -> None:
    body = json.dumps(_modern("subscriptions/listen", request_id=7,
                              notifications={"toolsListChanged": True, "promptsListChanged": False})).encode()
    stream = await trio.open_tcp_stream("127.0.0.1", gw.port)
    async with stream:
        await stream.send_all(
            b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"accept: application/json, text/event-stream\r\nmcp-protocol-version: 2026-07-28\r\n"
            b"mcp-method: subscriptions/listen\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
        buf = b""
        with trio.fail_after(10):
            while b"acknowledged" not in buf:
                buf += await stream.receive_some(65536)
            assert b"text/event-stream" in buf and b'"toolsListChanged":true' in buf
            assert b"promptsListChanged" not in buf.split(b"acknowledged", 1)[1]
            gw.gateway._catalog_changed("sdk")  # as when an upstream's list changes
            route = gw.gateway.routes["/"]
            route.servers["sdk"].catalog.tools = route.servers["sdk"].catalog.tools[:1]  # type: ignore[union-attr]
            gw.gateway._catalog_changed("sdk")
            while b"tools/list_changed" not in buf:
                buf += await stream.receive_some(65536)
        event = [line for line in buf.split(b"\n") if b"tools/list_changed" in line][0]
        note = json.loads(event.removeprefix(b"data: "))
        assert note["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == 7
    with trio.fail_after(5):
        while gw.gateway.routes["/"].listeners:
            await trio.sleep(0.02)  # closing the stream ended the subscription


async def test_a_resumable_post_stream_survives_a_disconnect_and_resumes_with_last_event_id(gw: Running) -> None:
    from tests.helpers import ACCEPT_BOTH, HTTPClient

    async with HTTPClient.connect(gw.port) as http:
        session = await http.initialize()
    call = {"jsonrpc": "2.0", "id": 5, "method": "tools/call",
            "params": {"name": "sdk__slow", "arguments": {"steps": 4, "delay": 0.3}, "_meta": {"progressToken": 1}}}
    body = json.dumps(call).encode()
    stream = await trio.open_tcp_stream("127.0.0.1", gw.port)
    await stream.send_all(
        b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\naccept: " + ACCEPT_BOTH.encode()
        + b"\r\nmcp-session-id: " + session.encode() + b"\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
    buf = b""
    with trio.fail_after(10):
        while b"progress" not in buf:
            buf += await stream.receive_some(65536)
    ids = [line[4:] for line in buf.split(b"\n") if line.startswith(b"id: ")]
    assert ids[0].endswith(b"-0") and b"retry: 1000" in buf  # the priming event
    last = ids[-1]
    await stream.aclose()  # the client loses the connection mid-call
    async with HTTPClient.connect(gw.port) as http:
        with trio.fail_after(15):
            resumed = await http.request("GET", "/mcp", headers={
                "mcp-session-id": session, "accept": "text/event-stream", "last-event-id": last.decode()})
    messages = resumed.sse_messages()
    assert messages[-1]["id"] == 5 and "4" in messages[-1]["result"]["content"][0]["text"]  # the call went on
    seen = [m["params"]["progress"] for m in messages if m.get("method") == "notifications/progress"]
    assert seen and seen[-1] == 4 and len(seen) < 4  # only what followed the last event received


async def test_one_get_stream_per_session_and_per_address_limits_hold_streams_in_check() -> None:
    from tests.helpers import HTTPClient

    cfg = config({"sdk": sdk_server()}, limits={"max_connections_per_peer": 3})
    async with running_gateway(cfg) as gw:
        async with HTTPClient.connect(gw.port) as http:
            session = await http.initialize()
        get = (b"GET /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\nmcp-session-id: "
               + session.encode() + b"\r\n\r\n")
        first = await trio.open_tcp_stream("127.0.0.1", gw.port)
        await first.send_all(get)
        await _read_until(first, b"stream open")
        second = await trio.open_tcp_stream("127.0.0.1", gw.port)
        await second.send_all(get)
        await _read_until(second, b"stream open")
        with trio.fail_after(5):  # the newer GET took the stream over: the first one ends at once
            while await first.receive_some(4096):
                pass
        # Three connections from one address, none of them idle (GET streams of three sessions):
        # a fourth is refused, with the reason.
        streams = [second]
        for _ in range(2):
            async with HTTPClient.connect(gw.port) as http:
                other = await http.initialize()
            stream = await trio.open_tcp_stream("127.0.0.1", gw.port)
            await stream.send_all(get.replace(session.encode(), other.encode()))
            await _read_until(stream, b"stream open")
            streams.append(stream)
        fourth = await trio.open_tcp_stream("127.0.0.1", gw.port)
        with trio.fail_after(5):
            refused = await fourth.receive_some(4096)
        assert refused.startswith(b"HTTP/1.1 503") and b"Too many connections from this address" in refused
        assert gw.gateway.http.statistics().connections == 3
        for stream in (first, fourth, *streams):
            await stream.aclose()


async def test_a_client_that_stops_reading_a_large_answer_is_dropped_after_the_write_timeout() -> None:
    from tests.helpers import HTTPClient

    cfg = config({"sdk": sdk_server()}, timeouts={"write": "1s"}, limits={"max_body": "16m"})
    async with running_gateway(cfg) as gw:
        async with HTTPClient.connect(gw.port) as http:
            session = await http.initialize()
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                           "params": {"name": "sdk__echo", "arguments": {"text": "x" * 8_000_000}}}).encode()
        stream = await trio.open_tcp_stream("127.0.0.1", gw.port)
        stream.socket.setsockopt(__import__("socket").SOL_SOCKET, __import__("socket").SO_RCVBUF, 4096)
        await stream.send_all(b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                              b"accept: application/json\r\nmcp-session-id: " + session.encode()
                              + b"\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
        with trio.fail_after(20):  # it never reads: the 8 MB answer cannot go out
            while gw.gateway.http.statistics().connections:
                await trio.sleep(0.1)
        await stream.aclose()


async def _read_until(stream: trio.SocketStream, marker: bytes) -> bytes:
    buf = b""
    with trio.fail_after(5):
        while marker not in buf:
            data = await stream.receive_some(4096)
            assert data, buf
            buf += data
    return buf


async def test_modern_mcp_param_headers_are_checked_against_the_arguments() -> None:
    from tests.helpers import HTTPClient
    from tests.test_hostile_upstream import hostile

    async with running_gateway(config({"w": hostile()})) as gw, HTTPClient.connect(gw.port) as http:
        call = _modern("tools/call", name="w__weather", arguments={"region": "us-west1", "city": "Zürich"})
        headers = _modern_headers("tools/call", "w__weather")
        ok = await http.post("/mcp", call, headers={**headers, "mcp-param-region": "us-west1"})
        assert ok.status == 200 and "sunny in Zürich (us-west1)" in ok.json()["result"]["content"][0]["text"]
        for bad in ({}, {"mcp-param-region": "eu-north1"}):  # missing, or not what the body says
            reply = await http.post("/mcp", call, headers={**headers, **bad})
            assert reply.status == 400 and reply.json()["error"]["code"] == -32020, bad
            assert "Mcp-Param-region" in reply.json()["error"]["message"]
        # tools without annotations never decode their arguments, and ignore such headers
        echo = _modern("tools/call", name="w__echo", arguments={"text": "hi"})
        reply = await http.post("/mcp", echo, headers={**_modern_headers("tools/call", "w__echo"),
                                                       "mcp-param-region": "anything"})
        assert reply.status == 200


async def test_legacy_sse_calls_running_at_shutdown_are_answered_then_the_stream_ends() -> None:
    cfg = config({"sdk": sdk_server()}, timeouts={"shutdown_grace": "500ms"})
    async with running_gateway(cfg) as gw:
        stream = await trio.open_tcp_stream("127.0.0.1", gw.port)
        await stream.send_all(b"GET /sse HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n\r\n")
        head = await _read_until(stream, b"sessionId=")
        endpoint = head.split(b"data: ", 1)[1].split(b"\n", 1)[0].decode()

        async def post(message: dict[str, Any]) -> int:
            from tests.helpers import HTTPClient

            async with HTTPClient.connect(gw.port) as http:
                return (await http.post(endpoint, message)).status

        assert await post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}) == 202
        await _read_until(stream, b'"id":1')
        assert await post({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                           "params": {"name": "sdk__sleep", "arguments": {"seconds": 30}}}) == 202
        while not any(s.inflight for s in gw.gateway.sessions):
            await trio.sleep(0.01)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(gw.gateway.shutdown)
                rest = await _read_until(stream, b'"id":2')
        answer = json.loads(rest.split(b"data: ")[-1].split(b"\n", 1)[0])
        assert answer["error"]["code"] == -32004 and "shutting down" in answer["error"]["message"]
        await stream.aclose()
