"""Hot reload: Gateway.apply(new_config) applies the difference while clients keep calling.

Real processes, real sockets: servers added, removed and changed, routes added and removed,
refusals that leave everything as it was, and the CLI's SIGHUP and file watch.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.app import ConfigRefused
from tests.helpers import (
    PY,
    ROOT,
    HTTPClient,
    config,
    free_port,
    log_file,
    running_gateway,
    sdk_server,
    time_server,
    wait_healthy,
)


async def tools(http: HTTPClient, session: str, path: str = "/mcp") -> set[str]:
    reply = await http.post(path, {"jsonrpc": "2.0", "id": 99, "method": "tools/list"}, session,
                            headers={"accept": "application/json"})
    return {t["name"] for t in reply.json()["result"]["tools"]}


async def call(http: HTTPClient, session: str, tool: str, args: dict[str, Any], rid: int = 1,
               path: str = "/mcp") -> dict[str, Any]:
    reply = await http.post(path, {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                                   "params": {"name": tool, "arguments": args}}, session,
                            headers={"accept": "application/json"})
    return reply.json()  # type: ignore[no-any-return]


def _pid(backend: Any) -> int:
    return int(backend._conn._channel._process.pid)


async def test_add_change_and_remove_servers_while_sessions_stay() -> None:
    first = config({"a": sdk_server("a"), "b": sdk_server("b")})
    async with running_gateway(first) as gw, HTTPClient.connect(gw.port) as http:
        session = await http.initialize()
        assert {"a__add", "b__add"} <= await tools(http, session)
        pid_a = _pid(gw.gateway.supervisors["a"])
        stream = await trio.open_tcp_stream("127.0.0.1", gw.port)  # the session's GET stream
        await stream.send_all(b"GET /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n"
                              b"mcp-session-id: " + session.encode() + b"\r\n\r\n")
        # b changes (its env), c is added, a stays untouched
        second = config({"a": sdk_server("a"), "b": sdk_server("b", env={"CHANGED": "1"}), "c": time_server()})
        summary = await gw.gateway.apply(second)
        assert summary["added"] == ["c"] and summary["changed"] == ["b"] and summary["removed"] == []
        assert {"a__add", "b__add", "c__get_current_time"} <= await tools(http, session)
        assert _pid(gw.gateway.supervisors["a"]) == pid_a  # the unchanged server kept running
        buf = b""
        with trio.fail_after(5):
            while b"tools/list_changed" not in buf:
                buf += await stream.receive_some(65536)
        # then c and b go: their tools go, a serves on, on the same session
        summary = await gw.gateway.apply(config({"a": sdk_server("a")}))
        assert sorted(summary["removed"]) == ["b", "c"]
        assert await tools(http, session) == {t for t in await tools(http, session) if t.startswith("a__")}
        assert (await call(http, session, "a__add", {"a": 1, "b": 2}))["result"]["structuredContent"] == {"result": 3}
        gone = await call(http, session, "b__add", {"a": 1, "b": 2}, rid=2)
        assert gone["error"]["code"] == -32602
        await stream.aclose()


async def test_a_removed_servers_call_in_flight_finishes_then_it_stops() -> None:
    cfg = config({"a": sdk_server("a"), "slow": sdk_server("slow")})
    async with running_gateway(cfg) as gw, HTTPClient.connect(gw.port) as http:
        session = await http.initialize()
        old = gw.gateway.supervisors["slow"]
        pid = _pid(old)
        results: list[dict[str, Any]] = []

        async def slow_call() -> None:
            async with HTTPClient.connect(gw.port) as other:
                results.append(await call(other, session, "slow__sleep", {"seconds": 1.0}, rid=7))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_call)
            while not old.statistics().inflight:
                await trio.sleep(0.01)
            await gw.gateway.apply(config({"a": sdk_server("a")}))
        assert "result" in results[0], results  # it was let finish (within the shutdown grace)
        with trio.fail_after(10):
            while True:  # then the old process was stopped
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                await trio.sleep(0.05)


async def test_routes_are_added_and_removed_and_their_sessions_end() -> None:
    cfg = config({"a": sdk_server("a")}, routes={"/": ["a"], "/old": ["a"]})
    async with running_gateway(cfg) as gw, HTTPClient.connect(gw.port) as http:
        old_session = await http.initialize("/old/mcp")
        await gw.gateway.apply(config({"a": sdk_server("a")}, routes={"/": ["a"], "/new": {"servers": ["a"],
                                                                                           "prefix": False}}))
        new_session = await http.initialize("/new/mcp")
        assert "add" in await tools(http, new_session, "/new/mcp")  # unprefixed there
        assert (await http.post("/old/mcp", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                                old_session)).status == 404
        assert gw.gateway.sessions.get(old_session) is None


@pytest.mark.parametrize("change", ["listen", "limits", "secret"])
async def test_a_change_that_cannot_be_applied_whole_is_refused_and_nothing_changes(change: str) -> None:
    cfg = config({"a": sdk_server("a")})
    async with running_gateway(cfg) as gw, HTTPClient.connect(gw.port) as http:
        session = await http.initialize()
        if change == "listen":
            bad = config({"a": sdk_server("a"), "b": sdk_server("b")}, listen={"port": 9})
        elif change == "limits":
            bad = config({"a": sdk_server("a"), "b": sdk_server("b")}, limits={"max_sessions": 5})
        else:
            bad = config({"a": sdk_server("a"), "b": sdk_server("b", secrets={"K": "env:MCP_GW_TEST_UNSET_SECRET"})})
        before = dict(gw.gateway.supervisors)
        with pytest.raises(ConfigRefused) as info:
            await gw.gateway.apply(bad)
        assert {"listen": "listen", "limits": "limits", "secret": "MCP_GW_TEST_UNSET_SECRET"}[change] in str(info.value)
        assert gw.gateway.supervisors == before and gw.gateway.config is cfg
        assert await tools(http, session) == {t for t in await tools(http, session) if t.startswith("a__")}


async def test_reload_while_fifty_sessions_call_loses_no_call_to_the_servers_that_stay() -> None:
    cfg = config({"a": sdk_server("a"), "gone": sdk_server("gone")})
    async with running_gateway(cfg) as gw:
        failures: list[Any] = []
        calls = 0
        stop = trio.Event()

        async def client(i: int) -> None:
            nonlocal calls
            async with HTTPClient.connect(gw.port) as http:
                session = await http.initialize()
                n = 0
                while not stop.is_set():
                    n += 1
                    answer = await call(http, session, "a__add", {"a": i, "b": n}, rid=n)
                    calls += 1
                    if answer.get("result", {}).get("structuredContent") != {"result": i + n}:
                        failures.append(answer)

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(client, i)
                while calls < 200:
                    await trio.sleep(0.01)
                await gw.gateway.apply(config({"a": sdk_server("a"), "new": time_server()}))
                await gw.gateway.apply(config({"a": sdk_server("a"), "new": time_server(env={"TZ": "UTC"})}))
                mark = calls
                while calls < mark + 200:
                    await trio.sleep(0.01)
                stop.set()
        assert failures == [] and calls >= 400


def _write(path: Path, servers: dict[str, Any]) -> None:
    path.write_text(json.dumps({"servers": servers}))


async def test_the_cli_reloads_on_sighup_and_when_the_file_changes(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.json"
    _write(cfg, {"a": sdk_server("a")})
    port = free_port()
    log_path = tmp_path / "gw.log"
    with log_file(log_path) as sink:
        proc = await trio.lowlevel.open_process(
            [str(Path(PY).with_name("mcp-gateway")), "run", "--config", str(cfg), "--port", str(port)],
            stderr=sink, cwd=str(ROOT))
    try:
        await wait_healthy(port, proc)
        with trio.fail_after(30):
            async with HTTPClient.connect(port) as http:
                session = await http.initialize()
                _write(cfg, {"a": sdk_server("a"), "t": time_server()})  # the watch notices
                while "t__get_current_time" not in await tools(http, session):
                    await trio.sleep(0.2)
                cfg.write_text("{not json")  # invalid: refused, the running config stays
                proc.send_signal(signal.SIGHUP)
                while "reload (SIGHUP) refused" not in log_path.read_text():
                    await trio.sleep(0.1)
                assert "t__get_current_time" in await tools(http, session)
    finally:
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            await proc.wait()
    assert proc.returncode == 0


async def test_log_level_and_allowed_origins_change_live() -> None:
    import logging

    from gateway.app import _log_call, access_log

    root = logging.getLogger()
    level = root.level
    try:
        cfg = config({"a": sdk_server("a")}, log_level="info")
        async with running_gateway(cfg) as gw, HTTPClient.connect(gw.port) as http:
            root.setLevel(logging.INFO)
            origin = {"origin": "https://app.example"}
            assert (await http.request("GET", "/health", headers=origin)).status == 403
            await gw.gateway.apply(config({"a": sdk_server("a")}, log_level="debug",
                                          allowed_origins=["https://app.example"]))
            assert access_log.isEnabledFor(logging.DEBUG) and gw.gateway.dispatcher.observers.count(_log_call) == 1
            assert (await http.request("GET", "/health", headers=origin)).status == 200
            await gw.gateway.apply(config({"a": sdk_server("a")}, log_level="warning"))
            assert not access_log.isEnabledFor(logging.INFO) and _log_call not in gw.gateway.dispatcher.observers
    finally:
        root.setLevel(level)


async def test_names_readiness_and_audit_settings_change_without_a_restart() -> None:
    async with running_gateway(config({"a": sdk_server("a")})) as gw, HTTPClient.connect(gw.port) as http:
        session = await http.initialize()
        pid = _pid(gw.gateway.supervisors["a"])
        summary = await gw.gateway.apply(config({"a": sdk_server("a", prefix="alpha", required=False,
                                                                 audit_arguments=True)}))
        assert summary["changed"] == [] and _pid(gw.gateway.supervisors["a"]) == pid
        assert "alpha__add" in await tools(http, session) and "a__add" not in await tools(http, session)
        assert not gw.gateway.config.servers["a"].required
        # A setting the instance was started with does restart it.
        summary = await gw.gateway.apply(config({"a": sdk_server("a", prefix="alpha", env={"X": "1"})}))
        assert summary["changed"] == ["a"] and _pid(gw.gateway.supervisors["a"]) != pid
