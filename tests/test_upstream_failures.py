"""Crashed, killed, hung and unstartable upstreams: errors arrive fast, nothing hangs, restarts work."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.helpers import PY, HTTPClient, Running, config, flaky_sdk_server, running_gateway, sdk_server


@pytest.fixture
async def gw() -> AsyncIterator[Running]:
    cfg = config({"sdk": sdk_server(restart_backoff="100ms", call_timeout="2s"),
                  "broken": {"command": "/nonexistent/server-binary"}})
    async with running_gateway(cfg) as running:
        yield running


async def _pid(client: Client) -> int:
    return int((await client.call_tool("sdk__whoami", {})).content[0].text)


async def test_killed_mid_call_fails_within_a_second_then_recovers(gw: Running) -> None:
    async with Client(gw.url, mode="legacy") as client:
        pid = await _pid(client)
        failure: list[MCPError] = []

        async def call() -> None:
            try:
                await client.call_tool("sdk__sleep", {"seconds": 30})
            except MCPError as exc:
                failure.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await trio.sleep(0.3)
            os.kill(pid, signal.SIGKILL)
            killed_at = trio.current_time()
            with trio.fail_after(1):
                while not failure:
                    await trio.sleep(0.01)
        assert trio.current_time() - killed_at < 1
        err = failure[0].error
        assert err.code == -32000
        assert "'sdk'" in err.message and "SIGKILL" in err.message
        # the next call waits for the restart and succeeds on a new process
        result = await client.call_tool("sdk__echo", {"text": "back"})
        assert result.content[0].text == "back"
        assert await _pid(client) != pid
        assert gw.gateway.supervisors["sdk"].restarts == 1


async def test_crash_names_the_server_and_exit_status(gw: Running) -> None:
    async with Client(gw.url, mode="legacy") as client:
        with trio.fail_after(2), pytest.raises(MCPError) as info:
            await client.call_tool("sdk__crash", {"code": 3})
        assert "'sdk' exited with status 3" in info.value.error.message
        assert (await client.call_tool("sdk__add", {"a": 1, "b": 1})).structured_content == {"result": 2}


async def test_hung_call_times_out_with_a_jsonrpc_error(gw: Running) -> None:
    async with Client(gw.url, mode="legacy") as client:
        started = trio.current_time()
        with pytest.raises(MCPError) as info:
            await client.call_tool("sdk__sleep", {"seconds": 30})
        assert info.value.error.code == -32001
        assert "within 2s" in info.value.error.message
        assert trio.current_time() - started < 4
        # the server itself is fine and the abandoned call was cancelled upstream
        assert (await client.call_tool("sdk__echo", {"text": "ok"})).content[0].text == "ok"


async def test_unstartable_server_is_reported_and_others_work() -> None:
    cfg = config({"sdk": sdk_server(), "broken": {"command": "/nonexistent/server-binary"}},
                 routes={"/": ["sdk", "broken"], "/b": ["broken"]})
    async with running_gateway(cfg) as gw:
        broken = gw.gateway.supervisors["broken"]
        assert broken.state != "ready" and "cannot start" in (broken.last_error or "")
        async with Client(gw.url, mode="legacy") as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert "sdk__echo" in names
        async with HTTPClient.connect(gw.port) as http:
            health = (await http.request("GET", "/healthz")).json()
            assert health["servers"]["broken"]["state"] != "ready"
            assert health["servers"]["sdk"]["state"] == "ready"


async def test_client_disconnect_cancels_its_call_upstream(gw: Running) -> None:
    supervisor = gw.gateway.supervisors["sdk"]
    async with HTTPClient.connect(gw.port) as http:
        session = await http.initialize()
        stream = await trio.open_tcp_stream("127.0.0.1", gw.port)
        body = (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"sdk__sleep",'
                b'"arguments":{"seconds":30}}}')
        await stream.send_all(b"POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: application/json\r\n"
                              b"content-type: application/json\r\nmcp-session-id: " + session.encode() +
                              b"\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
        conn = await supervisor.connection()
        with trio.fail_after(2):
            while conn.in_flight == 0:
                await trio.sleep(0.01)
        await stream.aclose()
        with trio.fail_after(1):
            while conn.in_flight:
                await trio.sleep(0.01)
        assert not gw.gateway.sessions.get(session).inflight  # type: ignore[union-attr]


async def test_server_that_exits_during_initialize_is_reported_not_fatal() -> None:
    cfg = config({"sdk": sdk_server(),
                  "dies": {"command": PY, "args": ["-c", "import sys; sys.stderr.write('no luck'); sys.exit(1)"],
                           "restart_backoff": "50ms"}})
    async with running_gateway(cfg) as gw:
        dies = gw.gateway.supervisors["dies"]
        # It retries in the background (50 ms, then doubling): between two attempts it is "failed",
        # during one "starting", so the check waits for the next gap instead of racing a restart.
        with trio.fail_after(5):
            while dies.state != "failed":
                await trio.sleep(0.005)
        assert dies.state == "failed"
        assert dies.last_error == "server 'dies' exited with status 1 while starting"
        async with Client(gw.url, mode="legacy") as client:
            assert (await client.call_tool("sdk__echo", {"text": "fine"})).content[0].text == "fine"
        await trio.sleep(0.3)  # several restart attempts later the gateway is still up
        assert dies.restarts >= 2
        async with Client(gw.url, mode="legacy") as client:
            assert (await client.call_tool("sdk__echo", {"text": "still"})).content[0].text == "still"


async def test_calls_waiting_for_a_restart_that_fails_are_told_at_once(tmp_path: Path) -> None:
    cfg = config({"sdk": flaky_sdk_server(tmp_path / "started", first_start_fails=False, call_timeout="30s",
                                          restart_backoff="300ms")})
    async with running_gateway(cfg) as gw:
        async with Client(gw.url, mode="legacy") as client:
            with pytest.raises(MCPError):
                await client.call_tool("sdk__crash", {"code": 1})
            started = trio.current_time()
            with pytest.raises(MCPError) as info:  # waits for the restart, which fails
                await client.call_tool("sdk__echo", {"text": "x"})
            assert trio.current_time() - started < 5  # not the 30 s call timeout
            assert "exited with status 1 while starting" in info.value.error.message


async def test_a_server_that_dies_right_after_initialize_backs_off() -> None:
    # Answers initialize, then exits: a crash loop that must not restart at full speed.
    flapping = ("import json, sys, time\n"
                "req = json.loads(sys.stdin.readline())\n"
                "print(json.dumps({'jsonrpc': '2.0', 'id': req['id'], 'result': {\n"
                "    'protocolVersion': '2025-11-25', 'capabilities': {}, 'serverInfo': {'name': 'f', 'version': '1'}}}),"
                " flush=True)\n"
                "time.sleep(0.05)\n")
    cfg = config({"flap": {"command": PY, "args": ["-c", flapping], "restart_backoff": "20ms",
                           "restart_backoff_max": "1s"}})
    async with running_gateway(cfg) as gw:
        sup = gw.gateway.supervisors["flap"]
        with trio.fail_after(10):
            while sup.restarts < 4:
                await trio.sleep(0.01)
        assert sup.backoff_delay >= 0.16  # 20 ms doubled at least three times
