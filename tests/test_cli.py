"""The `mcp-gateway` command as a user runs it: check, run, signals, Claude Desktop configs."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import trio
from mcp import Client

from tests.helpers import ROOT, SDK_SERVER, free_port, wait_healthy

CLI = [sys.executable, "-m", "gateway.cli"]



def test_check_prints_routes_and_tool_table() -> None:
    out = subprocess.run([*CLI, "check", "--config", str(ROOT / "config" / "example.yaml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "time__get_current_time" in out.stdout and "time__convert_time" in out.stdout
    assert "/team-a" in out.stdout and "127.0.0.1:8080" in out.stdout


def test_check_names_the_bad_key_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("servers:\n  time:\n    command: python3\n    args: [-m, mcp_server_time, {x: 1}]\n")
    out = subprocess.run([*CLI, "check", "--config", str(bad)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "servers.time.args[2]" in out.stderr


def test_check_reports_a_server_that_cannot_start(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("servers:\n  gone: {command: /no/such/binary}\n")
    out = subprocess.run([*CLI, "check", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "gone: FAILED" in out.stdout and "/no/such/binary" in out.stdout


async def test_run_claude_desktop_config_then_sigterm_drains_in_flight_call(tmp_path: Path) -> None:
    cfg = tmp_path / "claude_desktop_config.json"
    cfg.write_text(json.dumps({"mcpServers": {
        "time": {"command": sys.executable, "args": ["-m", "mcp_server_time"]},
        "sdk": {"command": sys.executable, "args": [SDK_SERVER, "sdk"], "env": {}},
    }}))
    port = free_port()
    proc = await trio.lowlevel.open_process([*CLI, "run", "--config", str(cfg), "--port", str(port)],
                                            stderr=subprocess.PIPE)
    try:
        await wait_healthy(port, proc)
        url = f"http://127.0.0.1:{port}/mcp"
        async with Client(url, mode="legacy") as client:
            assert {"time__get_current_time", "sdk__echo"} <= {t.name for t in (await client.list_tools()).tools}
            answer: list[str] = []

            async def slow_call() -> None:
                result = await client.call_tool("sdk__sleep", {"seconds": 1})
                answer.append(result.content[0].text)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow_call)
                await trio.sleep(0.3)
                proc.send_signal(signal.SIGTERM)  # drain: the in-flight call still completes
            assert answer == ["slept 1.0"]
        with trio.fail_after(15):
            code = await proc.wait()
        assert code == 0
        # after shutdown nothing listens any more
        try:
            await trio.open_tcp_stream("127.0.0.1", port)
            raise AssertionError("gateway still accepting after shutdown")
        except OSError:
            pass
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_run_on_a_taken_port_fails_fast_with_a_clear_message() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run([*CLI, "run", "--config", str(ROOT / "config" / "example.yaml"), "--port", str(port)],
                             capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr and "in use" in out.stderr
