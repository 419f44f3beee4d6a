"""Start one server in a hardened container: the :class:`gateway.upstream.channel.Launcher` for images."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar

import docker
import docker.errors
import trio

from gateway.upstream.channel import LaunchError
from sandbox.docker_io import DOCKER_ERRORS, DockerChannel, attach_raw_socket
from sandbox.exits import ContainerExits
from sandbox.profile import SandboxConfigError, SandboxSpec, container_kwargs

log = logging.getLogger("mcp_gateway.sandbox")
T = TypeVar("T")

#: The longest a container's teardown (close stdin, stop, kill, remove) may hold up its caller.
CLEANUP_TIMEOUT = 10.0


class ContainerLauncher:
    """Makes one container per :meth:`open`: create, attach, start; on exit stop, kill, remove.

    ``docker_client_factory`` returns a ``docker.DockerClient`` (called in a worker thread: creating
    one may talk to the engine); ``limiter`` bounds the worker threads of all blocking Docker SDK
    calls, which never run on the event loop. ``exits`` (the run's events stream) tells each
    channel how its container ended; containers are auto-removed, so without it an OOM kill may
    read as a plain SIGKILL.
    """

    def __init__(
        self,
        name: str,
        spec: SandboxSpec,
        docker_client_factory: Callable[[], docker.DockerClient],
        limiter: trio.CapacityLimiter,
        *,
        instance_id: str,
        stop_timeout: int = 2,
        exits: ContainerExits | None = None,
        on_started: Callable[[float], None] | None = None,
    ) -> None:
        self.name = name
        self._on_started = on_started  # seconds from create to started (the metrics' container start)
        self.exits = exits
        self.spec = spec
        self.instance_id = instance_id
        self.stop_timeout = stop_timeout
        self._factory = docker_client_factory
        self._limiter = limiter

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await trio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=self._limiter)

    @asynccontextmanager
    async def open(self) -> AsyncIterator[DockerChannel]:
        """Start a container and yield its channel; remove it on exit (bounded, shielded).

        Raises :class:`LaunchError` when the container cannot be created, attached or started.
        """
        try:
            kwargs = container_kwargs(self.name, self.spec, self.instance_id)
        except SandboxConfigError as exc:
            raise LaunchError(f"server {self.name!r}: {exc}") from exc
        try:
            began = trio.current_time()
            client = await self._run(self._factory)
            # Shielded: a cancel arriving while the thread runs would drop the created container on
            # the floor (leaked until shutdown). Once we hold it, the finally below removes it.
            with trio.CancelScope(shield=True):
                container = await self._run(client.containers.create, **kwargs)
        except docker.errors.ImageNotFound as exc:
            raise LaunchError(
                f"server {self.name!r}: image {self.spec.image!r} is not on this Docker engine "
                "(the gateway never pulls: build or load it first)"
            ) from exc
        except DOCKER_ERRORS as exc:
            raise LaunchError(f"server {self.name!r}: cannot create its container: {_explain(exc)}") from exc
        channel: DockerChannel | None = None
        # Registered before start, so its death cannot be announced before we listen.
        watch = self.exits.watch(container.id) if self.exits is not None else None
        try:
            try:
                # Attach before start, so not one byte of output can be missed.
                sock, initial = await self._run(attach_raw_socket, client.api, container.id)
                channel = DockerChannel(self.name, sock, container, initial=initial, exit_watch=watch)
                await self._run(container.start)
            except DOCKER_ERRORS as exc:
                raise LaunchError(f"server {self.name!r}: cannot start container: {_explain(exc)}") from exc
            log.info("[%s] started container %s (%s)", self.name, container.name, container.short_id)
            if self._on_started is not None:
                self._on_started(trio.current_time() - began)
            yield channel
        finally:
            # Shielded so a cancelled caller still releases the container; bounded so a hung engine
            # cannot hold the caller forever (remove_own() at shutdown catches what is left).
            with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT) as scope:
                if channel is not None:
                    await channel.aclose()
                await trio.to_thread.run_sync(
                    self._teardown, container, limiter=self._limiter, abandon_on_cancel=True
                )
            if self.exits is not None:
                self.exits.forget(container.id)
            if scope.cancelled_caught:
                log.warning(
                    "[%s] container %s not removed within %ss", self.name, container.name, CLEANUP_TIMEOUT
                )

    def _teardown(self, container: Any) -> None:
        """Stop (SIGTERM, SIGKILL after ``stop_timeout``), then force-remove. Blocking; never raises."""
        try:
            container.stop(timeout=self.stop_timeout)
        except docker.errors.NotFound:
            return
        except DOCKER_ERRORS as exc:
            log.warning("[%s] stopping %s failed: %s", self.name, container.name, _explain(exc))
        try:
            container.remove(force=True)  # force: kills it if stop did not
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            # 409 "removal already in progress": the engine's auto-remove (it stopped, so it exited) is
            # finishing our job; wait for it, so the container is gone when we return.
            if exc.status_code != 409:
                log.warning("[%s] removing %s failed: %s", self.name, container.name, _explain(exc))
                return
            try:
                container.wait(condition="removed", timeout=CLEANUP_TIMEOUT)
            except docker.errors.NotFound:
                pass
            except DOCKER_ERRORS as exc:
                log.debug("[%s] waiting for the removal of %s: %s", self.name, container.name, _explain(exc))
        except DOCKER_ERRORS as exc:
            log.warning("[%s] removing %s failed: %s", self.name, container.name, _explain(exc))


def _explain(exc: Exception) -> str:
    if isinstance(exc, docker.errors.APIError):
        return str(exc.explanation or exc)
    return str(exc)
