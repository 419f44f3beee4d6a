"""Profile the gateway's hot path under load: py-spy on a pinned gateway while bench.load drives it.

    python -m bench.profile_gateway [--duration 15] [--inflight 10] [--rate 250] [--out DIR] [--top 15]
        [--full] [--label before]

Starts ``mcp-gateway run`` with the fast process upstream on core 0 (as ``bench/run`` part b does),
drives it from core 1 with bench.load (10 connections / 10 in flight by default), and records it
with ``py-spy record`` (also on core 1; ``--function`` aggregates by function; idle threads, e.g. trio's
cached worker thread or the main thread waiting in epoll, are left out, so shares are of busy time;
py-spy pauses the gateway for each sample, which costs it a few per cent at 250 Hz). Writes
``<out>/profile-<stamp>.svg`` (flame graph) and ``.txt`` (collapsed stacks), and prints the top
functions by self time and by inclusive time (% of the busy samples of the gateway's main thread).
Needs ``pip install py-spy`` (and ptrace rights: root, or kernel.yama.ptrace_scope=0).
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import time
from pathlib import Path

from bench.suite import (
    GATEWAY_CORE,
    LOAD_CORE,
    PY,
    ROOT,
    Context,
    GatewayProc,
    Settings,
    create_key,
    full_pipeline_config,
    parse_args,
    process_server,
)


def find_pyspy() -> str:
    exe = Path(PY).with_name("py-spy")
    if exe.exists():
        return str(exe)
    found = shutil.which("py-spy")
    if not found:
        raise SystemExit("py-spy not found: pip install py-spy")
    return found


_GROUPS = [  # (substring of the frame's location, group), first match wins
    ("trio/_socket.py", "socket syscalls (send/recv, via trio)"),
    ("trio/_unix_pipes.py", "pipe syscalls (upstream stdin/stdout, via trio)"),
    ("trio/_core/_io_epoll.py", "epoll (trio I/O manager)"),
    ("trio/", "trio runtime (scheduler, cancel scopes, channels)"),
    ("h11/", "h11 (HTTP parsing and writing)"),
    ("httptools/", "httptools (llhttp)"),
    ("gateway/auth/", "gateway: auth, policy, rate limits"),
    ("gateway/metrics.py", "gateway: metrics"),
    ("gateway/stats.py", "gateway: metrics"),
    ("admin/audit.py", "gateway: audit log"),
    ("contextlib.py", "contextlib (context managers)"),
    ("gateway/http/", "gateway: http server"),
    ("gateway/transports/", "gateway: streamable HTTP transport"),
    ("gateway/upstream/", "gateway: upstream connection"),
    ("gateway/protocol/", "gateway: protocol (msgspec encode/decode)"),
    ("gateway/", "gateway: session, router, other"),
]


def _group(frame: str) -> str:
    for key, name in _GROUPS:
        if key in frame:
            return name
    return "other (" + frame.rsplit("(", 1)[-1].split("/")[0].split(":")[0].rstrip(")") + ")"


def summarize(collapsed: Path, top: int) -> dict[str, list[tuple[str, float]]]:
    """Top functions by self and inclusive share of all samples, from py-spy's raw output."""
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = other = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        if "Thread._bootstrap" in stack:
            # trio's cached worker thread parked on its lock: py-spy takes it for busy. Not the hot path.
            other += n
            continue
        total += n
        frames = [f for f in stack.split(";") if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        self_t[frames[-1]] += n
        for f in set(frames):
            incl[f] += n

    groups: collections.Counter[str] = collections.Counter()
    for frame, n in self_t.items():
        groups[_group(frame)] += n

    def pct(c: collections.Counter[str]) -> list[tuple[str, float]]:
        return [(f, round(100 * n / total, 1)) for f, n in c.most_common(top)]

    return {"self": pct(self_t), "inclusive": pct(incl), "groups": pct(groups),
            "samples": [("main thread", float(total)), ("other threads (left out)", float(other))]}


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.profile_gateway", description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--inflight", type=int, default=10)
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--full", action="store_true",
                    help="everything on (API-key auth, policy, metrics, audit log), as bench/run part f")
    ap.add_argument("--no-audit", action="store_true", help="with --full: the audit log off")
    ap.add_argument("--wire", default="streamable", choices=("streamable", "sse", "ws", "stateless"),
                    help="the client wire bench.load drives")
    ap.add_argument("--label", default="", help="added to the output file names (e.g. before, after)")
    ap.add_argument("--native", action="store_true", help="py-spy --native (C frames too)")
    ap.add_argument("--idle", action="store_true", help="count samples of idle threads too (epoll waits)")
    ap.add_argument("--nonblocking", action="store_true",
                    help="do not pause the gateway per sample (less overhead, but many stacks come out truncated)")
    opts = ap.parse_args()
    pyspy = find_pyspy()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S") + (f"-{opts.label}" if opts.label else "")
    svg, raw = out / f"profile-{stamp}.svg", out / f"profile-{stamp}.txt"
    ctx = Context(Settings(parse_args(["--quick", "--wait-quiet", "0"])))
    try:
        extra = full_pipeline_config(ctx) if opts.full else {}
        if opts.full and opts.no_audit:
            extra["audit"] = {"enabled": False}
        with GatewayProc(ctx, "gw-profile", {"fast": process_server()}, extra=extra) as gw:
            load_cmd = ctx.pin(LOAD_CORE) + [
                PY, "-m", "bench.load", "--url", gw.url, "--tool", "fast__echo", "--inflight", str(opts.inflight),
                "--sessions", str(min(opts.inflight, 10)), "--duration", str(opts.duration + 3), "--warmup", "1",
                "--json", str(ctx.tmp / "load.json"), "--wire", opts.wire]
            if opts.full:
                load_cmd += ["--header", f"Authorization: Bearer {create_key(ctx, ctx.tmp / 'gw-profile.json')}"]
            load_log = ctx.tmp / "load.log"
            load = subprocess.Popen(load_cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=load_log.open("wb"))
            ctx.procs.append(load)
            time.sleep(2.0)  # sessions open, warm-up running
            spy = ctx.pin(LOAD_CORE) + [pyspy, "record", "--pid", str(gw.pid), "--duration", str(int(opts.duration)),
                                        "--rate", str(opts.rate), "--function"]
            spy += ["--native"] if opts.native else []
            spy += ["--idle"] if opts.idle else []
            spy += ["--nonblocking"] if opts.nonblocking else []
            # Two non-blocking recorders side by side: collapsed stacks (for the table) and a flame graph.
            spies = [subprocess.Popen(spy + ["--format", fmt, "--output", str(path)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
                     for fmt, path in (("raw", raw), ("flamegraph", svg))]
            ctx.procs += spies
            for p in spies:
                _, err = p.communicate(timeout=opts.duration + 60)
                if p.returncode != 0:
                    raise SystemExit(f"py-spy failed: {err[-800:]}")
            load.wait(timeout=opts.duration + 60)
            if not (ctx.tmp / "load.json").exists():
                raise SystemExit(f"bench.load failed: {load_log.read_text()[-1500:]}")
            report = json.loads((ctx.tmp / "load.json").read_text())
    finally:
        ctx.close()
    summary = summarize(raw, opts.top)
    print(f"load during profiling: {report.get('throughput_rps')} calls/s, p50 {report['latency_ms']['p50']} ms "
          f"(py-spy samples of the main thread: {int(summary['samples'][0][1])}, other threads left out: "
          f"{int(summary['samples'][1][1])}; gateway on core {GATEWAY_CORE})")
    for kind in ("groups", "self", "inclusive"):
        title = "self time by component" if kind == "groups" else f"top {opts.top} by {kind} time"
        print(f"\n{title} (% of the main thread's busy samples):")
        for name, pct in summary[kind]:
            print(f"  {pct:5.1f}%  {name}")
    print(f"\ncollapsed stacks: {raw}" + (f"\nflame graph: {svg}" if svg.exists() else ""))
    (out / f"profile-{stamp}.json").write_text(json.dumps({"load": report, "full": opts.full, **summary}, indent=2))


if __name__ == "__main__":
    main()
