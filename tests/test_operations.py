"""Health, readiness, structured logs, and the shipped Grafana dashboard and Prometheus alerts."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import h11
import trio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import (
    PY,
    ROOT,
    HTTPClient,
    config,
    free_port,
    log_file,
    running_gateway,
    sdk_server,
    wait_healthy,
)

BROKEN = {"command": PY, "args": ["-c", "import sys; sys.exit(3)"], "restart_backoff": "5s"}


async def test_health_is_live_and_ready_waits_for_required_servers() -> None:
    async with running_gateway(config({"sdk": sdk_server(), "broken": BROKEN})) as gw, \
            HTTPClient.connect(gw.port) as http:
        health = await http.request("GET", "/health")
        assert health.status == 200 and health.json() == {"status": "live"}
        ready = await http.request("GET", "/ready")
        assert ready.status == 503 and ready.json()["status"] == "not ready"
        assert "exited with status 3" in ready.json()["waiting"]["broken"]
        assert "sdk" not in ready.json()["waiting"]
    optional = config({"sdk": sdk_server(), "broken": {**BROKEN, "required": False}})
    async with running_gateway(optional) as gw, HTTPClient.connect(gw.port) as http:
        ready = await http.request("GET", "/ready")
        assert ready.status == 200 and ready.json() == {"status": "ready", "waiting": {}}
        healthz = (await http.request("GET", "/healthz")).json()
        assert healthz["status"] == "degraded" and healthz["servers"]["broken"]["state"] in ("failed", "backoff")


async def test_json_logs_are_one_object_per_line_with_context(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.json"
    cfg.write_text(json.dumps({"servers": {"sdk": sdk_server()}, "log_format": "json",
                                   "log_level": "debug"}))
    port = free_port()
    log_path = tmp_path / "gw.log"
    with log_file(log_path) as sink:
        proc = await trio.lowlevel.open_process(
            [str(Path(PY).with_name("mcp-gateway")), "run", "--config", str(cfg), "--port", str(port)],
            stderr=sink, cwd=str(ROOT))
    try:
        await wait_healthy(port, proc)
        async with HTTPClient.connect(port) as http:
            session_id = await http.initialize()
            await http.post("/mcp", {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                "name": "sdk__add", "arguments": {"a": 1, "b": 2}}}, session_id)
    finally:
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            await proc.wait()
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    session = [r for r in records if "initialized" in r["message"]]
    assert session and session[0]["route"] == "/" and len(session[0]["session"]) == 8
    # At debug, the access log has one line per call with its server and tool.
    calls = [r for r in records if r["logger"] == "mcp_gateway.access"]
    assert len(calls) == 1 and calls[0]["server"] == "sdk" and calls[0]["tool"] == "sdk__add"
    assert calls[0]["session"] == session[0]["session"] and "ok" in calls[0]["message"]


def _metric_names(text: str) -> set[str]:
    return set(re.findall(r"\bmcp_[a-z_]+", text))


async def test_every_metric_the_dashboard_and_the_alerts_use_exists_in_a_real_scrape() -> None:
    dashboard = json.loads((ROOT / "config" / "grafana-dashboard.json").read_text())
    alerts = yaml.safe_load((ROOT / "config" / "prometheus-alerts.yaml").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    exprs += [rule["expr"] for group in alerts["groups"] for rule in group["rules"]]
    assert len(exprs) >= 10
    wanted = set().union(*map(_metric_names, exprs))
    cfg = config({"sdk": sdk_server()}, metrics={"data_plane": True})
    async with running_gateway(cfg) as gw, HTTPClient.connect(gw.port) as http:
        session = await http.initialize()
        await http.post("/mcp", {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                 "params": {"name": "sdk__add", "arguments": {"a": 1, "b": 2}}}, session)
        scrape = (await http.request("GET", "/metrics")).body.decode()
    exposed = {s.name for family in text_string_to_metric_families(scrape) for s in family.samples}
    missing = sorted(name for name in wanted if name not in exposed)
    assert not missing, f"referenced but not exposed: {missing}"
    # The alerts are the four the issue names.
    names = {rule["alert"] for group in alerts["groups"] for rule in group["rules"]}
    assert {"MCPServerDown", "MCPServerRestartLoop", "MCPHighErrorRatio", "MCPHighLatencyP99"} <= names


async def test_a_call_cancelled_from_outside_is_still_counted_and_audited() -> None:
    from gateway.dispatch import CallRecord

    records: list[CallRecord] = []
    async with trio.open_nursery() as outer:
        async with running_gateway(config({"sdk": sdk_server()})) as gw:
            gw.gateway.dispatcher.observers.append(records.append)
            stats = gw.gateway.dispatcher.stats

            unanswered = []

            async def slow_call() -> None:
                async with HTTPClient.connect(gw.port) as http:
                    session = await http.initialize()
                    try:
                        await http.post("/mcp", {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                            "name": "sdk__sleep", "arguments": {"seconds": 30}}}, session)
                    except (h11.RemoteProtocolError, trio.BrokenResourceError, OSError):
                        unanswered.append(True)  # the gateway went away mid-call

            outer.start_soon(slow_call)
            with trio.fail_after(10):
                while not gw.gateway.supervisors["sdk"].statistics().inflight:
                    await trio.sleep(0.01)
        # The gateway's tasks were cancelled, not drained: no answer went out, yet the call has its record.
    assert unanswered == [True]
    assert [(r.name, r.outcome) for r in records] == [("sdk__sleep", "cancelled")]
    assert sum(n for (route, server, tool, status), n in stats.tool_calls.items() if tool == "sdk__sleep") == 1
