"""bench/run still works end to end (a tiny run: shape of the results, never their speed)."""

from __future__ import annotations

from pathlib import Path

from bench.smoke_test import check_results, run_smoke


def test_bench_run_quick(tmp_path: Path) -> None:
    results = run_smoke(tmp_path)
    assert check_results(results) == []
