"""The benchmark tools work: the fast upstream over real pipes, bench.load against the SDK's server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from bench import load, sdk_server
from bench.load import Response

ROOT = Path(__file__).resolve().parent.parent


class Upstream:
    """bench.fast_upstream as a child process, spoken to line by line."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.buf = b""

    async def send(self, *messages: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all(b"".join(json.dumps(m).encode() + b"\n" for m in messages))

    async def receive(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while b"\n" not in self.buf:
            chunk = await self.proc.stdout.receive_some()
            assert chunk, "upstream closed stdout"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        msg: dict[str, Any] = json.loads(line)
        return msg


def request(id_: Any, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": id_, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


async def test_fast_upstream_over_pipes() -> None:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "bench.fast_upstream"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT
    )
    up = Upstream(proc)
    try:
        await _converse(up, proc)
    finally:
        proc.kill()


async def _converse(up: Upstream, proc: trio.Process) -> None:
    with trio.fail_after(10):
        await up.send(
            request(1, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {}}),
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
        )
        init = await up.receive()
        assert init["id"] == 1
        assert init["result"]["protocolVersion"] == "2025-06-18"
        assert init["result"]["capabilities"] == {"tools": {}}

        await up.send(request("x", "initialize", {"protocolVersion": "1999-01-01"}))
        assert (await up.receive())["result"]["protocolVersion"] == "2025-11-25"

        await up.send(request("list", "tools/list"))
        tools = {t["name"]: t for t in (await up.receive())["result"]["tools"]}
        assert set(tools) == {"echo", "add"}
        assert tools["echo"]["inputSchema"]["required"] == ["text"]
        assert tools["add"]["inputSchema"]["properties"]["a"]["type"] == "number"

        text = 'hé "quoted"\n'
        await up.send(request(2, "tools/call", {"name": "echo", "arguments": {"text": text}}))
        assert (await up.receive()) == {
            "jsonrpc": "2.0",
            "id": 2,
            "result": {"content": [{"type": "text", "text": text}], "isError": False},
        }
        await up.send(request(3, "tools/call", {"name": "add", "arguments": {"a": 2, "b": 0.5}}))
        assert (await up.receive())["result"]["content"][0]["text"] == "2.5"

        await up.send(request(4, "ping"), request(5, "resources/list"))
        assert await up.receive() == {"jsonrpc": "2.0", "id": 4, "result": {}}
        assert (await up.receive())["error"]["code"] == -32601
        await up.send(request(6, "tools/call", {"name": "add", "arguments": {"a": "x"}}))
        assert (await up.receive())["error"]["code"] == -32602

        # A pipelined burst: every answer, in order, with its own id (small enough, ~30 KB of
        # answers, to fit the pipe buffer while we are still writing).
        await up.send(
            *(
                request(i, "tools/call", {"name": "echo", "arguments": {"text": str(i)}})
                for i in range(100, 400)
            )
        )
        for i in range(100, 400):
            reply = await up.receive()
            assert reply["id"] == i and reply["result"]["content"][0]["text"] == str(i)

        assert proc.stdin is not None
        await proc.stdin.aclose()  # EOF ends it
        assert await proc.wait() == 0


def test_find_reply_sse_and_json() -> None:
    sse = (
        b'event: message\r\ndata: {"jsonrpc":"2.0","method":"notifications/progress","params":{}}\r\n\r\n'
        b'event: message\r\ndata: {"jsonrpc":"2.0","id":7,"result":{}}\r\n\r\n'
    )
    assert load.find_reply(Response(200, {b"content-type": b"text/event-stream"}, sse), 7).id == 7
    js = Response(200, {b"content-type": b"application/json"}, b'{"jsonrpc":"2.0","id":8,"result":{}}')
    for resp, want in ((js, 9), (Response(200, {b"content-type": b"text/event-stream"}, sse), 8)):
        try:
            load.find_reply(resp, want)
        except load.LoadError as exc:
            assert "id" in str(exc)
        else:
            raise AssertionError("a wrong id must be an error")


async def test_load_cli_against_sdk_server(nursery: trio.Nursery, tmp_path: Path) -> None:
    url = await nursery.start(sdk_server.serve)
    out = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "bench.load", "--url", url, "--sessions", "2", "--inflight", "4"]
    cmd += ["--duration", "1", "--warmup", "0.2", "--json", str(out)]
    with trio.fail_after(20):
        await trio.run_process(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
    report = json.loads(out.read_text())
    assert report["requests"] > 0 and report["errors"] == 0, report
    assert report["mode"] == "call" and report["inflight"] == 4
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p99"] <= report["latency_ms"]["max"]


async def test_load_modes_in_process(nursery: trio.Nursery) -> None:
    url = await nursery.start(sdk_server.serve)
    with trio.fail_after(20):
        target = load.Target.from_url(url, "add", '{"a": 1, "b": 2}', timeout=5)
        for mode in ("list", "churn"):
            report = await load.run_load(target, sessions=1, inflight=2, mode=mode, warmup=0, duration=0.4)
            assert report["requests"] > 0 and report["errors"] == 0, report
        assert report["iterations"] > 0
        idle = await load.open_idle(target, 20, hold=0)
        assert idle["opened"] == 20 and idle["errors"] == 0
        # A tool that fails is an error, not a success.
        bad = load.Target.from_url(url, "no_such_tool", "{}", timeout=5)
        report = await load.run_load(bad, sessions=1, inflight=1, mode="call", warmup=0, duration=0.2)
        assert report["requests"] == 0 and report["errors"] > 0


def test_report_shows_the_wrk_pair_of_part_f_or_why_it_is_missing() -> None:
    from bench import report

    def run(rps: float, p99: float) -> dict[str, Any]:
        return {"throughput_rps": rps, "latency_ms": {"p50": 1.0, "p99": p99}, "cpu_us_per_call": 140.0}

    pipeline: dict[str, Any] = {"bare_forwarder": run(8000, 2.5), "everything_on": run(7200, 3.0),
                                "ratio_vs_bare": 0.9,
                                "wrk": {"bare_forwarder": run(9000, 2.2), "everything_on": run(8100, 1.9),
                                        "ratio_vs_bare": 0.9}}
    results: dict[str, Any] = {"settings": {}, "parts": {"pipeline": pipeline}}
    pipeline["wires_wrk"] = {"streamable": run(8000, 2.0), "stateless": run(7600, 2.1) | {"ratio_vs_streamable": 0.95}}
    text = report.markdown(results)
    assert "| 2026-07-28 stateless (7,600/s) / Streamable HTTP (8,000/s), everything on, with wrk | 0.95× | ≥ 0.9× | met |" \
        in text
    assert "everything on (8,100/s) / bare forwarder (9,000/s) | 0.90× | ≥ 1.0× | **missed** |" in text
    assert "| p99 at 10 connections with wrk: everything on / bare forwarder | 1.900 ms / 2.200 ms | p99 ≤ 2 ms | met |" \
        in text

    pipeline["wrk"] = {"skipped": "wrk is not installed (make bench installs it: scripts/bench-env)"}
    pipeline["wires_wrk"] = {"skipped": "wrk is not installed (make bench installs it: scripts/bench-env)"}
    text = report.markdown(results)
    assert "| 2026-07-28 stateless / Streamable HTTP with wrk | not measured: wrk is not installed" in text
    assert "| The same pair measured with wrk | not measured: wrk is not installed" in text
    assert "p99 at 10 connections with wrk" not in text


def test_report_shows_a_peer_with_both_load_generators_or_why_wrk_is_missing() -> None:
    from bench import report

    def run(rps: float, p50: float) -> dict[str, Any]:
        return {"throughput_rps": rps, "latency_ms": {"p50": p50, "p99": 2 * p50}}

    peer: dict[str, Any] = {"agentgateway": run(11000, 0.9), "gateway": run(8800, 1.1), "ratio": 0.8, "tool": "echo",
                            "wrk": {"agentgateway": run(15000, 0.6), "gateway": run(6000, 1.6), "ratio": 0.4}}
    results: dict[str, Any] = {"settings": {}, "parts": {"pipeline": {"peers": {"agentgateway": peer}}}}
    text = report.markdown(results)
    assert "| Gateway (8,800/s) / agentgateway (11,000/s), ABBA | 0.80× | ≥ 0.5× | met |" in text
    assert ("| Gateway (6,000/s, p50 1.600 ms) / agentgateway (15,000/s, p50 0.600 ms), with wrk (the issue's method), "
            "ABBA | 0.40× | ≥ 0.5× | **missed** |") in text
    assert "not measured (`bench/run --peer" not in text

    peer["wrk"] = {"skipped": "wrk is not installed (make bench installs it: scripts/bench-env)"}
    text = report.markdown(results)
    assert "| Gateway / agentgateway with wrk | not measured: wrk is not installed" in text
    assert "with wrk (the issue's method)" not in text
