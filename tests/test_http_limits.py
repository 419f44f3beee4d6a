"""Timeouts and limits of the data-plane HTTP server: slow or idle clients never hold others."""

from __future__ import annotations

import trio

from tests.helpers import HTTPClient, config, running_gateway, sdk_server


async def test_slow_client_gets_408_and_others_are_served_meanwhile() -> None:
    cfg = config({"sdk": sdk_server()}, timeouts={"read": "500ms", "idle": "1s"})
    async with running_gateway(cfg) as gw:
        slow = await trio.open_tcp_stream("127.0.0.1", gw.port)
        await slow.send_all(b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-le")  # ...and stalls
        async with HTTPClient.connect(gw.port) as http:
            session = await http.initialize()  # unaffected by the stalled client
            assert (await http.post("/mcp", {"jsonrpc": "2.0", "id": 1, "method": "ping"}, session)).status == 200
        with trio.fail_after(3):
            data = b""
            while chunk := await slow.receive_some(4096):
                data += chunk
        assert data.startswith(b"HTTP/1.1 408")
        await slow.aclose()


async def test_idle_keep_alive_connection_is_closed() -> None:
    cfg = config({"sdk": sdk_server()}, timeouts={"idle": "300ms"})
    async with running_gateway(cfg) as gw:
        async with HTTPClient.connect(gw.port) as http:
            await http.initialize()
            with trio.fail_after(3):
                assert await http.stream.receive_some(1) == b""  # the server closed it


async def test_expired_session_is_404() -> None:
    cfg = config({"sdk": sdk_server()}, timeouts={"session_idle": "300ms"})
    async with running_gateway(cfg) as gw:
        async with HTTPClient.connect(gw.port) as http:
            session = await http.initialize()
            with trio.fail_after(5):
                while gw.gateway.sessions.get(session) is not None:
                    await trio.sleep(0.05)
            reply = await http.post("/mcp", {"jsonrpc": "2.0", "id": 1, "method": "ping"}, session)
            assert reply.status == 404


async def test_session_limit_is_a_clear_503() -> None:
    cfg = config({"sdk": sdk_server()}, limits={"max_sessions": 2})
    async with running_gateway(cfg) as gw:
        async with HTTPClient.connect(gw.port) as http:
            await http.initialize()
            await http.initialize()
            reply = await http.post("/mcp", {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "x", "version": "0"}}})
            assert reply.status == 503 and "max_sessions" in reply.json()["error"]["message"]


async def test_oversized_headers_are_rejected() -> None:
    cfg = config({"sdk": sdk_server()}, limits={"max_header": "4k"})
    async with running_gateway(cfg) as gw:
        stream = await trio.open_tcp_stream("127.0.0.1", gw.port)
        async with stream:
            await stream.send_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: " + b"a" * 8000 + b"\r\n\r\n")
            with trio.fail_after(3):
                data = await stream.receive_some(4096)
            assert data.split(b" ")[1] in (b"431", b"400")
