"""How the gateway uses the sandbox: one :class:`SandboxRuntime` per gateway run.

It owns the run's instance id, the Docker client and the thread limiter every
blocking Docker call goes through; it turns a server's config into a hardened
:class:`ContainerLauncher`, sweeps leftovers of an earlier crashed run at start
and removes this run's containers at shutdown. Between the two it keeps the
run's Docker events stream (how containers exit, :mod:`sandbox.exits`) and the
reapers that remove the run's containers if the gateway dies without a
shutdown (:mod:`sandbox.reaper_link`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket

import trio

from gateway.config import ServerConfig, resolve_secret
from gateway.stats import Histogram
from sandbox.docker_io import DOCKER_ERRORS
from sandbox.engine import Engine, new_instance_id, shared_client
from sandbox.exits import ContainerExits
from sandbox.launcher import ContainerLauncher
from sandbox.profile import INSTANCE_LABEL, MANAGED_LABEL, SandboxSpec
from sandbox.reaper_link import ReaperProcess, SiblingReaper

log = logging.getLogger("mcp_gateway.sandbox")

#: Which gateway a container belongs to. Two gateways on one engine never sweep each
#: other's containers: a run removes leftovers of its own identity only.
IDENTITY_LABEL = "mcp-gateway.identity"


class SandboxUnavailable(Exception):
    """Container servers are configured but Docker cannot run them (the message says how to fix it)."""


def default_identity(host: str, port: int) -> str:
    """Stable across restarts of the same gateway: host name + listen address (or $MCP_GATEWAY_ID).

    Port 0 (an ephemeral port, as in tests) cannot be restarted as the same gateway,
    so such a run gets an identity of its own and sweeps nothing.
    """
    explicit = os.environ.get("MCP_GATEWAY_ID")
    if explicit:
        return explicit
    if port == 0:
        return f"ephemeral-{new_instance_id()}"
    key = f"{socket.gethostname()}|{host}:{port}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def sandbox_spec(name: str, server: ServerConfig, identity: str) -> SandboxSpec:
    """A server's sandbox settings; secrets are resolved now and only ever go to the container env."""
    secrets = {
        key: resolve_secret(ref, where=f"servers.{name}.secrets.{key}") for key, ref in server.secrets.items()
    }
    return SandboxSpec(
        image=server.image or "",
        command=server.argv() or None,
        env=dict(server.env),
        secrets_env=secrets,
        memory=server.limits.memory,
        cpus=server.limits.cpus,
        pids=server.limits.pids,
        network=server.network,
        mounts=[(m.source, m.target, m.rw) for m in server.mounts],
        user=server.user,
        allow_root=server.allow_root,
        read_only=server.read_only,
        tmpfs_size=server.tmpfs_size,
        cap_add=list(server.cap_add),
        seccomp=server.seccomp,
        labels={IDENTITY_LABEL: identity},
    )


class SandboxRuntime:
    """Docker state of one gateway run: :meth:`startup` before the first container, :meth:`shutdown`
    after the last (the gateway calls both; everything started in between ends in shutdown)."""

    def __init__(self, host: str, port: int, *, identity: str | None = None, max_threads: int = 16) -> None:
        self.instance_id = new_instance_id()
        self.identity = identity or default_identity(host, port)
        self.limiter = trio.CapacityLimiter(max_threads)
        self.engine = Engine(shared_client, self.limiter)
        own = {MANAGED_LABEL: "1", INSTANCE_LABEL: self.instance_id}
        self.exits = ContainerExits(shared_client, own, self.limiter)
        self.reaper = ReaperProcess(own)
        self.sibling = SiblingReaper(shared_client, self.limiter, own, instance_id=self.instance_id,
                                     extra_labels={IDENTITY_LABEL: self.identity})
        self.start_seconds = Histogram()  # container create -> started, for mcp_container_start_seconds

    def launcher(self, name: str, server: ServerConfig) -> ContainerLauncher:
        return ContainerLauncher(
            name,
            sandbox_spec(name, server, self.identity),
            shared_client,
            self.limiter,
            instance_id=self.instance_id,
            exits=self.exits,
            on_started=self.start_seconds.observe,
        )

    async def startup(self) -> None:
        """Check the engine (fail fast, with the fix), remove leftovers of earlier runs, then open the
        events stream and start the reapers (a failure there costs a safety net, not the gateway)."""
        status = await self.engine.check()
        if not status.reachable:
            raise SandboxUnavailable(f"container servers are configured but {status.error}")
        removed = await self.engine.remove_orphans(self.instance_id, labels={IDENTITY_LABEL: self.identity})
        if removed:
            log.warning(
                "removed %d container(s) left by an earlier run: %s", len(removed), ", ".join(removed)
            )
        try:
            await self.exits.start()
        except DOCKER_ERRORS as exc:
            log.warning("no Docker events stream (%s): exit statuses come from each container, "
                        "and an OOM kill may read as a SIGKILL", exc)
        try:
            try:
                await self.reaper.start()
            except OSError as exc:
                log.error("could not start the container reaper (%s): if this gateway is killed, its "
                          "containers stay until it starts again", exc)
            await self.sibling.start()  # says itself why there is none, when there is none
        except BaseException:  # cancelled while starting: leave nothing behind
            await self._release(clean=True)
            raise

    async def shutdown(self) -> None:
        """Remove every container of this run that is still there (bounded, survives cancellation),
        then release the events stream and the reapers."""
        clean = False
        with trio.CancelScope(shield=True):
            try:
                with trio.move_on_after(30):
                    removed = await self.engine.remove_own(self.instance_id)
                    clean = True
                    if removed:
                        log.info("removed %d container(s) at shutdown", len(removed))
            finally:
                # Not clean: the reaper removes what is left after its grace (if the engine answers).
                await self._release(clean=clean)

    async def _release(self, *, clean: bool) -> None:
        with trio.CancelScope(shield=True):
            try:
                with trio.move_on_after(10):
                    await self.exits.aclose()
                    if clean:  # otherwise the sibling sweeps once the gateway's container has stopped
                        await self.sibling.close()
            finally:
                await self.reaper.close(clean=clean)  # bounded itself; the pipe is closed whatever happens
