"""The rules of a container server's sandbox settings, and their defaults: the one place both the
config validator and the sandbox (for settings built by code) check them.

Each rule raises :class:`RuleError` with the key path inside the server (``limits.memory``,
``mounts[0].source``) and a message; callers add their own prefix (``servers.<name>.``) or error
type. The defaults are the hardened profile: what a server gets when its config says nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Final

from .units import MiB, format_size

DEFAULT_MEMORY: Final = 256 * MiB
MIN_MEMORY: Final = 6 * MiB  # Docker refuses less
DEFAULT_CPUS: Final = 0.5
DEFAULT_PIDS: Final = 128
DEFAULT_TMPFS: Final = 64 * MiB
MIN_TMPFS: Final = MiB
DEFAULT_USER: Final = "65534:65534"  # nobody:nogroup
DEFAULT_NETWORK: Final = "none"
SECCOMP: Final = ("strict", "docker-default")

_USER = re.compile(r"[a-zA-Z0-9_.-]+(?::[a-zA-Z0-9_.-]+)?")
_NUMERIC_ID = re.compile(r"[+-]?[0-9]+")  # as Docker (Go's Atoi) reads ids: +0, -0 and 000 are all 0
_MAX_ID = 2**31 - 1  # Docker refuses larger ids; refusing them here keeps any 32-bit wrap to 0 out of play
_NETWORK = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")  # no "container:<id>": that joins another's netns
CAPABILITIES: Final = frozenset(
    "AUDIT_CONTROL AUDIT_READ AUDIT_WRITE BLOCK_SUSPEND BPF CHECKPOINT_RESTORE CHOWN DAC_OVERRIDE "
    "DAC_READ_SEARCH FOWNER FSETID IPC_LOCK IPC_OWNER KILL LEASE LINUX_IMMUTABLE MAC_ADMIN MAC_OVERRIDE "
    "MKNOD NET_ADMIN NET_BIND_SERVICE NET_BROADCAST NET_RAW PERFMON SETFCAP SETGID SETPCAP SETUID "
    "SYS_ADMIN SYS_BOOT SYS_CHROOT SYS_MODULE SYS_NICE SYS_PACCT SYS_PTRACE SYS_RAWIO SYS_RESOURCE "
    "SYS_TIME SYS_TTY_CONFIG SYSLOG WAKE_ALARM ALL".split()
)


class RuleError(ValueError):
    """A sandbox setting breaks a rule: ``key`` is its path inside the server's settings."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key, self.message = key, message


def root_user_problem(user: str) -> str | None:
    """Why a container ``user`` runs, or may run, as uid 0 or gid 0; None when it is safe.

    A name resolves through the image's /etc/passwd or /etc/group, which we do not read, and a
    uid alone gets the image's group for it (gid 0 when the image does not list the uid).
    """
    name, sep, group = (part.strip() for part in user.partition(":"))
    if not name or name in ("0", "root"):  # empty: whatever the image says, often root
        return f"{user!r} runs as root (or as the image's user)"
    if not _NUMERIC_ID.fullmatch(name):
        return f"{user!r} names a user, whose uid (maybe 0) only the image's /etc/passwd knows"
    uid = int(name)
    if uid == 0:
        return f"{user!r} runs as root (uid 0)"
    if not sep or not group:
        return (f"{user!r} sets no group, so the group comes from the image (gid 0 if the image does not "
                f"list uid {uid})")
    if not _NUMERIC_ID.fullmatch(group):
        return f"{user!r} names a group, whose gid (maybe 0) only the image's /etc/group knows"
    gid = int(group)
    if gid == 0:
        return f"{user!r} runs with group root (gid 0)"
    for what, n in (("uid", uid), ("gid", gid)):
        if not 0 < n <= _MAX_ID:
            return f"{user!r}: {what} {n} is out of range (1..{_MAX_ID})"
    return None


def env_conflict(env: Iterable[str], secrets: Iterable[str]) -> str | None:
    """A variable set both in ``env`` and as a secret (any server kind), or None."""
    both = sorted(set(env) & set(secrets))
    return both[0] if both else None


def check(*, image: str | None, user: str, allow_root: bool, network: str, mounts: Iterable[tuple[str, str]],
          cap_add: Iterable[str], memory: int, cpus: float, pids: int, tmpfs_size: int, seccomp: str,
          env: Mapping[str, str] = {}, secrets: Iterable[str] = ()) -> list[str]:  # noqa: B006 - never mutated
    """Check a container's sandbox settings; return ``cap_add`` normalized (``CHOWN``, not
    ``cap_chown``). Raises :class:`RuleError` naming the first setting that breaks a rule."""
    if not image or not image.strip():
        raise RuleError("image", "must not be empty")
    if memory < MIN_MEMORY:
        raise RuleError("limits.memory", f"must be at least {format_size(MIN_MEMORY)}, got {format_size(memory)}")
    if not (isinstance(cpus, int | float) and math.isfinite(cpus)) or cpus <= 0:
        raise RuleError("limits.cpus", f"must be greater than 0, got {cpus}")
    if pids < 1:
        raise RuleError("limits.pids", f"must be greater than 0, got {pids}")
    if tmpfs_size < MIN_TMPFS:
        raise RuleError("tmpfs_size", f"must be at least {format_size(MIN_TMPFS)}, got {format_size(tmpfs_size)}")
    if not _NETWORK.fullmatch(network):
        raise RuleError("network", f"invalid network {network!r} (none, host or a network's name)")
    if not _USER.fullmatch(user):
        raise RuleError("user", f"invalid user {user!r} (use uid[:gid] or name[:group], e.g. {DEFAULT_USER})")
    problem = None if allow_root else root_user_problem(user)
    if problem:
        raise RuleError("user", f"{problem}; use a numeric non-root uid:gid such as '{DEFAULT_USER}', "
                                "or set allow_root: true to accept the risk")
    for i, (source, target) in enumerate(mounts):
        for key, p in (("source", source), ("target", target)):
            if not p.startswith("/") or "," in p or ":" in p:
                raise RuleError(f"mounts[{i}].{key}", f"must be an absolute path without ',' or ':', got {p!r}")
        if target.rstrip("/") == "":
            raise RuleError(f"mounts[{i}].target", "must not be /")
    caps = []
    for i, cap in enumerate(cap_add):
        norm = cap.upper().removeprefix("CAP_")
        if norm not in CAPABILITIES:
            raise RuleError(f"cap_add[{i}]", f"unknown capability {cap!r}")
        caps.append(norm)
    if seccomp not in SECCOMP:
        raise RuleError("seccomp", f"expected 'strict' or 'docker-default', got {seccomp!r}")
    both = env_conflict(env, secrets)
    if both is not None:
        raise RuleError(f"secrets.{both}", "also set in env; set it in one place")
    return caps
