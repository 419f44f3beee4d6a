"""Prometheus metrics, read from the components' counters and ``statistics()`` when scraped.

Nothing is observed through prometheus-client on the hot path: the request pipeline counts into
plain dicts and fixed-bucket histograms (gateway/stats.py), the servers, sessions and
connections report their state through ``statistics()``, and :class:`GatewayCollector` turns all
of it into metric families at scrape time. The text format (and OpenMetrics, when the scraper
asks for it) comes from prometheus-client.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from .stats import Histogram

if TYPE_CHECKING:
    from .app import Gateway

#: Every metric this module exposes (the dashboards and alerts test checks against a real scrape).
NAMES = (
    "mcp_requests_total", "mcp_request_duration_seconds", "mcp_tool_calls_total",
    "mcp_tool_execution_duration_seconds", "mcp_active_connections", "mcp_active_sessions",
    "mcp_server_healthy", "mcp_server_restarts_total", "mcp_server_instances", "mcp_container_start_seconds",
    "mcp_pool_available", "mcp_upstream_inflight", "mcp_rejected_total", "mcp_upstream_log_dropped_total",
    "mcp_audit_dropped_total", "mcp_auth_total", "mcp_auth_failures_total", "mcp_caller_calls_total",
    "mcp_tool_changes_total", "mcp_tool_changes_pending", "mcp_tools_withheld",
)  # and mcp_rate_limited_total{rule}, one series per configured rate limit

#: Refusal reasons exposed from the start (at 0), so rate() and alerts see a series before the first one.
REJECTION_REASONS = ("408", "413", "429", "431", "503", "origin", "host", "per_peer_connections")


def _histogram(family: HistogramMetricFamily, labels: list[str], hist: Histogram) -> None:
    family.add_metric(labels, hist.cumulative(), sum_value=hist.total)


class GatewayCollector(Collector):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[Any]:
        gw = self.gateway
        stats = gw.dispatcher.stats
        requests = CounterMetricFamily("mcp_requests", "Client requests by route, method and outcome",
                                       labels=["route", "method", "status"])
        for (route, method, status), count in stats.outcomes.items():
            requests.add_metric([route, method, status], count)
        yield requests
        duration = HistogramMetricFamily("mcp_request_duration_seconds", "Client request duration",
                                         labels=["route", "method"])
        for (route, method), hist in stats.requests.items():
            _histogram(duration, [route, method], hist)
        yield duration
        tools = CounterMetricFamily("mcp_tool_calls", "tools/call requests by route, server, tool and outcome",
                                    labels=["route", "server", "tool", "status"])
        for key, count in stats.tool_calls.items():
            tools.add_metric(list(key), count)
        yield tools
        tool_time = HistogramMetricFamily("mcp_tool_execution_duration_seconds",
                                          "How long upstream servers took to answer tools/call",
                                          labels=["server", "tool"])
        for (server, tool), hist in stats.tool_time.items():
            _histogram(tool_time, [server, tool], hist)
        yield tool_time
        rejected = CounterMetricFamily("mcp_rejected", "Requests and connections refused, by reason",
                                       labels=["reason"])
        reasons = dict.fromkeys(REJECTION_REASONS, 0)
        for source in (gw.http.stats.rejected, stats.rejected):  # the same reason can come from both
            for reason, count in source.items():
                reasons[reason] = reasons.get(reason, 0) + count
        for reason, count in sorted(reasons.items()):
            rejected.add_metric([reason], count)
        yield rejected

        connections = GaugeMetricFamily("mcp_active_connections", "Open client connections by transport",
                                        labels=["transport"])
        http = gw.http.statistics().connections
        ws = gw.websocket.statistics().open
        sse = len(gw.legacy_sse)
        connections.add_metric(["websocket"], ws)
        connections.add_metric(["sse"], sse)
        connections.add_metric(["streamable_http"], max(0, http - ws - sse))
        connections.add_metric(["stdio"], gw.stdio_clients)
        yield connections
        sessions = GaugeMetricFamily("mcp_active_sessions", "Client sessions by route", labels=["route"])
        for prefix, served in gw.routes.items():
            sessions.add_metric([prefix], len(served.sessions))
        yield sessions

        healthy = GaugeMetricFamily("mcp_server_healthy", "1 if the server is ready", labels=["server"])
        restarts = CounterMetricFamily("mcp_server_restarts", "Server restarts since start", labels=["server"])
        instances = GaugeMetricFamily("mcp_server_instances", "Server instances by state",
                                      labels=["server", "state"])
        pool = GaugeMetricFamily("mcp_pool_available", "Warm instances ready to serve", labels=["server"])
        inflight = GaugeMetricFamily("mcp_upstream_inflight", "Calls in flight to the server", labels=["server"])
        for name, backend in gw.supervisors.items():
            s = backend.statistics()
            healthy.add_metric([name], 1 if s.healthy else 0)
            restarts.add_metric([name], s.restarts)
            for state in ("ready", "warm", "other"):
                instances.add_metric([name, state], s.instances.get(state, 0))
            pool.add_metric([name], s.pool_available)
            inflight.add_metric([name], s.inflight)
        yield from (healthy, restarts, instances, pool, inflight)

        start = HistogramMetricFamily("mcp_container_start_seconds", "Container create to started")
        if gw.sandbox is not None:
            _histogram(start, [], gw.sandbox.start_seconds)
        else:
            _histogram(start, [], Histogram())
        yield start
        from . import logsafe

        dropped = CounterMetricFamily("mcp_upstream_log_dropped", "Upstream log lines dropped by the rate limit",
                                      labels=["server"])
        for server, log_stats in logsafe.statistics().items():
            dropped.add_metric([server], log_stats.dropped)
        yield dropped
        audit_dropped = CounterMetricFamily("mcp_audit_dropped", "Audit records lost: the queue was full, or "
                                            "the database refused them", labels=["reason"])
        audit = gw.control.audit if getattr(gw, "control", None) is not None else None
        a = audit.statistics() if audit is not None else None  # (0 without an audit log: alerts see a series)
        audit_dropped.add_metric(["queue_full"], a.dropped_queue_full if a else 0)
        audit_dropped.add_metric(["write_error"], a.dropped_write_error if a else 0)
        yield audit_dropped
        yield from _access(gw)


def _access(gw: Gateway) -> Iterator[Any]:
    """Authentication, callers (bounded: gateway/stats.py MAX_CALLERS), rate limits, tool pins."""
    from .auth import REASONS

    access = gw.access
    authenticator = access.authenticator
    accepted = CounterMetricFamily("mcp_auth", "Requests authenticated, by method", labels=["method"])
    failures = CounterMetricFamily("mcp_auth_failures", "Requests refused for their credential, by reason",
                                   labels=["reason"])
    for kind in ("key", "jwt"):
        accepted.add_metric([kind], authenticator.accepted.get(kind, 0) if authenticator else 0)
    for reason in REASONS:
        failures.add_metric([reason], authenticator.refused.get(reason, 0) if authenticator else 0)
    yield accepted
    yield failures
    callers = CounterMetricFamily("mcp_caller_calls", "Calls (tools/call, prompts/get, resources/read) by caller",
                                  labels=["caller"])
    for caller, count in gw.dispatcher.stats.callers.items():
        callers.add_metric([caller], count)
    yield callers
    limited = CounterMetricFamily("mcp_rate_limited", "Calls refused by a rate limit, by rule (its index in "
                                  "rate_limits)", labels=["rule"])
    for rule, count in enumerate(access.limiter.statistics().refused):
        limited.add_metric([str(rule)], count)
    yield limited
    pins = access.pins.statistics()
    yield CounterMetricFamily("mcp_tool_changes", "Tool definitions seen to change since first served",
                              value=pins.changes)
    yield GaugeMetricFamily("mcp_tool_changes_pending", "Changed tool definitions waiting for an admin",
                            value=pins.pending)
    yield GaugeMetricFamily("mcp_tools_withheld", "Tools withheld now because their definition changed "
                            "(on_tool_change: block)", value=pins.blocked)


def registry_for(gateway: Gateway) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(gateway))
    return registry


def render(registry: CollectorRegistry, accept: bytes | None) -> tuple[bytes, bytes]:
    """The scrape body and its content type, in the format the scraper asked for."""
    encoder, content_type = choose_encoder((accept or b"").decode("latin-1"))
    return encoder(registry), content_type.encode()
