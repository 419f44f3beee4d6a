"""What tool-search mode saves: the bytes of ``tools/list`` for a route with many tools, in both modes.

``python -m bench.tool_search [--tools 250] [--calls 500] [--gateway-src DIR] [--json]`` starts
``mcp-gateway run`` as a subprocess on a generated config: one upstream (bench/many_tools_server.py
with N generated tools) behind two routes, ``/all`` (``tool_mode: all``) and ``/search``
(``tool_mode: search``). From outside, over HTTP, it measures the bytes of the whole ``tools/list``
answer on each route (every page), the bytes of typical ``search_tools`` answers, and the round
trip of a direct ``tools/call`` on ``/all`` and of the same call through ``call_tool`` on
``/search`` (median and p90 of sequential calls on one keep-alive connection).

``--gateway-src DIR`` runs the gateway from another source tree (e.g. ``git archive`` of an
earlier commit) to compare a direct call before and after a change; ``/search`` is skipped when
that tree has no search mode (no gateway/protocol/search.py).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
QUERIES = [("create a calendar event", 10), ("list kubernetes pods", 10), ("send a slack message", 5),
           ("delete_dns_record", 3), ("", 10)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Peer:
    """One keep-alive HTTP connection speaking MCP (Streamable HTTP, 2025-11-25) to one route."""

    def __init__(self, port: int, path: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.path = path
        self.session: str | None = None
        self.next_id = 0

    def post(self, message: dict[str, Any]) -> tuple[bytes, Any]:
        """The answer's HTTP body as sent and the JSON-RPC message in it (None for a 202)."""
        headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        if self.session:
            headers["mcp-session-id"] = self.session
        self.conn.request("POST", self.path, json.dumps(message).encode(), headers)
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.getheader("mcp-session-id"):
            self.session = resp.getheader("mcp-session-id")
        if resp.status == 202 or not body:
            return body, None
        if resp.status != 200:
            raise RuntimeError(f"{self.path}: HTTP {resp.status}: {body[:300]!r}")
        if (resp.getheader("content-type") or "").startswith("text/event-stream"):
            data = [ln[5:] for ln in body.decode().splitlines() if ln.startswith("data:") and ln[5:].strip()]
            return body, json.loads(data[-1])
        return body, json.loads(body)

    def request(self, method: str, params: dict[str, Any] | None = None) -> tuple[bytes, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            message["params"] = params
        body, answer = self.post(message)
        if "error" in answer:
            raise RuntimeError(f"{self.path} {method}: {answer['error']}")
        return body, answer["result"]

    def initialize(self) -> None:
        self.request("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                    "clientInfo": {"name": "bench.tool_search", "version": "1"}})
        self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def tools_list(self) -> tuple[int, int, list[dict[str, Any]]]:
        """Bytes of every page's answer, the number of pages, and the tools."""
        size, pages, tools, cursor = 0, 0, [], None
        while True:
            body, result = self.request("tools/list", {"cursor": cursor} if cursor else None)
            size, pages = size + len(body), pages + 1
            tools += result["tools"]
            cursor = result.get("nextCursor")
            if not cursor:
                return size, pages, tools

    def timed(self, name: str, arguments: dict[str, Any], count: int) -> list[float]:
        """Round trips of ``count`` sequential calls, in microseconds."""
        out = []
        for _ in range(count):
            started = time.perf_counter()
            self.request("tools/call", {"name": name, "arguments": arguments})
            out.append((time.perf_counter() - started) * 1e6)
        return out


def start(tmp: Path, tools: int, src: str | None, search: bool) -> tuple[subprocess.Popen[bytes], int]:
    routes: dict[str, Any] = {"/all": {"servers": ["many"]}}
    if search:
        routes["/search"] = {"servers": ["many"], "tool_mode": "search"}
    cfg = {"servers": {"many": {"command": PY, "args": [str(ROOT / "bench" / "many_tools_server.py"), str(tools)]}},
           "routes": routes, "log_level": "warning"}
    path = tmp / "gateway.json"
    path.write_text(json.dumps(cfg))
    port = free_port()
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    cmd = [PY, "-c", "import sys; from gateway.cli import main; sys.exit(main())", "run", "--config", str(path),
           "--port", str(port), "--no-watch"]
    log = open(tmp / "gateway.log", "wb")  # noqa: SIM115 (the process writes it for its whole life)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=src or str(ROOT))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited: {(tmp / 'gateway.log').read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz")
            health = json.loads(conn.getresponse().read())
            conn.close()
            if all(s.get("state") == "ready" for s in health.get("servers", {}).values()) and health.get("servers"):
                return proc, port
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    proc.terminate()
    raise RuntimeError("the gateway did not get ready in 60 s")


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median_us": round(statistics.median(ordered), 1), "p90_us": round(ordered[int(len(ordered) * 0.9)], 1)}


def measure(tools: int, calls: int, src: str | None) -> dict[str, Any]:
    has_search = (Path(src or ROOT) / "gateway" / "protocol" / "search.py").exists()
    with tempfile.TemporaryDirectory(prefix="tool-search-") as tmp:
        proc, port = start(Path(tmp), tools, src, has_search)
        try:
            out: dict[str, Any] = {"tools": tools}
            every = Peer(port, "/all/mcp")
            every.initialize()
            size, pages, listed = every.tools_list()
            out["all"] = {"tools_list_bytes": size, "pages": pages, "tools_listed": len(listed)}
            target = next(t["name"] for t in listed if t["name"].endswith("get_calendar_event"))
            arguments = {"id": "evt-1"}
            every.timed(target, arguments, 50)  # warm-up
            if not has_search:
                out["all"]["direct_call"] = summary(every.timed(target, arguments, calls))
                return out
            found = Peer(port, "/search/mcp")
            found.initialize()
            size, pages, listed = found.tools_list()
            out["search"] = {"tools_list_bytes": size, "pages": pages, "tools_listed": [t["name"] for t in listed]}
            searches = []
            for query, limit in QUERIES:
                first = time.perf_counter()
                body, result = found.request("tools/call", {"name": "search_tools",
                                                            "arguments": {"query": query, "limit": limit}})
                took = (time.perf_counter() - first) * 1e6
                hits = [t["name"] for t in result["structuredContent"]["tools"]]
                text = len(result["content"][0]["text"].encode())  # what a model reads (structuredContent repeats it)
                searches.append({"query": query, "limit": limit, "answer_bytes": len(body), "text_bytes": text,
                                 "hits": hits[:3],
                                 "returned": len(hits), "first_us": round(took, 1)})
            out["search"]["searches"] = searches
            found.timed("call_tool", {"name": target, "arguments": arguments}, 50)
            # ABAB: the two kinds of call interleaved in blocks, so drift hits both alike
            direct: list[float] = []
            through: list[float] = []
            searched: list[float] = []
            for _ in range(4):
                direct += every.timed(target, arguments, calls // 4)
                through += found.timed("call_tool", {"name": target, "arguments": arguments}, calls // 4)
                searched += found.timed("search_tools", {"query": "create a calendar event"}, calls // 4)
            out["all"]["direct_call"] = summary(direct)
            out["search"]["call_tool"] = summary(through)
            out["search"]["search_tools"] = summary(searched)
            return out
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools", type=int, default=250)
    parser.add_argument("--calls", type=int, default=500, help="sequential calls per kind for the round trips")
    parser.add_argument("--gateway-src", help="run the gateway from this source tree instead")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    out = measure(args.tools, args.calls, args.gateway_src)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    every = out["all"]
    print(f"route with {out['tools']} tools")
    print(f"  tool_mode all:    tools/list {every['tools_list_bytes']:>9,} bytes ({every['pages']} page(s), "
          f"{every['tools_listed']} tools)")
    if "search" in out:
        found = out["search"]
        print(f"  tool_mode search: tools/list {found['tools_list_bytes']:>9,} bytes ({found['pages']} page(s), "
              f"{', '.join(found['tools_listed'])}); "
              f"{every['tools_list_bytes'] / found['tools_list_bytes']:.0f}x smaller")
        for s in found["searches"]:
            print(f"  search {s['query']!r:28} limit {s['limit']:>2}: {s['answer_bytes']:>7,} bytes "
                  f"({s['text_bytes']:,} of text), "
                  f"{s['returned']} tools, first hits {', '.join(s['hits'])}")
        print(f"  round trip, direct tools/call on /all:      {every['direct_call']}")
        print(f"  round trip, call_tool on /search:           {found['call_tool']}")
        print(f"  round trip, search_tools on /search:        {found['search_tools']}")
    else:
        print(f"  round trip, direct tools/call on /all:      {every['direct_call']}")


if __name__ == "__main__":
    main()
