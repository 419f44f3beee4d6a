"""Remote upstream servers (``url:``) over real sockets: the official SDK's servers behind the gateway.

The upstreams are tests/servers/http_server.py: an SDK ``MCPServer`` served by uvicorn on 127.0.0.1
with the SDK's own Streamable HTTP or SSE app (both eras: it answers ``server/discover`` for
2026-07-28 and ``initialize`` for the handshake; ``--legacy-only`` makes it refuse 2026-07-28 as an
older server does). The clients are the official SDK client through the gateway.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
import pytest
import trio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from gateway.cli.describe import describe
from gateway.config import ConfigError, parse_config
from gateway.upstream.http_peer import GuardedBackend, HostRefused, HttpPeer
from gateway.upstream.sse_decode import EventTooLarge, SSEDecoder
from gateway.upstream.ssrf import HostGuard
from tests.helpers import PY, ROOT, Running, config, free_port, running_gateway

SERVER = str(ROOT / "tests" / "servers" / "http_server.py")
SECRET = "upstream-secret-3f9a"


class Remote:
    """One test server process; ``records()`` are the HTTP requests it got (with ``--record``)."""

    def __init__(self, *args: str, port: int = 0, record: Path | None = None) -> None:
        self.args = list(args)
        self.port = port
        self.record = record
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> Remote:
        extra = ["--record", str(self.record)] if self.record else []
        self.process = subprocess.Popen([PY, SERVER, *self.args, *extra, "--port", str(self.port)],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("LISTENING"), f"the test server did not start: {line!r}"
        self.port = int(line.split()[1])
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def url(self, path: str = "/mcp", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def records(self) -> list[dict[str, Any]]:
        assert self.record is not None
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]


@asynccontextmanager
async def remote(*args: str, **kw: Any) -> AsyncIterator[Remote]:
    server = await trio.to_thread.run_sync(Remote(*args, **kw).start)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def modern() -> Iterator[Remote]:
    """An SDK server as it is: it speaks 2026-07-28 (and the handshake)."""
    server = Remote().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def legacy() -> Iterator[Remote]:
    """An SDK server that refuses 2026-07-28, so the gateway uses the handshake and a session."""
    server = Remote("--legacy-only").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sse() -> Iterator[Remote]:
    """An SDK server on the legacy HTTP+SSE transport only (POST to /sse gets 405)."""
    server = Remote("--transport", "sse").start()
    yield server
    server.stop()


def far(url: str, **extra: Any) -> dict[str, Any]:
    return {"far": {"url": url, "restart_backoff": 0.1, "restart_backoff_max": 0.5, **extra}}


def peer(gw: Running) -> HttpPeer:
    conn = gw.gateway.supervisors["far"]._conn  # type: ignore[attr-defined]
    assert isinstance(conn, HttpPeer)
    return conn


async def sampling(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    asked = params.messages[0].content.text  # type: ignore[union-attr]
    return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text=f"echo: {asked}"),
                                     model="test-model", stop_reason="endTurn")


def text(result: types.CallToolResult) -> str:
    content = result.content[0]
    assert isinstance(content, types.TextContent)
    return content.text


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


# -- the wires -------------------------------------------------------------------------------------

WIRES = {
    # name: (fixture, path, transport, the peer's mode, the version it speaks)
    "streamable-http, 2026-07-28": ("modern", "/mcp", "streamable-http", "modern", "2026-07-28"),
    "streamable-http, handshake": ("legacy", "/mcp", "streamable-http", "streamable", "2025-11-25"),
    "sse": ("sse", "/sse", "sse", "sse", "2025-11-25"),
    "auto picks sse": ("sse", "/sse", "auto", "sse", "2025-11-25"),
    "auto picks 2026-07-28": ("modern", "/mcp", "auto", "modern", "2026-07-28"),
}


@pytest.mark.parametrize("wire", list(WIRES))
async def test_tools_through_the_gateway_on_every_wire(request: pytest.FixtureRequest, wire: str) -> None:
    fixture, path, transport, mode, version = WIRES[wire]
    server: Remote = request.getfixturevalue(fixture)
    with trio.fail_after(20):
        async with running_gateway(config(far(server.url(path), transport=transport))) as gw, \
                Client(gw.url, mode="legacy") as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"far__add", "far__echo", "far__sleep"} <= names
            added = await client.call_tool("far__add", {"a": 2, "b": 40})
            assert added.structured_content == {"result": 42}
            echoed = await client.call_tool("far__echo", {"text": "héllo ✓"})
            assert text(echoed) == "héllo ✓"
            conn = peer(gw)
            assert (conn.mode, conn.version) == (mode, version)
            assert (conn.session_id is not None) == (mode == "streamable")


async def test_a_2026_upstream_gets_the_envelope_and_headers_and_no_initialize(tmp_path: Path) -> None:
    async with remote(record=tmp_path / "rec") as server:
        cfg = config(far(server.url(), ping_interval=0.2))
        with trio.fail_after(20):
            async with running_gateway(cfg) as gw, Client(gw.url, mode="legacy") as client:
                await client.call_tool("far__add", {"a": 1, "b": 2})
                await client.call_tool("far__echo", {"text": "x"})
                # Liveness: no ping in 2026-07-28: the watchdog's pings are server/discover requests.
                await wait_for(lambda: sum(r["headers"].get("mcp-method") == "server/discover"
                                           for r in server.records()) >= 3)
                assert peer(gw).closed.is_set() is False
        records = server.records()
    posts = [r["headers"] for r in records if r["method"] == "POST"]
    assert all(h["mcp-protocol-version"] == "2026-07-28" and "mcp-session-id" not in h for h in posts)
    methods = [h["mcp-method"] for h in posts]
    assert "initialize" not in methods and "ping" not in methods and methods[0] == "server/discover"
    calls = [h for h in posts if h["mcp-method"] == "tools/call"]
    assert [h["mcp-name"] for h in calls] == ["add", "echo"]
    assert not [r for r in records if r["method"] in ("GET", "DELETE")]  # stateless: no stream, no session


async def test_a_2026_upstream_gets_the_mcp_param_headers_its_tools_declare(tmp_path: Path) -> None:
    async with remote(record=tmp_path / "rec") as server:
        with trio.fail_after(20):
            async with running_gateway(config(far(server.url()))) as gw, Client(gw.url, mode="legacy") as client:
                result = await client.call_tool("far__region", {"region": "eu-west ✓"})
                assert not result.is_error and text(result) == "region eu-west ✓"
        calls = [r["headers"] for r in server.records() if r["headers"].get("mcp-name") == "region"]
    assert [h.get("mcp-param-region") for h in calls] == ["=?base64?ZXUtd2VzdCDinJM=?="]


@pytest.mark.parametrize("client_mode", ["legacy", "2026-07-28"])
async def test_input_required_from_a_2026_upstream_is_answered_by_the_calling_client(
        modern: Remote, client_mode: str) -> None:
    asked: list[str] = []

    async def answer(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        asked.append(params.messages[0].content.text)  # type: ignore[union-attr]
        return await sampling(context, params)

    with trio.fail_after(20):
        async with running_gateway(config(far(modern.url()))) as gw, \
                Client(gw.url, mode=client_mode, sampling_callback=answer) as client:
            result = await client.call_tool("far__clarify", {"prompt": "which one?"})
            assert not result.is_error, text(result)
            assert text(result) == "clarified: echo: which one?"
            assert asked == ["which one?"]
            assert peer(gw).mode == "modern"


# -- sessions: forgotten, deleted, one per client session --------------------------------------------


async def test_a_server_that_restarts_and_forgets_our_session_gets_a_new_one(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    caplog.set_level(logging.INFO, "mcp_gateway")
    async with remote("--legacy-only", "--no-get", port=port) as server:
        with trio.fail_after(30):
            async with running_gateway(config(far(server.url()))) as gw, Client(gw.url, mode="legacy") as client:
                first = text(await client.call_tool("far__whoami", {}))
                session = peer(gw).session_id
                server.stop()
                await trio.to_thread.run_sync(server.start)  # same port, a new process: our session is unknown
                second = await client.call_tool("far__whoami", {})
                assert not second.is_error and text(second) != first
                conn = peer(gw)
                assert conn.reinitialized == 1 and conn.session_id not in (None, session)
                assert gw.gateway.supervisors["far"].restarts == 0  # the same peer: no restart was needed
                assert not (await client.call_tool("far__add", {"a": 1, "b": 1})).is_error
    assert "forgot our session (HTTP 404 for tools/call)" in caplog.text


async def test_sessions_are_deleted_and_a_session_lifecycle_gets_one_per_client(tmp_path: Path) -> None:
    async with remote("--legacy-only", record=tmp_path / "rec") as server:
        cfg = config(far(server.url(), lifecycle="session"))
        with trio.fail_after(30):
            async with running_gateway(cfg) as gw:
                async with Client(gw.url, mode="legacy") as a, Client(gw.url, mode="legacy") as b:
                    mine = text(await a.call_tool("far__session", {}))
                    theirs = text(await b.call_tool("far__session", {}))
                    assert mine and theirs and mine != theirs
                # Each client's DELETE ends its gateway session, whose instance DELETEs its upstream session.
                await wait_for(lambda: {mine, theirs} <= {r["headers"].get("mcp-session-id")
                                                          for r in server.records() if r["method"] == "DELETE"})
            deleted = [r["headers"]["mcp-session-id"] for r in server.records() if r["method"] == "DELETE"]
    assert len(deleted) == len(set(deleted)) == 3  # the catalog's instance, then one per client session


async def test_the_shared_session_is_deleted_at_shutdown(tmp_path: Path) -> None:
    async with remote("--legacy-only", record=tmp_path / "rec") as server:
        with trio.fail_after(20):
            async with running_gateway(config(far(server.url()))) as gw, Client(gw.url, mode="legacy") as client:
                session = text(await client.call_tool("far__session", {}))
        deletes = [r for r in server.records() if r["method"] == "DELETE"]
    assert [r["headers"]["mcp-session-id"] for r in deletes] == [session]


async def test_a_calls_stream_closed_before_its_answer_is_resumed(tmp_path: Path) -> None:
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async with remote("--legacy-only", "--resumable", record=tmp_path / "rec") as server:
        with trio.fail_after(20):
            async with running_gateway(config(far(server.url()))) as gw, Client(gw.url, mode="legacy") as client:
                result = await client.call_tool("far__hop", {}, progress_callback=on_progress)
                assert text(result) == "landed" and progress == [1]
        resumed = [r for r in server.records() if r["method"] == "GET" and "last-event-id" in r["headers"]]
    assert len(resumed) == 1


@pytest.mark.parametrize("fixture", ["legacy", "modern"])
async def test_progress_and_log_messages_on_a_calls_stream_reach_its_client(request: pytest.FixtureRequest,
                                                                            fixture: str) -> None:
    server: Remote = request.getfixturevalue(fixture)
    progress: list[float] = []
    logs: list[Any] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(params.data)

    with trio.fail_after(20):
        async with running_gateway(config(far(server.url()))) as gw, \
                Client(gw.url, mode="legacy", logging_callback=on_log) as client:
            result = await client.call_tool("far__hop", {}, progress_callback=on_progress)
            assert text(result) == "landed" and progress == [1] and logs == ["hopping"]
            assert peer(gw).mode == ("modern" if fixture == "modern" else "streamable")


# -- timeouts and bounds ---------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["legacy", "modern"])
async def test_a_slow_call_times_out_and_the_upstream_is_told(request: pytest.FixtureRequest, fixture: str) -> None:
    server: Remote = request.getfixturevalue(fixture)
    tag = f"slow-{fixture}"
    with trio.fail_after(20):
        async with running_gateway(config(far(server.url(), call_timeout=0.5))) as gw, \
                Client(gw.url, mode="legacy") as client:
            with pytest.raises(MCPError) as info:
                await client.call_tool("far__sleep", {"seconds": 30, "tag": tag})
            assert info.value.error.code == -32001 and "within 0.5s" in info.value.error.message

            def cancelled() -> list[str]:
                return list(json.loads(text(ledger))["cancelled"])

            # Handshake era: notifications/cancelled; 2026-07-28: the call's stream is closed.
            for _ in range(100):
                ledger = await client.call_tool("far__ledger", {})
                if tag in cancelled():
                    break
                await trio.sleep(0.05)
            assert tag in cancelled()
            assert not peer(gw).closed.is_set()


@pytest.mark.parametrize("fixture", ["legacy", "modern"])
async def test_an_answer_over_max_message_ends_that_call_only(request: pytest.FixtureRequest, fixture: str) -> None:
    # legacy: an SSE event too large; modern: a JSON body whose Content-Length is too large
    await _over_max_message(request.getfixturevalue(fixture))


async def test_an_unsized_answer_over_max_message_is_counted_as_it_arrives() -> None:
    async with remote("--chunked") as server:  # JSON without Content-Length
        await _over_max_message(server)


async def _over_max_message(server: Remote) -> None:
    cfg = config(far(server.url()), limits={"max_message": "1m"})
    with trio.fail_after(20):
        async with running_gateway(cfg) as gw, Client(gw.url, mode="legacy") as client:
            with pytest.raises(MCPError) as info:
                await client.call_tool("far__huge", {"size": 3_000_000})
            assert info.value.error.code == -32003
            assert "larger than 1048576 bytes (limits.max_message)" in info.value.error.message
            small = await client.call_tool("far__huge", {"size": 1000})  # the same peer serves on
            assert text(small) == "x" * 1000
            assert gw.gateway.supervisors["far"].restarts == 0


async def test_an_sse_event_over_max_message_ends_the_sse_session_and_the_next_call_works(sse: Remote) -> None:
    cfg = config(far(sse.url("/sse"), transport="sse"), limits={"max_message": "1m"})
    with trio.fail_after(20):
        async with running_gateway(cfg) as gw, Client(gw.url, mode="legacy") as client:
            with pytest.raises(MCPError) as info:
                await client.call_tool("far__huge", {"size": 3_000_000})
            assert info.value.error.code == -32000 and "larger than 1048576 bytes" in info.value.error.message
            added = await client.call_tool("far__add", {"a": 1, "b": 2})  # after the restart (backoff 0.1s)
            assert added.structured_content == {"result": 3}
            assert gw.gateway.supervisors["far"].restarts == 1


async def test_redirects_are_refused_naming_the_host(tmp_path: Path) -> None:
    async with remote("--redirect", "evil.example:8443") as server:
        with trio.fail_after(20):
            async with running_gateway(config(far(server.url()))) as gw, Client(gw.url, mode="legacy") as client:
                backend = gw.gateway.supervisors["far"]
                assert backend.state == "failed"
                assert "redirect (HTTP 307) to host evil.example; redirects are refused" in (backend.last_error or "")
                with pytest.raises(MCPError) as info:
                    await client.call_tool("far__add", {"a": 1, "b": 2})
                assert info.value.error.code == -32602  # not in the catalog: the server never started


async def test_an_sse_endpoint_on_another_origin_is_refused(tmp_path: Path) -> None:
    async with remote("--transport", "sse", "--foreign-endpoint") as server:
        with trio.fail_after(20):
            async with running_gateway(config(far(server.url("/sse"), transport="sse"))) as gw:
                backend = gw.gateway.supervisors["far"]
                assert backend.state == "failed"
                assert "named an endpoint on another origin (evil.example); refused" in (backend.last_error or "")


async def test_an_unreachable_server_fails_fast_and_is_reconnected_with_backoff() -> None:
    port = free_port()
    with trio.fail_after(30):
        async with running_gateway(config(far(f"http://127.0.0.1:{port}/mcp"))) as gw, \
                Client(gw.url, mode="legacy") as client:
            backend = gw.gateway.supervisors["far"]
            assert backend.state == "failed" and f"unreachable at http://127.0.0.1:{port}/mcp" in (
                backend.last_error or "")
            async with remote("--legacy-only", port=port):
                await wait_for(lambda: backend.state == "ready", timeout=10)
                await wait_for(lambda: "far__add" in gw.gateway.routes["/"].catalog.tool_index)
                added = await client.call_tool("far__add", {"a": 20, "b": 22})
                assert added.structured_content == {"result": 42}


# -- a hostile upstream: scripted answers over a real socket -------------------------------------------

Script = dict[str, tuple[int, list[tuple[bytes, bytes]], bytes]]  # tool name -> (status, headers, body)


@asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[str]:
    """A 2026-07-28 server of one tool per script entry, answering each call as scripted."""
    import h11

    def answer(message: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        method, params = message["method"], message.get("params") or {}
        if method == "server/discover":
            result: Any = {"supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}},
                           "resultType": "complete", "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "bad"}}}
        elif method == "tools/list":
            result = {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in script]}
        else:
            status, headers, body = script[params["name"]]
            return status, headers, body.replace(b"ID", json.dumps(message["id"]).encode())
        return 200, [(b"content-type", b"application/json")], json.dumps(
            {"jsonrpc": "2.0", "id": message["id"], "result": result}).encode()

    async def serve(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return
                conn.receive_data(data)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                status, headers, out = answer(json.loads(body))
                await stream.send_all(conn.send(h11.Response(status_code=status, headers=[
                    *headers, (b"content-length", str(len(out)).encode()), (b"connection", b"close")])) or b"")
                await stream.send_all((conn.send(h11.Data(data=out)) or b"") + (conn.send(h11.EndOfMessage()) or b""))
                return
            elif isinstance(event, h11.ConnectionClosed):
                return

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        yield f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/mcp"
        nursery.cancel_scope.cancel()


JSON = [(b"content-type", b"application/json")]
ASK = json.dumps({"resultType": "input_required", "inputRequests": {"q": {
    "method": "sampling/createMessage", "params": {"maxTokens": 5, "messages": [
        {"role": "user", "content": {"type": "text", "text": "again?"}}]}}}}).encode()
HOSTILE: Script = {
    "not_an_object": (200, JSON, b'{"jsonrpc":"2.0","id":ID,"result":{"resultType":"input_required","inputRequests":"x"}}'),
    "asks_forever": (200, JSON, b'{"jsonrpc":"2.0","id":ID,"result":' + ASK + b"}"),
    "gzipped": (200, [*JSON, (b"content-encoding", b"gzip")], b'{"jsonrpc":"2.0","id":ID,"result":{}}'),
    "accepted": (202, [], b""),
    "unauthorized": (401, [(b"content-type", b"text/plain")], b"who are you"),
    "wrong_id": (200, JSON, b'{"jsonrpc":"2.0","id":999999,"result":{"content":[]}}'),
    "fine": (200, JSON, b'{"jsonrpc":"2.0","id":ID,"result":{"content":[{"type":"text","text":"ok"}]}}'),
}


@pytest.mark.parametrize(("tool", "code", "words"), [
    ("not_an_object", -32003, "sent invalid inputRequests (not an object)"),
    ("asks_forever", -32003, "still asked for input after 10 rounds"),
    ("gzipped", -32003, "sent a gzip-encoded body, which was not asked for"),
    ("accepted", -32003, "answered tools/call with 202 Accepted and no answer"),
    ("unauthorized", -32000, "answered tools/call with HTTP 401 Unauthorized (check its bearer and headers)"),
    ("wrong_id", -32003, "answered tools/call with HTTP 200 and no JSON-RPC answer"),
])
async def test_a_hostile_upstreams_answers_end_that_call_with_a_clear_error(tool: str, code: int, words: str) -> None:
    with trio.fail_after(20):
        async with scripted(HOSTILE) as url, running_gateway(config(far(url))) as gw, \
                Client(gw.url, mode="legacy", sampling_callback=sampling) as client:
            with pytest.raises(MCPError) as info:
                await client.call_tool(f"far__{tool}", {})
            assert info.value.error.code == code and words in info.value.error.message, info.value.error.message
            assert text(await client.call_tool("far__fine", {})) == "ok"  # the same peer serves on
            assert gw.gateway.supervisors["far"].restarts == 0


async def test_a_wedged_server_is_found_by_liveness_and_restarted() -> None:
    # SIGSTOP: the kernel still accepts connections, nothing answers (a wedged server, not a dead one).
    async with remote("--legacy-only") as server:
        cfg = config(far(server.url(), ping_interval=0.2, ping_timeout=0.3, start_timeout=1))
        with trio.fail_after(30):
            async with running_gateway(cfg) as gw, Client(gw.url, mode="legacy") as client:
                backend = gw.gateway.supervisors["far"]
                first = peer(gw)
                assert server.process is not None
                server.process.send_signal(signal.SIGSTOP)
                try:
                    await wait_for(lambda: first.closed.is_set(), timeout=10)
                    assert "is unresponsive: it did not answer a ping within 0.3s" in (first.close_reason or "")
                finally:
                    server.process.send_signal(signal.SIGCONT)
                await wait_for(lambda: backend.state == "ready" and peer(gw) is not first, timeout=15)
                assert backend.restarts >= 1
                added = await client.call_tool("far__add", {"a": 1, "b": 1})
                assert added.structured_content == {"result": 2}


# -- credentials -------------------------------------------------------------------------------------


async def test_only_configured_credentials_reach_the_upstream_never_the_clients(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("GW_REMOTE_TOKEN", SECRET)
    caplog.set_level(logging.DEBUG)
    async with remote("--legacy-only", record=tmp_path / "rec") as server:
        cfg = config(far(server.url(), headers={"X-Team": "a"}, bearer="env:GW_REMOTE_TOKEN"))
        assert SECRET not in describe(cfg) and "X-Team, Authorization (bearer from env)" in describe(cfg)
        client_headers = {"Authorization": "Bearer client-token", "Cookie": "client=cookie",
                          "X-Client-Secret": "client-header"}
        with trio.fail_after(20):
            async with running_gateway(cfg) as gw, httpx2.AsyncClient(headers=client_headers) as http, \
                    Client(streamable_http_client(gw.url, http_client=http), mode="legacy") as client:
                added = await client.call_tool("far__add", {"a": 1, "b": 2})
                assert added.structured_content == {"result": 3}
        records = server.records()
    assert records
    for record in records:
        headers = record["headers"]
        assert headers["authorization"] == f"Bearer {SECRET}" and headers["x-team"] == "a"
        assert headers["user-agent"] == "mcp-gateway/0.1.0"
        assert "cookie" not in headers and "x-client-secret" not in headers
        assert "client-token" not in json.dumps(record) and "client-header" not in json.dumps(record)
    assert SECRET not in caplog.text


# -- the relay over HTTP is exact ----------------------------------------------------------------------


async def test_each_client_answers_its_own_sampling_request_on_a_shared_remote_server(legacy: Remote) -> None:
    seen: dict[str, list[str]] = {"ada": [], "bob": []}

    def sampler(who: str) -> Any:
        async def answer(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
            asked = params.messages[0].content.text  # type: ignore[union-attr]
            seen[who].append(asked)
            return types.CreateMessageResult(role="assistant", model="m", stop_reason="endTurn",
                                             content=types.TextContent(type="text", text=f"{who} answers {asked}"))
        return answer

    results: dict[str, str] = {}
    with trio.fail_after(20):
        async with running_gateway(config(far(legacy.url()))) as gw:
            async def one(who: str) -> None:
                async with Client(gw.url, mode="legacy", sampling_callback=sampler(who)) as client:
                    result = await client.call_tool("far__ask", {"prompt": f"for {who}", "delay": 0.3})
                    results[who] = text(result)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(one, "ada")
                nursery.start_soon(one, "bob")
                await wait_for(lambda: peer(gw).in_flight == 2)  # both calls run at once upstream
            assert peer(gw).mode == "streamable"
    assert results == {"ada": "ada answers for ada", "bob": "bob answers for bob"}
    assert seen == {"ada": ["for ada"], "bob": ["for bob"]}


async def test_what_arrives_on_the_get_stream_reaches_the_gateway(legacy: Remote) -> None:
    async def roots(context: Any) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri="file:///work/project", name="project")])

    with trio.fail_after(20):
        async with running_gateway(config(far(legacy.url()))) as gw, \
                Client(gw.url, mode="legacy", list_roots_callback=roots) as client:
            # roots/list is sent on the session's standalone (GET) stream: the one call in flight owns it
            listed = await client.call_tool("far__roots", {})
            assert json.loads(text(listed)) == ["file:///work/project"]
            # tools/list_changed arrives on the GET stream too: the catalog is refreshed
            await client.call_tool("far__notify_change", {"name": "late_tool"})
            await wait_for(lambda: "far__late_tool" in gw.gateway.routes["/"].catalog.tool_index)


async def test_a_2026_upstreams_list_changes_arrive_on_its_subscription(modern: Remote) -> None:
    with trio.fail_after(20):
        async with running_gateway(config(far(modern.url()))) as gw, Client(gw.url, mode="legacy") as client:
            await client.call_tool("far__notify_change", {"name": "modern_late_tool"})
            await wait_for(lambda: "far__modern_late_tool" in gw.gateway.routes["/"].catalog.tool_index)
            assert peer(gw).mode == "modern" and peer(gw).in_flight == 0  # the stream is not a call


# -- TLS -------------------------------------------------------------------------------------------------


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


async def test_tls_is_verified_and_ca_file_adds_a_ca(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    async with remote("--tls", str(cert), str(key)) as server:
        url = server.url(scheme="https")
        with trio.fail_after(20):
            async with running_gateway(config(far(url))) as gw:
                backend = gw.gateway.supervisors["far"]
                assert backend.state == "failed" and "CERTIFICATE_VERIFY_FAILED" in (backend.last_error or "")
            async with running_gateway(config(far(url, ca_file=str(cert)))) as gw, \
                    Client(gw.url, mode="legacy") as client:
                added = await client.call_tool("far__add", {"a": 2, "b": 2})
                assert added.structured_content == {"result": 4}


# -- the SSRF guard ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "remote_cfg", "expected"), [
    ("http://169.254.169.254/latest/meta-data", {}, "169.254.169.254 is a cloud metadata address"),
    ("http://[fd00:ec2::254]/mcp", {}, "fd00:ec2::254 is a cloud metadata address"),
    ("http://100.100.100.200/mcp", {}, "100.100.100.200 is a cloud metadata address"),
    ("http://metadata.google.internal/mcp", {}, "metadata.google.internal is a cloud metadata host"),
    ("http://169.254.10.1/mcp", {}, "169.254.10.1 is link-local"),
    ("http://[fe80::1]/mcp", {}, "fe80::1 is link-local"),
    ("http://[::ffff:169.254.169.254]/mcp", {}, "::ffff:a9fe:a9fe is a cloud metadata address"),
    ("http://0.0.0.0:8080/mcp", {}, "0.0.0.0 is not a unicast address"),
    ("http://127.0.0.1:9/mcp", {"allow_hosts": ["mcp.example.com"]}, "127.0.0.1 is not in remote.allow_hosts"),
    ("http://other.example.com/mcp", {"allow_hosts": ["*.example.org"]}, "other.example.com is not in remote.allow_hosts"),
])
def test_the_ssrf_guard_refuses_in_the_config_what_the_url_decides(url: str, remote_cfg: dict[str, Any],
                                                                   expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"servers": {"far": {"url": url}}, "remote": remote_cfg})
    assert str(info.value) == f"servers.far.url: refused by the SSRF guard: {expected}" + (
        " (refused unless remote.allow_link_local is true)" if "link-local" in expected or "metadata" in expected
        else "")


def test_the_ssrf_guard_config() -> None:
    allowed = parse_config({"servers": {"far": {"url": "http://169.254.169.254/"}},
                            "remote": {"allow_link_local": True}})
    assert "link-local and cloud metadata ALLOWED" in describe(allowed)
    listed = parse_config({"servers": {"far": {"url": "https://api.example.com/mcp"}},
                           "remote": {"allow_hosts": ["*.example.com", "10.0.0.0/8"]}})
    assert "remote servers: hosts *.example.com, 10.0.0.0/8 only, link-local" in describe(listed)
    assert "hosts any (loopback and private addresses allowed), link-local and cloud metadata refused" in describe(
        parse_config({"servers": {"far": {"url": "http://127.0.0.1:1/mcp"}}}))
    for entry, message in [("169.254.0.0/16", "169.254.0.0/16 is link-local; set remote.allow_link_local"),
                           ("not a host!", "'not a host!' is neither a host name, an IP address nor a network")]:
        with pytest.raises(ConfigError) as info:
            parse_config({"servers": {"far": {"url": "http://x.example/"}}, "remote": {"allow_hosts": [entry]}})
        assert str(info.value).startswith(f"remote.allow_hosts[0]: {message}")


def test_the_ssrf_rules() -> None:
    guard = HostGuard.build(["api.example.com", "*.corp.example", "10.0.0.0/8", "2001:db8::/32"])
    a = ipaddress.ip_address
    assert guard.check_resolved("api.example.com", [a("93.184.216.34")]) is None  # listed by name
    assert guard.check_resolved("x.corp.example", [a("192.0.2.1")]) is None
    assert guard.check_resolved("corp.example", [a("192.0.2.1")]) == "corp.example resolves to 192.0.2.1 is not in remote.allow_hosts"
    assert guard.check_resolved("intranet", [a("10.1.2.3"), a("2001:db8::5")]) is None  # by its addresses
    # one address outside refuses the name: an answer is not something to pick from
    assert guard.check_resolved("intranet", [a("10.1.2.3"), a("192.0.2.1")]) is not None
    # a listed name still never reaches metadata or link-local addresses (DNS may say anything)
    assert "cloud metadata" in (guard.check_resolved("api.example.com", [a("169.254.169.254")]) or "")
    assert "link-local" in (guard.check_resolved("api.example.com", [a("fe80::9")]) or "")
    anyone = HostGuard()
    for loopback_or_private in ("127.0.0.1", "::1", "10.0.0.1", "192.168.1.1", "fd12::1", "100.64.0.1"):
        assert anyone.check_address(a(loopback_or_private), listed=True) is None
    for embedded in ("::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1"):
        assert "metadata" in (anyone.check_address(a(embedded), listed=True) or ""), embedded
    assert "unicast" in (anyone.check_address(a("224.0.0.1"), listed=True) or "")
    assert HostGuard(allow_link_local=True).check_address(a("169.254.169.254"), listed=True) is None


async def test_every_connection_is_checked_when_it_is_made(modern: Remote) -> None:
    # The names' addresses are judged when connecting, not only when the config is read.
    refusing = GuardedBackend(HostGuard.build(["10.0.0.0/8"]))
    with pytest.raises(HostRefused) as info:
        await refusing.connect_tcp("localhost", modern.port, timeout=5)
    assert "localhost resolves to" in str(info.value) and "is not in remote.allow_hosts" in str(info.value)
    stream = await GuardedBackend(HostGuard()).connect_tcp("localhost", modern.port, timeout=5)
    await stream.aclose()


async def test_a_name_resolving_outside_allow_hosts_is_a_start_error(tmp_path: Path) -> None:
    async with remote(record=tmp_path / "rec") as server:
        cfg = config(far(f"http://localhost:{server.port}/mcp"), remote={"allow_hosts": ["10.0.0.0/8"]})
        with trio.fail_after(20):
            async with running_gateway(cfg) as gw:
                backend = gw.gateway.supervisors["far"]
                assert backend.state == "failed"
                assert "refused by the SSRF guard: localhost resolves to" in (backend.last_error or "")
        assert server.records() == []  # never connected


# -- config ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("server", "expected"), [
    ({"command": "x", "transport": "sse"}, "servers.s.transport: only applies to remote servers (set url)"),
    ({"image": "i", "bearer": "env:X"}, "servers.s.bearer: only applies to remote servers (set url)"),
    ({"url": "https://x.example", "headers": {"Authorization": "Bearer t"}},
     "servers.s.headers.Authorization: not allowed here: use bearer (a secret reference)"),
    ({"url": "https://x.example", "headers": {"Mcp-Session-Id": "s"}},
     "servers.s.headers.Mcp-Session-Id: not allowed here: the gateway sets it"),
    ({"url": "https://x.example", "headers": {"X-A": "a\nb"}},
     "servers.s.headers.X-A: invalid header value (printable ASCII only; value not shown)"),
    ({"url": "https://x.example", "bearer": "ghp_literal"},
     "servers.s.bearer: must be 'env:NAME' or 'file:/absolute/path' (value not shown)"),
    ({"url": "https://x.example", "ca_file": "ca.pem"}, "servers.s.ca_file: must be an absolute path"),
    ({"url": "https://x.example", "secrets": {"A": "env:A"}},
     "servers.s.secrets: does not apply to remote servers (url) (its credentials are bearer and headers)"),
    ({"url": "https://x.example", "timeout": "60s"}, "servers.s.timeout: unknown key: use call_timeout"),
    ({"url": "https://x.example", "transport": "websocket"}, "servers.s.transport: expected one of"),
])
def test_remote_config_errors(server: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"servers": {"s": server}})
    assert str(info.value).startswith(expected)
    assert "ghp_literal" not in str(info.value)


def test_remote_config_accepts_lifecycles_and_describes_without_credentials() -> None:
    cfg = parse_config({"servers": {"gh": {
        "url": f"https://u:{SECRET}@api.example.com/mcp?key={SECRET}", "transport": "auto", "lifecycle": "session",
        "pool": 1, "headers": {"X-Team": SECRET}, "bearer": "env:GITHUB_TOKEN", "ca_file": "/etc/ca.pem"}}})
    text = describe(cfg)
    assert SECRET not in text
    assert "url: https://api.example.com/mcp" in text and "transport: auto; lifecycle: session, pool 1" in text
    assert "sends: X-Team, Authorization (bearer from env) (header names only)" in text


# -- sans-IO: the SSE decoder -------------------------------------------------------------------------


def test_sse_decoder_splits_lines_anywhere_and_bounds_events() -> None:
    stream = b": keep-alive\r\nid: 7\r\nevent: message\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\ndata: two\r\rdata:x\n\n"
    for size in (1, 2, 3, 5, len(stream)):  # every split, CRLF torn apart included
        decoder = SSEDecoder(1000)
        events = [e for i in range(0, len(stream), size) for e in decoder.feed(stream[i:i + size])]
        assert [(e.event, e.data, e.id) for e in events] == [
            ("message", b'{"a":\n1}', "7"), ("message", b"two", "7"), ("message", b"x", "7")]
        assert decoder.comments == 1
    decoder = SSEDecoder(100)
    decoder.feed(b"data: " + b"x" * 60 + b"\n")
    with pytest.raises(EventTooLarge):
        decoder.feed(b"data: " + b"x" * 60 + b"\n")  # two lines of one event
    with pytest.raises(EventTooLarge):
        SSEDecoder(100).feed(b"data: " + b"x" * 200)  # one line, never ended


def test_the_gateway_does_not_import_the_sdk() -> None:
    # mcp is a dev-only dependency: the HTTP client is httpx2 itself.
    code = "import sys, gateway.app, gateway.upstream.http_peer; print(sorted(m for m in sys.modules if m == 'mcp' or m.startswith('mcp.')))"
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, cwd=str(ROOT), check=True)
    assert out.stdout.strip() == "[]"
