"""bench.load drives every client wire of a real gateway (streamable, legacy SSE, WebSocket,
2026-07-28 stateless) with the same load, and its answer checks hold on each."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Pong, Request as WSRequest, TextMessage

from bench import load
from bench.load import WIRES
from tests.helpers import ROOT, cli_gateway


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway in front of bench.fast_upstream (tools fast__echo, fast__add); yields its /mcp URL."""
    work = tmp_path_factory.mktemp("wires")
    cfg = work / "gateway.yaml"
    cfg.write_text(f"servers:\n  fast: {{command: {sys.executable}, args: [-m, bench.fast_upstream], cwd: {ROOT}}}\n")
    for base in cli_gateway(cfg, work / "gateway.log", "--no-watch"):
        yield f"{base}/mcp"


def run_load(tmp_path: Path, url: str, *args: str) -> dict[str, object]:
    out = tmp_path / "report.json"
    out.unlink(missing_ok=True)
    subprocess.run([sys.executable, "-m", "bench.load", "--url", url, "--json", str(out), *args],
                   cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    report: dict[str, object] = json.loads(out.read_text())
    return report


@pytest.mark.parametrize("wire", WIRES)
def test_each_wire_runs_clean_and_checks_answers(gateway: str, tmp_path: Path, wire: str) -> None:
    report = run_load(tmp_path, gateway, "--wire", wire, "--tool", "fast__echo", "--inflight", "4",
                      "--duration", "1", "--warmup", "0.2")
    assert report["wire"] == wire and report["inflight"] == 4, report
    assert isinstance(report["requests"], int) and report["requests"] > 0, report
    assert report["errors"] == 0, report
    latency = report["latency_ms"]
    assert isinstance(latency, dict) and 0 < latency["p50"] <= latency["p99"] <= latency["max"], report
    # An answer that is not a result (an unknown tool) is an error on every wire, never a success.
    bad = run_load(tmp_path, gateway, "--wire", wire, "--tool", "fast__no_such_tool", "--args", "{}",
                   "--inflight", "1", "--duration", "0.3", "--warmup", "0")
    assert bad["requests"] == 0 and isinstance(bad["errors"], int) and bad["errors"] > 0, bad


async def test_ws_pings_fragments_and_notifications(nursery: trio.Nursery) -> None:
    """The WebSocket client's own frame splitting: a ping is answered, a fragmented answer and a
    notification before the answer are read right, and a server's close fails the request."""
    pongs: list[bytes] = []

    async def serve(stream: trio.SocketStream) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        calls = 0
        while data := await stream.receive_some(65536):
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, WSRequest):
                    await stream.send_all(ws.send(AcceptConnection(subprotocol="mcp")))
                elif isinstance(event, Pong):
                    pongs.append(event.payload)
                elif isinstance(event, TextMessage):
                    msg = json.loads(event.data)
                    if "id" not in msg:
                        continue  # notifications/initialized
                    answer = json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {"content": []}})
                    calls += 1
                    if calls == 2:  # a ping and a notification first, then the answer in 3 fragments
                        out = ws.send(Ping(payload=b"p")) + ws.send(TextMessage(
                            data='{"jsonrpc":"2.0","method":"notifications/message","params":{}}'))
                        thirds = [answer[: len(answer) // 3], answer[len(answer) // 3: -5], answer[-5:]]
                        for i, part in enumerate(thirds):
                            out += ws.send(TextMessage(data=part, message_finished=i == 2))
                        await stream.send_all(out[:7])  # and split across reads
                        await trio.sleep(0.01)
                        await stream.send_all(out[7:])
                    elif calls == 4:
                        await stream.send_all(ws.send(CloseConnection(code=1001, reason="bye")))
                    else:
                        await stream.send_all(ws.send(TextMessage(data=answer)))

    listeners = await nursery.start(functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    target = load.Target.from_url(f"http://127.0.0.1:{port}/mcp", "echo", "{}", timeout=5)
    chan = load.WSChannel(target, "tools/call")
    with trio.fail_after(10):
        await chan.open()  # call 1: initialize
        await chan.call()  # 2: ping, notification, fragments
        await chan.call()  # 3: a plain frame again
        with pytest.raises(load.LoadError, match="closed by the server: 1001"):
            await chan.call()  # 4: closed
        await chan.aclose()
    assert pongs == [b"p"]
