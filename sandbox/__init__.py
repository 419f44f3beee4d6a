"""Containers for untrusted MCP servers: hardening profile, attach I/O, launcher, engine checks."""

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
