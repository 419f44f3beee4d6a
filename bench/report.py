"""Headline ratios, the Markdown report and the latency/throughput plot of a ``bench/run`` result.

``python -m bench.report bench/results/<stamp>.json`` re-renders ``<stamp>.md`` and ``<stamp>.png``
from a results file (e.g. after changing this module).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Targets of issue 4.
TARGETS = {
    "gateway_rps": 6000.0,
    "added_p50_ms": 0.5,
    "added_p99_ms": 3.0,
    "kb_per_idle_session": 100.0,
    "container_added_p50_ms": 1.0,
}
# Targets of issue 13 (the finished pipeline).
TARGETS_13 = {
    "full_vs_bare": 1.0,  # everything on / the bare forwarder, same run
    "vs_peer": 0.5,  # / agentgateway, same run
    "p99_ms": 2.0,  # at 10 connections (the everything-on peak runs)
    "kb_per_idle_session": 20.0,
    "container_added_p50_ms": 0.3,
    "wire_vs_streamable": 0.9,
}
# Peers measured in the issue the same way (wrk, unique ids, 10 connections, peer + upstream on a core).
PEERS = [
    ("IBM ContextForge, full gateway", 23, "p50 370 ms"),
    ("ContextForge's bare stdio-to-HTTP bridge", 5600, ""),
    ("supergateway (Node)", 2700, ""),
    ("sparfenyuk's mcp-proxy", 1700, ""),
    ("official SDK's own HTTP server", "1,100-2,000", ""),
    ("bare trio+h11+msgspec forwarder", 6300, "the design's ceiling"),
]


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _ratio(a: Any, b: Any, digits: int = 3) -> float | None:
    return round(a / b, digits) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


def _diff(a: Any, b: Any) -> float | None:
    return round(a - b, 3) if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The ratios issue 4 asks for, computed from the raw figures (None where not measured)."""
    parts = results.get("parts", {})
    a, b = parts.get("baseline", {}), parts.get("gateway_process", {})
    c, d, e = parts.get("gateway_container", {}), parts.get("idle_sessions", {}), parts.get("cold_start", {})
    gw_rps = _get(b, "peak", "throughput_rps")
    h: dict[str, Any] = {
        "gateway_rps": gw_rps,
        "gateway_p50_ms": _get(b, "peak", "latency_ms", "p50"),
        "gateway_p99_ms": _get(b, "peak", "latency_ms", "p99"),
        "gateway_wrk_rps": _get(b, "wrk", "throughput_rps"),
        "pipe_baseline_rps": _get(a, "peak", "throughput_rps"),
        "sdk_server_rps": _get(a, "sdk_server", "throughput_rps"),
        "bare_forwarder_rps": _get(a, "bare_forwarder", "throughput_rps"),
    }
    h["ratio_gateway_vs_pipe"] = _ratio(gw_rps, h["pipe_baseline_rps"], 4)
    h["ratio_gateway_vs_sdk_server"] = _ratio(gw_rps, h["sdk_server_rps"])
    h["ratio_gateway_vs_bare_forwarder"] = _ratio(gw_rps, h["bare_forwarder_rps"])
    half = b.get("half", {})
    h["half_rate"] = half.get("rate")
    h["half_gateway_rps"] = _get(half, "gateway", "throughput_rps")
    for p in ("p50", "p99"):
        h[f"half_gateway_{p}_ms"] = _get(half, "gateway", "latency_ms", p)
        h[f"half_baseline_{p}_ms"] = _get(half, "baseline", "latency_ms", p)
        h[f"added_{p}_ms"] = _diff(h[f"half_gateway_{p}_ms"], h[f"half_baseline_{p}_ms"])
    h["kb_per_idle_session"] = d.get("kb_per_session_held")
    h["kb_per_idle_session_closed_conn"] = d.get("kb_per_session_closed")
    h["idle_sessions_opened"] = _get(d, "load", "opened")
    shared = _get(c, "variants", "shared") or {}
    for p in ("p50", "p99"):
        h[f"container_added_{p}_ms"] = _diff(_get(shared, "container_1", "latency_ms", p),
                                             _get(shared, "process_1", "latency_ms", p))
    h["container_shared_rps"] = _get(shared, "container_10", "throughput_rps")
    h["ratio_container_vs_process_rps"] = _ratio(h["container_shared_rps"],
                                                 _get(shared, "process_10", "throughput_rps"))
    h["cold_start_ms"] = _get(e, "gateway_container", "median_ms")
    h["cold_first_call_ms"] = _get(e, "gateway_container", "first_ms")
    h["docker_run_ms"] = _get(e, "docker_run", "median_ms")
    h["docker_run_hardened_ms"] = _get(e, "docker_run_hardened", "median_ms")
    h["ratio_cold_start_vs_docker_run"] = _ratio(h["cold_start_ms"], h["docker_run_ms"])
    h["ratio_cold_start_vs_docker_run_hardened"] = _ratio(h["cold_start_ms"], h["docker_run_hardened_ms"])
    h["process_call_cold_ms"] = _get(e, "process_call", "median_ms")
    h["metrics_on_rps"] = _get(b, "metrics", "on_rps")
    h["metrics_off_rps"] = _get(b, "metrics", "off_rps")
    h["metrics_cost"] = _get(b, "metrics", "cost")
    for label in ("none", "api_key", "jwt"):
        h[f"auth_{label}_rps"] = _get(b, "auth", f"{label}_rps")
        h[f"auth_{label}_cpu_us"] = _get(b, "auth", f"{label}_cpu_us")
    h["auth_api_key_cost"] = _get(b, "auth", "api_key_cost")
    h["auth_jwt_cost"] = _get(b, "auth", "jwt_cost")
    f = parts.get("pipeline", {})
    h["full_rps"] = _get(f, "everything_on", "throughput_rps")
    h["full_bare_rps"] = _get(f, "bare_forwarder", "throughput_rps")
    h["full_vs_bare"] = f.get("ratio_vs_bare")
    h["full_p50_ms"] = _get(f, "everything_on", "latency_ms", "p50")
    h["full_p99_ms"] = _get(f, "everything_on", "latency_ms", "p99")
    h["full_cpu_us"] = _get(f, "everything_on", "cpu_us_per_call")
    h["no_audit_rps"] = _get(f, "everything_but_audit", "throughput_rps")
    h["no_audit_p99_ms"] = _get(f, "everything_but_audit", "latency_ms", "p99")
    h["no_audit_vs_bare"] = _ratio(h["no_audit_rps"], h["full_bare_rps"])
    h["audit_cost"] = f.get("audit_cost")
    h["audit_rows"] = f.get("audit_rows")
    h["full_half_rate"] = _get(f, "half_peak", "rate")
    h["full_half_p50_ms"] = _get(f, "half_peak", "latency_ms", "p50")
    h["full_half_p99_ms"] = _get(f, "half_peak", "latency_ms", "p99")
    h["bare_cpu_us"] = _get(f, "bare_forwarder", "cpu_us_per_call")
    wrk = f.get("wrk") or {}
    h["wrk_note"] = wrk.get("skipped") or wrk.get("error")
    h["wrk_full_rps"] = _get(wrk, "everything_on", "throughput_rps")
    h["wrk_bare_rps"] = _get(wrk, "bare_forwarder", "throughput_rps")
    h["wrk_full_vs_bare"] = wrk.get("ratio_vs_bare")
    h["wrk_full_p99_ms"] = _get(wrk, "everything_on", "latency_ms", "p99")
    h["wrk_bare_p99_ms"] = _get(wrk, "bare_forwarder", "latency_ms", "p99")
    wires_wrk = f.get("wires_wrk") or {}
    h["wrk_wires_note"] = wires_wrk.get("skipped") or wires_wrk.get("error")
    h["wrk_streamable_rps"] = _get(wires_wrk, "streamable", "throughput_rps")
    h["wrk_stateless_rps"] = _get(wires_wrk, "stateless", "throughput_rps")
    h["wrk_stateless_ratio"] = _get(wires_wrk, "stateless", "ratio_vs_streamable")
    for w in ("streamable", "sse", "ws", "stateless"):
        h[f"wire_{w}_rps"] = _get(f, "wires", w, "throughput_rps")
        h[f"wire_{w}_ratio"] = _get(f, "wires", w, "ratio_vs_streamable")
    peers = f.get("peers") or {}
    h["peers"] = {name: {"ratio": p.get("ratio"), "peer_rps": _get(p, name, "throughput_rps"),
                         "gateway_rps": _get(p, "gateway", "throughput_rps"), "error": p.get("error"),
                         "wrk_ratio": _get(p, "wrk", "ratio"), "wrk_peer_rps": _get(p, "wrk", name, "throughput_rps"),
                         "wrk_gateway_rps": _get(p, "wrk", "gateway", "throughput_rps"),
                         "wrk_peer_p50_ms": _get(p, "wrk", name, "latency_ms", "p50"),
                         "wrk_gateway_p50_ms": _get(p, "wrk", "gateway", "latency_ms", "p50"),
                         "wrk_note": _get(p, "wrk", "skipped") or _get(p, "wrk", "error")}
                  for name, p in peers.items()}
    return h


def _fmt(v: Any, unit: str = "", digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        text = f"{v:,.{digits}f}" if abs(v) < 1000 else f"{v:,.0f}"
    elif isinstance(v, int):
        text = f"{v:,}"
    else:
        text = str(v)
    return text + unit


def _verdict(v: Any, target: float, higher_is_better: bool) -> str:
    if not isinstance(v, (int, float)):
        return ""
    ok = v >= target if higher_is_better else v <= target
    return "met" if ok else "**missed**"


def _lat(r: dict[str, Any] | None, keys: tuple[str, ...] = ("p50", "p90", "p99", "max")) -> list[str]:
    lat = (r or {}).get("latency_ms", {})
    return [_fmt(lat.get(k), "", 3) for k in keys]


def markdown(results: dict[str, Any], png_name: str | None = None) -> str:
    h = results.get("headline") or headline(results)
    m, g = results.get("machine", {}), results.get("git", {})
    parts = results.get("parts", {})
    L: list[str] = []
    L.append(f"# Benchmark {results.get('started', '')}")
    L.append("")
    commit = (g.get("commit") or "?")[:12] + (" (dirty)" if g.get("dirty") else "")
    L.append(f"Commit {commit} · {m.get('cpu_model', '?')} · {m.get('cpus_usable')} cores · Python "
             f"{m.get('python')} · {', '.join(f'{k} {v}' for k, v in m.get('packages', {}).items())} · "
             f"Docker {m.get('docker') or 'n/a'} · mode {'quick' if results['settings'].get('quick') else 'full'}"
             f" · {results.get('elapsed_s')} s")
    L.append("")
    L.append("## Headline")
    L.append("")
    L.append("| Figure | Measured | Target | |")
    L.append("|---|---:|---:|---|")
    L.append(f"| Gateway `tools/call` throughput, process upstream, 10 connections (bench.load) | "
             f"{_fmt(h['gateway_rps'], '/s')} | ≥ 6,000/s | {_verdict(h['gateway_rps'], TARGETS['gateway_rps'], True)} |")
    L.append(f"| same, measured with wrk on one session (as the peers were) | {_fmt(h['gateway_wrk_rps'], '/s')} | "
             f"≥ 6,000/s | {_verdict(h['gateway_wrk_rps'], TARGETS['gateway_rps'], True)} |")
    L.append(f"| Gateway / direct pipes (fast upstream, 10 in flight: {_fmt(h['pipe_baseline_rps'], '/s')}) | "
             f"{_fmt(h['ratio_gateway_vs_pipe'], '×', 4)} | | |")
    L.append(f"| Gateway / bare trio+h11 forwarder ({_fmt(h['bare_forwarder_rps'], '/s')}) | "
             f"{_fmt(h['ratio_gateway_vs_bare_forwarder'], '×')} | | |")
    L.append(f"| Gateway / the SDK's own HTTP server ({_fmt(h['sdk_server_rps'], '/s')}) | "
             f"{_fmt(h['ratio_gateway_vs_sdk_server'], '×')} | | |")
    L.append(f"| Added p50 latency at half peak ({_fmt(h['half_rate'], '/s')}; gateway "
             f"{_fmt(h['half_gateway_p50_ms'], ' ms', 3)} vs pipes {_fmt(h['half_baseline_p50_ms'], ' ms', 3)}) | "
             f"{_fmt(h['added_p50_ms'], ' ms', 3)} | ≤ 0.5 ms | {_verdict(h['added_p50_ms'], TARGETS['added_p50_ms'], False)} |")
    L.append(f"| Added p99 latency at half peak (gateway {_fmt(h['half_gateway_p99_ms'], ' ms', 3)} vs pipes "
             f"{_fmt(h['half_baseline_p99_ms'], ' ms', 3)}) | {_fmt(h['added_p99_ms'], ' ms', 3)} | ≤ 3 ms | "
             f"{_verdict(h['added_p99_ms'], TARGETS['added_p99_ms'], False)} |")
    L.append(f"| RSS per idle session ({_fmt(h['idle_sessions_opened'])} sessions, connections open) | "
             f"{_fmt(h['kb_per_idle_session'], ' KB', 1)} | ≤ 100 KB | "
             f"{_verdict(h['kb_per_idle_session'], TARGETS['kb_per_idle_session'], False)} |")
    L.append(f"| RSS per idle session, connections closed | {_fmt(h['kb_per_idle_session_closed_conn'], ' KB', 1)} | | |")
    L.append(f"| Warm container call, added p50 over a process upstream (shared, 1 in flight) | "
             f"{_fmt(h['container_added_p50_ms'], ' ms', 3)} | ≤ 1 ms | "
             f"{_verdict(h['container_added_p50_ms'], TARGETS['container_added_p50_ms'], False)} |")
    L.append(f"| Warm container call, added p99 (shared, 1 in flight) | {_fmt(h['container_added_p99_ms'], ' ms', 3)} | | |")
    L.append(f"| Container / process upstream throughput (shared, 10 in flight) | "
             f"{_fmt(h['ratio_container_vs_process_rps'], '×')} | | |")
    L.append(f"| Cold start: first call on a fresh `call` container ({_fmt(h['cold_start_ms'], ' ms', 1)}) / "
             f"`docker run --rm -i` to initialize ({_fmt(h['docker_run_ms'], ' ms', 1)}) | "
             f"{_fmt(h['ratio_cold_start_vs_docker_run'], '×')} | | |")
    L.append(f"| same / hardened `docker run` ({_fmt(h['docker_run_hardened_ms'], ' ms', 1)}) | "
             f"{_fmt(h['ratio_cold_start_vs_docker_run_hardened'], '×')} | | |")
    cost = h["metrics_cost"]
    L.append(f"| Cost of counting metrics (on {_fmt(h['metrics_on_rps'], '/s')} vs `metrics.enabled: false` "
             f"{_fmt(h['metrics_off_rps'], '/s')}, one process switched by reload, ABBA) | {_fmt(None if cost is None else cost * 100, ' %', 1)} | "
             f"≤ 3 % | {_verdict(None if cost is None else cost * 100, 3.0, False)} |")
    for label, what in (("api_key", "an API key"), ("jwt", "a JWT (ES256)")):
        cost = h[f"auth_{label}_cost"]
        L.append(f"| Cost of authenticating every request with {what}: {_fmt(h[f'auth_{label}_rps'], '/s')} vs "
                 f"{_fmt(h['auth_none_rps'], '/s')} without auth (three processes, ABC CBA); gateway CPU "
                 f"{_fmt(h[f'auth_{label}_cpu_us'], ' µs', 1)} vs {_fmt(h['auth_none_cpu_us'], ' µs', 1)} per call | "
                 f"{_fmt(None if cost is None else cost * 100, ' %', 1)} | | |")
    L.append("")
    if results.get("parts", {}).get("pipeline"):
        _pipeline_rows(L, h)
    if results.get("skipped") or results.get("errors") or results.get("notes"):
        L.append("**Not measured / notes:**")
        L.append("")
        for name, why in results.get("skipped", {}).items():
            L.append(f"- {name}: skipped — {why}")
        for name, err in results.get("errors", {}).items():
            L.append(f"- {name}: FAILED — {err.splitlines()[0][:300]}")
        for note in results.get("notes", []):
            L.append(f"- {note}")
        L.append("")
    bg, bg_end = results.get("background_cpu_pct", {}), results.get("background_cpu_pct_end", {})
    L.append(f"Background load (busy % per core while idle, before/after): {bg} / {bg_end}. "
             "Other processes on the cores lower every figure: see `others_cpu_pct` in each run.")
    L.append("")
    if png_name:
        L.append(f"![latency against throughput]({png_name})")
        L.append("")

    a, b = parts.get("baseline", {}), parts.get("gateway_process", {})
    if a.get("sweep") or b.get("sweep"):
        L.append("## Latency against throughput (in-flight sweep)")
        L.append("")
        L.append("| In flight | Gateway calls/s | p50 ms | p90 | p99 | max | gateway CPU % | others CPU % | "
                 "Pipes calls/s | p50 ms | p99 | max | others CPU % |")
        L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        gws = {r["inflight"]: r for r in b.get("sweep", [])}
        pipes = {r["inflight"]: r for r in a.get("sweep", [])}
        for k in sorted(set(gws) | set(pipes)):
            gr, pr = gws.get(k), pipes.get(k)
            L.append(f"| {k} | {_fmt((gr or {}).get('throughput_rps'))} | " + " | ".join(_lat(gr)) +
                     f" | {_fmt(_get(gr, 'cpu', 'server_cpu_pct'))} | {_fmt(_get(gr, 'cpu', 'others_cpu_pct'))} | "
                     f"{_fmt((pr or {}).get('throughput_rps'))} | " + " | ".join(_lat(pr, ("p50", "p99", "max")))
                     + f" | {_fmt(_get(pr, 'cpu', 'others_cpu_pct'))} |")
        L.append("")
    rows = []
    if b.get("peak"):
        rows.append(("Gateway, process upstream (bench.load, 10 sessions)", b["peak"]))
    if _get(b, "half", "gateway"):
        rows.append((f"Gateway at half peak ({b['half']['rate']}/s paced)", b["half"]["gateway"]))
    if _get(b, "half", "baseline"):
        rows.append((f"Pipes at the same rate ({b['half']['rate']}/s paced)", b["half"]["baseline"]))
    if b.get("wrk", {}).get("throughput_rps"):
        rows.append(("Gateway, wrk -c10, one session", b["wrk"]))
    if a.get("peak"):
        rows.append(("Direct pipes, 10 in flight", a["peak"]))
    for key, label in (("bare_forwarder", "Bare trio+h11 forwarder"), ("sdk_server", "SDK's own HTTP server (uvicorn)")):
        if a.get(key, {}).get("throughput_rps") is not None:
            rows.append((label, a[key]))
        elif a.get(key, {}).get("error"):
            L.append(f"- {label}: failed — {a[key]['error'][:200]}")
    if rows:
        L.append("## 10 connections / 10 in flight")
        L.append("")
        L.append("| Path | Calls/s | Errors | p50 ms | p90 | p99 | max | Runs (calls/s) | Server CPU % | "
                 "others CPU % (attempts) |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|")
        for label, r in rows:
            server = _get(r, "cpu", "server_cpu_pct")
            if server is None:
                server = _get(r, "window_cpu", "upstream_cpu_pct")
            L.append(f"| {label} | {_fmt(r.get('throughput_rps'))} | {_fmt(r.get('errors'))} | " + " | ".join(_lat(r))
                     + f" | {', '.join(_fmt(x) for x in r.get('runs_rps', [])) or ''} | "
                     f"{_fmt(server)} | {_fmt(_get(r, 'cpu', 'others_cpu_pct'))}"
                     + (f" ({r['attempts']})" if r.get("attempts", 1) > 1 else "") + " |")
        L.append("")
        L.append("Server CPU % = the server and its upstream processes (for pipes: the upstream alone), "
                 "in % of one core. Others CPU % = every process outside this benchmark (other tenants); "
                 "a run above 10 % is re-measured (attempts) and flagged if it stays disturbed.")
        L.append("")

    c = parts.get("gateway_container", {})
    if c.get("variants"):
        L.append("## Container upstreams (each next to a process upstream of the same lifecycle)")
        L.append("")
        L.append(f"Container CPU limit: {c.get('container_cpus')}; {c.get('note')}.")
        L.append("")
        L.append("| Lifecycle | Upstream | In flight | Calls/s | Errors | p50 ms | p90 | p99 | max | "
                 "gateway CPU % | Docker CPU % | window s |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for label, v in c["variants"].items():
            if v.get("error"):
                L.append(f"| {label} | FAILED: {v['error'][:200]} | | | | | | | | | | |")
            for kind in ("process", "container"):
                for k in (1, 10):
                    r = v.get(f"{kind}_{k}")
                    if r:
                        L.append(f"| {label} | {kind} | {k} | {_fmt(r.get('throughput_rps'))} | "
                                 f"{_fmt(r.get('errors'))} | " + " | ".join(_lat(r)) +
                                 f" | {_fmt(_get(r, 'cpu', 'server_cpu_pct'))} | "
                                 f"{_fmt(_get(r, 'cpu', 'docker_cpu_pct'))} | {_fmt(r.get('duration_s'))} |")
        L.append("")
        L.append("Docker CPU % = dockerd + containerd + shims + runc + the containers' processes (one core = 100 %); "
                 "the attach stream runs through dockerd, and none of it is pinned.")
        L.append("")

    d = parts.get("idle_sessions", {})
    if d:
        L.append("## Idle sessions")
        L.append("")
        L.append("| Sessions opened | Open time s | VmRSS before KB | with sessions+connections | after closing connections | "
                 "KB/session (held) | KB/session (closed) | fds held | sessions (healthz) |")
        L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        L.append(f"| {_fmt(_get(d, 'load', 'opened'))} | {_fmt(_get(d, 'load', 'open_s'))} | "
                 f"{_fmt(_get(d, 'rss_before', 'VmRSS'))} | {_fmt(_get(d, 'rss_held', 'VmRSS'))} | "
                 f"{_fmt(_get(d, 'rss_after_close', 'VmRSS'))} | {_fmt(d.get('kb_per_session_held'))} | "
                 f"{_fmt(d.get('kb_per_session_closed'))} | {_fmt(d.get('fds_held'))} | {_fmt(d.get('sessions_held'))} |")
        L.append("")

    e = parts.get("cold_start", {})
    if e:
        L.append("## Cold start")
        L.append("")
        L.append("| What | median ms | first ms | min ms | runs ms |")
        L.append("|---|---:|---:|---:|---|")
        for key, label in (("gateway_container", "Gateway, `call` container pool 0: one tools/call (HTTP, start, "
                                                 "initialize, call, stop)"),
                           ("docker_run", "`docker run --rm -i --network none` to the initialize answer"),
                           ("docker_run_hardened", "same with the sandbox's hardening flags"),
                           ("process_call", "Gateway, `call` process pool 0 (reference)")):
            r = e.get(key) or {}
            if r.get("skipped"):
                L.append(f"| {label} | skipped: {r['skipped']} | | | |")
            elif r:
                L.append(f"| {label} | {_fmt(r.get('median_ms'))} | {_fmt(r.get('first_ms'))} | "
                         f"{_fmt(r.get('min_ms'))} | {', '.join(str(x) for x in r.get('runs_ms', []))} |")
        L.append("")

    L.append("## Peers (issue 4, measured the same way with wrk)")
    L.append("")
    L.append("| Peer | calls/s | |")
    L.append("|---|---:|---|")
    for name, rps, extra in PEERS:
        L.append(f"| {name} | {_fmt(rps)} | {extra} |")
    L.append("")
    return "\n".join(L)


def _pipeline_rows(L: list[str], h: dict[str, Any]) -> None:
    """Issue 13: the finished pipeline against the yardstick, the other wires, the peers."""
    t = TARGETS_13
    L.append("### The finished pipeline (part f: API-key auth, policy, metrics, audit log on)")
    L.append("")
    L.append("| Figure | Measured | Target | |")
    L.append("|---|---:|---:|---|")
    L.append(f"| Everything on ({_fmt(h['full_rps'], '/s')}) / bare trio+h11 forwarder ({_fmt(h['full_bare_rps'], '/s')}),"
             f" ABBA in one run | {_fmt(h['full_vs_bare'], '×')} | ≥ 1.0× | {_verdict(h['full_vs_bare'], t['full_vs_bare'], True)} |")
    L.append(f"| CPU per call (gateway + upstream): everything on / bare forwarder | {_fmt(h['full_cpu_us'], ' µs', 1)} / "
             f"{_fmt(h['bare_cpu_us'], ' µs', 1)} | | |")
    cost = h.get("audit_cost")
    L.append(f"| Everything but the audit log ({_fmt(h.get('no_audit_rps'), '/s')}) / bare forwarder; p99 "
             f"{_fmt(h.get('no_audit_p99_ms'), ' ms', 3)} | {_fmt(h.get('no_audit_vs_bare'), '×')} | | "
             f"audit log's cost: {_fmt(None if cost is None else cost * 100, ' %', 1)}; rows it wrote in part f: "
             f"{_fmt(h.get('audit_rows'))} |")
    L.append(f"| p50 / p99 at 10 connections, everything on (peak) | {_fmt(h['full_p50_ms'], ' ms', 3)} / "
             f"{_fmt(h['full_p99_ms'], ' ms', 3)} | p99 ≤ 2 ms | {_verdict(h['full_p99_ms'], t['p99_ms'], False)} |")
    _wrk_rows(L, "The same pair measured with wrk", h.get("wrk_note"), h.get("wrk_full_rps") is not None, lambda: [
        f"| The same pair measured with wrk (one session each, ABBA): everything on "
        f"({_fmt(h['wrk_full_rps'], '/s')}) / bare forwarder ({_fmt(h['wrk_bare_rps'], '/s')}) | "
        f"{_fmt(h['wrk_full_vs_bare'], '×')} | ≥ 1.0× | {_verdict(h['wrk_full_vs_bare'], t['full_vs_bare'], True)} |",
        f"| p99 at 10 connections with wrk: everything on / bare forwarder | "
        f"{_fmt(h['wrk_full_p99_ms'], ' ms', 3)} / {_fmt(h['wrk_bare_p99_ms'], ' ms', 3)} | p99 ≤ 2 ms | "
        f"{_verdict(h['wrk_full_p99_ms'], t['p99_ms'], False)} |"])
    L.append(f"| p50 / p99 at half that peak ({_fmt(h.get('full_half_rate'), '/s')} paced), everything on | "
             f"{_fmt(h.get('full_half_p50_ms'), ' ms', 3)} / {_fmt(h.get('full_half_p99_ms'), ' ms', 3)} | p99 ≤ 2 ms | "
             f"{_verdict(h.get('full_half_p99_ms'), t['p99_ms'], False)} |")
    L.append(f"| RSS per idle session (part d) | {_fmt(h['kb_per_idle_session'], ' KB', 1)} | ≤ 20 KB | "
             f"{_verdict(h['kb_per_idle_session'], t['kb_per_idle_session'], False)} |")
    L.append(f"| Warm container call, added p50 (part c) | {_fmt(h['container_added_p50_ms'], ' ms', 3)} | ≤ 0.3 ms | "
             f"{_verdict(h['container_added_p50_ms'], t['container_added_p50_ms'], False)} |")
    for w, label in (("sse", "legacy HTTP+SSE"), ("ws", "WebSocket"), ("stateless", "2026-07-28 stateless")):
        L.append(f"| {label} ({_fmt(h[f'wire_{w}_rps'], '/s')}) / Streamable HTTP ({_fmt(h['wire_streamable_rps'], '/s')}),"
                 f" everything on | {_fmt(h[f'wire_{w}_ratio'], '×')} | ≥ 0.9× | "
                 f"{_verdict(h[f'wire_{w}_ratio'], t['wire_vs_streamable'], True)} |")
    _wrk_rows(L, "2026-07-28 stateless / Streamable HTTP with wrk", h.get("wrk_wires_note"),
              h.get("wrk_stateless_rps") is not None, lambda: [
        f"| 2026-07-28 stateless ({_fmt(h['wrk_stateless_rps'], '/s')}) / Streamable HTTP "
        f"({_fmt(h['wrk_streamable_rps'], '/s')}), everything on, with wrk | {_fmt(h['wrk_stateless_ratio'], '×')} "
        f"| ≥ 0.9× | {_verdict(h['wrk_stateless_ratio'], t['wire_vs_streamable'], True)} |"])
    if not h.get("peers"):
        L.append("| Gateway / agentgateway, same method | not measured (`bench/run --peer agentgateway=PATH`) "
                 "| ≥ 0.5× | |")
    for name, p in (h.get("peers") or {}).items():
        if p.get("error"):
            L.append(f"| Gateway / {name} | FAILED: {str(p['error'])[:200]} | ≥ 0.5× | |")
        else:
            L.append(f"| Gateway ({_fmt(p['gateway_rps'], '/s')}) / {name} ({_fmt(p['peer_rps'], '/s')}), ABBA | "
                     f"{_fmt(p['ratio'], '×')} | ≥ 0.5× | {_verdict(p['ratio'], t['vs_peer'], True)} |")
            _wrk_rows(L, f"Gateway / {name} with wrk", p.get("wrk_note"), p.get("wrk_ratio") is not None, lambda p=p, name=name: [
                f"| Gateway ({_fmt(p['wrk_gateway_rps'], '/s')}, p50 {_fmt(p['wrk_gateway_p50_ms'], ' ms', 3)}) / {name} "
                f"({_fmt(p['wrk_peer_rps'], '/s')}, p50 {_fmt(p['wrk_peer_p50_ms'], ' ms', 3)}), with wrk (the issue's "
                f"method), ABBA | {_fmt(p['wrk_ratio'], '×')} | ≥ 0.5× | {_verdict(p['wrk_ratio'], t['vs_peer'], True)} |"])
    L.append("")


def _wrk_rows(L: list[str], what: str, note: str | None, measured: bool, rows: Callable[[], list[str]]) -> None:
    """A wrk figure's rows, or one row saying why it was not measured (nothing for an older run)."""
    if note:
        L.append(f"| {what} | not measured: {note} | | |")
    elif measured:
        L.extend(rows())


def plot(results: dict[str, Any], path: Path) -> None:
    """Latency (p50, p99) against throughput for the gateway and the baselines; raises ImportError."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = results.get("parts", {})
    fig, ax = plt.subplots(figsize=(11, 6), dpi=120)
    series = [("Gateway (process upstream)", _get(parts, "gateway_process", "sweep"), "tab:blue"),
              ("Direct pipes (baseline)", _get(parts, "baseline", "sweep"), "tab:green")]
    drawn = False
    for label, runs, color in series:
        runs = [r for r in runs or [] if r.get("throughput_rps")]
        if not runs:
            continue
        drawn = True
        x = [r["throughput_rps"] for r in runs]
        for p, style in (("p50", "-o"), ("p99", "--s")):
            ax.plot(x, [r["latency_ms"][p] for r in runs], style, color=color, label=f"{label} {p}", markersize=4)
        for r in runs:
            ax.annotate(str(r["inflight"]), (r["throughput_rps"], r["latency_ms"]["p50"]),
                        textcoords="offset points", xytext=(4, -10), fontsize=7, color=color)
    singles = [("SDK HTTP server", _get(parts, "baseline", "sdk_server"), "tab:red"),
               ("bare forwarder", _get(parts, "baseline", "bare_forwarder"), "tab:purple"),
               ("gateway, wrk", _get(parts, "gateway_process", "wrk"), "tab:cyan"),
               ("gateway, half peak", _get(parts, "gateway_process", "half", "gateway"), "tab:orange")]
    for label, r, color in singles:
        if r and r.get("throughput_rps") and r.get("latency_ms", {}).get("p50") is not None:
            drawn = True
            ax.plot([r["throughput_rps"]], [r["latency_ms"]["p50"]], "o", color=color, label=f"{label} p50 (10 conn)")
            if r["latency_ms"].get("p99") is not None:
                ax.plot([r["throughput_rps"]], [r["latency_ms"]["p99"]], "s", color=color, fillstyle="none",
                        label=f"{label} p99")
    if not drawn:
        ax.text(0.5, 0.5, "no throughput data", ha="center", transform=ax.transAxes)
    else:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.axvline(TARGETS["gateway_rps"], color="grey", lw=0.8, ls=":")
    ax.text(TARGETS["gateway_rps"], ax.get_ylim()[1], " target 6,000/s", fontsize=7, va="top", color="grey")
    ax.set_xlabel("throughput (tools/call per second)")
    ax.set_ylabel("latency (ms)")
    g = results.get("git", {})
    ax.set_title(f"MCP gateway: latency vs throughput, in-flight 1..50 (points labelled)\n"
                 f"{results.get('started', '')} · {(g.get('commit') or '?')[:10]}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    """Re-render the Markdown and PNG of a results file."""
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m bench.report bench/results/<stamp>.json")
    src = Path(sys.argv[1])
    results = json.loads(src.read_text())
    results["headline"] = headline(results)
    png = src.with_suffix(".png")
    try:
        plot(results, png)
    except ImportError as exc:
        print(f"no plot: {exc}", file=sys.stderr)
        png = None  # type: ignore[assignment]
    src.with_suffix(".md").write_text(markdown(results, png.name if png else None))
    src.write_text(json.dumps(results, indent=2) + "\n")
    print(src.with_suffix(".md"))


if __name__ == "__main__":
    main()
