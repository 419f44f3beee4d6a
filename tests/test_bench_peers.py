"""bench.peers: the --peer option, agentgateway's generated config, and finding the echo tool."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench import peers

ROOT = Path(__file__).resolve().parent.parent


def _executable(tmp_path: Path, name: str = "agentgateway") -> Path:
    exe = tmp_path / name
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    return exe


def test_parse_peer_option_accepts_an_executable(tmp_path: Path) -> None:
    exe = _executable(tmp_path)
    assert peers.parse_peer_option(f"agentgateway={exe}") == ("agentgateway", exe.resolve())
    assert peers.parse_peer_option(f" agentgateway = {exe} ") == ("agentgateway", exe.resolve())


def test_settings_with_a_peer_go_into_the_results_json(tmp_path: Path) -> None:
    """The settings are saved in every results file: a --peer's path must not make that fail."""
    import json

    from bench.suite import Settings, parse_args

    exe = _executable(tmp_path)
    saved = json.loads(json.dumps(Settings(parse_args(["--only", "f", "--peer", f"agentgateway={exe}"])).as_dict()))
    assert saved["peers"] == {"agentgateway": str(exe.resolve())}
    assert saved["out"].endswith("results")


@pytest.mark.parametrize("text", ["agentgateway", "agentgateway=", "=/bin/sh", ""])
def test_parse_peer_option_wants_name_and_path(text: str) -> None:
    with pytest.raises(ValueError, match="NAME=PATH"):
        peers.parse_peer_option(text)


def test_parse_peer_option_names_an_unknown_peer(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown peer 'envoy' \(known: agentgateway\)"):
        peers.parse_peer_option(f"envoy={_executable(tmp_path)}")


def test_parse_peer_option_rejects_missing_directory_and_non_executable(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        peers.parse_peer_option(f"agentgateway={tmp_path / 'nope'}")
    with pytest.raises(ValueError, match="is not a file"):
        peers.parse_peer_option(f"agentgateway={tmp_path}")
    plain = tmp_path / "plain"
    plain.write_text("")
    plain.chmod(0o644)
    if os.access(plain, os.X_OK):  # root may execute anything on some file systems
        pytest.skip("this user can execute a 0644 file")
    with pytest.raises(ValueError, match="is not executable"):
        peers.parse_peer_option(f"agentgateway={plain}")


def test_agentgateway_config_is_yaml_with_one_stdio_target() -> None:
    upstream = [sys.executable, "-m", "bench.fast_upstream"]
    cfg = yaml.safe_load(peers.agentgateway_config(4321, upstream, str(ROOT)))
    assert set(cfg) == {"config", "binds"}
    (bind,) = cfg["binds"]
    assert bind["port"] == 4321
    (listener,) = bind["listeners"]
    (route,) = listener["routes"]
    assert "matches" not in route  # every path: /mcp is Streamable HTTP
    (backend,) = route["backends"]
    (target,) = backend["mcp"]["targets"]
    assert target == {"name": peers.TARGET,
                      "stdio": {"cmd": sys.executable, "args": ["-m", "bench.fast_upstream"],
                                "env": {"PYTHONPATH": str(ROOT)}}}
    side = cfg["config"]
    assert side["logging"] == {"level": "warn"}
    addrs = [side["adminAddr"], side["statsAddr"], side["readinessAddr"]]
    hosts_ports = [a.rsplit(":", 1) for a in addrs]
    assert {h for h, _ in hosts_ports} == {"127.0.0.1"}
    assert not {int(p) for _, p in hosts_ports} & {15000, 15020, 15021, 4321}  # never the defaults


def test_agentgateway_config_takes_given_side_ports_and_rejects_an_empty_upstream() -> None:
    cfg = yaml.safe_load(peers.agentgateway_config(1, ["/bin/cat"], "/tmp", admin_port=2, stats_port=3,
                                                   readiness_port=4, log_level="error"))
    assert cfg["config"] == {"adminAddr": "127.0.0.1:2", "statsAddr": "127.0.0.1:3",
                             "readinessAddr": "127.0.0.1:4", "logging": {"level": "error"}}
    assert cfg["binds"][0]["listeners"][0]["routes"][0]["backends"][0]["mcp"]["targets"][0]["stdio"]["args"] == []
    with pytest.raises(ValueError):
        peers.agentgateway_config(1, [], "/tmp")


def test_command_and_peer() -> None:
    peer = peers.Peer("agentgateway", Path("/opt/agw"), Path("/tmp/c.yaml"), 8123)
    assert peer.command() == peers.command(Path("/opt/agw"), Path("/tmp/c.yaml")) == ["/opt/agw", "-f", "/tmp/c.yaml"]
    assert peer.url == "http://127.0.0.1:8123/mcp"


def test_tool_name_picks_the_echo_tool() -> None:
    assert peers.tool_name(["add", "echo"]) == "echo"
    assert peers.Peer.tool_name(["fast_add", "fast_echo"]) == "fast_echo"
    assert peers.tool_name(iter(["fast_echo", "echo", "add"])) == "echo"
    with pytest.raises(LookupError, match="no tool ending in 'echo'"):
        peers.tool_name(["add", "echoes"])


class _StubPeer(BaseHTTPRequestHandler):
    """Answers like agentgateway: a session on initialize, 202 for notifications, SSE replies."""

    seen: list[tuple[str, str | None, dict[str, Any] | None]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes = b"", ctype: str = "application/json",
               extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        msg = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append(("POST", self.headers.get("Mcp-Session-Id"), msg))
        if msg["method"] == "initialize":
            result = {"protocolVersion": msg["params"]["protocolVersion"], "capabilities": {},
                      "serverInfo": {"name": "stub", "version": "0"}}
            body = json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}).encode()
            self._reply(200, body, extra={"Mcp-Session-Id": "s-1"})
        elif "id" not in msg:
            self._reply(202)
        else:
            tools = [{"name": "add", "inputSchema": {}}, {"name": "echo", "inputSchema": {}}]
            data = json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": {"tools": tools}})
            self._reply(200, f"event: message\ndata: {data}\n\n".encode(), "text/event-stream")

    def do_DELETE(self) -> None:
        self.seen.append(("DELETE", self.headers.get("Mcp-Session-Id"), None))
        self._reply(200)


@pytest.fixture
def stub_peer() -> Iterator[int]:
    _StubPeer.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StubPeer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_discover_tool_runs_a_session_and_ends_it(stub_peer: int) -> None:
    assert peers.discover_tool(f"http://127.0.0.1:{stub_peer}/mcp", timeout=10) == "echo"
    seen = [(verb, sid, (msg or {}).get("method")) for verb, sid, msg in _StubPeer.seen]
    assert seen == [("POST", None, "initialize"), ("POST", "s-1", "notifications/initialized"),
                    ("POST", "s-1", "tools/list"), ("DELETE", "s-1", None)]


@pytest.mark.skipif(not os.environ.get("AGENTGATEWAY_BIN"), reason="set AGENTGATEWAY_BIN to an agentgateway binary")
def test_real_agentgateway_serves_the_fast_upstream(tmp_path: Path) -> None:
    """End to end with a real binary (none is shipped): the config is accepted, /mcp answers."""
    _, binary = peers.parse_peer_option(f"agentgateway={os.environ['AGENTGATEWAY_BIN']}")
    port = peers.free_port()
    config = tmp_path / "agw.yaml"
    config.write_text(peers.agentgateway_config(port, [sys.executable, "-m", "bench.fast_upstream"], str(ROOT)))
    log = tmp_path / "agw.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(peers.command(binary, config), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=tmp_path)
    try:
        deadline, last = time.monotonic() + 30, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                assert peers.discover_tool(f"http://127.0.0.1:{port}{peers.PATH}", timeout=10) == "echo"
                return
            except OSError as exc:
                last = exc
                time.sleep(0.2)
        pytest.fail(f"agentgateway did not answer ({last}): {log.read_text()[-2000:]}")
    finally:
        proc.terminate()
        proc.wait(10)
