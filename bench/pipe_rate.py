"""Raw round-trip rate of a stdio MCP server driven directly over pipes (no HTTP, no gateway).

``python -m bench.pipe_rate [--window W] [--duration D] [--json] [-- CMD ...]`` starts CMD
(default: ``python -m bench.fast_upstream``), initializes it, then keeps W ``tools/call echo``
requests in flight for D seconds, each with a unique id, and checks that every answer carries the
id it was sent and a result. W=1 measures the sequential round trip; a larger W the upstream's
ceiling. Prints a JSON report.
"""

from __future__ import annotations

import argparse
import os
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


def measure(cmd: list[str], window: int, duration: float) -> dict[str, object]:
    """Drive ``cmd`` over its pipes; return requests, errors, rate and mean latency."""
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    fin, fout = proc.stdin.fileno(), proc.stdout.fileno()  # type: ignore[union-attr]
    os.write(fin, _INIT)
    buf = b""
    while b"\n" not in buf:
        buf += os.read(fout, 65536)
    buf = buf[buf.index(b"\n") + 1 :]
    # Blocking I/O is safe because at most `window` small requests (and answers) are ever in the
    # pipes, far below the 64 KiB pipe buffer.
    next_id, done, errors = 1, 0, 0
    sent_at: dict[int, float] = {}
    total_latency = 0.0
    start = time.perf_counter()
    end = start + duration
    os.write(fin, b"".join(_CALL % i for i in range(next_id, next_id + window)))
    now = time.perf_counter()
    sent_at.update((i, now) for i in range(next_id, next_id + window))
    next_id += window
    while sent_at:
        buf += os.read(fout, 1 << 20)
        cut = buf.rfind(b"\n")
        if cut < 0:
            continue
        replies = _decoder.decode_lines(buf[: cut + 1])
        buf = buf[cut + 1 :]
        now = time.perf_counter()
        for reply in replies:
            t0 = sent_at.pop(reply.id, None) if isinstance(reply.id, int) else None
            if t0 is None or not reply.result:
                errors += 1
                continue
            done += 1
            total_latency += now - t0
        if now < end:
            n = len(replies)
            os.write(fin, b"".join(_CALL % i for i in range(next_id, next_id + n)))
            sent_at.update((i, now) for i in range(next_id, next_id + n))
            next_id += n
    elapsed = time.perf_counter() - start
    proc.stdin.close()  # type: ignore[union-attr]
    proc.wait(timeout=5)
    return {
        "requests": done,
        "errors": errors,
        "window": window,
        "duration_s": round(elapsed, 3),
        "throughput_rps": round(done / elapsed, 1),
        "latency_mean_us": round(1e6 * total_latency / max(done, 1), 1),
    }


def main() -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=int, default=1, help="requests in flight")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds")
    ap.add_argument("cmd", nargs="*", help="server command (after --)")
    args = ap.parse_args()
    cmd = args.cmd or [sys.executable, "-m", "bench.fast_upstream"]
    print(msgspec.json.encode(measure(cmd, args.window, args.duration)).decode())


if __name__ == "__main__":
    main()
