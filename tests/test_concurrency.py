"""Many sessions over one shared upstream: every answer reaches exactly its caller."""

from __future__ import annotations

import random

import trio

from tests.helpers import HTTPClient, config, running_gateway, sdk_server

SESSIONS = 200
CALLS_PER_SESSION = 5


async def test_200_sessions_interleaved_each_get_their_own_answers() -> None:
    async with running_gateway(config({"sdk": sdk_server()})) as gw:
        mismatches: list[str] = []
        done = 0
        start = trio.Event()

        async def session_worker(i: int) -> None:
            nonlocal done
            async with HTTPClient.connect(gw.port) as http:
                session = await http.initialize()
                await start.wait()  # all sessions exist before the first call: maximal interleaving
                for n in range(CALLS_PER_SESSION):
                    text = f"s{i}-c{n}-{random.random()}"
                    # every session uses the same ids (1, 2, ...): ids are per session
                    msg = {"jsonrpc": "2.0", "id": n + 1, "method": "tools/call",
                           "params": {"name": "sdk__echo", "arguments": {"text": text}}}
                    reply = (await http.post("/mcp", msg, session)).json()
                    got = reply.get("result", {}).get("content", [{}])[0].get("text")
                    if reply.get("id") != n + 1 or got != text:
                        mismatches.append(f"session {i} call {n}: sent {text!r}, got {reply!r}")
                    await trio.sleep(random.random() * 0.01)
                done += 1

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for i in range(SESSIONS):
                    nursery.start_soon(session_worker, i)
                while len(gw.gateway.sessions) < SESSIONS:
                    await trio.sleep(0.01)
                start.set()
        assert mismatches == []
        assert done == SESSIONS
        conn = await gw.gateway.supervisors["sdk"].connection()
        assert conn.in_flight == 0
        assert conn.in_flight_peak > 10  # the calls really overlapped on the one upstream
