"""Raw round-trip rate of a stdio MCP server driven directly over pipes (no HTTP, no gateway).

``python -m bench.pipe_rate [--inflight W] [--duration D] [--warmup S] [--rate R] [--json FILE]
[-- CMD ...]`` starts CMD (default: ``python -m bench.fast_upstream``), initializes it, then keeps W
``tools/call echo`` requests in flight for D seconds (after S seconds of warm-up), each with a
unique id, and checks that every answer carries the id it was sent and a result. W=1 measures the
sequential round trip; a larger W the upstream's ceiling. ``--rate R`` paces the sends (request k is
due at start + k/R, still at most W in flight), as ``bench.load --rate`` does for HTTP. This is the
direct-path baseline of ``bench/run``: the same load the gateway gets, minus the gateway.

Prints (and with ``--json`` writes) a report shaped like ``bench.load``'s: requests, errors,
throughput_rps, latency_ms {p50, p90, p99, max, mean}, plus latency_mean_us (kept for older callers).
Latency runs from the write of a request to the read that returned its answer.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import select
import subprocess
import sys
import time

import msgspec

_EMPTY = msgspec.Raw()


class Reply(msgspec.Struct):
    """The part of a JSON-RPC answer we check."""

    id: int | str | None = None
    result: msgspec.Raw = _EMPTY
    error: msgspec.Raw = _EMPTY


_decoder = msgspec.json.Decoder(Reply)
_INIT = (
    b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25",'
    b'"capabilities":{},"clientInfo":{"name":"pipe-rate","version":"1"}}}\n'
    b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n'
)
_CALL = (
    b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}\n'
)
# Blocking writes are safe only while everything in flight fits the pipe buffers (64 KiB): cap W.
MAX_INFLIGHT = 256
SPIN_S = 0.002  # paced: poll with timeout 0 during the last 2 ms before a slot


def _pct(values: list[float], p: float) -> float:
    """The p-quantile (nearest rank) of sorted ``values`` in ms."""
    if not values:
        return 0.0
    return round(1000 * values[min(len(values) - 1, max(0, math.ceil(p * len(values)) - 1))], 3)


def measure(
    cmd: list[str], window: int, duration: float, *, warmup: float = 0.0, rate: float = 0.0, timeout: float = 10.0
) -> dict[str, object]:
    """Drive ``cmd`` over its pipes with ``window`` requests in flight; return the report."""
    if not 1 <= window <= MAX_INFLIGHT:
        raise ValueError(f"window must be 1..{MAX_INFLIGHT}")
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        return _drive(proc, window, duration, warmup, rate, timeout)
    finally:
        if proc.poll() is None:
            try:
                proc.stdin.close()  # type: ignore[union-attr]  # EOF ends the server
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()


def _cpu_sample(pid: int) -> tuple[float, dict[str, tuple[int, int]], int]:
    """(time, per-cpu (busy, total) jiffies, the child's utime + stime) for the CPU accounting."""
    cores = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                v = [int(x) for x in vals[:8]]
                cores[name] = (sum(v) - v[3] - v[4], sum(v))
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        child = int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        child = 0
    return time.perf_counter(), cores, child


def _cpu_report(a: tuple[float, dict[str, tuple[int, int]], int],
                b: tuple[float, dict[str, tuple[int, int]], int]) -> dict[str, float]:
    hz = os.sysconf("SC_CLK_TCK")
    # Per-core figures from /proc/stat are tick-sampled (they miss short bursts); the process
    # figure is exact. Both are over the measured window only.
    out = {f"{name}_busy_pct": round(100 * (b[1][name][0] - a[1][name][0]) / max(1, b[1][name][1] - a[1][name][1]), 1)
           for name in b[1] if name in a[1]}
    out["upstream_cpu_pct"] = round(100 * (b[2] - a[2]) / hz / max(1e-9, b[0] - a[0]), 1)
    return out


def _drive(
    proc: subprocess.Popen[bytes], window: int, duration: float, warmup: float, rate: float, timeout: float
) -> dict[str, object]:
    fin, fout = proc.stdin.fileno(), proc.stdout.fileno()  # type: ignore[union-attr]
    poller = select.poll()
    poller.register(fout, select.POLLIN)
    clock = time.perf_counter

    os.write(fin, _INIT)
    buf = b""
    deadline = clock() + timeout
    while b"\n" not in buf:
        if clock() > deadline:
            raise RuntimeError(f"the upstream did not answer initialize within {timeout} s")
        if not poller.poll(100):
            if proc.poll() is not None:
                raise RuntimeError(f"the upstream exited (status {proc.returncode}) before answering initialize")
            continue
        if not (chunk := os.read(fout, 65536)):
            raise RuntimeError("the upstream closed stdout before answering initialize")
        buf += chunk
    buf = buf[buf.index(b"\n") + 1 :]

    next_id, errors = 1, 0
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    lags: list[float] = []
    begin = clock()
    start = begin + warmup
    end = start + duration
    interval = 1.0 / rate if rate > 0 else 0.0
    next_slot = begin
    last_progress = begin
    cpu_start: tuple[float, dict[str, tuple[int, int]], int] | None = None
    cpu_end = None
    while True:
        now = clock()
        if cpu_start is None and now >= start:
            cpu_start = _cpu_sample(proc.pid)
        if cpu_end is None and now >= end:
            cpu_end = _cpu_sample(proc.pid)
        if now < end:
            free = window - len(sent_at)
            n = free
            if interval and free > 0:
                n = 0 if now < next_slot else min(free, int((now - next_slot) / interval) + 1)
                for k in range(n):
                    lag = now - (next_slot + k * interval)
                    if start <= now:
                        lags.append(lag)
                next_slot += n * interval
            if n > 0:
                os.write(fin, b"".join(_CALL % i for i in range(next_id, next_id + n)))
                now = clock()
                sent_at.update((i, now) for i in range(next_id, next_id + n))
                next_id += n
        elif not sent_at:
            break
        if now > last_progress + timeout:
            raise RuntimeError(f"no answer for {timeout} s with {len(sent_at)} requests in flight")
        # Sleep until an answer arrives, or (paced) until shortly before the next slot, then spin:
        # poll's millisecond timeout would bunch the sends (as bench.load's pacer avoids too).
        if interval and len(sent_at) < window and now < end:
            wait_ms = max(0, math.floor((next_slot - clock() - SPIN_S) * 1000))
        else:
            wait_ms = 100
        if not poller.poll(wait_ms):
            continue
        chunk = os.read(fout, 1 << 20)
        if not chunk:
            raise RuntimeError("the upstream closed stdout")
        buf += chunk
        cut = buf.rfind(b"\n")
        if cut < 0:
            continue
        replies = _decoder.decode_lines(buf[: cut + 1])
        buf = buf[cut + 1 :]
        now = last_progress = clock()
        for reply in replies:
            t0 = sent_at.pop(reply.id, None) if isinstance(reply.id, int) else None
            if t0 is None or not reply.result:
                errors += 1
            elif start <= now <= end:
                latencies.append(now - t0)
    latencies.sort()
    lags.sort()
    report: dict[str, object] = {
        "requests": len(latencies),
        "errors": errors,
        "throughput_rps": round(len(latencies) / duration, 1) if duration else 0.0,
        "latency_ms": {
            "p50": _pct(latencies, 0.5),
            "p90": _pct(latencies, 0.9),
            "p99": _pct(latencies, 0.99),
            "max": _pct(latencies, 1.0),
            "mean": round(1000 * sum(latencies) / len(latencies), 3) if latencies else 0.0,
        },
        "latency_mean_us": round(1e6 * sum(latencies) / max(len(latencies), 1), 1),
        "window": window,
        "inflight": window,
        "duration_s": duration,
        "mode": "pipe",
    }
    if cpu_start is not None and cpu_end is not None:
        # Over the measured window: each core's busy % and the upstream's CPU %, so a caller can
        # tell a quiet core from one that other processes were using too.
        report["window_cpu"] = _cpu_report(cpu_start, cpu_end)
    if interval:
        report["rate"] = rate
        report["schedule_lag_ms"] = {"p50": _pct(lags, 0.5), "p99": _pct(lags, 0.99), "max": _pct(lags, 1.0)}
        report["late_pct"] = round(100 * sum(1 for x in lags if x > 0.001) / len(lags), 2) if lags else 0.0
    return report


def main() -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(prog="python -m bench.pipe_rate", description=__doc__.splitlines()[0])
    ap.add_argument("--inflight", "--window", dest="window", type=int, default=1, help="requests in flight")
    ap.add_argument("--duration", type=float, default=3.0, help="measured seconds")
    ap.add_argument("--warmup", type=float, default=0.0, help="seconds of load before measuring")
    ap.add_argument("--rate", type=float, default=0.0, help="pace at R requests/s (0: as fast as possible)")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds without any answer = failure")
    ap.add_argument("--json", metavar="FILE", help="also write the report here")
    ap.add_argument("cmd", nargs="*", help="server command (after --)")
    args = ap.parse_args()
    if not 1 <= args.window <= MAX_INFLIGHT or args.duration <= 0 or args.rate < 0:
        ap.error(f"--inflight must be 1..{MAX_INFLIGHT}, --duration > 0, --rate >= 0")
    cmd = args.cmd or [sys.executable, "-m", "bench.fast_upstream"]
    report = measure(cmd, args.window, args.duration, warmup=args.warmup, rate=args.rate, timeout=args.timeout)
    text = json.dumps(report)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
