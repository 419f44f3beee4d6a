"""Containers for untrusted MCP servers: hardening profile, attach I/O, launcher, engine checks.

The names below are imported on first use, so ``python -m sandbox.reaper`` (which imports this
package first) starts with the standard library only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandbox.docker_io import DockerChannel, FrameDemuxer, FrameError, describe_exit
    from sandbox.engine import (
        Engine,
        EngineStatus,
        check_engine,
        image_exists,
        new_instance_id,
        remove_orphans,
        remove_own,
    )
    from sandbox.launcher import ContainerLauncher
    from sandbox.profile import BindMount, SandboxConfigError, SandboxSpec, container_kwargs, redact

_WHERE = {
    "DockerChannel": "docker_io", "FrameDemuxer": "docker_io", "FrameError": "docker_io",
    "describe_exit": "docker_io",
    "Engine": "engine", "EngineStatus": "engine", "check_engine": "engine", "image_exists": "engine",
    "new_instance_id": "engine", "remove_orphans": "engine", "remove_own": "engine",
    "ContainerLauncher": "launcher",
    "BindMount": "profile", "SandboxConfigError": "profile", "SandboxSpec": "profile",
    "container_kwargs": "profile", "redact": "profile",
}

__all__ = [
    "BindMount",
    "ContainerLauncher",
    "DockerChannel",
    "Engine",
    "EngineStatus",
    "FrameDemuxer",
    "FrameError",
    "SandboxConfigError",
    "SandboxSpec",
    "check_engine",
    "container_kwargs",
    "describe_exit",
    "image_exists",
    "new_instance_id",
    "redact",
    "remove_orphans",
    "remove_own",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"sandbox.{module}"), name)
    globals()[name] = value
    return value
