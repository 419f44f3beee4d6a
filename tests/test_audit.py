"""The audit log (issue 10): one row per tools/call, prompts/get and resources/read with the right
outcome, digests instead of arguments, drops counted instead of blocking, no row lost on SIGTERM,
retention. Real gateway, real upstream servers, real SQLite files in tmp_path.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import trio
import yaml

from tests.helpers import PY, SDK_SERVER, HTTPClient, config, free_port, running_gateway, sdk_server
from tests.test_admin import CLI, TOKEN, admin_client, admin_gateway, db_rows


def call(request_id: int, name: str, **arguments: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": name, "arguments": arguments}}


async def answer(http: HTTPClient, session: str, message: dict[str, Any]) -> dict[str, Any]:
    reply = await http.post("/mcp", message, session, headers={"accept": "application/json"})
    assert reply.status == 200, reply
    return reply.json()  # type: ignore[no-any-return]


async def written(gateway: Any, count: int, timeout: float = 10) -> None:
    """Wait until the audit writer has written ``count`` rows (of calls)."""
    audit = gateway.control.audit
    with trio.fail_after(timeout):
        while audit.statistics().written < count:
            await trio.sleep(0.02)


async def test_one_record_per_call_with_its_outcome(tmp_path: Path) -> None:
    servers = {"a": sdk_server("a", call_timeout="1s")}
    async with admin_gateway(tmp_path, servers) as gw, admin_client(gw.admin_port) as api, \
            HTTPClient.connect(gw.port) as http:
        session = await http.initialize()
        assert "result" in await answer(http, session, call(1, "a__add", a=1, b=2))
        assert (await answer(http, session, call(2, "a__fail", message="no")))["result"]["isError"] is True
        assert (await answer(http, session, call(3, "a__nosuch")))["error"]["code"] == -32602
        assert "error" in await answer(http, session, call(4, "a__sleep", seconds=3))  # call_timeout 1s
        await answer(http, session, {"jsonrpc": "2.0", "id": 5, "method": "prompts/get",
                                     "params": {"name": "a__greet", "arguments": {"name": "x"}}})
        await answer(http, session, {"jsonrpc": "2.0", "id": 6, "method": "resources/read",
                                     "params": {"uri": "memo://readme"}})
        await answer(http, session, {"jsonrpc": "2.0", "id": 7, "method": "tools/list"})  # not audited

        async def slow() -> None:
            async with HTTPClient.connect(gw.port) as other:
                await other.post("/mcp", call(8, "a__sleep", seconds=5), session, headers={"accept": "application/json"})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow)
            with trio.fail_after(5):
                while not (s := gw.gateway.sessions.get(session)) or 8 not in s.inflight:
                    await trio.sleep(0.02)
            note = await http.post("/mcp", {"jsonrpc": "2.0", "method": "notifications/cancelled",
                                            "params": {"requestId": 8}}, session)
            assert note.status == 202
        await written(gw.gateway, 7)
        await trio.sleep(0.2)  # (nothing more may come)
        records = (await api.get("/audit?kind=call"))["records"]
        assert len(records) == 7, records  # exactly one per audited call, tools/list none
        by_name = {r["name"]: r for r in records if r["name"] != "a__sleep"}
        sleeps = sorted((r for r in records if r["name"] == "a__sleep"), key=lambda r: r["id"])
        assert by_name["a__add"]["outcome"] == "ok" and by_name["a__add"]["error_code"] is None
        assert by_name["a__fail"]["outcome"] == "tool_error"
        assert (by_name["a__nosuch"]["outcome"], by_name["a__nosuch"]["error_code"]) == ("error", -32602)
        assert by_name["a__nosuch"]["server"] is None  # no server took it
        assert [r["outcome"] for r in sleeps] == ["timeout", "cancelled"]
        assert 0.9 < sleeps[0]["duration"] < 2.5
        assert by_name["a__greet"]["method"] == "prompts/get" and by_name["a__greet"]["outcome"] == "ok"
        assert by_name["memo://readme"]["method"] == "resources/read" and by_name["memo://readme"]["server"] == "a"
        add = by_name["a__add"]
        assert add["server"] == "a" and add["route"] == "/" and add["client"] == "raw" and add["peer"] == "127.0.0.1"
        assert add["session"] == session[:12] and add["method"] == "tools/call" and add["kind"] == "call"
        assert add["request_bytes"] > 0 and add["response_bytes"] > 0 and add["duration"] > 0
        assert add["args_digest"] and add["arguments"] is None
        assert time.time() - 60 < add["time"] <= time.time()
        # filters and paging
        assert [r["name"] for r in (await api.get("/audit?outcome=timeout"))["records"]] == ["a__sleep"]
        assert len((await api.get("/audit?server=a&tool=a__add"))["records"]) == 1
        assert len((await api.get("/audit?error_code=-32602"))["records"]) == 1
        assert len((await api.get(f"/audit?session={session}"))["records"]) == 7
        assert (await api.get(f"/audit?since={time.time() + 60}"))["records"] == []
        assert len((await api.get("/audit?kind=call&until=2999-01-01T00:00:00Z"))["records"]) == 7
        seen: list[int] = []
        cursor = ""
        while True:
            page = await api.get(f"/audit?kind=call&limit=3{cursor}")
            seen += [r["id"] for r in page["records"]]
            if page["next"] is None:
                break
            cursor = f"&cursor={page['next']}"
        assert seen == sorted({r["id"] for r in records}, reverse=True)
        for bad in ("outcome=maybe", "limit=0", "cursor=x", "since=yesterday", "kind=other", "error_code=x"):
            reply = await api.call("GET", f"/audit?{bad}")
            assert reply.status == 400 and reply.json()["error"]["path"] == bad.split("=")[0], bad


async def test_a_digest_never_the_arguments_unless_the_server_opts_in(tmp_path: Path) -> None:
    servers = {"plain": sdk_server("plain"), "open": sdk_server("open", audit_arguments=True)}
    async with admin_gateway(tmp_path, servers) as gw, admin_client(gw.admin_port) as api, \
            HTTPClient.connect(gw.port) as http:
        session = await http.initialize()
        await answer(http, session, call(1, "plain__echo", text="needle-plain-7f3a"))
        await answer(http, session, call(2, "plain__echo", text="needle-plain-7f3a"))
        await answer(http, session, call(3, "plain__echo", text="other"))
        await answer(http, session, call(4, "open__echo", text="needle-open-19c2"))
        await written(gw.gateway, 4)
        records = sorted((await api.get("/audit?kind=call"))["records"], key=lambda r: r["id"])
        first, same, other, opened = records
        assert first["args_digest"] == same["args_digest"] != other["args_digest"]
        assert len(first["args_digest"]) == 32 and first["arguments"] is None
        assert "needle-plain" not in json.dumps(records)
        assert json.loads(opened["arguments"]) == {"text": "needle-open-19c2"}
        files = await trio.to_thread.run_sync(lambda: b"".join(p.read_bytes() for p in tmp_path.glob("gateway.db*")))
        assert b"needle-plain-7f3a" not in files and b"needle-open-19c2" in files


async def test_a_full_queue_drops_and_counts_instead_of_blocking_calls(tmp_path: Path) -> None:
    calls = 30
    async with admin_gateway(tmp_path, {"a": sdk_server("a")}, audit={"queue": 5}) as gw, \
            admin_client(gw.admin_port) as api, HTTPClient.connect(gw.port) as http:
        session = await http.initialize()
        # Another process's write transaction: the audit writer waits for the database (it retries
        # through busy_timeout), so its queue fills.
        lock = sqlite3.connect(gw.db, check_same_thread=False, isolation_level=None)
        await trio.to_thread.run_sync(lock.execute, "BEGIN EXCLUSIVE")
        try:
            for i in range(calls):
                started = trio.current_time()
                assert "result" in await answer(http, session, call(i + 1, "a__add", a=i, b=1))
                assert trio.current_time() - started < 1.0  # never waits for the audit log
            stats = gw.gateway.control.audit.statistics()
            assert stats.dropped_queue_full > 0 and stats.queued <= 5 and stats.written == 0
            text = (await api.call("GET", "/metrics")).body.decode()
            assert f'mcp_audit_dropped_total{{reason="queue_full"}} {float(stats.dropped_queue_full)}' in text
            assert (await api.get("/health"))["audit"]["dropped"] == stats.dropped_queue_full
        finally:
            await trio.to_thread.run_sync(lock.execute, "ROLLBACK")
            await trio.to_thread.run_sync(lock.close)
        audit = gw.gateway.control.audit
        with trio.fail_after(15):
            while audit.statistics().written + audit.statistics().dropped_queue_full < calls:
                await trio.sleep(0.05)
        stats = audit.statistics()
        assert stats.written + stats.dropped_queue_full == calls and stats.dropped_write_error == 0
        [(count,)] = await db_rows(gw.db, "SELECT count(*) FROM audit_log WHERE kind = 'call'")
        assert count == stats.written


async def test_retention_by_rows_and_by_age_with_an_audit_file_and_no_store(tmp_path: Path) -> None:
    cfg = config({"a": sdk_server("a")}, audit={"path": str(tmp_path / "audit.db"), "max_rows": 5,
                                                "retention": "1h"})
    async with running_gateway(cfg) as gw, HTTPClient.connect(gw.port) as http:
        assert gw.gateway.control.store is None and gw.gateway.control.server is None
        session = await http.initialize()
        for i in range(8):
            await answer(http, session, call(i + 1, "a__add", a=i, b=0))
        await written(gw.gateway, 8)
        audit = gw.gateway.control.audit
        assert await audit.count() == 8
        assert await audit.enforce_retention() == 3  # the oldest beyond max_rows
        left = await audit.query({}, limit=100, before=None)
        assert len(left) == 5 and [r["id"] for r in left] == list(range(8, 3, -1))
        assert await audit.enforce_retention(now=time.time() + 1800) == 0  # younger than 1h
        assert await audit.enforce_retention(now=time.time() + 7200) == 5  # older than 1h, seen from then
        assert await audit.count() == 0
        assert audit.statistics().deleted == 8


async def test_sigterm_with_calls_in_flight_loses_no_audit_record(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    admin_port, db = free_port(), tmp_path / "gw.db"
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(yaml.safe_dump({
        "servers": {"a": {"command": PY, "args": [SDK_SERVER, "a"]}},
        "admin": {"enabled": True, "port": admin_port, "token": f"file:{token_file}"},
        "store": {"path": str(db)}, "timeouts": {"shutdown_grace": "2s"}}))
    port = free_port()
    with open(tmp_path / "gw.log", "wb") as log_file:  # noqa: ASYNC230 - before the process starts
        proc = await trio.lowlevel.open_process([*CLI, "run", "--config", str(cfg), "--port", str(port),
                                                 "--no-watch"], stderr=log_file)
    quick, finishing, cut_off = 40, 10, 5
    answers: list[dict[str, Any]] = []
    try:
        from tests.test_admin import _wait_admin

        await _wait_admin(admin_port, proc)
        async with HTTPClient.connect(port) as http:
            session = await http.initialize()
            for i in range(quick):
                await answer(http, session, call(i + 1, "a__add", a=i, b=1))

            async def one(request_id: int, seconds: float) -> None:
                async with HTTPClient.connect(port) as other:
                    answers.append(await answer(other, session, call(request_id, "a__sleep", seconds=seconds)))

            async with admin_client(admin_port) as api, trio.open_nursery() as nursery:
                for i in range(finishing):
                    nursery.start_soon(one, 1000 + i, 1.5)  # ends within the 2s grace
                for i in range(cut_off):
                    nursery.start_soon(one, 2000 + i, 30)  # still running when the grace ends: -32004
                with trio.fail_after(10):
                    while (await api.get("/servers/a"))["inflight"] < finishing + cut_off:
                        await trio.sleep(0.02)
                # Hold the database until well after the drain: the records of the calls ending in it
                # are still queued when the gateway shuts down, and must be written before it exits.
                lock = sqlite3.connect(db, check_same_thread=False, isolation_level=None)
                await trio.to_thread.run_sync(lock.execute, "BEGIN EXCLUSIVE")
                proc.send_signal(signal.SIGTERM)
                await trio.sleep(3)  # the grace (2s) is over: every call has been answered
                assert proc.returncode is None  # still waiting to write its records
                await trio.to_thread.run_sync(lock.execute, "ROLLBACK")
                await trio.to_thread.run_sync(lock.close)
        with trio.fail_after(30):
            await proc.wait()
        assert proc.returncode == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert len(answers) == finishing + cut_off
    assert sum("result" in a for a in answers) == finishing
    assert sorted(a["error"]["code"] for a in answers if "error" in a) == [-32004] * cut_off
    outcomes = dict(await db_rows(db, "SELECT outcome, count(*) FROM audit_log WHERE kind = 'call' GROUP BY outcome"))
    assert outcomes == {"ok": quick + finishing, "cancelled": cut_off}, outcomes


async def test_the_stdio_front_audits_too_and_runs_the_stores_version(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(yaml.safe_dump({"servers": {"a": {"command": PY, "args": [SDK_SERVER, "a"]}},
                                   "store": {"path": str(db)}}))
    lines = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "stdio-test", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        call(2, "a__add", a=2, b=3), call(3, "a__nosuch"),
    ]
    stdin = "".join(json.dumps(m) + "\n" for m in lines).encode()
    for _ in range(2):  # the second start: the file as it was, no new version
        done = await trio.run_process([*CLI, "stdio", "--config", str(cfg)], stdin=stdin, capture_stdout=True,
                                      capture_stderr=True, check=False)
        assert done.returncode == 0, done.stderr
        answers = [json.loads(line) for line in done.stdout.decode().splitlines()]
        assert sorted(a.get("id") for a in answers) == [1, 2, 3]  # (answers come as calls end)
    assert await db_rows(db, "SELECT id, source FROM config_versions") == [(1, f"file:{cfg}")]
    recorded = await db_rows(db, "SELECT name, outcome, error_code, client FROM audit_log")
    assert sorted(recorded, key=str) == sorted([("a__add", "ok", None, "stdio-test"),
                                                ("a__nosuch", "error", -32602, "stdio-test")] * 2, key=str)


def test_the_digest_is_hmac_sha256_and_big_batches_go_in_whole(tmp_path: Path) -> None:
    import hashlib
    import hmac
    import secrets

    from admin.audit import COLUMNS, ROWS_PER_STATEMENT, AuditDatabase, Digester

    for key in (secrets.token_bytes(32), b"", secrets.token_bytes(64), secrets.token_bytes(100)):
        mac = Digester(key)
        for data in (b"", b'{"a":1}', secrets.token_bytes(5000)):
            assert mac.hexdigest(data) == hmac.new(key, data, hashlib.sha256).hexdigest()
    db = AuditDatabase(str(tmp_path / "audit.db"))
    try:
        count = 2 * ROWS_PER_STATEMENT + 7  # three statements, the last one short
        rows = [(float(i), "call", "/", None, None, None, "127.0.0.1", "tools/call", "s", f"t{i}", 0.001, "ok",
                 None, 10, 20, None, None, None, None) for i in range(count)]
        assert len(rows[0]) == len(COLUMNS)
        db.insert(rows)
        assert db.count() == count
        names = [r["name"] for r in db.query({}, limit=count, before=None)]
        assert names == [f"t{i}" for i in reversed(range(count))]  # every row, in order
    finally:
        db.close()


def test_only_time_is_indexed_and_filters_still_find_every_match(tmp_path: Path) -> None:
    """Session and server+name indexes cost every insert 3-4 us of the gateway's core, so they are
    gone (dropped from a database made before); a filter then reads newest first, and must still
    find exactly the matching rows, pages included."""
    from admin.audit import LEGACY_INDEXES, TABLE, AuditDatabase

    path = str(tmp_path / "audit.db")
    db = AuditDatabase(path)
    db.close()
    with sqlite3.connect(path) as conn:  # a database as the previous schema left it
        conn.execute(f"CREATE INDEX idx_audit_log_server_name ON {TABLE} (server, name)")
        conn.execute(f"CREATE INDEX idx_audit_log_session ON {TABLE} (session)")
    db = AuditDatabase(path)
    try:
        indexed = {r[0] for r in db.db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", [TABLE])}
        assert indexed == {"idx_audit_log_time"}
        assert not indexed & set(LEGACY_INDEXES)
        rows = [(1000.0 + i, "call", "/", f"s{i % 3}", None, None, "127.0.0.1", "tools/call", f"srv{i % 2}",
                 f"t{i % 5}", 0.001, "ok", None, 10, 20, None, None, None, None) for i in range(300)]
        db.insert(rows)
        want = [i for i in reversed(range(300)) if i % 3 == 1 and i % 2 == 0 and i % 5 == 4]
        first = db.query({"session": "s1", "server": "srv0", "name": "t4"}, limit=5, before=None)
        rest = db.query({"session": "s1", "server": "srv0", "name": "t4"}, limit=1000, before=first[-1]["id"])
        assert [int(r["time"]) - 1000 for r in first + rest] == want
        assert [int(r["time"]) - 1000 for r in db.query({"since": 1290.0}, limit=100, before=None)] == \
            list(reversed(range(290, 300)))
    finally:
        db.close()
