"""The admin API (issue 10) over real sockets: a real gateway with real upstream servers, a real
SQLite store in tmp_path, the admin app on hypercorn; the CLI's run/export as a user runs them.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml
from mcp import Client

from admin.auth import AuthError, check_listen
from gateway.config import Admin, ConfigError, load_config, parse_config
from tests.helpers import PY, SDK_SERVER, HTTPClient, Reply, config, free_port, running_gateway, sdk_server

CLI = [sys.executable, "-m", "gateway.cli"]
TOKEN = "test-admin-token-0123456789"


@dataclass
class AdminGateway:
    gateway: Any
    port: int  # the data plane
    admin_port: int
    db: Path


class AdminClient:
    """Requests to the admin API with (or without) the token."""

    def __init__(self, http: HTTPClient, token: str | None = TOKEN) -> None:
        self.http, self.token = http, token

    async def call(self, method: str, path: str, body: Any = ..., token: str | None = ...) -> Reply:
        token = self.token if token is ... else token
        headers = {"authorization": f"Bearer {token}"} if token else {}
        data = None if body is ... else json.dumps(body).encode()
        return await self.http.request(method, path, data, headers)

    async def get(self, path: str) -> Any:
        reply = await self.call("GET", path)
        assert reply.status == 200, (path, reply)
        return reply.json()


def admin_settings(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    return {"admin": {"enabled": True, "port": 0, "token": f"file:{token_file}"},
            "store": {"path": str(tmp_path / "gateway.db")}, **extra}


@asynccontextmanager
async def admin_gateway(tmp_path: Path, servers: dict[str, Any], **extra: Any) -> AsyncIterator[AdminGateway]:
    settings = {**admin_settings(tmp_path), **extra}
    async with running_gateway(config(servers, **settings)) as gw:
        control = gw.gateway.control
        assert control is not None and control.server is not None and control.server.port
        yield AdminGateway(gw.gateway, gw.port, control.server.port, tmp_path / "gateway.db")


@asynccontextmanager
async def admin_client(port: int) -> AsyncIterator[AdminClient]:
    async with HTTPClient.connect(port) as http:
        yield AdminClient(http)


def rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


async def db_rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    return await trio.to_thread.run_sync(rows, db, sql, *args)


# -- the token -----------------------------------------------------------------------------------------

async def test_every_request_needs_the_token(tmp_path: Path) -> None:
    async with admin_gateway(tmp_path, {"a": sdk_server("a")}) as gw, admin_client(gw.admin_port) as api:
        for path in ("/health", "/servers", "/metrics", "/openapi.json", "/audit", "/no/such/path"):
            missing = await api.call("GET", path, token=None)
            assert missing.status == 401, path
            assert missing.json()["error"]["code"] == "unauthorized"
            assert missing.headers["www-authenticate"].startswith("Bearer")
            wrong = await api.call("GET", path, token=TOKEN + "x")
            assert wrong.status == 401, path
        basic = await api.http.request("GET", "/health", headers={"authorization": f"Basic {TOKEN}"})
        assert basic.status == 401
        assert (await api.call("GET", "/health")).status == 200
        unknown = await api.call("GET", "/no/such/path")
        assert unknown.status == 404 and unknown.json()["error"]["code"] == "not_found"
        # a change without the token changes nothing
        refused = await api.call("DELETE", "/servers/a", token=None)
        assert refused.status == 401 and "a" in gw.gateway.supervisors


def test_the_admin_api_refuses_to_listen_beyond_loopback_without_a_token() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"servers": {"a": {"command": "x"}}, "admin": {"enabled": True, "host": "0.0.0.0"}})
    assert info.value.path == "admin.token"
    parse_config({"servers": {"a": {"command": "x"}}, "admin": {"enabled": True, "host": "0.0.0.0",
                                                                 "token": "env:ADMIN_TOKEN"}})
    for host in ("0.0.0.0", "::", "192.0.2.10", "gateway.example.com"):
        with pytest.raises(AuthError):
            check_listen(Admin(enabled=True, host=host))
        check_listen(Admin(enabled=True, host=host, token="env:ADMIN_TOKEN"))
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        check_listen(Admin(enabled=True, host=host))


async def test_a_generated_token_is_printed_once_and_kept_only_hashed(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    settings = {"admin": {"enabled": True, "port": 0}, "store": {"path": str(tmp_path / "gateway.db")}}
    cfg = config({"a": sdk_server("a")}, **settings)
    async with running_gateway(cfg) as gw:
        printed = capsys.readouterr().err
        lines = [line for line in printed.splitlines() if "admin API token" in line]
        assert len(lines) == 1, printed
        token = lines[0].rsplit(" ", 1)[1]
        async with HTTPClient.connect(gw.gateway.control.server.port) as http:
            assert (await AdminClient(http, token).call("GET", "/health")).status == 200
            assert (await AdminClient(http, token[:-1]).call("GET", "/health")).status == 401
    async with running_gateway(cfg) as gw:  # the next start: nothing printed, the same token works
        assert "admin API token" not in capsys.readouterr().err
        async with HTTPClient.connect(gw.gateway.control.server.port) as http:
            assert (await AdminClient(http, token).call("GET", "/health")).status == 200
    data = await trio.to_thread.run_sync(lambda: (tmp_path / "gateway.db").read_bytes() + b"".join(
        p.read_bytes() for p in tmp_path.glob("gateway.db-*")))
    assert token.encode() not in data  # only its salted hash is stored
    [(stored,)] = rows(tmp_path / "gateway.db", "SELECT value FROM store_meta WHERE key = 'admin_token'")
    assert set(json.loads(stored)) == {"salt", "hash", "iterations"}


# -- servers -------------------------------------------------------------------------------------------

async def test_servers_list_live_status(tmp_path: Path) -> None:
    async with admin_gateway(tmp_path, {"a": sdk_server("a"), "gone": {"command": "/no/such/binary"}}) as gw, \
            admin_client(gw.admin_port) as api:
        servers = {s["name"]: s for s in (await api.get("/servers"))["servers"]}
        a = servers["a"]
        assert a["state"] == "ready" and a["healthy"] and a["kind"] == "process" and a["lifecycle"] == "shared"
        assert a["instances"] == {"ready": 1} and a["containers"] == 0 and a["restarts"] == 0
        assert {"add", "echo", "sleep"} <= set(a["tools"]) and a["routes"] == ["/"]
        assert a["config"]["command"] == PY and a["last_error"] is None
        gone = servers["gone"]
        assert gone["state"] != "ready" and not gone["healthy"] and gone["last_error"] and gone["tools"] == []
        assert (await api.get("/servers/a"))["name"] == "a"
        missing = await api.call("GET", "/servers/nope")
        assert missing.status == 404 and missing.json()["error"]["code"] == "not_found"


async def test_a_server_added_through_the_api_serves_an_sdk_client_without_a_restart(tmp_path: Path) -> None:
    servers = {"a": sdk_server("a")}
    async with admin_gateway(tmp_path, servers, routes={"/": ["a"], "/other": ["a"]}) as gw, \
            admin_client(gw.admin_port) as api:
        url = f"http://127.0.0.1:{gw.port}/mcp"
        async with Client(url) as client:
            before = {t.name for t in (await client.list_tools()).tools}
            assert "b__add" not in before
            reply = await api.call("POST", "/servers", {"name": "b", "server": sdk_server("b"), "routes": ["/"]})
            assert reply.status == 201, reply
            body = reply.json()
            assert body["version"] == 2 and body["applied"]["added"] == ["b"]
            assert body["server"]["state"] == "ready" and "add" in body["server"]["tools"]
            # the same client, the same session: the new tool is there and answers
            assert "b__add" in {t.name for t in (await client.list_tools()).tools}
            result = await client.call_tool("b__add", {"a": 20, "b": 22})
            assert result.structured_content == {"result": 42}
        assert (await api.get("/servers/b"))["routes"] == ["/"]  # only where it was asked for
        again = await api.call("POST", "/servers", {"name": "b", "server": sdk_server("b")})
        assert again.status == 409 and again.json()["error"]["code"] == "conflict"
        versions = (await api.get("/versions"))["versions"]
        assert [v["id"] for v in versions] == [2, 1] and versions[0]["who"] == "admin"
        assert versions[0]["what"] == "add server b" and versions[0]["current"]


async def test_an_invalid_server_is_refused_with_its_key_path_and_nothing_changes(tmp_path: Path) -> None:
    async with admin_gateway(tmp_path, {"a": sdk_server("a")}) as gw, admin_client(gw.admin_port) as api:
        before = dict(gw.gateway.supervisors)
        cases = [
            ({"command": PY, "lifecycle": "sometimes"}, "servers.bad.lifecycle"),
            ({"command": PY, "args": ["ok", 3]}, "servers.bad.args[1]"),
            ({"command": PY, "image": "x:1", "url": "http://127.0.0.1:1/"}, "servers.bad"),
            ({"command": PY, "tmeout": 3}, "servers.bad.tmeout"),
            ({"command": PY, "call_timeout": "soon"}, "servers.bad.call_timeout"),
        ]
        for settings, path in cases:
            reply = await api.call("PUT", "/servers/bad", settings)
            assert reply.status == 422, (settings, reply)
            assert reply.json()["error"] == {"code": "invalid_config", "message": reply.json()["error"]["message"],
                                             "path": path}
        name = await api.call("PUT", "/servers/bad__name", {"command": PY})
        assert name.status == 422 and name.json()["error"]["path"] == "servers.bad__name"
        route = await api.call("POST", "/servers", {"name": "c", "server": sdk_server("c"), "routes": ["/nope"]})
        assert route.status == 422 and route.json()["error"]["path"] == "routes[0]"
        # a server that cannot be built: refused whole by the running gateway (409), nothing changed
        secret = await api.call("PUT", "/servers/d", {**sdk_server("d"), "secrets": {"K": "env:MCP_TEST_UNSET_X"}})
        assert secret.status == 409 and secret.json()["error"]["code"] == "apply_refused", secret
        assert gw.gateway.supervisors == before
        assert [v["id"] for v in (await api.get("/versions"))["versions"]] == [1]
        not_json = await api.http.request("PUT", "/servers/x", b"{not json", {
            "authorization": f"Bearer {TOKEN}", "content-type": "application/json"})
        assert not_json.status == 400 and not_json.json()["error"]["code"] == "invalid_json"
        dup = await api.http.request("PUT", "/servers/x", b'{"command": "a", "command": "b"}', {
            "authorization": f"Bearer {TOKEN}", "content-type": "application/json"})
        assert dup.status == 400 and "duplicate key" in dup.json()["error"]["message"]
        form = await api.http.request("PUT", "/servers/x", b"command=x", {
            "authorization": f"Bearer {TOKEN}", "content-type": "application/x-www-form-urlencoded"})
        assert form.status == 415
        assert gw.gateway.supervisors == before
        # every refusal is an admin row of the audit log, with the status and the reason
        audit = (await api.get("/audit?kind=admin"))["records"]
        assert len(audit) == len(cases) + 6 and all(r["outcome"] == "error" for r in audit)
        assert {r["error_code"] for r in audit} == {400, 409, 415, 422}
        assert any(r["detail"] == "invalid_config: servers.bad.args[1]: expected a string, got an integer"
                   for r in audit)
        assert any(r["detail"].startswith("invalid_config: routes[0]: ") for r in audit)


async def test_replace_and_delete_servers_and_routes(tmp_path: Path) -> None:
    async with admin_gateway(tmp_path, {"a": sdk_server("a"), "b": sdk_server("b")}) as gw, \
            admin_client(gw.admin_port) as api:
        old_pid = (await api.get("/servers/b"))["config"]
        replaced = await api.call("PUT", "/servers/b", sdk_server("b", env={"CHANGED": "1"}))
        assert replaced.status == 200 and replaced.json()["applied"]["changed"] == ["b"], replaced
        assert old_pid != (await api.get("/servers/b"))["config"]
        same = await api.call("PUT", "/servers/b", sdk_server("b", env={"CHANGED": "1"}))
        assert same.status == 200 and same.json()["changed"] is False and same.json()["version"] is None
        routes = await api.call("PUT", "/routes", {"/": ["a", "b"], "/team": {"servers": ["b"], "prefix": False}})
        assert routes.status == 200 and routes.json()["applied"]["routes"] is True, routes
        table = (await api.get("/routes"))["routes"]
        assert table["/team"]["servers"] == ["b"] and "add" in table["/team"]["tools"] and not table["/team"]["prefix"]
        async with Client(f"http://127.0.0.1:{gw.port}/team/mcp") as client:
            assert (await client.call_tool("add", {"a": 1, "b": 1})).structured_content == {"result": 2}
        bad = await api.call("PUT", "/routes", {"/x": ["nope"]})
        assert bad.status == 422 and bad.json()["error"]["path"] == "routes./x[0]"
        # b leaves every route; /team would be left empty: refused by the rules, with the route's path
        refused = await api.call("DELETE", "/servers/b")
        assert refused.status == 422 and refused.json()["error"]["path"] == "routes./team.servers"
        assert (await api.call("PUT", "/routes", None)).status == 200  # back to the default: all at /
        deleted = await api.call("DELETE", "/servers/b")
        assert deleted.status == 200 and deleted.json()["applied"]["removed"] == ["b"], deleted
        assert "b" not in gw.gateway.supervisors
        assert (await api.call("DELETE", "/servers/b")).status == 404
        last = await api.call("DELETE", "/servers/a")
        assert last.status == 422 and last.json()["error"]["path"] == "servers"  # at least one server


# -- the effective config, redaction --------------------------------------------------------------------

async def test_secrets_are_redacted_everywhere_and_a_redacted_put_keeps_them(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_TEST_BEARER", "bearer-value-9")
    servers = {
        "a": sdk_server("a", env={"API_KEY": "env-value-1"}, secrets={"TOKEN": "env:MCP_TEST_BEARER"}),
        "r": {"url": "http://user:url-pass-3@127.0.0.1:9/mcp?key=query-value-4", "headers": {"X-Key": "header-5"},
              "bearer": "env:MCP_TEST_BEARER", "required": False},
    }
    secrets = ("env-value-1", "bearer-value-9", "url-pass-3", "query-value-4", "header-5")
    async with admin_gateway(tmp_path, servers) as gw, admin_client(gw.admin_port) as api:
        replies = [await api.call("GET", p) for p in ("/config", "/servers", "/servers/a", "/servers/r",
                                                      "/versions/1", "/versions/1/yaml", "/versions/1/diff")]
        for reply in replies:
            assert reply.status == 200
            for secret in secrets:
                assert secret.encode() not in reply.body, (secret, reply.body[:200])
        effective = (await api.get("/config"))["config"]
        assert effective["servers"]["a"]["env"] == {"API_KEY": "(redacted)"}
        assert effective["servers"]["a"]["secrets"] == {"TOKEN": "env:MCP_TEST_BEARER"}  # a reference: shown
        assert effective["servers"]["r"]["headers"] == {"X-Key": "(redacted)"}
        assert effective["servers"]["r"]["url"] == "http://user:(redacted)@127.0.0.1:9/mcp?key=(redacted)"
        assert effective["timeouts"]["call"] == 60.0 and effective["limits"]["max_body"] == 4 * 1024 * 1024
        # what GET gave, sent back with one change: the redacted values stay what they were
        shown = (await api.get("/servers/a"))["config"]
        reply = await api.call("PUT", "/servers/a", {**shown, "call_timeout": "30s"})
        assert reply.status == 200, reply
        stored = await db_rows(gw.db, "SELECT document FROM config_versions ORDER BY id DESC LIMIT 1")
        document = json.loads(stored[0][0])
        assert document["servers"]["a"]["env"] == {"API_KEY": "env-value-1"}
        assert document["servers"]["a"]["call_timeout"] == "30s"
        shown_r = (await api.get("/servers/r"))["config"]
        reply = await api.call("PUT", "/servers/r", {**shown_r, "connect_timeout": "2s"})
        assert reply.status == 200, reply
        document = json.loads((await db_rows(gw.db, "SELECT document FROM config_versions ORDER BY id DESC"))[0][0])
        assert document["servers"]["r"]["url"] == servers["r"]["url"]
        assert document["servers"]["r"]["headers"] == {"X-Key": "header-5"}
        new = await api.call("PUT", "/servers/n", {**sdk_server("n"), "env": {"K": "(redacted)"}})
        assert new.status == 422 and new.json()["error"]["path"] == "servers.n.env.K"


# -- versions -------------------------------------------------------------------------------------------

async def test_versions_list_diff_and_roll_back(tmp_path: Path) -> None:
    async with admin_gateway(tmp_path, {"a": sdk_server("a")}) as gw, admin_client(gw.admin_port) as api:
        assert (await api.call("POST", "/servers", {"name": "b", "server": sdk_server("b")})).status == 201
        assert (await api.call("PUT", "/servers/a", sdk_server("a", call_timeout="5s"))).status == 200
        page = await api.get("/versions?limit=2")
        assert [v["id"] for v in page["versions"]] == [3, 2] and page["next"] == "2" and page["current"] == 3
        rest = await api.get(f"/versions?limit=2&before={page['next']}")
        assert [v["id"] for v in rest["versions"]] == [1] and rest["next"] is None
        one = await api.get("/versions/2")
        assert set(one["document"]["servers"]) == {"a", "b"} and one["what"] == "add server b"
        diff = await api.get("/versions/3/diff")
        assert diff["from"] == 2 and diff["to"] == 3
        assert diff["changes"] == [{"path": "servers.a.call_timeout", "op": "added"}]
        assert "+    call_timeout: 5s" in diff["diff"] and diff["diff"].startswith("--- version 2\n+++ version 3\n")
        wide = await api.get("/versions/3/diff?against=1")
        assert {"path": "servers.b", "op": "added"} in wide["changes"] and wide["from"] == 1
        rolled = await api.call("POST", "/versions/1/rollback")
        assert rolled.status == 200 and rolled.json()["version"] == 4, rolled
        assert rolled.json()["applied"]["removed"] == ["b"] and rolled.json()["applied"]["changed"] == ["a"]
        assert set(gw.gateway.supervisors) == {"a"} and gw.gateway.config.call_timeout_for("a") == 60.0
        latest = (await api.get("/versions"))["versions"][0]
        assert latest["id"] == 4 and latest["source"] == "rollback:1" and latest["what"] == "roll back to version 1"
        assert latest["digest"] == (await api.get("/versions/1"))["digest"]
        for path in ("/versions/99", "/versions/99/diff", "/versions/3/diff?against=99",
                     "/versions/99999999999999999999"):
            assert (await api.call("GET", path)).status == 404, path
        assert (await api.call("POST", "/versions/99/rollback")).status == 404
        assert (await api.call("GET", "/versions?limit=0")).status == 400
        assert (await api.call("GET", "/versions?before=x")).json()["error"]["path"] == "before"


async def test_without_a_store_the_api_reads_but_does_not_change(tmp_path: Path) -> None:
    token_file = tmp_path / "t"
    token_file.write_text(TOKEN)
    cfg = config({"a": sdk_server("a")}, admin={"enabled": True, "port": 0, "token": f"file:{token_file}"})
    async with running_gateway(cfg) as gw, admin_client(gw.gateway.control.server.port) as api:
        assert (await api.get("/servers"))["servers"][0]["name"] == "a"
        assert (await api.get("/config"))["version"] is None
        refused = await api.call("POST", "/servers", {"name": "b", "server": sdk_server("b")})
        assert refused.status == 409 and refused.json()["error"]["code"] == "no_store"
        assert (await api.call("GET", "/versions")).status == 404
        assert (await api.call("GET", "/audit")).status == 404  # no database: no audit log
        assert set(gw.gateway.supervisors) == {"a"}


# -- sessions, health, metrics ---------------------------------------------------------------------------

async def test_sessions_list_and_end_one(tmp_path: Path) -> None:
    async with admin_gateway(tmp_path, {"a": sdk_server("a")}) as gw, admin_client(gw.admin_port) as api, \
            HTTPClient.connect(gw.port) as data:
        session = await data.initialize()
        other = await data.initialize()
        listed = (await api.get("/sessions"))
        assert listed["total"] == 2
        mine = next(s for s in listed["sessions"] if session.startswith(s["id"]))
        assert len(mine["id"]) == 12 and mine["route"] == "/" and mine["version"] == "2025-11-25"
        assert mine["client"] == {"name": "raw", "version": "0"} and mine["peer"] == "127.0.0.1"
        assert mine["inflight"] == 0 and mine["idle_seconds"] >= 0
        assert session not in json.dumps(listed)  # never the whole id: it is the session's credential
        assert (await api.call("DELETE", f"/sessions/{session[:12]}")).status == 204
        gone = await data.post("/mcp", {"jsonrpc": "2.0", "id": 5, "method": "tools/list"}, session)
        assert gone.status == 404
        kept = await data.post("/mcp", {"jsonrpc": "2.0", "id": 6, "method": "tools/list"}, other,
                               headers={"accept": "application/json"})
        assert kept.status == 200
        assert (await api.call("DELETE", f"/sessions/{session[:12]}")).status == 404
        assert (await api.get("/sessions"))["total"] == 1
        refused, ended = (await api.get("/audit?kind=admin"))["records"]  # newest first
        assert ended["detail"] == f"ended session {session[:12]}" and ended["outcome"] == "ok"
        assert ended["method"] == f"DELETE /sessions/{session[:12]}"
        assert refused["outcome"] == "error" and refused["error_code"] == 404


async def test_health_and_metrics_on_the_admin_listener(tmp_path: Path) -> None:
    async with admin_gateway(tmp_path, {"a": sdk_server("a")}) as gw, admin_client(gw.admin_port) as api:
        health = await api.get("/health")
        assert health["status"] == "ok" and health["servers"]["a"]["state"] == "ready" and health["version"] == 1
        assert health["audit"] == {"queued": 0, "written": 0, "dropped": 0}
        scrape = await api.call("GET", "/metrics")
        assert scrape.status == 200 and scrape.headers["content-type"].startswith("text/plain")
        text = scrape.body.decode()
        assert 'mcp_server_healthy{server="a"} 1.0' in text and 'mcp_audit_dropped_total{reason="queue_full"} 0.0' in text
        open_metrics = await api.http.request("GET", "/metrics", headers={
            "authorization": f"Bearer {TOKEN}", "accept": "application/openmetrics-text; version=1.0.0"})
        assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
        async with HTTPClient.connect(gw.port) as data:  # the data plane keeps /metrics off by default
            assert (await data.request("GET", "/metrics")).status == 404


# -- the CLI: run imports, export writes ---------------------------------------------------------------

def _write(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


async def _wait_admin(port: int, proc: trio.Process) -> None:
    with trio.fail_after(30):
        while True:
            assert proc.returncode is None, "the gateway exited"
            try:
                async with admin_client(port) as api:
                    if (await api.call("GET", "/health")).status == 200:
                        return
            except OSError:
                pass
            await trio.sleep(0.1)


async def _run_until_sigterm(cfg: Path, log: Path, during: Any) -> str:
    admin_port = yaml.safe_load(await trio.Path(cfg).read_text())["admin"]["port"]
    with open(log, "wb") as log_file:  # noqa: ASYNC230 - before the process starts
        proc = await trio.lowlevel.open_process([*CLI, "run", "--config", str(cfg), "--port", "0", "--no-watch"],
                                                stderr=log_file)
    try:
        await _wait_admin(admin_port, proc)
        async with admin_client(admin_port) as api:
            await during(api)
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            await proc.wait()
        assert proc.returncode == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return await trio.Path(log).read_text()


def _export(cfg: Path, *more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "export", "--config", str(cfg), *more], capture_output=True, text=True, timeout=30)


async def test_run_imports_the_file_when_it_changed_and_export_round_trips(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    admin_port = free_port()
    document: dict[str, Any] = {
        "servers": {"a": {"command": PY, "args": [SDK_SERVER, "a"], "call_timeout": "45s"}},
        "admin": {"enabled": True, "port": admin_port, "token": f"file:{token_file}"},
        "store": {"path": str(tmp_path / "gw.db")},
    }
    cfg = _write(tmp_path / "gateway.yaml", document)

    async def add_b(api: AdminClient) -> None:
        reply = await api.call("POST", "/servers", {"name": "b", "server": {"command": PY, "args": [SDK_SERVER, "b"]}})
        assert reply.status == 201, reply

    await _run_until_sigterm(cfg, tmp_path / "1.log", add_b)
    exported = _export(cfg)
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.startswith("# mcp-gateway config version 2: add server b")
    assert "call_timeout: 45s" in exported.stdout  # as written, not as parsed
    round_trip = _write(tmp_path / "exported.yaml", yaml.safe_load(exported.stdout))
    expected = parse_config({**document, "servers": {**document["servers"],
                                                      "b": {"command": PY, "args": [SDK_SERVER, "b"]}}})
    assert load_config(round_trip) == expected
    first = _export(cfg, "--version", "1")
    assert first.returncode == 0 and load_config(_write(tmp_path / "v1.yaml", yaml.safe_load(first.stdout))) == \
        load_config(cfg)
    assert _export(cfg, "--version", "9").returncode == 1

    # the same file again: the API's change stays (no new version); then an edited file wins
    async def servers_are(names: set[str]) -> Any:
        async def check(api: AdminClient) -> None:
            assert {s["name"] for s in (await api.get("/servers"))["servers"]} == names
        return check

    await _run_until_sigterm(cfg, tmp_path / "2.log", await servers_are({"a", "b"}))
    assert [r[0] for r in rows(tmp_path / "gw.db", "SELECT id FROM config_versions ORDER BY id")] == [1, 2]
    document["servers"]["c"] = {"command": PY, "args": [SDK_SERVER, "c"]}
    _write(cfg, document)
    log = await _run_until_sigterm(cfg, tmp_path / "3.log", await servers_are({"a", "c"}))
    assert "is version 3 (now current)" in log
    [(source, who)] = rows(tmp_path / "gw.db", "SELECT source, who FROM config_versions WHERE id = 3")
    assert source == f"file:{cfg}" and who.endswith("(mcp-gateway run)")


def test_export_without_a_store_says_so(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "plain.yaml", {"servers": {"a": {"command": "x"}}})
    out = _export(cfg)
    assert out.returncode == 2 and "no store.path" in out.stderr
    missing = _write(tmp_path / "s.yaml", {"servers": {"a": {"command": "x"}}, "store": {"path": str(tmp_path / "n.db")}})
    out = _export(missing)
    assert out.returncode == 1 and "no such store" in out.stderr and not (tmp_path / "n.db").exists()


async def test_a_taken_admin_port_is_a_plain_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = _write(tmp_path / "c.yaml", {"servers": {"a": {"command": PY, "args": [SDK_SERVER, "a"]}},
                                           "admin": {"enabled": True, "port": port}})
        out = await trio.to_thread.run_sync(lambda: subprocess.run(
            [*CLI, "run", "--config", str(cfg), "--port", "0"], capture_output=True, text=True, timeout=30))
    assert out.returncode == 2 and f"admin.port: the admin API cannot listen on 127.0.0.1:{port}" in out.stderr
    assert "Traceback" not in out.stderr


def test_an_unreadable_token_or_audit_database_is_a_plain_error(tmp_path: Path) -> None:
    server = {"a": {"command": PY, "args": [SDK_SERVER, "a"]}}
    cases = [({"admin": {"enabled": True, "port": 0, "token": f"file:{tmp_path}/missing"}}, "admin.token: file:"),
             ({"audit": {"path": f"{tmp_path}/no/such/dir/audit.db"}}, "audit.path: cannot open the audit log"),
             ({"store": {"path": f"{tmp_path}/no/such/dir/gw.db"}}, "store.path: ")]
    for i, (extra, said) in enumerate(cases):
        cfg = _write(tmp_path / f"c{i}.yaml", {"servers": server, **extra})
        out = subprocess.run([*CLI, "run", "--config", str(cfg), "--port", "0"], capture_output=True, text=True,
                             timeout=30)
        assert out.returncode == 2 and said in out.stderr, (extra, out.stderr)
        assert "Traceback" not in out.stderr


def test_check_describes_the_control_plane(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "c.yaml", {
        "servers": {"a": {"command": "x", "audit_arguments": True}},
        "admin": {"enabled": True, "token": "env:ADMIN_TOKEN"}, "store": {"path": "/var/lib/gw.db"},
        "audit": {"retention": "7d", "max_rows": 1000}})
    out = subprocess.run([*CLI, "check", "--config", str(cfg), "--no-start"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert "admin: 127.0.0.1:8081 (token from env)" in out.stdout
    assert "store: /var/lib/gw.db" in out.stdout
    assert "audit log: /var/lib/gw.db, retention 7d, max rows 1000, queue 10000" in out.stdout
    assert "audit: arguments stored in the audit log" in out.stdout




def test_a_config_made_into_a_document_reads_back_the_same() -> None:
    from admin.documents import document_of, redact_url
    from tests.helpers import ROOT

    checked = 0
    for path in sorted([*(ROOT / "config").glob("*.yaml"), *(ROOT / "config").glob("*.json")]):
        try:
            cfg = load_config(path)
        except ConfigError:
            continue  # (not every file there is a gateway config: alerts, dashboards)
        assert parse_config(document_of(cfg)) == cfg, path
        checked += 1
    assert checked >= 2  # example.yaml, claude_desktop.json
    rich = parse_config({
        "servers": {"c": {"image": "x:1", "command": ["run"], "lifecycle": "call", "pool": 2, "limits": {"pids": 9}},
                    "p": {"command": "x", "args": ["-v"], "call_timeout": "5s", "prefix": "pp", "audit_arguments": True},
                    "r": {"url": "http://127.0.0.1:9/mcp", "transport": "sse", "headers": {"X": "y"}}},
        "routes": {"/": ["p", "c"], "/r": {"servers": ["r"], "prefix": False}},
        "limits": {"max_body": "1m"}, "timeouts": {"call": "2m"}, "audit": {"max_rows": None}})
    assert parse_config(document_of(rich)) == rich
    guarded = parse_config({  # who may call what (docs/access.md)
        "servers": {"p": {"command": "x", "tools": {"deny": ["rm"]}, "on_tool_change": "block", "redact_results": True}},
        "routes": {"/": ["p"], "/ro": {"servers": ["p"], "tools": {"allow": ["p__read*"]}}},
        "auth": {"api_keys": {"refresh": "2s"}, "resource": "https://gw.example.com",
                 "jwt": {"issuer": "https://idp.example.com", "jwks_url": "https://idp.example.com/jwks",
                         "required_scopes": ["mcp"]}},
        "policy": [{"allow": {"who": ["group:dev"]}}, {"deny": {"tools": ["*__rm"]}}],
        "rate_limits": [{"rate": 5, "burst": 10, "per": "all"}]})
    assert parse_config(document_of(guarded)) == guarded
    assert parse_config(document_of(parse_config({"servers": {"p": {"command": "x"}}, "auth": "none"}))).auth == "none"
    assert redact_url("https://u:p@h.example/x?a=1&b=") == "https://u:(redacted)@h.example/x?a=(redacted)&b=(redacted)"
    assert redact_url("https://tok@h.example/") == "https://(redacted)@h.example/"
