"""File descriptors: raise the soft limit to the hard one, and fit ``max_connections`` under it.

Every client connection is a descriptor, and so is every upstream pipe, container attach socket,
Docker API connection, log file and listening socket. If ``max_connections`` is at or above the
limit, a flood of idle connections exhausts descriptors before the connection guard engages:
accept() fails, upstreams cannot start, and legitimate clients time out. So the guard must sit
below the limit, with room for everything else the gateway opens.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

log = logging.getLogger("mcp_gateway.http")

BASE_RESERVE = 256  # listeners, logs, Docker API connections, thread pools, slack
PER_INSTANCE = 4  # an upstream instance: stdin, stdout, stderr pipes and a pidfd, or an attach socket


@dataclass(frozen=True, slots=True)
class DescriptorBudget:
    soft: int  # the limit in force (after raising it)
    hard: int
    reserve: int  # kept for everything that is not a client connection
    requested: int  # limits.max_connections
    max_connections: int  # what the data plane may hold

    @property
    def capped(self) -> bool:
        return self.max_connections < self.requested


def raise_soft_limit() -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit (allowed without privileges)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:  # e.g. a kernel nr_open below the hard limit
            log.warning("could not raise the file-descriptor limit from %d to %d: %s", soft, target, exc)
    return soft, hard


def budget(requested: int, upstream_instances: int) -> DescriptorBudget:
    """Raise the limit, then the most connections that fit beside ``upstream_instances``."""
    soft, hard = raise_soft_limit()
    limit = soft if soft != resource.RLIM_INFINITY else 1 << 20
    reserve = BASE_RESERVE + PER_INSTANCE * upstream_instances
    allowed = max(16, limit - reserve)  # a tiny limit still serves someone
    chosen = min(requested, allowed)
    result = DescriptorBudget(soft=limit, hard=hard, reserve=reserve, requested=requested, max_connections=chosen)
    if result.capped:
        log.info("limits.max_connections %d capped at %d: the file-descriptor limit is %d and %d are kept "
                    "for upstream servers and the gateway itself (raise it with ulimit -n / LimitNOFILE=)",
                    requested, chosen, limit, reserve)
    return result
