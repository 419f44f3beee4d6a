"""`mcp-gateway doctor` and the fail-fast `run` when Docker is missing or an image is absent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest_docker import ECHO_IMAGE

CLI = [sys.executable, "-m", "gateway.cli"]


def _write(tmp_path: Path, image: str) -> Path:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"servers:\n  box: {{image: {image!r}}}\n  local: {{command: python3}}\n")
    return cfg


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


@pytest.mark.docker
def test_doctor_reports_present_and_missing_images(tmp_path: Path) -> None:
    ok = _run("doctor", "--config", str(_write(tmp_path, ECHO_IMAGE)))
    assert ok.returncode == 0, ok.stdout
    assert "Docker engine reachable" in ok.stdout and f"image {ECHO_IMAGE!r} present" in ok.stdout
    missing = _run("doctor", "--config", str(_write(tmp_path, "nope/missing:1")))
    assert missing.returncode == 1
    assert "'nope/missing:1' is not on this engine" in missing.stdout and "never pulls" in missing.stdout


def test_doctor_and_run_say_how_to_fix_an_unreachable_engine(tmp_path: Path) -> None:
    env = {"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    cfg = str(_write(tmp_path, ECHO_IMAGE))
    doctor = _run("doctor", "--config", cfg, env=env)
    assert doctor.returncode == 1
    assert "unreachable" in doctor.stdout and "start dockerd" in doctor.stdout and "needed by: box" in doctor.stdout
    run = _run("run", "--config", cfg, "--port", "0", env=env)
    assert run.returncode == 2
    assert "Docker is unreachable" in run.stderr and "docker.sock" in run.stderr
