"""Shared fixtures. Docker fixtures live in tests/conftest_docker.py."""

from __future__ import annotations

from pathlib import Path

pytest_plugins = ["tests.conftest_docker"] if (Path(__file__).parent / "conftest_docker.py").exists() else []
