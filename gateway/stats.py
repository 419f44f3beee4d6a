"""What the data plane counts on its hot path, cheaply, for metrics to read at scrape time.

Per request: a dict lookup and an increment for the outcome, one ``bisect`` into fixed
buckets for the duration. Nothing here knows Prometheus (gateway/metrics.py turns these into
metric families when scraped). Every label value is bounded: methods outside the MCP set are
counted as ``other``, statuses as a fixed set of names, tool names only as the route's catalog
has them (and at most :data:`MAX_TOOLS` per server), unknown ones as ``unknown``.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

from .protocol import errors

#: Seconds; they resolve a 100 us proxy hop as well as a 60 s tool call.
BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                  2.5, 5.0, 10.0, 30.0, 60.0)
MAX_TOOLS: Final = 500  # tool label values per server; beyond, "other"
MAX_CALLERS: Final = 1000  # caller label values (API key names, token subjects); beyond, "other"
METHODS: Final = frozenset({
    "initialize", "ping", "tools/list", "tools/call", "prompts/list", "prompts/get", "resources/list",
    "resources/templates/list", "resources/read", "resources/subscribe", "resources/unsubscribe",
    "completion/complete", "logging/setLevel", "server/discover", "subscriptions/listen"})
_STATUS: Final = {
    errors.PARSE_ERROR: "parse_error", errors.INVALID_REQUEST: "invalid_request",
    errors.METHOD_NOT_FOUND: "method_not_found", errors.INVALID_PARAMS: "invalid_params",
    errors.INTERNAL_ERROR: "internal_error", errors.HEADER_MISMATCH: "header_mismatch",
    errors.MISSING_REQUIRED_CLIENT_CAPABILITY: "missing_capability",
    errors.UNSUPPORTED_PROTOCOL_VERSION: "unsupported_version", errors.UPSTREAM_UNAVAILABLE: "unavailable",
    errors.REQUEST_TIMEOUT: "timeout", errors.UPSTREAM_INVALID: "upstream_invalid",
    errors.GATEWAY_SHUTTING_DOWN: "shutting_down", errors.REQUEST_CANCELLED: "cancelled",
    errors.RATE_LIMITED: "rate_limited",
}


def method_label(method: object) -> str:
    return method if isinstance(method, str) and method in METHODS else "other"


def status_label(code: int | None) -> str:
    """``ok``, a gateway or JSON-RPC error by name, or ``upstream_error`` for any other code."""
    if code is None:
        return "ok"
    return _STATUS.get(code, "upstream_error")


class Histogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        out, running = [], 0
        for bound, count in zip((*map(str, BUCKETS), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


@dataclass(slots=True)
class RequestStats:
    """Counts and durations of client requests and tool calls since start."""

    requests: dict[tuple[str, str], Histogram] = field(default_factory=dict)  # (route, method)
    outcomes: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (route, method, status)
    tool_calls: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)  # (route, server, tool, status)
    tool_time: dict[tuple[str, str], Histogram] = field(default_factory=dict)  # (server, tool)
    rejected: Counter[str] = field(default_factory=Counter)  # reason
    callers: Counter[str] = field(default_factory=Counter)  # identity key ("key:ci", "jwt:alice") -> calls
    enabled: bool = True
    _tools_seen: dict[str, set[str]] = field(default_factory=dict)

    def request(self, route: str, method: object, code: int | None, seconds: float) -> None:
        if not self.enabled:
            return
        name = method_label(method)
        key = (route, name)
        hist = self.requests.get(key)
        if hist is None:
            hist = self.requests[key] = Histogram()
        hist.observe(seconds)
        self.outcomes[(route, name, status_label(code))] += 1

    def tool(self, route: str, server: str, tool: str, code: int | None, seconds: float | None) -> None:
        """A tools/call to ``tool`` (its public name) of ``server``; ``seconds`` the upstream's part."""
        if not self.enabled:
            return
        seen = self._tools_seen.setdefault(server, set())
        if tool not in seen:
            if len(seen) >= MAX_TOOLS:
                tool = "other"
            else:
                seen.add(tool)
        self.tool_calls[(route, server, tool, status_label(code))] += 1
        if seconds is not None:
            key = (server, tool)
            hist = self.tool_time.get(key)
            if hist is None:
                hist = self.tool_time[key] = Histogram()
            hist.observe(seconds)

    def caller(self, key: str) -> None:
        """One call (tools/call, prompts/get, resources/read) by this caller."""
        if not self.enabled:
            return
        callers = self.callers
        if key in callers or len(callers) < MAX_CALLERS:
            callers[key] += 1
        else:
            callers["other"] += 1

    def reject(self, reason: str) -> None:
        self.rejected[reason] += 1
