"""A smoke test of ``bench/run``: a tiny run that proves the suite still works end to end.

Meant to be imported from the test suite later, e.g. in ``tests/test_bench_run.py``::

    from bench.smoke_test import run_smoke, check_results

    def test_bench_run_quick(tmp_path):
        results = run_smoke(tmp_path)            # about 15-25 s on 2 cores
        assert check_results(results) == []

or run directly: ``python -m bench.smoke_test [--parts a,b] [--keep DIR]`` (exit status 1 on a problem).
It checks the shape of the results, not the speed: figures are benchmark output, never asserted by
timing tests (issue 4).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Short enough for CI: two sweep points, half-second measurements, one repeat.
SMOKE_ARGS = ["--quick", "--sweep", "1,10", "--duration", "0.5", "--repeats", "1", "--wait-quiet", "0"]


def run_smoke(out_dir: Path, parts: str = "a,b", extra: list[str] | None = None, timeout: float = 180.0,
              python: str | None = None) -> dict[str, Any]:
    """Run ``bench/run`` quickly into ``out_dir``; return the results JSON (with ``_files`` and ``_status``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [python or sys.executable, "-m", "bench.suite", *SMOKE_ARGS, "--only", parts, "--out", str(out_dir),
           *(extra or [])]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    files = sorted(out_dir.glob("*.json"))
    if not files:
        raise AssertionError(f"bench/run wrote no results (status {proc.returncode}):\n{proc.stderr[-3000:]}")
    results: dict[str, Any] = json.loads(files[-1].read_text())
    results["_status"] = proc.returncode
    results["_stderr"] = proc.stderr[-3000:]
    results["_files"] = [str(p) for p in sorted(out_dir.iterdir())]
    return results


def _load_ok(run: Any, where: str, problems: list[str]) -> None:
    if not isinstance(run, dict):
        problems.append(f"{where}: missing")
        return
    if run.get("errors"):
        problems.append(f"{where}: {run['errors']} errors, e.g. {run.get('error_samples', [])[:2]}")
    if not run.get("throughput_rps", 0) > 0:
        problems.append(f"{where}: no successful request")
    lat = run.get("latency_ms", {})
    if not 0 < lat.get("p50", 0) <= lat.get("p99", 0) <= lat.get("max", 0):
        problems.append(f"{where}: implausible latencies {lat}")


def check_results(results: dict[str, Any]) -> list[str]:
    """Problems with a results dict (an empty list means the run is sound)."""
    problems: list[str] = []
    for key in ("machine", "git", "settings", "parts", "headline"):
        if key not in results:
            problems.append(f"no {key!r} in the results")
    if results.get("errors"):
        problems += [f"part {k} failed: {v.splitlines()[0]}" for k, v in results["errors"].items()]
    parts = results.get("parts", {})
    wanted = results.get("settings", {}).get("parts", [])
    if "a" in wanted:
        a = parts.get("baseline", {})
        for i, run in enumerate(a.get("sweep", [])):
            _load_ok(run, f"baseline sweep[{i}]", problems)
        _load_ok(a.get("peak"), "baseline peak", problems)
        for peer in ("sdk_server", "bare_forwarder"):
            _load_ok(a.get(peer), f"baseline {peer}", problems)
    if "b" in wanted:
        b = parts.get("gateway_process", {})
        for i, run in enumerate(b.get("sweep", [])):
            _load_ok(run, f"gateway sweep[{i}]", problems)
        _load_ok(b.get("peak"), "gateway peak", problems)
        _load_ok(b.get("half", {}).get("gateway"), "gateway half peak", problems)
        _load_ok(b.get("half", {}).get("baseline"), "baseline half peak", problems)
        h = results.get("headline", {})
        for key in ("gateway_rps", "added_p50_ms", "added_p99_ms"):
            if h.get(key) is None:
                problems.append(f"headline {key} missing")
    files = results.get("_files")
    if files is not None:
        for suffix in (".json", ".md"):
            if not any(f.endswith(suffix) for f in files):
                problems.append(f"no {suffix} file written")
        png_expected = results.get("settings", {}).get("plot") and ("a" in wanted or "b" in wanted)
        if png_expected and not any(f.endswith(".png") for f in files) and not any(
                "matplotlib" in n for n in results.get("notes", [])):
            problems.append("no .png written")
    return problems


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.smoke_test", description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="a,b")
    ap.add_argument("--keep", metavar="DIR", help="write the results here (default: a temp dir)")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-smoke-") as tmp:
        results = run_smoke(Path(opts.keep or tmp), opts.parts)
        problems = check_results(results)
    for p in problems:
        print(f"PROBLEM: {p}")
    print("bench smoke test:", "OK" if not problems else f"{len(problems)} problem(s)",
          f"(gateway {results.get('headline', {}).get('gateway_rps')} calls/s, {results.get('elapsed_s')} s)")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
