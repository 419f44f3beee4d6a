"""`lifecycle: session` and `lifecycle: call` (with and without a warm pool), on process servers.

The same backends run containers (tests/test_sandbox_gateway.py); processes make the
logic quick to test here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from mcp import Client
from mcp.shared.exceptions import MCPError

from gateway.upstream.lifecycle import CallBackend, SessionBackend
from tests.helpers import HTTPClient, config, flaky_sdk_server, running_gateway, sdk_server


async def _pid(client: Client) -> int:
    return int((await client.call_tool("sdk__whoami", {})).content[0].text)


async def test_session_lifecycle_gives_each_session_its_own_instance() -> None:
    async with running_gateway(config({"sdk": sdk_server(lifecycle="session")})) as gw:
        backend = gw.gateway.supervisors["sdk"]
        assert isinstance(backend, SessionBackend)
        async with Client(gw.url, mode="legacy") as a, Client(gw.url, mode="legacy") as b:
            pid_a, pid_b = await _pid(a), await _pid(b)
            assert pid_a != pid_b
            assert await _pid(a) == pid_a  # stable within the session
            assert len(backend.by_session) == 2
            names = {t.name for t in (await a.list_tools()).tools}
            assert "sdk__echo" in names
        # both clients sent DELETE on exit: their instances are stopped
        with trio.fail_after(5):
            while backend.by_session:
                await trio.sleep(0.02)


async def test_session_instance_is_reaped_when_idle_and_restarted_on_use() -> None:
    async with running_gateway(config({"sdk": sdk_server(lifecycle="session", idle_timeout="300ms")})) as gw:
        backend = gw.gateway.supervisors["sdk"]
        assert isinstance(backend, SessionBackend)
        async with HTTPClient.connect(gw.port) as http:
            session = await http.initialize()
            call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": {"name": "sdk__whoami", "arguments": {}}}
            first = (await http.post("/mcp", call, session)).json()["result"]["content"][0]["text"]
            with trio.fail_after(5):
                while backend.by_session:
                    await trio.sleep(0.05)
            second = (await http.post("/mcp", {**call, "id": 2}, session)).json()["result"]["content"][0]["text"]
            assert first != second


async def test_call_lifecycle_uses_a_fresh_instance_per_call() -> None:
    async with running_gateway(config({"sdk": sdk_server(lifecycle="call")})) as gw:
        backend = gw.gateway.supervisors["sdk"]
        assert isinstance(backend, CallBackend)
        async with Client(gw.url, mode="legacy") as client:
            pids = {await _pid(client) for _ in range(3)}
            assert len(pids) == 3
            assert (await client.call_tool("sdk__add", {"a": 1, "b": 2})).structured_content == {"result": 3}


async def test_call_lifecycle_with_warm_pool_serves_from_the_pool_and_refills() -> None:
    async with running_gateway(config({"sdk": sdk_server(lifecycle="call", pool=2)})) as gw:
        backend = gw.gateway.supervisors["sdk"]
        assert isinstance(backend, CallBackend)
        with trio.fail_after(10):
            while len(backend.warm) < 2:
                await trio.sleep(0.02)
        warm = list(backend.warm)
        started_before = backend.started_total
        async with Client(gw.url, mode="legacy") as client:
            await _pid(client)
            assert backend.started_total == started_before  # served by a warm instance, none cold-started
            with trio.fail_after(5):
                await warm[0].ended.wait()  # ... which is stopped after its call
            with trio.fail_after(10):
                while len(backend.warm) < 2:
                    await trio.sleep(0.02)
            assert backend.started_total == started_before + 1  # the pool refilled
            assert warm[1] in backend.warm


async def test_max_instances_bounds_cold_starts() -> None:
    cfg = config({"sdk": sdk_server(lifecycle="session", max_instances=1, call_timeout="1s")})
    async with running_gateway(cfg) as gw:
        backend = gw.gateway.supervisors["sdk"]
        assert isinstance(backend, SessionBackend)
        with trio.fail_after(10):  # the catalog instance (pool 0) is stopped, and its slot freed
            while backend.instances:
                await trio.sleep(0.05)
        async with Client(gw.url, mode="legacy") as first, Client(gw.url, mode="legacy") as second:
            await _pid(first)  # holds the only instance
            assert backend.instances == 1
            with pytest.raises(MCPError) as info:
                await _pid(second)
            assert "limit of 1 instances" in info.value.error.message
        with trio.fail_after(10):  # the first session ended, its instance stopped...
            while backend.instances:
                await trio.sleep(0.05)
        async with Client(gw.url, mode="legacy") as third:  # ...so a new session gets one
            await _pid(third)


async def test_catalog_is_fetched_once_a_start_succeeds(tmp_path: Path) -> None:
    cfg = config({"sdk": flaky_sdk_server(tmp_path / "started", first_start_fails=True, lifecycle="call")})
    async with running_gateway(cfg) as gw:
        backend = gw.gateway.supervisors["sdk"]
        assert backend.catalog is None and backend.state == "failed"
        with trio.fail_after(10):
            while backend.catalog is None:
                await trio.sleep(0.05)
        async with Client(gw.url, mode="legacy") as client:
            assert "sdk__echo" in {t.name for t in (await client.list_tools()).tools}
            assert (await client.call_tool("sdk__echo", {"text": "late"})).content[0].text == "late"
