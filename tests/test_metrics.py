"""Prometheus metrics over a real scrape, parsed by prometheus-client's own text parser."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import ConfigRefused
from gateway.metrics import NAMES
from tests.helpers import HTTPClient, config, running_gateway, sdk_server


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def _call(http: HTTPClient, session: str, rid: int, tool: str, path: str = "/mcp", **args: Any) -> None:
    reply = await http.post(path, {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                                     "params": {"name": tool, "arguments": args}}, session,
                            headers={"accept": "application/json"})
    assert reply.status == 200


async def test_counters_move_by_exactly_the_calls_made() -> None:
    cfg = config({"sdk": sdk_server()}, routes={"/": ["sdk"], "/b": ["sdk"]}, metrics={"data_plane": True})
    async with running_gateway(cfg) as gw, HTTPClient.connect(gw.port) as http:
        before = _samples((await http.request("GET", "/metrics")).body.decode())
        session = await http.initialize()
        for i in range(5):
            await _call(http, session, i + 1, "sdk__add", a=1, b=i)
        await _call(http, session, 10, "sdk__fail", message="no")  # a tool error is still a result
        await _call(http, session, 11, "sdk__nope")  # unknown tool: -32602
        await _call(http, session, 12, "not a name")
        other = await http.initialize("/b/mcp")
        await _call(http, other, 1, "sdk__echo", path="/b/mcp", text="x")
        assert (await http.post("/mcp", b"{", session)).status == 400  # rejected before the pipeline
        assert (await http.post("/mcp", {}, session, {"content-type": "text/plain"})).status == 415
        reply = await http.request("GET", "/metrics")
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/plain")
    after = _samples(reply.body.decode())

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("mcp_requests_total", route="/", method="tools/call", status="ok") == 6
    assert delta("mcp_requests_total", route="/", method="tools/call", status="invalid_params") == 2
    assert delta("mcp_requests_total", route="/b", method="tools/call", status="ok") == 1
    assert delta("mcp_tool_calls_total", route="/", server="sdk", tool="sdk__add", status="ok") == 5
    assert delta("mcp_tool_calls_total", route="/", server="unknown", tool="unknown", status="invalid_params") == 2
    assert delta("mcp_request_duration_seconds_count", route="/", method="tools/call") == 8
    assert delta("mcp_tool_execution_duration_seconds_count", server="sdk", tool="sdk__add") == 5
    assert delta("mcp_rejected_total", reason="415") == 1
    assert _value(after, "mcp_active_sessions", route="/") == 1 and _value(after, "mcp_active_sessions", route="/b") == 1
    assert _value(after, "mcp_server_healthy", server="sdk") == 1
    assert _value(after, "mcp_server_instances", server="sdk", state="ready") == 1
    names = {name for name, _ in after}
    for name in NAMES:  # every metric exists in a real scrape (counters with _total, histograms with _count)
        assert name in names or f"{name}_count" in names or f"{name}_total" in names, name


async def test_made_up_methods_and_tools_cannot_make_unbounded_series() -> None:
    cfg = config({"sdk": sdk_server()}, metrics={"data_plane": True})
    async with running_gateway(cfg) as gw, HTTPClient.connect(gw.port) as http:
        session = await http.initialize()
        for i in range(50):
            await http.post("/mcp", {"jsonrpc": "2.0", "id": i, "method": f"made/up/{i}"}, session)
            await _call(http, session, 1000 + i, f"sdk__no_such_tool_{i}")
        text = (await http.request("GET", "/metrics")).body.decode()
    assert "made/up" not in text and "no_such_tool" not in text
    samples = _samples(text)
    assert _value(samples, "mcp_requests_total", route="/", method="other", status="method_not_found") == 50


async def test_openmetrics_when_the_scraper_asks_and_metrics_can_be_off() -> None:
    cfg = config({"sdk": sdk_server()}, metrics={"data_plane": True, "enabled": False})
    async with running_gateway(cfg) as gw, HTTPClient.connect(gw.port) as http:
        session = await http.initialize()
        await _call(http, session, 1, "sdk__add", a=1, b=2)
        reply = await http.request("GET", "/metrics", headers={
            "accept": "application/openmetrics-text; version=1.0.0"})
    assert reply.headers["content-type"].startswith("application/openmetrics-text")
    assert reply.body.rstrip().endswith(b"# EOF")
    assert b'mcp_tool_calls_total{' not in reply.body  # counting off: nothing counted


async def test_counting_turns_on_by_reload_but_the_metrics_listener_needs_a_restart() -> None:
    cfg = config({"sdk": sdk_server()}, metrics={"data_plane": True, "enabled": False})
    async with running_gateway(cfg) as gw, HTTPClient.connect(gw.port) as http:
        session = await http.initialize()
        await _call(http, session, 1, "sdk__add", a=1, b=2)
        await gw.gateway.apply(config({"sdk": sdk_server()}, metrics={"data_plane": True}))
        await _call(http, session, 2, "sdk__add", a=1, b=2)
        samples = _samples((await http.request("GET", "/metrics")).body.decode())
        with pytest.raises(ConfigRefused, match="metrics.data_plane"):
            await gw.gateway.apply(config({"sdk": sdk_server()}, metrics={"data_plane": False}))
    assert _value(samples, "mcp_tool_calls_total", route="/", server="sdk", tool="sdk__add", status="ok") == 1


async def test_the_data_plane_serves_no_metrics_unless_asked() -> None:
    async with running_gateway(config({"sdk": sdk_server()})) as gw, HTTPClient.connect(gw.port) as http:
        assert (await http.request("GET", "/metrics")).status == 404
