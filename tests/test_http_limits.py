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


async def test_session_limit_evicts_the_least_recently_used_idle_session() -> None:
    cfg = config({"sdk": sdk_server()}, limits={"max_sessions": 2})
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    async with running_gateway(cfg) as gw, HTTPClient.connect(gw.port) as http:
        oldest = await http.initialize()
        newer = await http.initialize()
        assert (await http.post("/mcp", ping, oldest)).status == 200  # now `newer` is the least recent
        third = await http.initialize()
        assert (await http.post("/mcp", ping, newer)).status == 404
        assert (await http.post("/mcp", ping, oldest)).status == 200
        assert (await http.post("/mcp", ping, third)).status == 200
        assert gw.gateway.sessions.evicted_total == 1


async def test_session_limit_with_every_session_busy_is_a_clear_503() -> None:
    cfg = config({"sdk": sdk_server()}, limits={"max_sessions": 2})
    async with running_gateway(cfg) as gw, HTTPClient.connect(gw.port) as http:
        streams = []
        for _ in range(2):  # an open GET stream makes a session busy
            session = await http.initialize()
            stream = await trio.open_tcp_stream("127.0.0.1", gw.port)
            await stream.send_all(b"GET /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n"
                                  b"mcp-session-id: " + session.encode() + b"\r\n\r\n")
            assert (await stream.receive_some(4096)).startswith(b"HTTP/1.1 200")
            streams.append(stream)
        reply = await http.post("/mcp", {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "x", "version": "0"}}})
        assert reply.status == 503 and "max_sessions" in reply.json()["error"]["message"]
        for stream in streams:
            await stream.aclose()


async def test_oversized_headers_are_rejected() -> None:
    cfg = config({"sdk": sdk_server()}, limits={"max_header": "4k"})
    async with running_gateway(cfg) as gw:
        stream = await trio.open_tcp_stream("127.0.0.1", gw.port)
        async with stream:
            await stream.send_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: " + b"a" * 8000 + b"\r\n\r\n")
            with trio.fail_after(3):
                data = await stream.receive_some(4096)
            assert data.split(b" ")[1] in (b"431", b"400")


async def test_malformed_chunked_body_is_400_and_the_server_lives_on() -> None:
    async with running_gateway(config({"sdk": sdk_server()})) as gw:
        stream = await trio.open_tcp_stream("127.0.0.1", gw.port)
        async with stream:
            await stream.send_all(b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ntransfer-encoding: chunked\r\n\r\nZZZ\r\n")
            with trio.fail_after(5):
                assert (await stream.receive_some(4096)).startswith(b"HTTP/1.1 400")
        async with HTTPClient.connect(gw.port) as http:
            assert (await http.request("GET", "/healthz")).status == 200


async def test_client_sending_a_whole_oversized_body_still_reads_413() -> None:
    async with running_gateway(config({"sdk": sdk_server()}, limits={"max_body": "64k"})) as gw:
        for _ in range(3):
            stream = await trio.open_tcp_stream("127.0.0.1", gw.port)
            async with stream:
                body = b"x" * (4 * 1024 * 1024)
                head = (b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                        b"content-length: %d\r\n\r\n" % len(body))
                answer = b""

                async def read(stream: trio.SocketStream) -> None:
                    nonlocal answer
                    while chunk := await stream.receive_some(65536):
                        answer += chunk

                with trio.fail_after(10):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(read, stream)
                        try:
                            await stream.send_all(head + body)  # like a client that writes first
                        except trio.BrokenResourceError:
                            pass
                assert answer.startswith(b"HTTP/1.1 413")


async def test_expect_100_continue() -> None:
    async with running_gateway(config({"sdk": sdk_server()}, limits={"max_body": "64k"})) as gw:
        stream = await trio.open_tcp_stream("127.0.0.1", gw.port)
        async with stream:
            await stream.send_all(b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                                  b"expect: 100-continue\r\ncontent-length: 1000000\r\n\r\n")
            with trio.fail_after(5):  # too large: refused before the body is sent
                assert (await stream.receive_some(4096)).startswith(b"HTTP/1.1 413")
        stream = await trio.open_tcp_stream("127.0.0.1", gw.port)
        async with stream:
            body = b'{"jsonrpc":"2.0","id":1,"method":"ping"}'
            await stream.send_all(b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                                  b"expect: 100-continue\r\ncontent-length: %d\r\n\r\n" % len(body))
            with trio.fail_after(5):
                assert (await stream.receive_some(4096)).startswith(b"HTTP/1.1 100")
            await stream.send_all(body)
            with trio.fail_after(5):
                assert (await stream.receive_some(4096)).startswith(b"HTTP/1.1 400")  # no session: 400


async def test_non_object_meta_is_invalid_params() -> None:
    async with running_gateway(config({"sdk": sdk_server()})) as gw, HTTPClient.connect(gw.port) as http:
        session = await http.initialize()
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "sdk__echo", "arguments": {"text": "x"}, "_meta": 5}}
        reply = await http.post("/mcp", call, session, {"accept": "application/json"})
        assert reply.status == 200 and reply.json()["error"]["code"] == -32602
        assert "_meta" in reply.json()["error"]["message"]
