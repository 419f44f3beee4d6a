"""Rules of the code's shape that a refactor could silently break.

- The gateway core imports neither the sandbox nor the control plane: only the composition root
  (gateway/cli/) does, so both stay optional and depend on the core, never the other way round.
- A container's sandbox rules and defaults are the config's, whichever way settings arrive: the
  config file, or a SandboxSpec built by code.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, parse_config
from sandbox.profile import SandboxConfigError, SandboxSpec, container_kwargs

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def test_only_the_composition_root_imports_the_sandbox_and_the_control_plane() -> None:
    offenders = {}
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        if path.is_relative_to(ROOT / "gateway" / "cli"):
            continue
        bad = sorted(m for m in _imports(path) if m.split(".")[0] in ("sandbox", "admin"))
        if bad:
            offenders[str(path.relative_to(ROOT))] = bad
    assert not offenders
    # ... and the root does (the test would pass vacuously if the scan found nothing at all).
    assert "sandbox.gateway_bridge" in _imports(ROOT / "gateway" / "cli" / "compose.py")


def test_the_sandbox_defaults_are_the_configs() -> None:
    server = parse_config({"servers": {"box": {"image": "img"}}}).servers["box"]
    spec = SandboxSpec(image="img")
    assert (spec.memory, spec.cpus, spec.pids, spec.tmpfs_size, spec.user, spec.network, spec.read_only,
            spec.seccomp) == (server.limits.memory, server.limits.cpus, server.limits.pids, server.tmpfs_size,
                              server.user, server.network, server.read_only, server.seccomp)


CASES: list[dict[str, Any]] = [
    {}, {"user": "0"}, {"user": "0", "allow_root": True}, {"user": "+0"}, {"user": "1000"}, {"user": "1000:1000"},
    {"user": "nobody"}, {"user": "65534:0"}, {"user": ""}, {"user": "4294967296:1"},
    {"memory": 5 * 2**20}, {"memory": 6 * 2**20}, {"cpus": 0}, {"cpus": 0.01}, {"pids": 0}, {"pids": 1},
    {"tmpfs_size": 2**20 - 1}, {"tmpfs_size": 2**20}, {"network": ""}, {"network": "container:abc"},
    {"network": "host"}, {"network": "team-net"}, {"mounts": [("rel", "/t")]}, {"mounts": [("/s", "/")]},
    {"mounts": [("/a,b", "/t")]}, {"mounts": [("/s", "/t")]}, {"cap_add": ["FLY"]}, {"cap_add": ["cap_chown"]},
    {"cap_add": ["NET_ADMIN; rm -rf"]}, {"seccomp": "unconfined"}, {"seccomp": "docker-default"},
]


def _as_config(case: dict[str, Any]) -> dict[str, Any]:
    server: dict[str, Any] = {"image": "img"}
    limits = {k: case[k] for k in ("memory", "cpus", "pids") if k in case}
    if limits:
        server["limits"] = limits
    for key, value in case.items():
        if key == "mounts":
            server["mounts"] = [{"source": s, "target": t} for s, t in value]
        elif key not in limits:
            server[key] = value
    return {"servers": {"box": server}}


@pytest.mark.parametrize("case", CASES, ids=[repr(c) for c in CASES])
def test_the_config_and_the_sandbox_refuse_the_same_settings_for_the_same_key(case: dict[str, Any]) -> None:
    try:
        parse_config(_as_config(case))
        config_error = None
    except ConfigError as exc:
        config_error = exc.path.removeprefix("servers.box.")
    spec = {k: ([(s, t, False) for s, t in v] if k == "mounts" else v) for k, v in case.items()}
    try:
        container_kwargs("box", SandboxSpec(image="img", **spec), "i")
        sandbox_error = None
    except SandboxConfigError as exc:
        sandbox_error = str(exc).partition(":")[0]
    assert config_error == sandbox_error
