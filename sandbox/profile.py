"""The hardening profile: a server's sandbox settings -> Docker SDK ``containers.create`` kwargs.

Pure functions, no Docker calls. Everything is locked down by default and each setting is loosened
only by an explicit field of :class:`SandboxSpec`:

======================  ==========================================  ================================
setting                 default                                     loosened by
======================  ==========================================  ================================
root filesystem         read-only                                   ``read_only=False``
/tmp                    tmpfs ``rw,noexec,nosuid,nodev,size=64m``   ``tmpfs_size``
privileges              ``no-new-privileges``                       (never loosened)
system calls            the ``strict`` seccomp profile              ``seccomp="docker-default"``
                        (:mod:`sandbox.seccomp`)                    (Docker's own default profile)
capabilities            all dropped                                 ``cap_add``
user                    ``65534:65534`` (nobody); numeric uid:gid,  ``user`` (+ ``allow_root``)
                        uid 0 and gid 0 refused
memory                  256 MiB, no swap                            ``memory``
CPU                     0.5 CPU                                     ``cpus``
processes               128 pids                                    ``pids``
network                 ``none``                                    ``network`` (``host``, a name)
host mounts             none; read-only unless ``rw``               ``mounts``
init                    Docker's init (reaps zombies, forwards      (always on)
                        signals)
logs                    not kept by Docker (stderr goes to the      (always)
                        gateway's log)
exited containers       removed by the engine (auto-remove)         (always)
======================  ==========================================  ================================

Secrets (``secrets_env``) go into the container's environment only: never argv, never a label,
never ``repr``; :func:`redact` makes kwargs safe to log.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from docker.types import LogConfig, Mount

from gateway.config import container as rules
from sandbox import seccomp

MANAGED_LABEL = "io.mcp-gateway.managed"
INSTANCE_LABEL = "io.mcp-gateway.instance"
SERVER_LABEL = "io.mcp-gateway.server"
_OUR_LABEL_PREFIX = "io.mcp-gateway."

MIB = 1024 * 1024
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]+")


class SandboxConfigError(ValueError):
    """A sandbox setting is invalid or unsafe without an explicit opt-in."""


class BindMount(NamedTuple):
    """A host path mounted into the container; read-only unless ``rw``. A plain
    ``(source, target, rw)`` tuple works too."""

    source: str
    target: str
    rw: bool = False


@dataclass(frozen=True)
class SandboxSpec:
    """How to run one server's container. Defaults are the hardened profile."""

    image: str
    #: The container's command (Docker's ``Cmd``); ``None`` keeps the image's default.
    command: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    #: Already-resolved secret values: container env only. Kept out of repr so they are never logged.
    secrets_env: dict[str, str] = field(default_factory=dict, repr=False)
    # The defaults and the rules are the config's (gateway/config/container.py): one place for both.
    memory: int = rules.DEFAULT_MEMORY
    cpus: float = rules.DEFAULT_CPUS
    pids: int = rules.DEFAULT_PIDS
    network: str = rules.DEFAULT_NETWORK
    mounts: Sequence[BindMount | tuple[str, str, bool]] = ()
    user: str = rules.DEFAULT_USER
    allow_root: bool = False
    read_only: bool = True
    tmpfs_size: int = rules.DEFAULT_TMPFS
    cap_add: Sequence[str] = ()
    #: ``strict``: our allowlist (:mod:`sandbox.seccomp`); ``docker-default``: the engine's profile.
    seccomp: Literal["strict", "docker-default"] = "strict"
    labels: dict[str, str] = field(default_factory=dict)


def _check(spec: SandboxSpec) -> list[str]:
    """The config's container rules, for specs built by code too; returns cap_add normalized."""
    try:
        return rules.check(
            image=spec.image, user=spec.user, allow_root=spec.allow_root, network=spec.network,
            mounts=[(m.source, m.target) for m in map(BindMount._make, spec.mounts)], cap_add=spec.cap_add,
            memory=spec.memory, cpus=spec.cpus, pids=spec.pids, tmpfs_size=spec.tmpfs_size, seccomp=spec.seccomp,
            env=spec.env, secrets=spec.secrets_env)
    except rules.RuleError as exc:
        raise SandboxConfigError(str(exc)) from None


def container_name(server: str) -> str:
    """A unique, Docker-valid container name that shows which server it runs."""
    safe = _NAME_UNSAFE.sub("-", server).strip("-.") or "server"
    return f"mcp-gw-{safe[:40]}-{uuid.uuid4().hex[:10]}"


def container_kwargs(server: str, spec: SandboxSpec, instance_id: str) -> dict[str, Any]:
    """Return the kwargs for ``client.containers.create(**kwargs)`` that run ``spec`` hardened.

    Raises :class:`SandboxConfigError` for invalid or unsafe settings. The result holds secret
    values in ``environment``: log it only through :func:`redact`.
    """
    cap_add = _check(spec)
    labels = {k: v for k, v in spec.labels.items() if not k.startswith(_OUR_LABEL_PREFIX)}
    # Ours last and never overridable: orphan cleanup trusts them.
    labels |= {MANAGED_LABEL: "1", INSTANCE_LABEL: instance_id, SERVER_LABEL: server}
    return {
        "image": spec.image,
        "command": list(spec.command) if spec.command is not None else None,
        "name": container_name(server),
        "environment": {**spec.env, **spec.secrets_env},
        "labels": labels,
        "user": spec.user,
        # I/O: stdin kept open, no TTY (a TTY would mangle bytes and merge stderr into stdout).
        # detach=False makes the SDK set StdinOnce (as `docker run -i` does): when our attach
        # connection closes its write side, or drops because the gateway died, the server's stdin
        # gets EOF and an MCP stdio server exits on its own. create() itself never blocks.
        "stdin_open": True,
        "tty": False,
        "detach": False,
        # The engine removes a container once it has exited, so none pile up even when the gateway
        # is gone. How it exited (status, OOM) reaches the gateway through its events stream
        # (sandbox.exits), which does not race the removal as an inspect after exit would.
        "auto_remove": True,
        "read_only": spec.read_only,
        "tmpfs": {"/tmp": f"rw,noexec,nosuid,nodev,size={spec.tmpfs_size}"},
        # seccomp: our strict profile inline, or nothing (Docker's default); never "unconfined".
        "security_opt": ["no-new-privileges:true", *seccomp.security_opt(spec.seccomp)],
        "cap_drop": ["ALL"],
        "cap_add": cap_add,
        "mem_limit": spec.memory,
        "memswap_limit": spec.memory,  # equal to mem_limit: no swap
        "nano_cpus": int(spec.cpus * 1e9),
        "pids_limit": spec.pids,
        "network_mode": spec.network,
        "mounts": [
            Mount(m.target, m.source, type="bind", read_only=not m.rw)
            for m in map(BindMount._make, spec.mounts)
        ],
        "init": True,
        # Docker would otherwise copy every byte of stdout/stderr to an unbounded json log on the
        # host's disk: a chatty (or hostile) server could fill it, and it costs throughput.
        "log_config": LogConfig(type=LogConfig.types.NONE),
    }


def redact(kwargs: dict[str, Any], spec: SandboxSpec) -> dict[str, Any]:
    """A copy of ``kwargs`` whose secret env values read ``***``: safe to log or print."""
    out = dict(kwargs)
    out["environment"] = {
        k: ("***" if k in spec.secrets_env else v) for k, v in kwargs.get("environment", {}).items()
    }
    return out
