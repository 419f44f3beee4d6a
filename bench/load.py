"""A trio load generator for MCP Streamable HTTP servers (the gateway, or any peer).

    python -m bench.load --url http://127.0.0.1:8080/mcp --sessions N --inflight M --duration D
        [--warmup S] [--mode call|list|churn] [--tool echo] [--args JSON] [--timeout T]
        [--rate R] [--idle-sessions K [--idle-hold S]] [--open-session] [--json out.json]

Opens N sessions (initialize, then notifications/initialized, then ``Mcp-Session-Id`` and
``MCP-Protocol-Version`` on every request) and M keep-alive HTTP/1.1 connections, one request at a
time on each, so M requests are in flight; connection ``i`` belongs to session ``i % N``. For D
seconds after S seconds of warm-up it sends ``tools/call`` (mode call), ``tools/list`` (mode list) or
whole session lifecycles: initialize, initialized, 3 calls, DELETE (mode churn; every HTTP exchange
counts as a request). Every JSON-RPC request carries a unique id, and an answer counts only if it
carries that id and a ``result``; everything else is an error. Prints (and with ``--json`` writes)
a report: requests, errors, error_samples, throughput_rps, latency_ms {p50, p90, p99, max, mean},
duration_s, sessions, inflight, mode.

``--rate R`` paces the load (modes call and list): request ``k`` is due at ``start + k/R`` (one
schedule shared by all connections, warm-up included), so the offered rate is R as long as the M
connections keep up; a connection whose slot has passed sends at once. Latency is measured from the
actual send, and the report gains ``rate`` (target) and ``schedule_lag_ms`` {p50, p99, max} (how
late sends left: M too small for R, or a busy load generator) and ``late_pct`` (sends > 1 ms late).
Sends are timed precisely (the last 2 ms before a slot spin on the event loop), so a paced run keeps
the load generator's core busy.

``--idle-sessions K`` first opens K sessions, each on a connection that is then closed (or held
open for ``--idle-hold`` seconds), so a benchmark can sample the server's RSS per idle session; the
report gains ``idle``. ``--duration 0`` skips the load phase. ``--open-session`` prints the id of one
new session and exits (for wrk). Traffic goes only to loopback addresses.

The HTTP client is minimal on purpose (raw trio sockets, Content-Length or chunked framing, reads
each body to its end so the connection can be reused) so that one core drives thousands of
requests per second; an SSE body yields the first ``data:`` event that answers our id.
"""

from __future__ import annotations

import argparse
import ipaddress
import itertools
import json
import math
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import msgspec
import trio

VERSION = "2025-11-25"
MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
_EMPTY = msgspec.Raw()


class Reply(msgspec.Struct):
    """The part of a JSON-RPC answer we check."""

    id: int | str | None = None
    result: msgspec.Raw = _EMPTY
    error: msgspec.Raw = _EMPTY


class InitResult(msgspec.Struct, rename="camel"):
    """The part of an initialize result we need."""

    protocol_version: str = VERSION


class CallResult(msgspec.Struct, rename="camel"):
    """The part of a tools/call result we check: a tool that failed is an error too."""

    is_error: bool = False


_reply = msgspec.json.Decoder(Reply)
_call_result = msgspec.json.Decoder(CallResult)
_init_result = msgspec.json.Decoder(InitResult)
_ids = itertools.count(1)  # one process, one trio thread: a global counter makes ids unique


class LoadError(Exception):
    """A request that failed: bad status, framing, id or JSON-RPC error."""


# --------------------------------------------------------------------------- HTTP/1.1 client


@dataclass
class Response:
    """A complete HTTP response; header names are lower case."""

    status: int
    headers: dict[bytes, bytes]
    body: bytes


class Connection:
    """One keep-alive HTTP/1.1 connection to a loopback server; one request at a time."""

    def __init__(self, host: str, port: int, hostport: bytes) -> None:
        self.host, self.port, self.hostport = host, port, hostport
        self.stream: trio.SocketStream | None = None
        self.buf = bytearray()

    async def aclose(self) -> None:
        """Close the socket (the next request reconnects)."""
        if self.stream is not None:
            stream, self.stream = self.stream, None
            await stream.aclose()

    async def request(self, method: bytes, path: bytes, headers: bytes, body: bytes = b"") -> Response:
        """Send one request and read its whole response. ``headers`` are ready-made CRLF lines."""
        if self.stream is None:
            self.stream = await trio.open_tcp_stream(self.host, self.port)  # sets TCP_NODELAY
            self.buf.clear()
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n%s\r\n" % (
            method,
            path,
            self.hostport,
            len(body),
            headers,
        )
        try:
            await self.stream.send_all(head + body)
            resp = await self._read_response(method == b"HEAD")
        except BaseException:
            await trio.aclose_forcefully(self.stream)
            self.stream = None
            raise
        if resp.headers.get(b"connection", b"").lower() == b"close":
            await self.aclose()
        return resp

    async def _fill(self) -> None:
        assert self.stream is not None
        data = await self.stream.receive_some(65536)
        if not data:
            raise LoadError("connection closed by server")
        self.buf += data

    async def _read_until(self, sep: bytes, limit: int) -> bytes:
        while (i := self.buf.find(sep)) < 0:
            if len(self.buf) > limit:
                raise LoadError("response head too large")
            await self._fill()
        out = bytes(self.buf[:i])
        del self.buf[: i + len(sep)]
        return out

    async def _read_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def _read_response(self, head_only: bool) -> Response:
        while True:
            lines = (await self._read_until(b"\r\n\r\n", MAX_HEAD)).split(b"\r\n")
            try:
                status = int(lines[0].split(b" ", 2)[1])
            except (IndexError, ValueError):
                raise LoadError(f"bad status line {lines[0][:80]!r}") from None
            if status >= 200 or status == 101:
                break  # 1xx interim answers are skipped
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if head_only or status in (204, 304):
            body = b""
        elif b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            parts = []
            while size := int((await self._read_until(b"\r\n", MAX_HEAD)).split(b";")[0], 16):
                if size > MAX_BODY:
                    raise LoadError("chunk too large")
                parts.append(await self._read_exactly(size + 2))  # + CRLF
                parts[-1] = parts[-1][:-2]
            while await self._read_until(b"\r\n", MAX_HEAD):  # trailers up to the blank line
                pass
            body = b"".join(parts)
        elif (length := headers.get(b"content-length")) is not None:
            if int(length) > MAX_BODY:
                raise LoadError("body too large")
            body = await self._read_exactly(int(length))
        else:  # framed by close
            assert self.stream is not None
            while data := await self.stream.receive_some(65536):
                self.buf += data
                if len(self.buf) > MAX_BODY:
                    raise LoadError("body too large")
            body = bytes(self.buf)
            self.buf.clear()
            headers[b"connection"] = b"close"
        return Response(status, headers, body)


def find_reply(resp: Response, want_id: int) -> Reply:
    """The JSON-RPC answer to ``want_id`` in a JSON or SSE body; raises LoadError if absent."""
    if resp.status != 200:
        raise LoadError(f"HTTP {resp.status}: {resp.body[:120]!r}")
    ctype = resp.headers.get(b"content-type", b"")
    try:
        if ctype.startswith(b"application/json"):
            reply = _reply.decode(resp.body)
            if reply.id != want_id:
                raise LoadError(f"id mismatch: sent {want_id}, got {reply.id!r}")
            return reply
        if ctype.startswith(b"text/event-stream"):
            # Skip server requests and notifications the server may send before the answer.
            for event in resp.body.replace(b"\r\n", b"\n").split(b"\n\n"):
                data = b"\n".join(
                    line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")
                )
                if data.startswith(b"{"):
                    reply = _reply.decode(data)
                    if reply.id == want_id:
                        return reply
            raise LoadError(f"no answer with id {want_id} in the event stream")
    except msgspec.DecodeError as exc:
        raise LoadError(f"bad JSON: {exc}") from None
    raise LoadError(f"unexpected content-type {ctype!r}")


# --------------------------------------------------------------------------- MCP over it


@dataclass
class Target:
    """Where to send requests, and the fixed parts of each request."""

    host: str
    port: int
    hostport: bytes
    path: bytes
    call_params: bytes
    timeout: float
    headers: bytes = b""  # extra request header lines (e.g. Authorization), CRLF-terminated

    @classmethod
    def from_url(cls, url: str, tool: str, args: str, timeout: float, headers: list[str] | None = None) -> Target:
        """Parse and check ``url`` (loopback only)."""
        u = urlsplit(url)
        host = "127.0.0.1" if u.hostname == "localhost" else (u.hostname or "")
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False  # a name other than localhost: never resolved, never contacted
        if u.scheme != "http" or not loopback:
            raise SystemExit(f"refusing {url!r}: only http:// to a loopback address")
        port = u.port or 80
        params = msgspec.json.encode({"name": tool, "arguments": msgspec.json.decode(args)})
        extra = b"".join(_header_line(h) for h in headers or ())
        return cls(host, port, u.netloc.encode(), (u.path or "/").encode(), params, timeout, extra)

    def connection(self) -> Connection:
        """A new (lazily connected) connection to the target."""
        return Connection(self.host, self.port, self.hostport)


BASE_HEADERS = b"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"


def _header_line(header: str) -> bytes:
    name, sep, value = header.partition(":")
    if not sep or not name.strip() or any(c in header for c in "\r\n"):
        raise SystemExit(f"--header {header.split(':')[0]!r}...: expected NAME: VALUE on one line")
    return f"{name.strip()}: {value.strip()}\r\n".encode("latin-1")


@dataclass
class Session:
    """A server-side MCP session: its id and the header lines every request carries."""

    sid: bytes | None
    headers: bytes


async def rpc(
    conn: Connection, target: Target, headers: bytes, method: str, params: bytes | None
) -> tuple[Reply, Response]:
    """One JSON-RPC request with a fresh unique id; returns the verified successful reply."""
    rid = next(_ids)
    body = b'{"jsonrpc":"2.0","id":%d,"method":"%s"%s}' % (
        rid,
        method.encode(),
        b',"params":' + params if params is not None else b"",
    )
    resp = await conn.request(b"POST", target.path, headers, body)
    reply = find_reply(resp, rid)
    if reply.error or not reply.result:
        raise LoadError(f"JSON-RPC error: {bytes(reply.error)[:160]!r}" if reply.error else "no result")
    if method == "tools/call" and _call_result.decode(reply.result).is_error:
        raise LoadError(f"tool error: {bytes(reply.result)[:160]!r}")
    return reply, resp


_INIT_PARAMS = msgspec.json.encode(
    {"protocolVersion": VERSION, "capabilities": {}, "clientInfo": {"name": "bench.load", "version": "1"}}
)
_INITIALIZED = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'


async def open_session(conn: Connection, target: Target, stats: Stats | None = None) -> Session:
    """initialize + notifications/initialized on ``conn``; both timed into ``stats`` if given."""
    t0 = time.perf_counter()
    reply, resp = await rpc(conn, target, BASE_HEADERS + target.headers, "initialize", _INIT_PARAMS)
    t1 = time.perf_counter()
    sid = resp.headers.get(b"mcp-session-id")  # absent: a stateless server
    version = _init_result.decode(reply.result).protocol_version
    headers = BASE_HEADERS + target.headers + b"MCP-Protocol-Version: %s\r\n" % version.encode()
    if sid is not None:
        headers += b"Mcp-Session-Id: %s\r\n" % sid
    resp = await conn.request(b"POST", target.path, headers, _INITIALIZED)
    if resp.status not in (200, 202, 204):
        raise LoadError(f"notifications/initialized: HTTP {resp.status}")
    if stats is not None:
        stats.record(t0, t1)
        stats.record(t1, time.perf_counter())
    return Session(sid, headers)


async def close_session(conn: Connection, target: Target, session: Session) -> None:
    """DELETE the session."""
    resp = await conn.request(b"DELETE", target.path, session.headers)
    if resp.status not in (200, 202, 204):
        raise LoadError(f"DELETE: HTTP {resp.status}")


# --------------------------------------------------------------------------- the load


# What a failed request may raise; anything else is a bug and propagates.
FAILURES = (LoadError, OSError, trio.TooSlowError, trio.BrokenResourceError, msgspec.ValidationError)


SPIN_S = 0.002  # a paced send spins for its last 2 ms instead of trusting a timer


class Pacer:
    """One send schedule shared by every connection: slot ``k`` is due at ``start + k / rate``."""

    def __init__(self, rate: float, start: float) -> None:
        self.interval = 1.0 / rate
        self.next = start  # in trio's clock

    async def wait(self) -> float:
        """Claim the next slot and wait until it is due; return how late we woke (seconds).

        Timers alone would bunch sends at millisecond ticks (epoll's timeout is in ms, rounded
        up), and a burst of sends queues in the server: that would be the load generator's
        latency, not the server's. So sleep until shortly before the slot, then spin on trio
        checkpoints (the event loop keeps polling I/O without blocking) until it is due.
        """
        due = self.next
        self.next += self.interval
        if due - trio.current_time() > SPIN_S:
            await trio.sleep_until(due - SPIN_S)
        while trio.current_time() < due:
            await trio.lowlevel.checkpoint()
        return trio.current_time() - due


@dataclass
class Stats:
    """Latencies of requests that completed inside the measured window, and every error."""

    start: float = math.inf
    stop: float = math.inf
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    iterations: int = 0
    samples: list[str] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)

    def record(self, t0: float, t1: float, lag: float | None = None) -> None:
        """Count one success that started at ``t0`` and ended at ``t1`` (sent ``lag`` s late)."""
        if self.start <= t1 <= self.stop:
            self.latencies.append(t1 - t0)
            if lag is not None:
                self.lags.append(lag)

    def error(self, exc: BaseException) -> None:
        """Count one failure (warm-up included: errors are never hidden)."""
        self.errors += 1
        text = f"{type(exc).__name__}: {exc}"[:300]
        if len(self.samples) < 10 and text not in self.samples:
            self.samples.append(text)


async def call_worker(
    conn: Connection, target: Target, session: Session, mode: str, stats: Stats, pacer: Pacer | None = None
) -> None:
    """Send requests on ``conn`` back to back (or when ``pacer`` says) until the window ends."""
    method, params = ("tools/list", None) if mode == "list" else ("tools/call", target.call_params)
    clock = time.perf_counter
    lag = None
    while clock() < stats.stop:
        if pacer is not None:
            lag = await pacer.wait()
            if clock() >= stats.stop:
                break
        t0 = clock()
        try:
            with trio.fail_after(target.timeout):
                await rpc(conn, target, session.headers, method, params)
        except FAILURES as exc:
            stats.error(exc)
            await conn.aclose()
            await trio.sleep(0.01)  # no hot loop against a dead server
            continue
        stats.record(t0, clock(), lag)


async def churn_worker(conn: Connection, target: Target, stats: Stats) -> None:
    """Run whole session lifecycles on ``conn`` until the window ends."""
    clock = time.perf_counter
    while clock() < stats.stop:
        try:
            with trio.fail_after(target.timeout):
                session = await open_session(conn, target, stats)
                for _ in range(3):
                    t0 = clock()
                    await rpc(conn, target, session.headers, "tools/call", target.call_params)
                    stats.record(t0, clock())
                t0 = clock()
                await close_session(conn, target, session)
                stats.record(t0, clock())
        except FAILURES as exc:
            stats.error(exc)
            await conn.aclose()
            await trio.sleep(0.01)
            continue
        if stats.start <= clock() <= stats.stop:
            stats.iterations += 1


async def run_load(
    target: Target, sessions: int, inflight: int, mode: str, warmup: float, duration: float, rate: float = 0.0
) -> dict[str, Any]:
    """Open the sessions, run the workers (paced at ``rate`` requests/s if > 0), and summarize."""
    stats = Stats()
    conns = [target.connection() for _ in range(inflight)]
    opened: list[Session | None] = [None] * sessions
    limiter = trio.CapacityLimiter(64)  # don't stampede the server's accept queue

    async def opener(i: int) -> None:
        conn = conns[i] if i < inflight else target.connection()
        async with limiter:
            try:
                with trio.fail_after(target.timeout):
                    opened[i] = await open_session(conn, target)
            except FAILURES as exc:
                stats.error(exc)
            finally:
                if i >= inflight:
                    await conn.aclose()

    if mode != "churn":
        async with trio.open_nursery() as nursery:
            for i in range(sessions):
                nursery.start_soon(opener, i)
        live = [s for s in opened if s is not None]
        if not live:
            raise SystemExit(
                json.dumps({"error": "no session could be opened", "error_samples": stats.samples})
            )
    stats.start = time.perf_counter() + warmup
    stats.stop = stats.start + duration
    pacer = Pacer(rate, trio.current_time()) if rate > 0 and mode != "churn" else None
    async with trio.open_nursery() as nursery:
        for i, conn in enumerate(conns):
            if mode == "churn":
                nursery.start_soon(churn_worker, conn, target, stats)
            else:
                session = opened[i % sessions] or live[i % len(live)]
                nursery.start_soon(call_worker, conn, target, session, mode, stats, pacer)
    for conn in conns:
        await conn.aclose()
    lat = sorted(stats.latencies)

    def pct(p: float) -> float:
        return round(1000 * lat[min(len(lat) - 1, max(0, math.ceil(p * len(lat)) - 1))], 3) if lat else 0.0

    report: dict[str, Any] = {
        "requests": len(lat),
        "errors": stats.errors,
        "error_samples": stats.samples,
        "throughput_rps": round(len(lat) / duration, 1),
        "latency_ms": {
            "p50": pct(0.5),
            "p90": pct(0.9),
            "p99": pct(0.99),
            "max": pct(1.0),
            "mean": round(1000 * sum(lat) / len(lat), 3) if lat else 0.0,
        },
        "duration_s": duration,
        "sessions": sessions,
        "inflight": inflight,
        "mode": mode,
    }
    if pacer is not None:
        lags = sorted(stats.lags)

        def lag_pct(p: float) -> float:
            return round(1000 * lags[min(len(lags) - 1, max(0, math.ceil(p * len(lags)) - 1))], 3) if lags else 0.0

        report["rate"] = rate
        report["schedule_lag_ms"] = {"p50": lag_pct(0.5), "p99": lag_pct(0.99), "max": lag_pct(1.0)}
        report["late_pct"] = round(100 * sum(1 for x in lags if x > 0.001) / len(lags), 2) if lags else 0.0
    if mode == "churn":
        report["iterations"] = stats.iterations
        report["iterations_per_s"] = round(stats.iterations / duration, 1)
    return report


async def open_idle(target: Target, count: int, hold: float, concurrency: int = 100) -> dict[str, Any]:
    """Open ``count`` sessions, each on its own connection, closed at once or after ``hold`` s."""
    stats = Stats()
    limiter = trio.CapacityLimiter(concurrency)
    held: list[Connection] = []
    ok = 0

    async def one() -> None:
        nonlocal ok
        conn = target.connection()
        async with limiter:
            try:
                with trio.fail_after(target.timeout):
                    await open_session(conn, target)
                ok += 1
            except FAILURES as exc:
                stats.error(exc)
        if hold > 0 and conn.stream is not None:
            held.append(conn)
        else:
            await conn.aclose()

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)
    seconds = time.perf_counter() - t0
    if hold > 0:
        # A line on stderr tells a driver (bench/run) that it may sample the server now.
        print(
            f"idle sessions open: {ok}, holding {len(held)} connections for {hold}s",
            file=sys.stderr,
            flush=True,
        )
        await trio.sleep(hold)
    for conn in held:
        await conn.aclose()
    return {
        "requested": count,
        "opened": ok,
        "errors": stats.errors,
        "error_samples": stats.samples,
        "open_s": round(seconds, 3),
        "held_connections": len(held),
    }


def raise_nofile() -> int:
    """Raise the soft RLIMIT_NOFILE as far as allowed; return the resulting soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        return want
    except (ValueError, OSError):
        return soft


def default_args(tool: str) -> str:
    """Arguments that suit the fast upstream's tools (``add`` gets numbers, anything else text)."""
    return '{"a": 1, "b": 2}' if tool.endswith("add") else '{"text": "hello"}'


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The CLI."""
    ap = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080/mcp")
    ap.add_argument("--sessions", type=int, default=1, help="sessions opened up front (N)")
    ap.add_argument("--inflight", type=int, default=10, help="connections = requests in flight (M)")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds (0: no load phase)")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    ap.add_argument("--mode", choices=("call", "list", "churn"), default="call")
    ap.add_argument("--tool", default="echo")
    ap.add_argument("--args", help="tool arguments as JSON (default suits echo/add)")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    ap.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                    help="an extra header on every request, e.g. 'Authorization: Bearer KEY' (repeatable)")
    ap.add_argument(
        "--rate", type=float, default=0.0, metavar="R", help="pace at R requests/s in all (0: as fast as possible)"
    )
    ap.add_argument("--idle-sessions", type=int, default=0, metavar="K")
    ap.add_argument(
        "--idle-hold", type=float, default=0.0, metavar="S", help="keep idle connections open S s"
    )
    ap.add_argument("--idle-concurrency", type=int, default=100)
    ap.add_argument("--open-session", action="store_true", help="print a new session's id and exit")
    ap.add_argument("--json", metavar="FILE", help="also write the report here")
    opts = ap.parse_args(argv)
    if opts.sessions < 1 or opts.inflight < 1 or opts.duration < 0 or opts.warmup < 0 or opts.rate < 0:
        ap.error("--sessions and --inflight must be >= 1, --duration, --warmup and --rate >= 0")
    return opts


async def amain(opts: argparse.Namespace) -> dict[str, Any] | None:
    """Run what the options ask for; return the report (None for --open-session)."""
    target = Target.from_url(opts.url, opts.tool, opts.args or default_args(opts.tool), opts.timeout, opts.header)
    if opts.open_session:
        conn = target.connection()
        with trio.fail_after(opts.timeout):
            session = await open_session(conn, target)
        await conn.aclose()
        print((session.sid or b"").decode())
        return None
    report: dict[str, Any] = {"url": opts.url, "tool": opts.tool, "nofile_limit": raise_nofile()}
    if opts.idle_sessions > 0:
        report["idle"] = await open_idle(target, opts.idle_sessions, opts.idle_hold, opts.idle_concurrency)
    if opts.duration > 0:
        report |= await run_load(
            target, opts.sessions, opts.inflight, opts.mode, opts.warmup, opts.duration, opts.rate
        )
    return report


def main(argv: list[str] | None = None) -> None:
    """Entry point: prints the JSON report; exit status 1 if nothing succeeded."""
    opts = parse_args(argv)
    report = trio.run(amain, opts)
    if report is None:
        return
    text = json.dumps(report, indent=2)
    print(text)
    if opts.json:
        with open(opts.json, "w") as f:
            f.write(text + "\n")
    ok = report.get("requests", 1) > 0 and report.get("idle", {}).get("opened", 1) > 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
