"""Peer gateways that ``bench/run --peer NAME=PATH`` measures against ours (part f).

Only agentgateway (the Rust MCP gateway) is known. The project does not build or ship it: the
caller brings a binary, and this module says how to run it in front of the same stdio upstream
our gateway gets (``python -m bench.fast_upstream``), where to send the load, and which tool name
to call. The config follows agentgateway's own examples and schema:

- ``binds`` → ``listeners`` → ``routes`` → ``backends`` → ``mcp.targets`` with one ``stdio``
  target (``cmd``, ``args``, ``env``). Newer releases call ``binds`` deprecated in favour of
  ``gateways`` + top-level ``mcp`` (added in 1.4), but still read it, and releases back to 0.7
  read only ``binds``, so it works with whichever binary is given.
- A route without ``matches`` takes every path; agentgateway answers ``/sse`` with legacy SSE and
  any other path with Streamable HTTP, so ``/mcp`` is the load's URL (``PATH``).
- With a single target tool names are not prefixed (its default ``prefixMode: conditional``;
  ``always`` would give ``<target>_echo``): ``tool_name`` picks the name ending in ``echo`` so
  either works.
- It is stateful by default: ``initialize`` returns ``Mcp-Session-Id``, which bench.load sends
  back. Each session gets its own upstream process (10 sessions, 10 ``fast_upstream`` processes,
  all inheriting the pinning), unlike our gateway's ``shared`` lifecycle: the report must say so.
- Its admin (15000), stats (15020) and readiness (15021) listeners would clash between runs and
  with anything else on the machine: ``config.adminAddr``/``statsAddr``/``readinessAddr`` move
  them to free loopback ports (``"off"`` only exists since 1.3, so ports are used).
- ``config.logging.level: warn`` matches our gateway's ``log_level: warning`` (otherwise it logs
  a line per request at info). Started as ``agentgateway -f FILE``.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

PATH = "/mcp"  # Streamable HTTP; agentgateway serves legacy SSE on /sse only
TARGET = "fast"  # the stdio target's name (a prefix only if tools were prefixed)
KNOWN = ("agentgateway",)
PROTOCOL_VERSION = "2025-11-25"  # what bench.load asks for


def free_port() -> int:
    """A loopback port free right now (the caller binds it soon after, as bench.suite does)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def agentgateway_config(port: int, upstream: list[str], cwd: str, *, admin_port: int | None = None,
                        stats_port: int | None = None, readiness_port: int | None = None,
                        log_level: str = "warn") -> str:
    """agentgateway's config file (YAML) serving ``upstream`` over Streamable HTTP on ``port``.

    ``upstream`` is the command line of the stdio server (an absolute interpreter path: it is
    run without a shell). A stdio target has no working directory setting, so ``cwd`` goes on
    ``PYTHONPATH`` for ``python -m bench...`` to import wherever agentgateway itself runs. The
    side ports default to fresh free ones so that no two runs (or other programs) collide."""
    if not upstream:
        raise ValueError("upstream command is empty")
    target: dict[str, Any] = {"name": TARGET,
                              "stdio": {"cmd": upstream[0], "args": list(upstream[1:]),
                                        "env": {"PYTHONPATH": cwd}}}
    config: dict[str, Any] = {
        "config": {
            "adminAddr": f"127.0.0.1:{admin_port or free_port()}",
            "statsAddr": f"127.0.0.1:{stats_port or free_port()}",
            "readinessAddr": f"127.0.0.1:{readiness_port or free_port()}",
            "logging": {"level": log_level},
        },
        "binds": [{"port": port,
                   "listeners": [{"routes": [{"backends": [{"mcp": {"targets": [target]}}]}]}]}],
    }
    return "# agentgateway config written by bench.peers\n" + str(yaml.safe_dump(config, sort_keys=False))


def command(binary: Path, config: Path) -> list[str]:
    """The command line that runs ``binary`` with ``config`` (``-f``/``--file``: read from a file)."""
    return [str(binary), "-f", str(config)]


def tool_name(tools: Iterable[str]) -> str:
    """The exposed name of the upstream's ``echo`` tool: ``echo`` itself, else the one ending in
    ``echo`` (``<target>_echo`` when the peer prefixes); shortest first, so ``echo`` beats
    ``fast_echo`` if both exist."""
    names = list(tools)
    matches = sorted((t for t in names if t.endswith("echo")), key=lambda t: (len(t), t))
    if not matches:
        raise LookupError(f"no tool ending in 'echo' among {sorted(names)}")
    return matches[0]


@dataclass(frozen=True)
class Peer:
    """One run of a peer gateway: its name, binary, config file and Streamable HTTP port."""

    name: str
    binary: Path
    config: Path
    port: int

    def command(self) -> list[str]:
        return command(self.binary, self.config)

    @property
    def url(self) -> str:
        """Where bench.load sends its load (loopback only)."""
        return f"http://127.0.0.1:{self.port}{PATH}"

    @staticmethod
    def tool_name(tools: Iterable[str]) -> str:
        return tool_name(tools)


def parse_peer_option(text: str) -> tuple[str, Path]:
    """``--peer NAME=PATH`` → (name, absolute path); ``ValueError`` naming what is wrong, so that
    a bad option stops the suite at once instead of failing part f an hour later."""
    name, sep, path = text.partition("=")
    name, path = name.strip(), path.strip()
    if not sep or not name or not path:
        raise ValueError(f"--peer wants NAME=PATH (e.g. agentgateway=/usr/local/bin/agentgateway), got {text!r}")
    if name not in KNOWN:
        raise ValueError(f"--peer: unknown peer {name!r} (known: {', '.join(KNOWN)})")
    binary = Path(path).expanduser().resolve()
    if not binary.exists():
        raise ValueError(f"--peer {name}: {binary} does not exist")
    if not binary.is_file():
        raise ValueError(f"--peer {name}: {binary} is not a file")
    if not os.access(binary, os.X_OK):
        raise ValueError(f"--peer {name}: {binary} is not executable")
    return name, binary


def discover_tool(url: str, timeout: float = 30.0) -> str:
    """Ask the peer at ``url`` for its tools (initialize, initialized, tools/list, DELETE) and
    return the echo tool's exposed name. Also proves the peer and its upstream answer before any
    timed run. Replies may be JSON or an SSE stream; bench.load's parser reads both."""
    from bench.load import Response, find_reply

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path or PATH
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}

    def post(msg: dict[str, Any]) -> tuple[int, dict[bytes, bytes], bytes]:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("POST", path, body=json.dumps(msg), headers=headers)
            resp = conn.getresponse()
            return resp.status, {k.lower().encode(): v.encode() for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def rpc(ident: int, method: str, params: dict[str, Any]) -> tuple[dict[str, Any], dict[bytes, bytes]]:
        status, head, body = post({"jsonrpc": "2.0", "id": ident, "method": method, "params": params})
        reply = find_reply(Response(status, head, body), ident)
        if reply.error:
            raise RuntimeError(f"{method}: {bytes(reply.error)[:300]!r}")
        return json.loads(bytes(reply.result)), head

    result, head = rpc(1, "initialize", {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                                         "clientInfo": {"name": "bench.peers", "version": "1"}})
    headers["MCP-Protocol-Version"] = str(result.get("protocolVersion", PROTOCOL_VERSION))
    if sid := head.get(b"mcp-session-id"):
        headers["Mcp-Session-Id"] = sid.decode()
    status, _, _ = post({"jsonrpc": "2.0", "method": "notifications/initialized"})
    if status not in (200, 202, 204):
        raise RuntimeError(f"notifications/initialized: HTTP {status}")
    listed, _ = rpc(2, "tools/list", {})
    if "Mcp-Session-Id" in headers:  # end the session: the peer stops its upstream process
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("DELETE", path, headers=headers)
            conn.getresponse().read()
        except OSError:
            pass
        finally:
            conn.close()
    return tool_name(str(t.get("name", "")) for t in listed.get("tools", []))
