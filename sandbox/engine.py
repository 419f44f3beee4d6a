"""The Docker engine: connect, check (for ``doctor`` and a fail-fast ``run``), images, leftovers.

The plain functions block (they are the Docker SDK); :class:`Engine` runs them in worker threads
behind a :class:`trio.CapacityLimiter` for async callers.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import docker
import docker.errors
import trio

from sandbox.docker_io import DOCKER_ERRORS
from sandbox.profile import INSTANCE_LABEL, MANAGED_LABEL

T = TypeVar("T")

FIX_HINT = (
    "start dockerd or mount /var/run/docker.sock (docker run -v /var/run/docker.sock:/var/run/docker.sock ...); "
    "on Debian: apt-get install docker.io && dockerd &"
)


@dataclass(frozen=True)
class EngineStatus:
    """Whether the Docker engine answers; if not, ``error`` says why and how to fix it."""

    reachable: bool
    api_version: str | None = None
    server_version: str | None = None
    error: str | None = None


def new_instance_id() -> str:
    """A fresh id for this gateway run; its containers carry it as a label."""
    return uuid.uuid4().hex[:16]


def connect(timeout: int = 30, max_pool_size: int = 64) -> docker.DockerClient:
    """A client for the engine named by DOCKER_HOST (default: the local socket). Blocking.

    The pool is larger than the SDK's 10: every live container keeps one connection busy in its
    ``wait()``, and attach connections are taken out of the pool for good.
    """
    return docker.from_env(timeout=timeout, max_pool_size=max_pool_size)


@functools.cache
def shared_client() -> docker.DockerClient:
    """One client for the whole process (thread-safe for our use); cached only once it connects."""
    return connect()


def check_engine(client_factory: Callable[[], docker.DockerClient] = connect) -> EngineStatus:
    """Ask the engine for its version. Blocking; never raises."""
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = client_factory()
        version = client.version()
    except DOCKER_ERRORS as exc:
        return EngineStatus(False, error=f"Docker engine unreachable at {where}: {exc}. Fix: {FIX_HINT}")
    return EngineStatus(True, api_version=version.get("ApiVersion"), server_version=version.get("Version"))


def image_exists(client: docker.DockerClient, name: str) -> bool:
    """Whether ``name`` is present locally (the gateway never pulls). Blocking."""
    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


def _managed(client: docker.DockerClient, labels: Mapping[str, str] | None) -> list[dict[str, Any]]:
    wanted = {MANAGED_LABEL: "1", **(labels or {})}
    filters = {"label": [f"{k}={v}" for k, v in wanted.items()]}
    # The low-level list: one request, no inspect per container.
    return list(client.api.containers(all=True, filters=filters))


def _remove(client: docker.DockerClient, summaries: list[dict[str, Any]]) -> list[str]:
    removed = []
    for c in summaries:
        try:
            client.api.remove_container(c["Id"], force=True)
        except docker.errors.NotFound:
            continue
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: its removal is already in progress
                raise
        removed.append((c.get("Names") or [c["Id"][:12]])[0].lstrip("/"))
    return removed


def remove_orphans(
    client: docker.DockerClient, instance_id: str | None, *, labels: Mapping[str, str] | None = None
) -> list[str]:
    """Remove managed containers left by other (earlier, crashed) runs; return their names.

    Orphans are containers labelled ``io.mcp-gateway.managed=1`` whose instance id is not
    ``instance_id`` (``None``: every managed container). ``labels`` narrows the sweep further, for a
    gateway sharing its engine with others (and for tests). Blocking.
    """
    return _remove(
        client, [c for c in _managed(client, labels) if c["Labels"].get(INSTANCE_LABEL) != instance_id]
    )


def remove_own(client: docker.DockerClient, instance_id: str) -> list[str]:
    """Remove every container of this run (at shutdown); return their names. Blocking."""
    return _remove(client, _managed(client, {INSTANCE_LABEL: instance_id}))


class Engine:
    """Async access to the functions above: each runs in a worker thread behind ``limiter``."""

    def __init__(
        self,
        client_factory: Callable[[], docker.DockerClient] = shared_client,
        limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        self.client_factory = client_factory
        self.limiter = limiter or trio.CapacityLimiter(8)

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=self.limiter)

    async def check(self) -> EngineStatus:
        return await self._run(check_engine, self.client_factory)

    async def image_exists(self, name: str) -> bool:
        return await self._run(lambda: image_exists(self.client_factory(), name))

    async def remove_orphans(
        self, instance_id: str | None, *, labels: Mapping[str, str] | None = None
    ) -> list[str]:
        return await self._run(lambda: remove_orphans(self.client_factory(), instance_id, labels=labels))

    async def remove_own(self, instance_id: str) -> list[str]:
        return await self._run(lambda: remove_own(self.client_factory(), instance_id))
