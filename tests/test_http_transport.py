"""Streamable HTTP over a raw socket: every status code and bad-input case, exactly."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import trio

from tests.helpers import HTTPClient, Running, config, running_gateway, sdk_server

CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "sdk__echo",
                                                                    "arguments": {"text": "hi"}}}


@pytest.fixture
async def gw() -> AsyncIterator[Running]:
    cfg = config({"sdk": sdk_server()}, limits={"max_body": "64k", "max_inflight_per_session": 4},
                 allowed_origins=["https://app.example.com"])
    async with running_gateway(cfg) as running:
        yield running


@pytest.fixture
async def http(gw: Running) -> AsyncIterator[HTTPClient]:
    async with HTTPClient.connect(gw.port) as client:
        yield client


async def test_initialize_issues_a_session_and_calls_work(http: HTTPClient) -> None:
    session = await http.initialize()
    assert len(session) >= 32
    reply = await http.post("/mcp", CALL, session, {"mcp-protocol-version": "2025-11-25"})
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    assert reply.json()["result"]["content"][0]["text"] == "hi"
    assert reply.json()["id"] == 1


async def test_malformed_json_is_400_parse_error(http: HTTPClient) -> None:
    session = await http.initialize()
    reply = await http.post("/mcp", b'{"jsonrpc": "2.0", "id": 1, "method": ', session)
    assert reply.status == 400
    assert reply.json()["error"]["code"] == -32700 and reply.json()["id"] is None


@pytest.mark.parametrize("body", [
    {"jsonrpc": "2.0", "id": 1},
    {"id": 1, "method": "ping"},
    {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": "x"},
    [1, 2],
])
async def test_wrong_shape_is_invalid_request(http: HTTPClient, body: object) -> None:
    session = await http.initialize()
    reply = await http.post("/mcp", body, session)
    assert reply.status == 400
    assert reply.json()["error"]["code"] == -32600


async def test_unknown_method_and_unknown_tool(http: HTTPClient) -> None:
    session = await http.initialize()
    reply = await http.post("/mcp", {"jsonrpc": "2.0", "id": 2, "method": "tools/frobnicate"}, session)
    assert reply.json()["error"]["code"] == -32601
    bad = {**CALL, "params": {"name": "sdk__missing", "arguments": {}}}
    reply = await http.post("/mcp", bad, session)
    err = reply.json()["error"]
    assert err["code"] == -32602 and "sdk__missing" in err["message"]


async def test_batches_rejected_from_2025_06_18(http: HTTPClient) -> None:
    session = await http.initialize(version="2025-06-18")
    reply = await http.post("/mcp", [{"jsonrpc": "2.0", "id": 1, "method": "ping"}], session)
    assert reply.status == 400 and reply.json()["error"]["code"] == -32600
    assert "batch" in reply.json()["error"]["message"]


async def test_batches_served_for_2025_03_26(http: HTTPClient) -> None:
    session = await http.initialize(version="2025-03-26")
    batch = [{"jsonrpc": "2.0", "id": "a", "method": "ping"}, {**CALL, "id": "b"},
             {"jsonrpc": "2.0", "method": "notifications/initialized"}]
    reply = await http.post("/mcp", batch, session, {"mcp-protocol-version": "2025-03-26"})
    assert reply.status == 200
    answers = {a["id"]: a for a in reply.json()}
    assert answers["a"]["result"] == {} and answers["b"]["result"]["content"][0]["text"] == "hi"


async def test_oversized_body_is_413_without_reading_it(gw: Running) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", gw.port)
    async with stream:
        await stream.send_all(b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                              b"accept: application/json\r\ncontent-length: 10000000\r\n\r\n")
        # we never send the 10 MB body: the answer must come anyway
        with trio.fail_after(5):
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive_some(4096)
        assert data.startswith(b"HTTP/1.1 413")


async def test_oversized_chunked_body_is_413(http: HTTPClient, gw: Running) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", gw.port)
    async with stream:
        chunk = b"x" * 70000
        await stream.send_all(b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ntransfer-encoding: chunked\r\n\r\n"
                              + b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        with trio.fail_after(5):
            data = await stream.receive_some(4096)
        assert data.startswith(b"HTTP/1.1 413")


async def test_unknown_session_is_404_and_missing_is_400(http: HTTPClient) -> None:
    reply = await http.post("/mcp", CALL, "no-such-session")
    assert reply.status == 404
    reply = await http.post("/mcp", CALL)
    assert reply.status == 400 and "Mcp-Session-Id" in reply.json()["error"]["message"]


async def test_delete_ends_the_session(http: HTTPClient) -> None:
    session = await http.initialize()
    reply = await http.request("DELETE", "/mcp", headers={"mcp-session-id": session})
    assert reply.status == 200
    assert (await http.post("/mcp", CALL, session)).status == 404
    reply = await http.request("DELETE", "/mcp", headers={"mcp-session-id": session})
    assert reply.status == 404


async def test_protocol_version_header_checked(http: HTTPClient) -> None:
    session = await http.initialize()
    reply = await http.post("/mcp", CALL, session, {"mcp-protocol-version": "1999-01-01"})
    assert reply.status == 400 and reply.json()["error"]["code"] == -32022
    reply = await http.post("/mcp", CALL, session, {"mcp-protocol-version": "2025-03-26"})
    assert reply.status == 200  # supported, though not the negotiated one: served (spec: 400 only if unsupported)


async def test_server_discover_names_both_eras(http: HTTPClient) -> None:
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}
    headers = {"mcp-protocol-version": "2026-07-28", "mcp-method": "server/discover"}
    reply = await http.post("/mcp", {"jsonrpc": "2.0", "id": 1, "method": "server/discover",
                                     "params": {"_meta": meta}}, headers=headers)
    assert reply.status == 200 and "mcp-session-id" not in reply.headers
    result = reply.json()["result"]
    assert result["resultType"] == "complete" and result["supportedVersions"][0] == "2026-07-28"
    assert "2025-11-25" in result["supportedVersions"] and "tools" in result["capabilities"]
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "mcp-gateway"
    # without the envelope: the key that is missing; at a version we do not speak: what we speak
    reply = await http.post("/mcp", {"jsonrpc": "2.0", "id": 2, "method": "server/discover", "params": {}},
                            headers=headers)
    assert reply.status == 400 and reply.json()["error"]["code"] == -32602
    later = {**meta, "io.modelcontextprotocol/protocolVersion": "2099-01-01"}
    reply = await http.post("/mcp", {"jsonrpc": "2.0", "id": 3, "method": "server/discover",
                                     "params": {"_meta": later}},
                            headers={**headers, "mcp-protocol-version": "2099-01-01"})
    err = reply.json()["error"]
    assert reply.status == 400 and err["code"] == -32022 and reply.json()["id"] == 3
    assert "2025-11-25" in err["data"]["supported"] and err["data"]["requested"] == "2099-01-01"


async def test_origin_checked(http: HTTPClient) -> None:
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}}
    assert (await http.post("/mcp", init, headers={"origin": "https://evil.example"})).status == 403
    assert (await http.post("/mcp", init, headers={"origin": "http://localhost:3000"})).status == 200
    assert (await http.post("/mcp", init, headers={"origin": "https://app.example.com"})).status == 200
    assert (await http.post("/mcp", init, headers={"host": "evil.example"})).status == 403


async def test_accept_header(http: HTTPClient) -> None:
    session = await http.initialize()
    assert (await http.post("/mcp", CALL, session, {"accept": "text/html"})).status == 406
    sse = await http.post("/mcp", CALL, session, {"accept": "text/event-stream"})
    assert sse.status == 200 and sse.headers["content-type"] == "text/event-stream"
    assert sse.sse_messages()[-1]["result"]["content"][0]["text"] == "hi"
    get = await http.request("GET", "/mcp", headers={"mcp-session-id": session, "accept": "application/json"})
    assert get.status == 406


async def test_notifications_and_responses_get_202(http: HTTPClient) -> None:
    session = await http.initialize()
    reply = await http.post("/mcp", {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}, session)
    assert reply.status == 202 and reply.body == b""
    reply = await http.post("/mcp", {"jsonrpc": "2.0", "id": 99, "result": {}}, session)
    assert reply.status == 202


async def test_wrong_method_and_path(http: HTTPClient) -> None:
    assert (await http.request("PUT", "/mcp", b"{}")).status == 405
    assert (await http.request("GET", "/nope")).status == 404


async def test_duplicate_in_flight_id_gets_a_clear_error_and_the_first_its_answer(gw: Running) -> None:
    async with HTTPClient.connect(gw.port) as first, HTTPClient.connect(gw.port) as second:
        session = await first.initialize()
        slow = {"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                "params": {"name": "sdk__sleep", "arguments": {"seconds": 0.5}}}
        fast = {"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                "params": {"name": "sdk__echo", "arguments": {"text": "dup"}}}
        replies: dict[str, object] = {}

        async def send_slow() -> None:
            replies["slow"] = await first.post("/mcp", slow, session)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_slow)
            await trio.sleep(0.2)
            replies["fast"] = await second.post("/mcp", fast, session)
        dup = replies["fast"]
        assert dup.status == 400 and dup.json()["error"]["code"] == -32600  # type: ignore[attr-defined]
        assert "already in flight" in dup.json()["error"]["message"]  # type: ignore[attr-defined]
        assert replies["slow"].json()["result"]["content"][0]["text"] == "slept 0.5"  # type: ignore[attr-defined]


async def test_same_ids_in_different_sessions_do_not_mix(gw: Running) -> None:
    async def one(i: int) -> str:
        async with HTTPClient.connect(gw.port) as http:
            session = await http.initialize()
            msg = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                   "params": {"name": "sdk__echo", "arguments": {"text": f"session-{i}"}}}
            return (await http.post("/mcp", msg, session)).json()["result"]["content"][0]["text"]

    results: dict[int, str] = {}

    async def run(i: int) -> None:
        results[i] = await one(i)

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(run, i)
    assert results == {i: f"session-{i}" for i in range(20)}


async def test_keep_alive_serves_many_requests_on_one_connection(http: HTTPClient) -> None:
    session = await http.initialize()
    for i in range(50):
        msg = {**CALL, "id": i, "params": {"name": "sdk__echo", "arguments": {"text": str(i)}}}
        reply = await http.post("/mcp", msg, session)
        assert reply.json() == {"jsonrpc": "2.0", "id": i, "result": reply.json()["result"]}
        assert reply.json()["result"]["content"][0]["text"] == str(i)


async def test_get_stream_delivers_list_changed(gw: Running) -> None:
    async with HTTPClient.connect(gw.port) as http, HTTPClient.connect(gw.port) as streamer:
        session = await http.initialize()
        stream = streamer.stream
        await stream.send_all(b"GET /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n"
                              b"mcp-session-id: " + session.encode() + b"\r\n\r\n")
        with trio.fail_after(5):
            head = await stream.receive_some(4096)
            assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head
            grow = {**CALL, "params": {"name": "sdk__grow", "arguments": {"name": "leaf"}}}
            assert (await http.post("/mcp", grow, session)).status == 200
            data = b""
            while b"list_changed" not in data:
                data += await stream.receive_some(4096)
        event = [line for line in data.decode().splitlines() if line.startswith("data:")][0]
        assert json.loads(event[5:])["method"] == "notifications/tools/list_changed"


async def test_tools_list_pages_with_gateway_cursors() -> None:
    async with running_gateway(config({"sdk": sdk_server()}), page_size=3) as gw, \
            HTTPClient.connect(gw.port) as http:
        session = await http.initialize()
        names: list[str] = []
        cursor = None
        pages = 0
        while True:
            params = {"cursor": cursor} if cursor else {}
            reply = (await http.post("/mcp", {"jsonrpc": "2.0", "id": pages, "method": "tools/list",
                                              "params": params}, session)).json()["result"]
            assert len(reply["tools"]) <= 3
            names += [t["name"] for t in reply["tools"]]
            pages += 1
            cursor = reply.get("nextCursor")
            if cursor is None:
                break
        assert pages >= 3 and len(names) == len(set(names))
        assert {"sdk__add", "sdk__echo", "sdk__slow", "sdk__grow"} <= set(names)
        bad = await http.post("/mcp", {"jsonrpc": "2.0", "id": 99, "method": "tools/list",
                                       "params": {"cursor": "not-a-cursor"}}, session)
        assert bad.json()["error"]["code"] == -32602


async def test_batch_items_are_tracked_like_requests(http: HTTPClient) -> None:
    session = await http.initialize(version="2025-03-26")
    headers = {"mcp-protocol-version": "2025-03-26"}
    dup = [{"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "sdk__sleep", "arguments": {"seconds": 0.2}}},
           {"jsonrpc": "2.0", "id": 7, "method": "ping"}]
    answers = (await http.post("/mcp", dup, session, headers)).json()
    results = [a for a in answers if "result" in a]
    errors = [a["error"]["message"] for a in answers if "error" in a]
    assert len(results) == 1 and errors == ["Invalid request: id 7 is already in flight in this session"]
    too_many = [{"jsonrpc": "2.0", "id": i, "method": "ping"} for i in range(5)]  # limit is 4 here
    reply = await http.post("/mcp", too_many, session, headers)
    assert reply.status == 400 and "1 to 4 messages" in reply.json()["error"]["message"]


async def test_healthz_is_behind_the_origin_check(http: HTTPClient) -> None:
    assert (await http.request("GET", "/healthz", headers={"origin": "https://evil.example"})).status == 403
    assert (await http.request("GET", "/healthz")).status == 200


async def test_cors_for_allowed_browser_origins(http: HTTPClient) -> None:
    origin = "https://app.example.com"  # configured in allowed_origins
    preflight = await http.request("OPTIONS", "/mcp", headers={
        "origin": origin, "access-control-request-method": "POST",
        "access-control-request-headers": "content-type, mcp-session-id"})
    assert preflight.status == 204
    assert preflight.headers["access-control-allow-origin"] == origin
    assert "mcp-session-id" in preflight.headers["access-control-allow-headers"]
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}}
    reply = await http.post("/mcp", init, headers={"origin": origin})
    assert reply.headers["access-control-allow-origin"] == origin
    assert reply.headers["access-control-expose-headers"] == "mcp-session-id"
    # a localhost page may send, but is not trusted to read answers unless configured
    local = await http.post("/mcp", init, headers={"origin": "http://localhost:3000"})
    assert local.status == 200 and "access-control-allow-origin" not in local.headers
    evil = await http.request("OPTIONS", "/mcp", headers={"origin": "https://evil.example"})
    assert evil.status == 403 and "access-control-allow-origin" not in evil.headers
