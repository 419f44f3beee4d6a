"""What a second core buys the gateway for MCP 2026-07-28 stateless traffic, on a 2-core machine.

    python -m bench.multicore [--duration 10] [--rounds 3] [--full] [--out DIR]

Stateless requests carry no session, so N gateway worker processes could share one listening
socket (SO_REUSEPORT), each with its own upstream. The gateway has no --workers option; this
emulates N workers with N independent ``mcp-gateway run`` processes, each on its own port with its
own fast upstream process (``--full``: each with API-key auth, the policy, metrics and the audit
log on, as bench/run part f, with its own key file, audit file and key). bench.load drives them
with ``--wire stateless``. Three configurations, measured in ABC CBA ... order for ``--rounds``
rounds, so a drift of the machine falls on all of them alike:

A  1 gateway on core 0, one load --inflight 10 on core 1: the reference, as bench/run measures it.
B  the same gateway unpinned, one load unpinned, --inflight 10: what one process gets when
   everything shares both cores.
C  2 gateways unpinned, two loads unpinned at the same time, --inflight 5 each on its own gateway;
   calls/s is the sum.

The first gateway serves A, B and half of C (for A its whole process tree, every thread, is moved
to core 0 and back afterwards), so the configurations differ in placement, not in process layout.

There are only two cores, and the load generators share them with the gateways: C is not N workers
on N free cores. So besides calls/s, each load's p50/p99 and its errors (must be 0), every run
reports CPU over the measured window, in % of one core (200 = both cores): the gateways' process
trees (gateway + upstream), the load generators, other processes on the machine, and each core's
busy %. The load's CPU shows how much of the second core was left for the gateways. Figures are
those of the median run of each configuration (by total calls/s; the lower middle one for an even
count); C/B and C/A divide those medians.

Writes ``<out>/multicore-<stamp>.json`` (every run) and ``.md`` (the table, also printed). Exit
status 1 if any load saw an error or no answer.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.suite import (
    CORES_AT_START,
    DISTURBED_PCT,
    GATEWAY_CORE,
    LOAD_CORE,
    PY,
    ROOT,
    Context,
    GatewayProc,
    Settings,
    _cpu_times,
    _delta,
    _proc_jiffies,
    alternate,
    create_key,
    full_pipeline_config,
    git_info,
    log,
    machine_info,
    median_run,
    others_cpu_probe,
    parse_args,
    proc_tree,
    process_server,
)

WARMUP = 1.5  # s of load before the CPU window opens (also covers bench.load's start-up)
CONFIGS = {
    "A": "1 gateway on core 0, 1 load (10 in flight) on core 1",
    "B": "1 gateway, 1 load (10 in flight), unpinned",
    "C": "2 gateways, 2 loads (5 in flight each), unpinned",
}
Jiffies = dict[tuple[int, int], int]


def set_affinity(root: int, cores: set[int]) -> None:
    """Move every thread of ``root``'s process tree to ``cores`` (threads and children started
    later inherit it from the thread that starts them)."""
    for pid in proc_tree(root):
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError):
                os.sched_setaffinity(int(task.name), cores)


class Sample:
    """CPU jiffies at one instant: each gateway's tree, each load process, everyone else, each core."""

    def __init__(self, gateways: list[int], loads: list[int], others: Callable[[], Jiffies]) -> None:
        self.t = time.monotonic()
        self.gateways = [_proc_jiffies(proc_tree(pid)) for pid in gateways]
        self.loads = [_proc_jiffies([pid]) for pid in loads]
        self.others = others()
        self.cores = _cpu_times()


def cpu_between(s0: Sample, s1: Sample) -> dict[str, Any]:
    """% of one core each part used between two samples."""
    scale = 100 / os.sysconf("SC_CLK_TCK") / (s1.t - s0.t)
    gws = [round(_delta(a, b) * scale, 1) for a, b in zip(s0.gateways, s1.gateways, strict=True)]
    loads = [round(_delta(a, b) * scale, 1) for a, b in zip(s0.loads, s1.loads, strict=True)]
    cpu: dict[str, Any] = {"gateways_pct": gws, "gateways_total_pct": round(sum(gws), 1),
                           "loads_pct": loads, "loads_total_pct": round(sum(loads), 1),
                           "others_cpu_pct": round(_delta(s0.others, s1.others) * scale, 1)}
    for name, (busy, total) in s1.cores.items():
        if name in s0.cores:
            b0, t0 = s0.cores[name]
            cpu[f"{name}_busy_pct"] = round(100 * (busy - b0) / max(1, total - t0), 1)
    return cpu


def measure(ctx: Context, targets: list[tuple[GatewayProc, list[str]]], inflight: int, duration: float,
            pinned: bool) -> dict[str, Any]:
    """One run: a bench.load per (gateway, extra arguments), all at once; CPU sampled meanwhile.
    ``pinned``: the (single) gateway on core 0 and its load on core 1 for the run."""
    gateways = [gw.pid for gw, _ in targets]
    if pinned:
        set_affinity(gateways[0], {GATEWAY_CORE})
    procs: list[subprocess.Popen[Any]] = []
    outs: list[Path] = []
    try:
        for gw, extra in targets:
            outs.append(ctx.tmpfile("load"))
            cmd = ["taskset", "-c", str(LOAD_CORE)] if pinned else []
            cmd += [PY, "-m", "bench.load", "--url", gw.url, "--wire", "stateless", "--tool", "fast__echo",
                    "--inflight", str(inflight), "--duration", str(duration), "--warmup", str(WARMUP),
                    "--json", str(outs[-1]), *extra]
            procs.append(ctx.spawn(cmd, log_name=outs[-1].stem))
        time.sleep(WARMUP)
        others = others_cpu_probe()
        s0 = Sample(gateways, [p.pid for p in procs], others)
        time.sleep(duration)
        s1 = Sample(gateways, [p.pid for p in procs], others)
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=duration + 120)
    finally:
        for proc in procs:
            ctx.stop(proc, grace=5)
        if pinned:
            set_affinity(gateways[0], set(CORES_AT_START))
    loads = []
    for out in outs:
        if not out.exists():
            raise RuntimeError(f"bench.load failed: {ctx.log_tail(out.stem)}")
        report = json.loads(out.read_text())
        loads.append({k: report.get(k) for k in ("throughput_rps", "requests", "errors", "latency_ms")}
                     | {"error_samples": report.get("error_samples", [])[:3]})
    return {"throughput_rps": round(sum(r["throughput_rps"] or 0 for r in loads), 1),
            "errors": sum(r["errors"] or 0 for r in loads), "loads": loads, "cpu": cpu_between(s0, s1)}


def gateway_extra(ctx: Context, name: str, full: bool) -> dict[str, Any]:
    """Nothing, or (``--full``) the everything-on config with this gateway's own key and audit files."""
    if not full:
        return {}
    config = full_pipeline_config(ctx)
    config["auth"] = {"api_keys": {"path": str(ctx.tmp / f"{name}-keys.db")}}
    config["audit"] = {**config["audit"], "path": str(ctx.tmp / f"{name}-audit.db")}
    return config


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per configuration: its median run, every run's calls/s; and the ratios of the medians."""
    out: dict[str, Any] = {"configs": {}, "ratios": {}}
    for label, rs in runs.items():
        out["configs"][label] = {"what": CONFIGS[label], "median": median_run(rs),
                                 "runs_rps": [r["throughput_rps"] for r in rs],
                                 "errors": sum(r["errors"] for r in rs), "runs": rs}
    rps = {label: c["median"]["throughput_rps"] for label, c in out["configs"].items()}
    for a, b in (("C", "B"), ("C", "A"), ("B", "A")):
        out["ratios"][f"{a}/{b}"] = round(rps[a] / rps[b], 3) if rps[b] else None
    return out


def _fmt(values: list[float], spec: str, joiner: str = " / ") -> str:
    return joiner.join(format(v, spec) for v in values)


def markdown(results: dict[str, Any]) -> str:
    """The table, the ratios and what to read them with."""
    s = results["settings"]
    lines = [
        f"# Beyond one core: stateless traffic on {results['machine'].get('cpus_usable')} cores",
        "",
        f"{results['started']}, commit {str(results['git'].get('commit'))[:7]}"
        f"{' (dirty)' if results['git'].get('dirty') else ''}; {'everything on (--full)' if s['full'] else 'default config'}; "
        f"bench.load --wire stateless, {s['rounds']} round(s) × {s['duration']} s, ABC CBA order. "
        "CPU in % of one core (200 = both), over the measured window of the median run.",
        "",
        "| Config | calls/s | runs | p50 ms | p99 ms | errors | gateways CPU % | loads CPU % | core 0 / 1 busy % | others CPU % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, c in results["configs"].items():
        m, cpu = c["median"], c["median"]["cpu"]
        lat = [load["latency_ms"] or {} for load in m["loads"]]
        lines.append(" | ".join([
            f"| {label}: {c['what']}", f"**{m['throughput_rps']:,.0f}**", _fmt(c["runs_rps"], ",.0f"),
            _fmt([x.get("p50", 0.0) for x in lat], ".2f"), _fmt([x.get("p99", 0.0) for x in lat], ".2f"),
            str(c["errors"]), _fmt(cpu["gateways_pct"], ".0f", " + "), _fmt(cpu["loads_pct"], ".0f", " + "),
            f"{cpu.get('cpu0_busy_pct', '?')} / {cpu.get('cpu1_busy_pct', '?')}", f"{cpu['others_cpu_pct']} |"]))
    ratios = ", ".join(f"{k} = {v:.2f}×" if v else f"{k} = n/a" for k, v in results["ratios"].items())
    lines += ["", f"Ratios of the medians: {ratios}.", ""]
    lines += [f"- {note}" for note in results["notes"]]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.multicore", description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per run (default 10)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of A, B, C (default 3)")
    ap.add_argument("--full", action="store_true",
                    help="everything on (API-key auth, policy, metrics, audit log) in each gateway")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"), help="results directory")
    opts = ap.parse_args(argv)
    if opts.duration <= 0 or opts.rounds < 1:
        ap.error("--duration must be > 0 and --rounds >= 1")
    if not {GATEWAY_CORE, LOAD_CORE} <= CORES_AT_START or shutil.which("taskset") is None:
        raise SystemExit(f"needs cores {GATEWAY_CORE} and {LOAD_CORE} and taskset (usable: {sorted(CORES_AT_START)})")
    out_dir = Path(opts.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    results: dict[str, Any] = {
        "schema": 1, "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "argv": sys.argv[1:] if argv is None else argv, "machine": machine_info(), "git": git_info(),
        "settings": {"duration": opts.duration, "rounds": opts.rounds, "full": opts.full, "warmup": WARMUP,
                     "wire": "stateless", "tool": "fast__echo"},
    }

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # the finally block stops every process

    signal.signal(signal.SIGTERM, on_term)
    # Our own pinning (A only): GatewayProc must not taskset the gateways.
    ctx = Context(Settings(parse_args(["--quick", "--wait-quiet", "0", "--no-pin"])))
    try:
        with contextlib.ExitStack() as stack:
            targets: list[tuple[GatewayProc, list[str]]] = []
            for i in (1, 2):
                name = f"gw-multicore-{i}"
                gw = stack.enter_context(GatewayProc(ctx, name, {"fast": process_server()},
                                                     extra=gateway_extra(ctx, name, opts.full)))
                auth = ["--header", f"Authorization: Bearer {create_key(ctx, ctx.tmp / f'{name}.json')}"] \
                    if opts.full else []
                targets.append((gw, auth))
            d = opts.duration
            runs = alternate(ctx, {
                "A": lambda: measure(ctx, targets[:1], 10, d, pinned=True),
                "B": lambda: measure(ctx, targets[:1], 10, d, pinned=False),
                "C": lambda: measure(ctx, targets, 5, d, pinned=False),
            }, opts.rounds, "multicore")
    except KeyboardInterrupt:
        log("interrupted; everything it started was stopped")
        return 130
    finally:
        ctx.close()
    results |= summarize(runs)
    notes = [f"Each gateway: its own `mcp-gateway run` and fast upstream process; A moves the first "
             f"gateway's tree to core {GATEWAY_CORE} and its load runs on core {LOAD_CORE} (taskset); B and C "
             "leave placement to the scheduler. Two cores are shared by the gateways and the load generators: "
             "the loads' CPU is what the gateways did not get."]
    if ctx.disturbed:
        notes.append(f"Other processes used > {DISTURBED_PCT:.0f}% of a core during: {', '.join(ctx.disturbed)} "
                     "(figures lower / tails longer than on a quiet machine).")
    for why, names in ctx.bad_exits.items():
        notes.append(f"A gateway did not exit cleanly on SIGTERM ({why}): {', '.join(names)}.")
    results["notes"] = notes
    paths = {"json": out_dir / f"multicore-{stamp}.json", "md": out_dir / f"multicore-{stamp}.md"}
    results["files"] = {k: str(v) for k, v in paths.items()}
    paths["json"].write_text(json.dumps(results, indent=2) + "\n")
    md = markdown(results)
    paths["md"].write_text(md)
    print(md)
    for path in paths.values():
        log(f"wrote {path}")
    bad = [label for label, c in results["configs"].items()
           if c["errors"] or any(not load["requests"] for r in c["runs"] for load in r["loads"])]
    if bad:
        log(f"errors or no answers in {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
