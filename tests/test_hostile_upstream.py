"""Hostile upstream servers through the real gateway: real processes (and a real container), real sockets.

Each attack of tests/servers/hostile_server.py must leave the gateway up, end the attacked call at
once (never at its timeout) when its answer or its failure is known, and keep the other servers and
later calls working. Wedged and stopped servers are found by the liveness pings and restarted.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from typing import Any

import pytest
import trio

from gateway import logsafe
from gateway.protocol import jsonrpc
from tests.conftest_docker import ECHO_IMAGE
from tests.helpers import PY, ROOT, HTTPClient, config, running_gateway, sdk_server

HOSTILE = str(ROOT / "tests" / "servers" / "hostile_server.py")


def hostile(*args: str, **extra: Any) -> dict[str, Any]:
    return {"command": PY, "args": [HOSTILE, *args], **extra}


async def call(http: HTTPClient, session: str, tool: str, args: dict[str, Any] | None = None,
               rid: int = 1) -> dict[str, Any]:
    reply = await http.post("/mcp", {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                                     "params": {"name": tool, "arguments": args or {}}}, session,
                            headers={"accept": "application/json"})
    assert reply.status == 200, reply
    answer: dict[str, Any] = reply.json()
    assert answer["id"] == rid
    return answer


def text(answer: dict[str, Any]) -> str:
    return str(answer["result"]["content"][0]["text"])


@pytest.mark.parametrize(("tool", "expect"), [
    ("deep", "invalid"), ("deep_id_last", "invalid"), ("raw_nul", "invalid"), ("truncated", "invalid"),
    ("surrogate", "bad byte: \ufffd"), ("invalid_utf8", "bad \ufffd byte"), ("junk", "after junk"),
])
async def test_an_attack_ends_its_call_at_once_and_the_gateway_serves_on(tool: str, expect: str) -> None:
    # A call timeout far above the test's own deadline: an answer that were dropped would hang the test.
    cfg = config({"bad": hostile(), "sdk": sdk_server()}, timeouts={"call": "60s"})
    async with running_gateway(cfg) as gw, HTTPClient.connect(gw.port) as http:
        session = await http.initialize()
        with trio.fail_after(10):
            answer = await call(http, session, f"bad__{tool}")
        if expect == "invalid":
            assert answer["error"]["code"] == jsonrpc.UPSTREAM_INVALID, answer
            assert "server 'bad' sent an invalid answer" in answer["error"]["message"]
        else:
            assert text(answer) == expect, answer
        # The attacked server and every other one still work, on the same session.
        assert text(await call(http, session, "bad__echo", {"text": "still here"}, rid=2)) == "still here"
        assert text(await call(http, session, "sdk__echo", {"text": "fine"}, rid=3)) == "fine"
        assert gw.gateway.supervisors["bad"].restarts == 0  # contained per message, not by a restart


async def test_junk_at_start_does_not_stop_the_server_from_starting() -> None:
    async with running_gateway(config({"bad": hostile("--deep-at-start")})) as gw, \
            HTTPClient.connect(gw.port) as http:
        assert gw.gateway.supervisors["bad"].state == "ready"
        session = await http.initialize()
        assert text(await call(http, session, "bad__echo", {"text": "up"})) == "up"


async def test_log_floods_and_forgeries_are_escaped_capped_and_rate_limited(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "mcp_gateway")
    cfg = config({"bad": hostile()}, limits={"upstream_log_rate": 10, "upstream_log_burst": 50})
    async with running_gateway(cfg) as gw, HTTPClient.connect(gw.port) as http:
        session = await http.initialize()
        start = trio.current_time()
        with trio.fail_after(30):
            answer = await call(http, session, "bad__flood_logs", {"count": 3000})
        assert text(answer) == "flooded 3000"
        await trio.sleep(0.5)  # the stderr reader drains the rest
        elapsed = trio.current_time() - start
    records = [r for r in caplog.records if r.getMessage().startswith("[bad] ")]
    # 6000 lines were written (3000 log notifications + 3000 stderr lines): at most the burst plus
    # the rate over the elapsed time reached the log, and every drop was counted.
    assert 50 <= len(records) <= 50 + 10 * elapsed + 2, len(records)
    stats = logsafe.statistics()["bad"]
    assert stats.dropped >= 6000 - len(records) - 5 and stats.logged == len(records)
    for record in records:
        message = record.getMessage()
        # One line that says whose it is, without terminal escapes or NULs: the "CRITICAL mcp_gateway"
        # line the server forged stays inside a record of ours, after "[bad] ", at the server's level.
        assert "\n" not in message and "\r" not in message and "\x1b" not in message and "\x00" not in message
        assert record.levelno <= logging.WARNING
    forged = [r.getMessage() for r in records if "CRITICAL mcp_gateway: FORGED" in r.getMessage()]
    assert forged and all(not m.startswith("2026") for m in forged)  # always inside a record of ours
    # Log notifications and stderr share one budget; whichever got through keeps its newline escaped.
    notes = [r.getMessage() for r in records if "log (error): " in r.getMessage()]
    assert all("\\n2026-01-01 00:00:00 CRITICAL" in m for m in notes)


async def test_a_server_that_stops_answering_is_pinged_restarted_and_explained() -> None:
    # `hang` stops reading and never answers: two call timeouts in a row trigger a ping at once,
    # which is not answered, so the server is restarted and /healthz says why.
    server = hostile(call_timeout="1s", ping_timeout="1s", ping_after_timeouts=2, ping_interval=0)
    async with running_gateway(config({"bad": server})) as gw, HTTPClient.connect(gw.port) as http:
        session = await http.initialize()
        supervisor = gw.gateway.supervisors["bad"]
        with trio.fail_after(20):
            first = await call(http, session, "bad__hang", rid=1)
            assert first["error"]["code"] == jsonrpc.REQUEST_TIMEOUT
            second = await call(http, session, "bad__echo", {"text": "x"}, rid=2)  # queued behind the hang
            assert second["error"]["code"] == jsonrpc.REQUEST_TIMEOUT
            while supervisor.restarts == 0:
                await trio.sleep(0.05)
            health = (await http.request("GET", "/healthz")).json()
            assert "unresponsive" in health["servers"]["bad"]["error"]
            assert "after 2 call timeouts in a row" in health["servers"]["bad"]["error"]
            while supervisor.state != "ready":
                await trio.sleep(0.05)
            assert text(await call(http, session, "bad__echo", {"text": "back"}, rid=3)) == "back"


async def test_a_stopped_idle_server_is_found_by_the_idle_ping() -> None:
    server = hostile(ping_interval="300ms", ping_timeout="500ms")
    async with running_gateway(config({"bad": server})) as gw, HTTPClient.connect(gw.port) as http:
        session = await http.initialize()
        supervisor = gw.gateway.supervisors["bad"]
        with trio.fail_after(20):
            assert text(await call(http, session, "bad__freeze")) == "freezing"  # then SIGSTOPs itself
            while supervisor.restarts == 0:
                await trio.sleep(0.05)
            assert "silent for 0.3s" in (supervisor.last_error or "")
            while supervisor.state != "ready":
                await trio.sleep(0.05)
            assert text(await call(http, session, "bad__echo", {"text": "thawed"}, rid=2)) == "thawed"


async def test_calls_in_flight_fail_at_once_with_the_reason_when_a_server_is_found_wedged() -> None:
    # Stopped from outside while idle: 0.3 s of silence, then a ping that is not answered within 2 s
    # aborts the connection. A call sent in between fails then, with the reason: not after its 30 s.
    server = hostile(call_timeout="30s", ping_interval="300ms", ping_timeout="2s")
    async with running_gateway(config({"bad": server})) as gw, HTTPClient.connect(gw.port) as http:
        session = await http.initialize()
        await call(http, session, "bad__echo", {"text": "warm"})
        pid = _pid_of(gw.gateway.supervisors["bad"])
        os.kill(pid, signal.SIGSTOP)  # pipes stay open; nothing moves
        try:
            await trio.sleep(0.5)
            start = trio.current_time()
            with trio.fail_after(10):
                answer = await call(http, session, "bad__echo", {"text": "x"}, rid=2)
            assert trio.current_time() - start < 5
        finally:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        assert answer["error"]["code"] == jsonrpc.UPSTREAM_UNAVAILABLE, answer
        assert "unresponsive" in answer["error"]["message"]


def _pid_of(supervisor: Any) -> int:
    channel = supervisor._conn._channel  # the running ProcessChannel
    return int(channel._process.pid)


@pytest.mark.docker
async def test_a_sandboxed_server_sending_deep_json_cannot_crash_the_gateway() -> None:
    box = {"image": ECHO_IMAGE, "command": ["python3", "-m", "hostile_server"]}
    async with running_gateway(config({"box": box, "sdk": sdk_server()})) as gw, \
            HTTPClient.connect(gw.port) as http:
        session = await http.initialize()
        for i, tool in enumerate(("deep", "deep_id_last", "junk")):
            with trio.fail_after(15):
                answer = await call(http, session, f"box__{tool}", rid=i + 1)
            assert ("error" in answer and answer["error"]["code"] == jsonrpc.UPSTREAM_INVALID) or \
                text(answer) == "after junk", answer
        assert text(await call(http, session, "box__echo", {"text": "ok"}, rid=9)) == "ok"
        assert text(await call(http, session, "sdk__echo", {"text": "ok"}, rid=10)) == "ok"
        assert json.loads((await http.request("GET", "/healthz")).body)["servers"]["box"]["state"] == "ready"
