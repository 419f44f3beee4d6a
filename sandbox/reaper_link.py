"""The gateway's side of :mod:`sandbox.reaper`: start reapers at startup, release them at shutdown.

- :class:`ReaperProcess` (always): a ``python -m sandbox.reaper`` process in a session of its own,
  reading a pipe whose write end only this gateway process holds. The kernel closes that end when
  the gateway dies, however it dies, and the reaper wakes up.
- :class:`SiblingReaper` (only when the gateway itself runs in a Docker container): a process
  inside the gateway's container dies with the container, so the reaper runs as a sibling
  container of the gateway's own image and waits for the gateway's container to stop.

Not covered: a reaper killed together with the gateway (``kill -9`` of both, a whole cgroup killed
at once, the host losing power) and an engine that is down when the reaper wakes up. Containers
left that way are removed when a gateway with the same identity starts again
(:meth:`sandbox.engine.Engine.remove_orphans`).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import docker
import docker.errors
import trio
from docker.types import Mount

from sandbox import seccomp
from sandbox.docker_io import DOCKER_ERRORS
from sandbox.reaper import CLEAN, DEFAULT_GRACE

log = logging.getLogger("mcp_gateway.sandbox")

#: Marks a sibling reaper container; its value is the gateway run's instance id.
REAPER_LABEL = "io.mcp-gateway.reaper"
#: Where this package lives: put first on the reaper's PYTHONPATH, so ``-m sandbox.reaper`` finds the
#: same code in a source checkout, an installed wheel or the gateway image alike.
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
_CONTAINER_MOUNT = re.compile(r"/containers/([0-9a-f]{64})/(?:hostname|hosts|resolv\.conf) /etc/")


def _reaper_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    return env


def reaper_args(labels: Mapping[str, str], *, grace: float, gateway: str) -> list[str]:
    """The reaper's arguments after ``-m sandbox.reaper``."""
    args = ["--grace", f"{grace:g}", "--gateway", gateway]
    for key, value in labels.items():
        args += ["--label", f"{key}={value}"]
    return args


class ReaperProcess:
    """A reaper process for this gateway process (see the module docstring)."""

    def __init__(self, labels: Mapping[str, str], *, grace: float = DEFAULT_GRACE) -> None:
        self.labels = dict(labels)
        self.grace = grace
        self.process: trio.Process | None = None
        self._pipe: int | None = None  # the write end: ours alone (os.pipe fds are not inherited)

    async def start(self) -> None:
        """Start the reaper; it holds the pipe's read end as its stdin and nothing else of ours."""
        command = [sys.executable, "-m", "sandbox.reaper",
                   *reaper_args(self.labels, grace=self.grace, gateway=f"gateway pid {os.getpid()}")]
        read_end, write_end = os.pipe()
        try:
            # A session of its own: a Ctrl-C (SIGINT to the terminal's process group) or a SIGHUP
            # meant for the gateway must not reach it. stderr stays ours, so what it did is logged.
            self.process = await trio.lowlevel.open_process(
                command, stdin=read_end, stdout=subprocess.DEVNULL, start_new_session=True, env=_reaper_env()
            )
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        self._pipe = write_end
        log.debug("reaper pid %d watches containers labelled %s", self.process.pid, self.labels)

    async def close(self, *, clean: bool) -> None:
        """Release the reaper. ``clean``: this run's containers are gone, so it exits at once (and we
        reap it); otherwise it removes what is left after its grace, on its own time."""
        if self._pipe is None:
            return
        pipe, self._pipe = self._pipe, None
        try:
            if clean:
                os.write(pipe, CLEAN)  # a few bytes into an empty pipe: never blocks
        except OSError as exc:  # EPIPE: the reaper is already gone
            log.warning("the container reaper (pid %s) exited early: %s", self.pid, exc)
        finally:
            os.close(pipe)
        if clean and self.process is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self.process.wait()
            if self.process.returncode is None:
                log.warning("the container reaper (pid %s) did not exit; killing it", self.pid)
                self.process.kill()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


def own_container_id(mountinfo: str) -> str | None:
    """The id of the Docker container this process runs in, read from ``/proc/self/mountinfo`` (Docker
    bind-mounts /etc/hostname, /etc/hosts and /etc/resolv.conf from ``.../containers/<id>/``; the
    hostname says nothing with ``--network host``). ``None`` outside a Docker container."""
    match = _CONTAINER_MOUNT.search(mountinfo)
    return match.group(1) if match else None


def _docker_socket(docker_host: str | None) -> str | None:
    """The engine's unix socket path (the default when DOCKER_HOST is unset), or None for tcp:// etc."""
    if not docker_host:
        return "/var/run/docker.sock"
    return docker_host.removeprefix("unix://") if docker_host.startswith("unix://") else None


def sibling_kwargs(
    gateway: Mapping[str, Any],
    *,
    labels: Mapping[str, str],
    instance_id: str,
    grace: float = DEFAULT_GRACE,
    docker_host: str | None = None,
    extra_labels: Mapping[str, str] | None = None,
) -> dict[str, Any] | None:
    """``containers.create`` kwargs for a reaper container next to the gateway container ``gateway``
    (its inspect data). None when the sibling could not reach the engine (no socket mount found)."""
    host_config = gateway.get("HostConfig") or {}
    socket_path = _docker_socket(docker_host)
    mounts: list[Mount] = []
    if socket_path is not None:
        for m in gateway.get("Mounts") or []:
            target = str(m.get("Destination", "")).rstrip("/")
            if m.get("Type") == "bind" and target and (socket_path == target or socket_path.startswith(target + "/")):
                mounts.append(Mount(target, str(m["Source"]), type="bind", read_only=False))
                break
        if not mounts:
            return None
    env = {"PYTHONPATH": _reaper_env()["PYTHONPATH"]}
    if docker_host:
        env["DOCKER_HOST"] = docker_host
    name = str(gateway.get("Name", "")).lstrip("/") or str(gateway["Id"])[:12]
    return {
        "image": gateway["Image"],  # the image id the gateway runs: present, whatever its tags
        "entrypoint": [sys.executable, "-m", "sandbox.reaper"],
        "command": ["--wait-container", str(gateway["Id"]),
                    *reaper_args(labels, grace=grace, gateway=f"gateway container {name}")],
        "name": f"mcp-gw-reaper-{instance_id[:16]}",
        "labels": {**(extra_labels or {}), REAPER_LABEL: instance_id},
        "environment": env,
        # The gateway's user and groups: whoever may use the Docker socket there may here.
        "user": str((gateway.get("Config") or {}).get("User") or ""),
        "group_add": list(host_config.get("GroupAdd") or []),
        "detach": True,
        "auto_remove": True,
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true", *seccomp.security_opt("strict")],
        # A unix socket needs no network; a tcp:// engine is reached the way the gateway reaches it.
        "network_mode": "none" if socket_path is not None else str(host_config.get("NetworkMode") or "none"),
        "mounts": mounts,
        "mem_limit": 64 * 1024 * 1024,
        "memswap_limit": 64 * 1024 * 1024,
        "pids_limit": 16,
        "init": True,
    }


class SiblingReaper:
    """A reaper container next to the gateway's own container (nothing when not in one)."""

    def __init__(
        self,
        client_factory: Callable[[], docker.DockerClient],
        limiter: trio.CapacityLimiter,
        labels: Mapping[str, str],
        *,
        instance_id: str,
        extra_labels: Mapping[str, str] | None = None,
        grace: float = DEFAULT_GRACE,
        mountinfo: str = "/proc/self/mountinfo",
    ) -> None:
        self._factory = client_factory
        self._limiter = limiter
        self.labels = dict(labels)
        self.instance_id = instance_id
        self.extra_labels = dict(extra_labels or {})
        self.grace = grace
        self._mountinfo = mountinfo
        self.container_id: str | None = None
        self.gateway_container: str | None = None

    async def start(self) -> None:
        """Start the sibling if this gateway runs in a container of this engine; log why not otherwise."""
        await trio.to_thread.run_sync(self._start_blocking, limiter=self._limiter)

    def _start_blocking(self) -> None:
        try:
            with open(self._mountinfo) as f:
                own = own_container_id(f.read())
        except OSError:
            own = None
        if own is None:
            return
        client = self._factory()
        try:
            gateway = client.api.inspect_container(own)
        except docker.errors.NotFound:
            log.info("running in container %s, which this Docker engine does not know: no sibling reaper",
                     own[:12])
            return
        except DOCKER_ERRORS as exc:
            log.warning("cannot inspect the gateway's own container %s (%s): no sibling reaper", own[:12], exc)
            return
        self.gateway_container = own
        kwargs = sibling_kwargs(gateway, labels=self.labels, instance_id=self.instance_id, grace=self.grace,
                                docker_host=os.environ.get("DOCKER_HOST"), extra_labels=self.extra_labels)
        if kwargs is None:
            log.warning("the gateway's container has no bind mount of the Docker socket: no sibling reaper "
                        "(containers of a killed gateway container stay until the next start)")
            return
        try:
            container = client.containers.create(**kwargs)
            self.container_id = str(container.id)
            container.start()
        except DOCKER_ERRORS as exc:
            log.warning("could not start the sibling reaper container: %s", exc)
            self._remove_blocking()
            return
        log.info("the gateway runs in container %s; reaper container %s watches it", own[:12],
                 self.container_id[:12])

    async def close(self) -> None:
        """Remove the sibling (a clean shutdown left it nothing to do)."""
        if self.container_id is not None:
            await trio.to_thread.run_sync(self._remove_blocking, limiter=self._limiter)

    def _remove_blocking(self) -> None:
        if self.container_id is None:
            return
        try:
            self._factory().api.remove_container(self.container_id, force=True)
        except docker.errors.NotFound:
            pass
        except DOCKER_ERRORS as exc:
            if not (isinstance(exc, docker.errors.APIError) and exc.status_code == 409):
                log.warning("could not remove the sibling reaper container: %s", exc)
        self.container_id = None
