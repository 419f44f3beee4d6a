"""Test helpers: an in-process gateway on a real socket and a small raw HTTP client."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import h11
import trio

from gateway.app import Gateway
from gateway.cli.compose import build_gateway
from gateway.config import GatewayConfig, parse_config

ROOT = Path(__file__).resolve().parent.parent
SDK_SERVER = str(ROOT / "tests" / "servers" / "sdk_server.py")
PY = sys.executable
ACCEPT_BOTH = "application/json, text/event-stream"


def free_port() -> int:
    """A port that was free a moment ago (for tests that must know it before the server starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sdk_server(name: str = "sdk", **extra: Any) -> dict[str, Any]:
    return {"command": PY, "args": [SDK_SERVER, name], **extra}


def flaky_sdk_server(marker: Path, *, first_start_fails: bool, **extra: Any) -> dict[str, Any]:
    """The SDK test server behind a start-up check: either only its first start fails, or
    only its first start succeeds (``marker`` records that a first start happened)."""
    condition = "not os.path.exists(marker)" if first_start_fails else "os.path.exists(marker)"
    script = ("import os, runpy, sys\n"
              f"marker = {str(marker)!r}\n"
              f"failing = {condition}\n"
              "open(marker, 'a').close()\n"
              "if failing:\n"
              "    sys.exit(1)\n"
              f"sys.argv = ['sdk_server', 'sdk']\nrunpy.run_path({SDK_SERVER!r}, run_name='__main__')\n")
    return {"command": PY, "args": ["-c", script], **extra}


def time_server(**extra: Any) -> dict[str, Any]:
    return {"command": PY, "args": ["-m", "mcp_server_time"], **extra}


def config(servers: dict[str, Any], **extra: Any) -> GatewayConfig:
    return parse_config({"servers": servers, **extra})


@dataclass
class Running:
    gateway: Gateway
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def route_url(self, prefix: str) -> str:
        return f"http://127.0.0.1:{self.port}{prefix}/mcp"


@asynccontextmanager
async def running_gateway(cfg: GatewayConfig, **kwargs: Any) -> AsyncIterator[Running]:
    async with trio.open_nursery() as nursery:
        gateway = build_gateway(cfg, port=0, **kwargs)
        port = await nursery.start(gateway.run)
        try:
            yield Running(gateway, port)
        finally:
            nursery.cancel_scope.cancel()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def sse_messages(self) -> list[Any]:
        # (a priming event, an id and an empty data field, carries no message)
        return [json.loads(line[5:]) for line in self.body.decode().splitlines()
                if line.startswith("data:") and line[5:].strip()]


class HTTPClient:
    """One keep-alive HTTP/1.1 connection, for tests that check exact status codes."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.CLIENT)

    @classmethod
    @asynccontextmanager
    async def connect(cls, port: int) -> AsyncIterator[HTTPClient]:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            yield cls(stream)

    async def request(self, method: str, path: str, body: bytes | None = None,
                      headers: dict[str, str] | None = None) -> Reply:
        hdrs = {"host": "127.0.0.1", **(headers or {})}
        if body is not None:
            hdrs.setdefault("content-type", "application/json")
            hdrs["content-length"] = str(len(body))
        if self.conn.our_state is h11.DONE:
            self.conn.start_next_cycle()
        out = self.conn.send(h11.Request(method=method, target=path, headers=list(hdrs.items())))
        if body:
            out += self.conn.send(h11.Data(data=body))
        out += self.conn.send(h11.EndOfMessage())
        await self.stream.send_all(out)
        return await self.read_reply()

    async def read_reply(self) -> Reply:
        status, headers, chunks = 0, {}, []
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(await self.stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                chunks.append(event.data)
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return Reply(status, headers, b"".join(chunks))

    async def post(self, path: str, message: Any, session: str | None = None,
                   headers: dict[str, str] | None = None) -> Reply:
        hdrs = {"accept": ACCEPT_BOTH}
        if session:
            hdrs["mcp-session-id"] = session
        hdrs.update(headers or {})
        body = message if isinstance(message, bytes) else json.dumps(message).encode()
        return await self.request("POST", path, body, hdrs)

    async def initialize(self, path: str = "/mcp", version: str = "2025-11-25",
                         headers: dict[str, str] | None = None) -> str:
        reply = await self.post(path, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}},
            headers=headers)
        assert reply.status == 200, reply
        session = reply.headers["mcp-session-id"]
        note = await self.post(path, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session,
                               headers=headers)
        assert note.status == 202
        return session


def log_file(path: Path) -> BinaryIO:
    """Where a subprocess gateway writes its log (read back by the test); open it before the process."""
    return open(path, "wb")


async def wait_healthy(port: int, proc: trio.Process, timeout: float = 30) -> None:
    """Until a gateway started as a process answers ``GET /healthz`` with 200 (it exits: fail)."""
    with trio.fail_after(timeout):
        while True:
            assert proc.returncode is None, "the gateway exited"
            try:
                async with HTTPClient.connect(port) as http:
                    if (await http.request("GET", "/healthz")).status == 200:
                        return
            except OSError:
                pass
            await trio.sleep(0.05)


def cli_gateway(config: Path, log: Path, *args: str) -> Iterator[str]:
    """``mcp-gateway run`` on ``config`` as a real subprocess (output to ``log``) until it is healthy;
    yields its base URL (http://127.0.0.1:PORT), then stops it (for fixtures: ``yield from``)."""
    import subprocess
    import time
    import urllib.request

    port = free_port()
    gateway = str(Path(sys.executable).with_name("mcp-gateway"))
    with log.open("wb") as out:
        proc = subprocess.Popen([gateway, "run", "--config", str(config), "--port", str(port), *args], cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "the gateway exited"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the gateway did not become healthy"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
