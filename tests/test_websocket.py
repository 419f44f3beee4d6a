"""MCP over WebSocket (``/ws``, ``/<route>/ws``) over real sockets, with real peers.

The client is trio-websocket (a WebSocket library on trio, on wsproto like the gateway);
malformed frames, clients that stop answering and clients that read nothing are raw sockets.
Upstreams are the SDK test server and ``mcp-server-time`` from PyPI.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection, open_websocket_url

from gateway.config import GatewayConfig
from gateway.protocol import jsonrpc
from gateway.transports.wire import WireSession
from tests.helpers import HTTPClient, Running, config, running_gateway, sdk_server, time_server

SERVERS = {"time": time_server(), "sdk": sdk_server()}
ROUTES = {"/": ["time", "sdk"], "/team-a": ["time"]}
TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


@asynccontextmanager
async def gateway(cfg: GatewayConfig, timeout: float = 30) -> AsyncIterator[Running]:
    """A gateway on a real socket, under a deadline: a regression fails instead of hanging."""
    with trio.fail_after(timeout):
        async with running_gateway(cfg) as running:
            yield running


@pytest.fixture
async def gw() -> AsyncIterator[Running]:
    async with gateway(config(SERVERS, routes=ROUTES)) as running:
        yield running


def assert_no_error_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing at ERROR and no traceback: a client must not be able to write those into our log."""
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [f"{r.levelname} {r.name}: {r.getMessage()}" for r in bad]


def init_msg(request_id: int = 0) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "ws-test", "version": "0"}}}


def call_msg(request_id: int | str, tool: str, meta: dict[str, Any] | None = None, **arguments: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"name": tool, "arguments": arguments}
    if meta:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


class Peer:
    """A JSON-RPC peer on a trio-websocket connection; messages that are not the awaited answer
    (notifications, other answers) are kept in ``others``, in order."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.others: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_message(json.dumps(message))

    async def next(self) -> dict[str, Any]:
        message = await self.ws.get_message()
        assert isinstance(message, str), message  # one JSON-RPC message per *text* frame
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    async def answer(self, request_id: int | str) -> dict[str, Any]:
        while True:
            message = await self.next()
            if message.get("id") == request_id and "method" not in message:
                return message
            self.others.append(message)

    async def request(self, request_id: int | str, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        await self.send({"jsonrpc": "2.0", "id": request_id, "method": method, **({"params": params} if params else {})})
        return await self.answer(request_id)

    async def call(self, request_id: int | str, tool: str, **arguments: Any) -> dict[str, Any]:
        await self.send(call_msg(request_id, tool, **arguments))
        return await self.answer(request_id)

    async def initialize(self) -> dict[str, Any]:
        await self.send(init_msg())
        result = await self.answer(0)
        await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return result


@asynccontextmanager
async def mcp_socket(port: int, path: str = "/ws", subprotocols: list[str] | None = None,
                     **kwargs: Any) -> AsyncIterator[Peer]:
    async with open_websocket_url(f"ws://127.0.0.1:{port}{path}",
                                  subprotocols=["mcp"] if subprotocols is None else subprotocols,
                                  max_message_size=64 * 1024 * 1024, **kwargs) as ws:
        yield Peer(ws)


async def closed_with(peer: Peer) -> tuple[int, str | None]:
    """Read until the gateway closes the socket: its close code and reason."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            peer.others.append(await peer.next())
    assert info.value.reason is not None
    return info.value.reason.code, info.value.reason.reason


# -- raw frames --------------------------------------------------------------------------------------

def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, length: int | None = None) -> bytes:
    """A client frame (masked unless told; ``length`` may claim more than ``payload`` holds)."""
    n = len(payload) if length is None else length
    bit = 0x80 if mask else 0
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes((key * (len(payload) // 4 + 1))[:len(payload)], "big")
              ).to_bytes(len(payload), "big") if payload else b""
    return head + key + masked


def unmasked_zero_key(opcode: int, payload: bytes, *, length: int | None = None) -> bytes:
    """A masked frame with the all-zero key (valid, and the payload needs no masking work)."""
    n = len(payload) if length is None else length
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def text(message: dict[str, Any]) -> bytes:
    return frame(TEXT, json.dumps(message).encode())


def upgrade_request(port: int, path: str = "/ws", protocols: str | None = "mcp") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if protocols is not None:
        lines.append(f"Sec-WebSocket-Protocol: {protocols}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class RawSocket:
    """A WebSocket client written by hand, for what a library would refuse to send."""

    def __init__(self, stream: trio.SocketStream, buffered: bytes) -> None:
        self.stream = stream
        self.buf = bytearray(buffered)

    @classmethod
    @asynccontextmanager
    async def connect(cls, port: int, path: str = "/ws", then: bytes = b"", *,
                      buffers: int | None = None) -> AsyncIterator[RawSocket]:
        """Upgrade (``then`` goes out in the same write as the request) and check the 101;
        ``buffers``: the socket's kernel buffer sizes (small: backpressure shows sooner)."""
        sock = trio.socket.socket()
        if buffers is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffers)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffers)
        await sock.connect(("127.0.0.1", port))
        stream = trio.SocketStream(sock)
        async with stream:
            await stream.send_all(upgrade_request(port, path) + then)
            buf = b""
            while b"\r\n\r\n" not in buf:
                data = await stream.receive_some(65536)
                assert data, buf
                buf += data
            head, _, rest = buf.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101 "), head
            assert b"sec-websocket-protocol: mcp" in head.lower(), head
            yield cls(stream, rest)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _need(self, n: int) -> bool:
        while len(self.buf) < n:
            data = await self.stream.receive_some(65536)
            if not data:
                return False
            self.buf += data
        return True

    async def frame(self) -> tuple[int, bytes] | None:
        """The next frame from the gateway (opcode, payload); None at EOF. Server frames are
        unmasked, and ours never fragmented."""
        if not await self._need(2):
            return None
        first, second = self.buf[0], self.buf[1]
        assert first & 0x80 and not second & 0x80, (first, second)
        n, at = second & 0x7F, 2
        if n == 126:
            assert await self._need(4)
            n, at = int.from_bytes(self.buf[2:4], "big"), 4
        elif n == 127:
            assert await self._need(10)
            n, at = int.from_bytes(self.buf[2:10], "big"), 10
        assert await self._need(at + n)
        payload = bytes(self.buf[at:at + n])
        del self.buf[:at + n]
        return first & 0x0F, payload

    async def message(self) -> dict[str, Any]:
        """The next JSON-RPC message (control frames before it are skipped)."""
        while True:
            got = await self.frame()
            assert got is not None, "EOF"
            if got[0] == TEXT:
                parsed: dict[str, Any] = json.loads(got[1])
                return parsed
            assert got[0] in (PING, PONG), got

    async def closed_with(self) -> tuple[int, str]:
        """Read to the gateway's Close frame (skipping what comes before): its code and reason;
        then answer it, and check the gateway closes the TCP connection."""
        while True:
            got = await self.frame()
            assert got is not None, "EOF before a Close frame"
            if got[0] == CLOSE:
                payload = got[1]
                await self.send(frame(CLOSE, payload[:2]))
                with trio.fail_after(3):
                    while await self.stream.receive_some(65536):
                        pass
                return int.from_bytes(payload[:2], "big"), payload[2:].decode()


# -- the MCP body: what every wire serves ----------------------------------------------------------

async def test_the_mcp_body_over_a_websocket_and_per_route(gw: Running) -> None:
    async with mcp_socket(gw.port) as peer:
        assert peer.ws.subprotocol == "mcp"
        init = await peer.initialize()
        assert init["result"]["protocolVersion"] == "2025-11-25"
        assert init["result"]["serverInfo"]["name"] == "mcp-gateway"
        names = {t["name"] for t in (await peer.request(1, "tools/list"))["result"]["tools"]}
        assert {"time__get_current_time", "sdk__add", "sdk__slow"} <= names
        added = await peer.call(2, "sdk__add", a=2, b=40)
        assert added["result"]["structuredContent"] == {"result": 42}
        now = await peer.call(3, "time__get_current_time", timezone="Asia/Tokyo")
        assert json.loads(now["result"]["content"][0]["text"])["timezone"] == "Asia/Tokyo"
        prompt = await peer.request(4, "prompts/get", {"name": "sdk__greet", "arguments": {"name": "Ada"}})
        assert "Hello, Ada!" in prompt["result"]["messages"][0]["content"]["text"]
        read = await peer.request(5, "resources/read", {"uri": "memo://readme"})
        assert read["result"]["contents"][0]["text"] == "read me"
        unknown = await peer.call(6, "nope__nothing")
        assert unknown["error"]["code"] == -32602 and "nope__nothing" in unknown["error"]["message"]
        # progress arrives on the same socket, with the client's token, before the result
        assert not peer.others
        await peer.send(call_msg(7, "sdk__slow", {"progressToken": "tok"}, steps=3, delay=0.01))
        slow = await peer.answer(7)
        assert slow["result"]["content"][0]["text"] == "done after 3 steps"
        progress = [m["params"] for m in peer.others if m.get("method") == "notifications/progress"]
        assert [(p["progressToken"], p["progress"]) for p in progress] == [("tok", 1), ("tok", 2), ("tok", 3)]
    async with mcp_socket(gw.port, "/team-a/ws") as peer:
        await peer.initialize()
        names = {t["name"] for t in (await peer.request(1, "tools/list"))["result"]["tools"]}
        assert names == {"time__get_current_time", "time__convert_time"}
        refused = await peer.call(2, "sdk__add", a=1, b=2)
        assert refused["error"]["code"] == -32602 and "sdk__add" in refused["error"]["message"]


async def test_many_calls_at_once_each_answered_once_after_its_own_progress(gw: Running) -> None:
    """Answers are written by the task that has them when the writer is idle, and queued behind
    the writer otherwise (progress notifications always are): with forty calls in flight at once
    every answer arrives exactly once, whole, and after every progress notification of its call."""
    async with mcp_socket(gw.port) as peer:
        await peer.initialize()
        for i in range(40):
            if i % 4 == 0:
                await peer.send(call_msg(i, "sdk__slow", {"progressToken": f"t{i}"}, steps=3, delay=0.001))
            else:
                await peer.send(call_msg(i, "sdk__add", a=i, b=1000))
        seen: list[dict[str, Any]] = []
        with trio.fail_after(20):
            while sum("id" in m for m in seen) < 40:
                seen.append(await peer.next())
        answers = [m["id"] for m in seen if "id" in m]
        assert sorted(answers) == list(range(40))
        for position, message in enumerate(seen):
            if "id" not in message:
                continue
            i = message["id"]
            if i % 4 == 0:
                assert message["result"]["content"][0]["text"] == "done after 3 steps"
                progress = [m["params"]["progress"] for m in seen[:position]
                            if m.get("method") == "notifications/progress" and m["params"]["progressToken"] == f"t{i}"]
                assert progress == [1, 2, 3]
            else:
                assert message["result"]["structuredContent"] == {"result": i + 1000}


async def test_a_cancelled_call_is_cancelled_upstream_and_so_is_a_call_whose_socket_closes(gw: Running) -> None:
    supervisor = gw.gateway.supervisors["sdk"]

    async def upstream_idle() -> None:
        with trio.fail_after(3):
            while (await supervisor.connection()).in_flight:
                await trio.sleep(0.02)

    async with mcp_socket(gw.port) as peer:
        await peer.initialize()
        await peer.send(call_msg(5, "sdk__sleep", seconds=30))
        with trio.fail_after(3):
            while not (await supervisor.connection()).in_flight:
                await trio.sleep(0.02)
        await peer.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 5}})
        await upstream_idle()
        assert (await peer.call(6, "sdk__echo", text="after"))["result"]["content"][0]["text"] == "after"
        assert not any(m.get("id") == 5 and "result" in m for m in peer.others), peer.others
        await peer.send(call_msg(7, "sdk__sleep", seconds=30))
        with trio.fail_after(3):
            while not (await supervisor.connection()).in_flight:
                await trio.sleep(0.02)
    await upstream_idle()  # the client closed its socket: the call went with it


async def test_two_sockets_are_two_isolated_sessions(gw: Running) -> None:
    async with mcp_socket(gw.port) as a, mcp_socket(gw.port) as b:
        await a.initialize()
        await b.initialize()
        assert len(gw.gateway.sessions) == 2
        # The same request id on both at once: each gets its own answer, and only A its progress.
        await a.send(call_msg(1, "sdk__slow", {"progressToken": "a"}, steps=3, delay=0.05))
        await b.send(call_msg(1, "sdk__echo", text="b"))
        assert (await b.answer(1))["result"]["content"][0]["text"] == "b"
        assert (await a.answer(1))["result"]["content"][0]["text"] == "done after 3 steps"
        assert [m["params"]["progressToken"] for m in a.others] == ["a", "a", "a"]
        assert b.others == []
        await a.ws.aclose()
        with trio.fail_after(3):
            while len(gw.gateway.sessions) != 1:
                await trio.sleep(0.02)
        assert (await b.request(2, "ping"))["result"] == {}


# -- the upgrade --------------------------------------------------------------------------------------

async def test_subprotocol_mcp_is_chosen_and_required_when_subprotocols_are_offered(gw: Running) -> None:
    async with mcp_socket(gw.port, subprotocols=["mcp"]) as peer:
        assert peer.ws.subprotocol == "mcp"
    async with mcp_socket(gw.port, subprotocols=["json", "mcp"]) as peer:
        assert peer.ws.subprotocol == "mcp"
    with pytest.raises(ConnectionRejected) as info:
        async with mcp_socket(gw.port, subprotocols=["graphql-ws"]):
            pass
    assert info.value.status_code == 400
    assert info.value.body is not None and b"'mcp'" in info.value.body and b"graphql-ws" in info.value.body
    async with mcp_socket(gw.port, subprotocols=[]) as peer:  # none offered: served anyway
        assert peer.ws.subprotocol is None
        assert (await peer.initialize())["result"]["protocolVersion"] == "2025-11-25"
    stats = gw.gateway.websocket.statistics()
    assert (stats.accepted, stats.refused) == (3, 1)


async def test_requests_that_are_not_websocket_upgrades_get_a_clear_4xx(gw: Running) -> None:
    upgrade = {"upgrade": "websocket", "connection": "Upgrade", "sec-websocket-version": "13",
               "sec-websocket-key": base64.b64encode(os.urandom(16)).decode()}
    async with HTTPClient.connect(gw.port) as http:
        plain = await http.request("GET", "/ws")
        assert plain.status == 426 and plain.headers["upgrade"] == "websocket", plain
        assert b"subprotocol mcp" in plain.body
        post = await http.request("POST", "/ws", b"{}")
        assert post.status == 405 and "GET" in post.headers["allow"]
        no_connection = await http.request("GET", "/ws", headers={**upgrade, "connection": "keep-alive"})
        assert no_connection.status == 400 and b"Connection: upgrade" in no_connection.body
        old = await http.request("GET", "/ws", headers={**upgrade, "sec-websocket-version": "8"})
        assert old.status == 426 and old.headers["sec-websocket-version"] == "13"
        bad_key = await http.request("GET", "/ws", headers={**upgrade, "sec-websocket-key": "short"})
        assert bad_key.status == 400 and b"Sec-WebSocket-Key" in bad_key.body
        no_key = {k: v for k, v in upgrade.items() if k != "sec-websocket-key"}
        assert (await http.request("GET", "/ws", headers=no_key)).status == 400
        # a refused upgrade leaves an ordinary HTTP connection
        assert (await http.request("GET", "/healthz")).status == 200
    assert gw.gateway.websocket.statistics().accepted == 0


async def test_a_bad_origin_is_refused_403_before_the_upgrade(gw: Running) -> None:
    with pytest.raises(ConnectionRejected) as info:
        async with mcp_socket(gw.port, extra_headers=[(b"origin", b"https://evil.example")]):
            pass
    assert info.value.status_code == 403
    assert info.value.body is not None and b"Origin not allowed" in info.value.body
    assert gw.gateway.websocket.statistics().accepted == 0
    # A WebSocket has no CORS (a page that connects reads every answer), so even a page of this
    # machine needs to be in allowed_origins; a client that sends no Origin (not a browser) connects.
    with pytest.raises(ConnectionRejected) as info:
        async with mcp_socket(gw.port, extra_headers=[(b"origin", b"http://localhost:3000")]):
            pass
    assert info.value.status_code == 403
    async with mcp_socket(gw.port) as peer:
        assert (await peer.initialize())["result"]["protocolVersion"] == "2025-11-25"


async def test_an_allowed_origin_may_open_a_websocket() -> None:
    cfg = config(SERVERS, routes=ROUTES, allowed_origins=["https://app.example.com"])
    async with gateway(cfg) as running, \
            mcp_socket(running.port, extra_headers=[(b"origin", b"https://app.example.com")]) as peer:
        assert (await peer.initialize())["result"]["protocolVersion"] == "2025-11-25"


async def test_frames_sent_with_the_upgrade_request_and_fragments_with_a_ping_between(gw: Running) -> None:
    # The first message goes out in the same write as the upgrade request: h11 has read it
    # already, and take_over() hands those bytes to wsproto.
    async with RawSocket.connect(gw.port, then=text(init_msg())) as raw:
        assert (await raw.message())["result"]["protocolVersion"] == "2025-11-25"
        body = json.dumps(call_msg(1, "sdk__echo", text="in three parts")).encode()
        await raw.send(frame(TEXT, body[:10], fin=False) + frame(PING, b"between")
                       + frame(CONTINUATION, body[10:20], fin=False))
        assert await raw.frame() == (PONG, b"between")
        await raw.send(frame(CONTINUATION, body[20:]))
        answer = await raw.message()
        assert answer["id"] == 1 and answer["result"]["content"][0]["text"] == "in three parts"


# -- close codes --------------------------------------------------------------------------------------

async def test_a_binary_frame_closes_1003(gw: Running, caplog: pytest.LogCaptureFixture) -> None:
    async with mcp_socket(gw.port) as peer:
        await peer.initialize()
        await peer.ws.send_message(b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}')
        code, reason = await closed_with(peer)
    assert code == 1003 and reason is not None and "text" in reason
    with trio.fail_after(3):
        while len(gw.gateway.sessions):
            await trio.sleep(0.02)
    assert_no_error_logs(caplog)


async def test_invalid_utf8_closes_1007(gw: Running, caplog: pytest.LogCaptureFixture) -> None:
    async with RawSocket.connect(gw.port) as raw:
        await raw.send(frame(TEXT, b'{"jsonrpc": "2.0", "id": 1, "method": "\xff\xfe"}'))
        code, reason = await raw.closed_with()
    assert code == 1007 and reason
    assert_no_error_logs(caplog)


@pytest.mark.parametrize("bad", ["unmasked", "continuation first", "oversized ping"])
async def test_protocol_errors_close_1002(gw: Running, bad: str, caplog: pytest.LogCaptureFixture) -> None:
    data = {"unmasked": frame(TEXT, b'{"jsonrpc": "2.0", "id": 1, "method": "ping"}', mask=False),
            "continuation first": frame(CONTINUATION, b"{}"),
            "oversized ping": frame(PING, b"x" * 200)}[bad]
    async with RawSocket.connect(gw.port) as raw:
        await raw.send(data)
        code, reason = await raw.closed_with()
    assert code == 1002 and reason
    assert_no_error_logs(caplog)


async def test_a_message_over_max_message_closes_1009_without_waiting_for_the_rest(
        caplog: pytest.LogCaptureFixture) -> None:
    limit = 64 * 1024
    async with gateway(config(SERVERS, limits={"max_message": limit})) as gw:
        async with mcp_socket(gw.port) as peer:
            await peer.initialize()
            near = "x" * (limit - 200)  # under the limit: served
            assert (await peer.call(1, "sdk__echo", text=near))["result"]["content"][0]["text"] == near
            await peer.send(call_msg(2, "sdk__echo", text="x" * limit))
            code, reason = await closed_with(peer)
        assert code == 1009 and reason is not None and str(limit) in reason
        # A frame that claims a gigabyte: closed once the limit is passed, not at the end.
        async with RawSocket.connect(gw.port) as raw:
            await raw.send(unmasked_zero_key(TEXT, b"x" * (3 * limit), length=2**30))
            with trio.fail_after(3):
                code, reason = await raw.closed_with()
        assert code == 1009
        with trio.fail_after(5):  # the server counts a close when its side of the socket is done
            while gw.gateway.websocket.statistics().closes != {1009: 2}:
                await trio.sleep(0.01)
    assert_no_error_logs(caplog)


async def test_the_session_ended_by_the_gateway_closes_1008(gw: Running) -> None:
    async with mcp_socket(gw.port) as peer:
        await peer.initialize()
        [session] = list(gw.gateway.sessions)
        gw.gateway.sessions.end(session)  # what eviction and expiry do
        code, reason = await closed_with(peer)
    assert code == 1008 and reason is not None and "session ended by the gateway" in reason


async def test_an_error_of_ours_closes_1011_and_the_gateway_serves_on(
        gw: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    handle = WireSession.handle

    async def failing(self: WireSession, data: bytes | bytearray) -> None:
        if b"boom" in data:
            raise RuntimeError("a bug reached by one message")
        await handle(self, data)

    monkeypatch.setattr(WireSession, "handle", failing)
    async with mcp_socket(gw.port) as peer:
        await peer.initialize()
        await peer.send(call_msg(1, "sdk__echo", text="boom"))
        code, reason = await closed_with(peer)
    assert code == 1011 and reason == "internal error"
    async with mcp_socket(gw.port) as peer:
        assert (await peer.initialize())["result"]["protocolVersion"] == "2025-11-25"
        assert (await peer.call(2, "sdk__echo", text="fine"))["result"]["content"][0]["text"] == "fine"


async def test_a_client_close_is_echoed_and_ends_the_session(gw: Running) -> None:
    async with mcp_socket(gw.port) as peer:
        await peer.initialize()
        assert len(gw.gateway.sessions) == 1
        with trio.fail_after(2):  # trio-websocket waits for the gateway's Close in answer
            await peer.ws.aclose(4000, "bye")
    assert peer.ws.closed is not None and peer.ws.closed.code == 4000
    with trio.fail_after(3):
        while len(gw.gateway.sessions) or gw.gateway.websocket.statistics().open:
            await trio.sleep(0.02)
    assert gw.gateway.websocket.statistics().closes == {4000: 1}


# -- keepalive -----------------------------------------------------------------------------------------

async def test_a_client_that_stops_answering_pings_is_closed_and_one_that_answers_stays() -> None:
    async with gateway(config(SERVERS, timeouts={"ws_ping": "200ms"})) as gw:
        async with RawSocket.connect(gw.port) as raw:
            started = trio.current_time()
            assert await raw.frame() == (PING, b"keepalive")
            pinged = trio.current_time() - started
            code, reason = await raw.closed_with()
            closed = trio.current_time() - started
        assert 0.15 < pinged < 0.5 and 0.35 < closed < 1.5, (pinged, closed)
        assert code == 1011 and "keepalive timeout" in reason
        async with mcp_socket(gw.port) as peer:  # trio-websocket answers pings
            await peer.initialize()
            await trio.sleep(1.0)  # five intervals
            assert (await peer.request(1, "ping"))["result"] == {}
        assert gw.gateway.websocket.statistics().closes == {1011: 1, 1000: 1}


# -- the HTTP server underneath ---------------------------------------------------------------------

async def test_a_websocket_session_is_a_session_and_its_socket_is_never_read_by_the_http_server(
        gw: Running) -> None:
    http = gw.gateway.http
    async with mcp_socket(gw.port) as peer:
        await peer.initialize()
        assert len(gw.gateway.sessions) == 1 and gw.gateway.websocket.statistics().open == 1
        for _ in range(4):  # well past watch_after (100 ms): the watcher would start and steal bytes
            await trio.sleep(0.15)
            assert (await peer.call(1, "sdk__echo", text="still here"))["result"]["content"][0]["text"] \
                == "still here"
        [connection] = list(http.connections)
        assert connection.watcher is None and connection.taken_over
        assert (http.statistics().connections, http.statistics().busy) == (1, 1)
    with trio.fail_after(3):  # the socket closed: the session ends and the connection's slot is free
        while len(gw.gateway.sessions) or http.statistics().connections:
            await trio.sleep(0.02)
    assert gw.gateway.websocket.statistics().open == 0


async def test_a_client_that_reads_nothing_is_not_read_from(gw: Running) -> None:
    """Backpressure: answers wait for room, then the gateway stops reading, and the client's
    writes stall; nothing is lost once it reads again."""
    body = "y" * 65536
    total = 1500
    sent = 0
    async with RawSocket.connect(gw.port, buffers=65536) as raw:
        await raw.send(text(init_msg()))
        assert (await raw.message())["id"] == 0

        async def flood() -> None:
            nonlocal sent
            for i in range(total):
                await raw.send(unmasked_zero_key(TEXT, json.dumps(call_msg(i + 1, "sdk__echo", text=body)).encode()))
                sent += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            last = -1
            with trio.fail_after(20):
                while sent != last:  # until the writes stall
                    last = sent
                    await trio.sleep(0.5)
            assert sent < total * 0.75, sent  # stalled: the gateway stopped reading
            [session] = list(gw.gateway.sessions)
            assert len(session.inflight) <= gw.gateway.dispatcher.max_inflight
            answered: set[int] = set()
            refused = 0
            with trio.fail_after(60):
                while len(answered) < total:
                    message = await raw.message()
                    if "error" in message:  # beyond the in-flight limit: refused, as on every wire
                        assert "Too many requests in flight" in message["error"]["message"], message
                        refused += 1
                    else:
                        assert message["result"]["content"][0]["text"] == body, message
                    answered.add(message["id"])
    assert answered == set(range(1, total + 1)) and refused < total / 2, refused


# -- shutdown -------------------------------------------------------------------------------------------

async def test_shutdown_answers_running_calls_then_closes_1001() -> None:
    async with gateway(config(SERVERS, timeouts={"shutdown_grace": "500ms"})) as gw:
        async with mcp_socket(gw.port) as busy, mcp_socket(gw.port) as idle:
            await busy.initialize()
            await idle.initialize()
            await busy.send(call_msg(7, "sdk__sleep", seconds=30))
            with trio.fail_after(5):
                while not any(s.inflight for s in gw.gateway.sessions):
                    await trio.sleep(0.01)
            idle_closed: list[tuple[int, str | None, float]] = []

            async def watch_idle() -> None:
                code, reason = await closed_with(idle)
                idle_closed.append((code, reason, trio.current_time() - started))

            async with trio.open_nursery() as nursery:
                started = trio.current_time()
                nursery.start_soon(gw.gateway.shutdown)
                nursery.start_soon(watch_idle)
                await trio.sleep(0.1)
                refused = await busy.request(8, "ping")  # new calls are refused at once
                assert refused["error"]["code"] == jsonrpc.GATEWAY_SHUTTING_DOWN, refused
                assert "no new calls" in refused["error"]["message"]
                assert trio.current_time() - started < 0.4
                answer = await busy.answer(7)
                took = trio.current_time() - started
                code, reason = await closed_with(busy)
    assert answer["error"]["code"] == jsonrpc.GATEWAY_SHUTTING_DOWN and "shutting down" in answer["error"]["message"]
    assert 0.5 <= took < 2, took  # the grace was given, then the call was ended with an answer
    assert code == 1001 and reason == "the gateway is shutting down"
    [(idle_code, idle_reason, idle_took)] = idle_closed
    assert idle_code == 1001 and idle_reason == "the gateway is shutting down" and idle_took < 0.4


@pytest.mark.parametrize("data", [b"", b'{"jsonrpc":"2.0","id":1,"result":{}}', "é€😀".encode() * 10,
                                  b"x" * 125, b"x" * 126, b"x" * 65535, b"x" * 65536, b"\xff\xfe not utf-8"])
def test_answer_frames_are_what_wsproto_would_send_and_always_utf8(data: bytes) -> None:
    from wsproto import ConnectionType
    from wsproto.connection import Connection
    from wsproto.events import TextMessage

    from gateway.transports.ws_frames import text_frame

    text = data.decode("utf-8", "replace")
    ours = text_frame(data)
    server = Connection(ConnectionType.SERVER)
    assert ours == server.send(TextMessage(data=text))
    client = Connection(ConnectionType.CLIENT)  # a client reads it back: one whole text message
    client.receive_data(ours)
    (event,) = list(client.events())
    assert isinstance(event, TextMessage) and event.data == text and event.message_finished
