"""API keys (issue 11): the key's shape, the store on a real SQLite file, the pepper file, the
in-memory ring (reloads, misses, floods, last-used), the CLI as a user runs it, and the admin API
against a running gateway whose data plane then takes the key.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import sqlite3
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from gateway.auth import AuthFailure
from gateway.auth.authenticator import Authenticator
from gateway.auth.keys import (
    KEY_PREFIX,
    InvalidKeyRequest,
    KeyExists,
    KeyNotFound,
    KeyRing,
    KeyStore,
    KeyStoreError,
    keys_db_path,
    load_pepper,
    new_key,
    parse_key,
    pepper_path,
)
from gateway.config import parse_config
from tests.helpers import ROOT, HTTPClient, free_port, log_file, sdk_server, wait_healthy
from tests.test_admin import admin_client, admin_gateway

CLI = str(ROOT / ".venv" / "bin" / "mcp-gateway")


def random_key() -> str:
    """A well-formed key that no store made."""
    return new_key()[1]


def refused(excinfo: pytest.ExceptionInfo[AuthFailure], reason: str) -> str:
    assert excinfo.value.reason == reason and excinfo.value.status == 401
    return excinfo.value.message


# -- the key's shape -------------------------------------------------------------------------------

def test_a_key_is_prefix_id_secret_and_parses_back_whatever_its_secret_holds() -> None:
    seen = set()
    for _ in range(2000):
        key_id, key = new_key()
        assert key.startswith(f"{KEY_PREFIX}{key_id}_") and len(key_id) == 12 and len(key) == 61
        assert set(key_id) <= set("abcdefghijklmnopqrstuvwxyz234567")
        assert parse_key(key) == key_id  # '_' and '-' in the secret never confuse the split
        seen.add(key_id)
    assert len(seen) == 2000
    good = new_key()[1]
    for bad in ("", "mcpg_", good[:-1], good + "A", good.replace("mcpg_", "mcpx_"), good.upper(),
                good[:5] + "A" + good[6:], good[:17] + "-" + good[18:], good[:20] + "!" + good[21:],
                good[:5] + "_" + good[6:], "mcpg_" + "a" * 1000, good + "\n", " " + good[1:]):
        assert parse_key(bad) is None, bad


# -- the store -------------------------------------------------------------------------------------

def test_the_database_keeps_an_hmac_with_the_pepper_never_the_key(tmp_path: Path) -> None:
    db = str(tmp_path / "keys.db")
    with KeyStore(db) as store:
        made = store.create("ci", routes=["/team-a"])
    assert made.key not in repr(made)  # a logged NewKey does not show it
    secret = made.key[18:]
    raw = (tmp_path / "keys.db").read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("keys.db-*"))
    assert made.key.encode() not in raw and secret.encode() not in raw
    pepper_file = Path(pepper_path(db))
    assert stat.S_IMODE(pepper_file.stat().st_mode) == 0o600
    pepper = bytes.fromhex(pepper_file.read_text())
    assert len(pepper) == 32 and pepper.hex().encode() not in raw and pepper not in raw
    conn = sqlite3.connect(db)
    try:
        (digest,) = conn.execute("SELECT digest FROM api_keys WHERE name = 'ci'").fetchone()
    finally:
        conn.close()
    assert digest == hmac.new(pepper, made.key.encode(), hashlib.sha256).digest()


def test_the_pepper_is_made_once_even_by_many_at_once(tmp_path: Path) -> None:
    db = str(tmp_path / "race.db")
    barrier = threading.Barrier(16)
    found: list[bytes] = []

    def make() -> None:
        barrier.wait()
        found.append(load_pepper(db))

    threads = [threading.Thread(target=make) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(found) == 16 and len(set(found)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["race.db.secret"]  # no temporary file left behind


def test_a_lost_or_foreign_pepper_is_a_clear_error_and_never_replaced(tmp_path: Path) -> None:
    db = str(tmp_path / "keys.db")
    KeyStore(db).close()
    original = Path(pepper_path(db)).read_bytes()
    os.unlink(pepper_path(db))
    with pytest.raises(KeyStoreError, match="missing: restore it"):
        KeyStore(db)
    assert not os.path.exists(pepper_path(db))  # a new one would silently break every key
    Path(pepper_path(db)).write_text(os.urandom(32).hex())
    with pytest.raises(KeyStoreError, match="is not the server secret"):
        KeyStore(db)
    Path(pepper_path(db)).write_text("not hex")
    with pytest.raises(KeyStoreError, match="not an API keys' server secret"):
        KeyStore(db)
    Path(pepper_path(db)).write_bytes(original)
    KeyStore(db).close()


def test_create_list_revoke_on_a_real_file(tmp_path: Path) -> None:
    db = str(tmp_path / "keys.db")
    store = KeyStore(db)
    try:
        a = store.create("ci", routes=["/team-a/", "/team-a", "/"], groups=["dev", "dev", "ops"])
        assert a.record.routes == ("/team-a", "/") and a.record.groups == ("dev", "ops")
        store.create("nightly@build.example", expires=time.time() + 3600)
        with pytest.raises(KeyExists, match="'ci' exists"):
            store.create("ci")
        listed = store.list()
        assert [r.name for r in listed] == ["ci", "nightly@build.example"]
        assert all(r.status() == "active" and r.last_used is None for r in listed)
        assert listed[1].status(now=time.time() + 7200) == "expired"
        assert "digest" not in listed[0].as_json() and a.key not in json.dumps(listed[0].as_json())
        revoked = store.revoke("ci")
        assert revoked.revoked is not None and revoked.status() == "revoked" and revoked.id == a.record.id
        with pytest.raises(KeyNotFound):
            store.revoke("ci")
        with pytest.raises(KeyNotFound):
            store.revoke("nobody")
        again = store.create("ci")  # the name is free again; the revoked key stays revoked
        assert again.record.id != a.record.id
        assert [r.status() for r in store.list(include_revoked=True) if r.name == "ci"] == ["revoked", "active"]
        assert [r.name for r in store.list()] == ["nightly@build.example", "ci"]
        for kwargs, where in (({"name": ""}, "name"), ({"name": "a b"}, "name"), ({"name": "x" * 65}, "name"),
                              ({"name": "ok", "routes": ["team-a"]}, "routes[0]"),
                              ({"name": "ok", "routes": ["/a b"]}, "routes[0]"),
                              ({"name": "ok", "groups": ["a,b"]}, "groups[0]"),
                              ({"name": "ok", "expires": time.time() - 1}, "expires"),
                              ({"name": "ok", "expires": float("nan")}, "expires")):
            with pytest.raises(InvalidKeyRequest) as info:
                store.create(**kwargs)
            assert info.value.field == where
        # other tables in the same file are left alone (the admin store shares it)
        store.touch({again.record.id: 1234.5})
        store.touch({again.record.id: 1000.0})  # an earlier time never wins
        assert store.get("ci") is not None and store.get("ci").last_used == 1234.5  # type: ignore[union-attr]
    finally:
        store.close()


def test_where_the_keys_live() -> None:
    servers = {"a": {"command": "x"}}
    assert keys_db_path(parse_config({"servers": servers}), "/etc/gw/gw.yaml") is None
    assert keys_db_path(parse_config({"servers": servers, "auth": "none"}), "/etc/gw/gw.yaml") is None
    on = parse_config({"servers": servers, "auth": {"api_keys": True}})
    assert keys_db_path(on, "/etc/gw/gw.yaml") == "/etc/gw/keys.db"
    assert keys_db_path(on, "gw.yaml") == "keys.db" and keys_db_path(on, None) == "keys.db"
    stored = parse_config({"servers": servers, "auth": {"api_keys": True}, "store": {"path": "state/gw.db"}})
    assert keys_db_path(stored, "/etc/gw/gw.yaml") == "state/gw.db"
    own = parse_config({"servers": servers, "auth": {"api_keys": {"path": "k/keys.db", "refresh": "5s"}},
                        "store": {"path": "gw.db"}})
    assert keys_db_path(own, "/etc/gw/gw.yaml") == "k/keys.db"


# -- the ring --------------------------------------------------------------------------------------

async def test_the_ring_verifies_a_key_and_refuses_each_bad_one_for_its_reason(tmp_path: Path) -> None:
    db = str(tmp_path / "keys.db")
    clock = [time.time()]
    with KeyStore(db) as other:
        good = other.create("ci", routes=["/team-a"], groups=["dev"], expires=clock[0] + 60)
        forever = other.create("ops")
        doomed = other.create("gone")
    ring = KeyRing(db, wall_clock=lambda: clock[0])
    identity = await ring.verify(good.key)
    assert (identity.name, identity.kind, identity.groups, identity.routes, identity.expires) == (
        "ci", "key", frozenset({"dev"}), ("/team-a",), good.record.expires)
    assert identity.may_use_route("/team-a") and not identity.may_use_route("/")
    assert (await ring.verify(forever.key)).routes is None

    wrong_secret = good.key[:18] + ("A" if good.key[18] != "A" else "B") + good.key[19:]
    messages = set()
    for token in (wrong_secret, random_key()):
        with pytest.raises(AuthFailure) as info:
            await ring.verify(token)
        messages.add(refused(info, "unknown_key"))
    assert messages == {"invalid API key"}  # a wrong secret and an unknown id look the same
    with pytest.raises(AuthFailure) as info:
        await ring.verify("mcpg_nonsense")
    refused(info, "malformed")

    with KeyStore(db) as other:
        other.revoke("gone")
    await ring.refresh_now()
    with pytest.raises(AuthFailure) as info:
        await ring.verify(doomed.key)
    refused(info, "revoked")
    clock[0] += 61
    with pytest.raises(AuthFailure) as info:
        await ring.verify(good.key)
    refused(info, "expired")
    stats = ring.statistics()
    assert stats.verified == 2 and stats.keys == 1  # ops only: ci expired, gone revoked
    assert stats.refused == {"unknown_key": 2, "malformed": 1, "revoked": 1, "expired": 1}
    for failure_text in messages:
        assert good.key not in failure_text


async def test_a_verified_key_skips_its_hmac_until_revoked_or_changed(tmp_path: Path) -> None:
    db = str(tmp_path / "keys.db")
    with KeyStore(db) as other:
        key = other.create("ci")
    ring = KeyRing(db)
    await ring.verify(key.key)
    digests = []
    real = ring._digest
    assert real is not None
    ring._digest = lambda token: digests.append(token) or real(token)
    for _ in range(3):
        assert (await ring.verify(key.key)).name == "ci"
    assert digests == []  # proven once: no HMAC per request
    wrong = key.key[:-1] + ("A" if key.key[-1] != "A" else "B")
    with pytest.raises(AuthFailure) as info:
        await ring.verify(wrong)  # a near miss is never taken for the proven key
    refused(info, "unknown_key")
    assert digests == [wrong]
    with KeyStore(db) as other:
        other.revoke("ci")
    await ring.refresh_now()
    with pytest.raises(AuthFailure) as info:
        await ring.verify(key.key)
    refused(info, "revoked")  # the reload made new entries: the key is checked again, and refused


async def test_a_proven_key_is_answered_without_awaiting_and_refused_for_the_same_reasons(tmp_path: Path) -> None:
    """The hot path's shortcut (Authenticator.remembered, no coroutine per request) answers only
    for a key that matched before, and what it refuses it refuses as authenticate() would."""
    db = str(tmp_path / "keys.db")
    clock = [time.time()]
    with KeyStore(db) as other:
        ci = other.create("ci", routes=["/team-a"], expires=clock[0] + 60)
        ops = other.create("ops")
    auth = Authenticator(keys=KeyRing(db, wall_clock=lambda: clock[0]))
    header = b"Bearer " + ops.key.encode()
    assert auth.remembered(header, "/") is None  # never verified: authenticate() decides
    assert auth.remembered(None, "/") is None and auth.remembered(b"Bearer a.b.c", "/") is None  # not keys
    first = await auth.authenticate(header, "/")
    assert auth.remembered(header, "/") is first and auth.accepted == {"key": 2}
    wrong = header[:-1] + (b"A" if header[-1:] != b"A" else b"B")
    assert auth.remembered(wrong, "/") is None  # a near miss is never taken for the proven key
    with pytest.raises(AuthFailure) as info:
        auth.remembered(b"Basic " + ops.key.encode(), "/")
    assert info.value.reason == "malformed"

    limited = b"Bearer " + ci.key.encode()
    assert (await auth.authenticate(limited, "/team-a")).name == "ci"
    with pytest.raises(AuthFailure) as info:
        auth.remembered(limited, "/")
    assert (info.value.reason, info.value.status) == ("route", 403)
    clock[0] += 61
    with pytest.raises(AuthFailure) as info:
        auth.remembered(limited, "/team-a")
    assert info.value.reason == "expired"
    assert auth.refused == {"malformed": 1, "route": 1, "expired": 1}

    with KeyStore(db) as other:
        other.revoke("ops")
    await auth.keys.refresh_now()  # type: ignore[union-attr]
    assert auth.remembered(header, "/") is None  # new entries: checked again, the slow way
    with pytest.raises(AuthFailure) as info:
        await auth.authenticate(header, "/")
    assert info.value.reason == "revoked"


async def test_a_database_that_cannot_be_opened_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    ring = KeyRing(str(tmp_path / "no" / "such" / "dir" / "keys.db"))
    with pytest.raises(AuthFailure) as info:
        await ring.verify(random_key())
    assert info.value.reason == "unavailable"
    with pytest.raises(KeyStoreError, match="cannot open"):
        await ring.run()


async def test_a_miss_reads_the_database_at_most_once_per_refresh(tmp_path: Path,
                                                                  autojump_clock: trio.testing.MockClock) -> None:
    db = str(tmp_path / "keys.db")
    ring = KeyRing(db, refresh=1.0)
    await ring.refresh_now()
    with KeyStore(db) as other:
        made = other.create("late")  # by "another process", after the ring's last read
    reads = ring.statistics().reloads
    with pytest.raises(AuthFailure):
        await ring.verify(made.key)  # the last read is fresh: no read, so a miss costs nothing
    assert ring.statistics().reloads == reads
    await trio.sleep(1.0)
    assert (await ring.verify(made.key)).name == "late"  # the read is old: this miss reads once
    assert ring.statistics().reloads == reads + 1

    # Many misses at once share one read.
    await trio.sleep(1.0)
    failures: list[str] = []

    async def miss() -> None:
        try:
            await ring.verify(random_key())
        except AuthFailure as exc:
            failures.append(exc.reason)

    async with trio.open_nursery() as nursery:
        for _ in range(200):
            nursery.start_soon(miss)
    assert failures == ["unknown_key"] * 200
    assert ring.statistics().reloads == reads + 2


@pytest.mark.parametrize("background", [False, True], ids=["misses only", "with run"])
async def test_a_flood_of_random_keys_costs_one_read_per_refresh(tmp_path: Path, background: bool,
                                                                autojump_clock: trio.testing.MockClock) -> None:
    db = str(tmp_path / "keys.db")
    with KeyStore(db) as other:
        good = other.create("ci")
    ring = KeyRing(db, refresh=1.0)
    async with trio.open_nursery() as nursery:
        if background:
            await nursery.start(ring.run)
        assert (await ring.verify(good.key)).name == "ci"
        before, start = ring.statistics(), trio.current_time()
        for _ in range(2000):
            with pytest.raises(AuthFailure):
                await ring.verify(random_key())
            await trio.sleep(0.005)
        elapsed = trio.current_time() - start
        stats = ring.statistics()
        nursery.cancel_scope.cancel()
    assert elapsed >= 10
    assert stats.refused["unknown_key"] == 2000
    reads = stats.reloads - before.reloads
    # ~one read per refresh interval (not one per bad key), whichever way the reads come about
    assert elapsed - 2 <= reads <= elapsed + 2, (reads, elapsed)
    assert stats.loads == before.loads  # nothing changed: no read loaded the keys again


async def test_the_ring_sees_keys_made_and_revoked_elsewhere_on_its_own(tmp_path: Path) -> None:
    # (The real clock: a MockClock that jumps while the ring's thread reads would outrun it.)
    db = str(tmp_path / "keys.db")
    ring = KeyRing(db, refresh=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(ring.run)
        with KeyStore(db) as other:
            made = other.create("cli-made")
        loads = ring.statistics().loads
        with trio.fail_after(10):  # the ring reads every refresh without being asked
            while ring.statistics().loads == loads:
                await trio.sleep(0.01)
        reads = ring.statistics().reloads
        assert (await ring.verify(made.key)).name == "cli-made"
        assert ring.statistics().reloads == reads  # a hit: no read
        with KeyStore(db) as other:
            other.revoke("cli-made")
        loads = ring.statistics().loads
        with trio.fail_after(10):
            while ring.statistics().loads == loads:
                await trio.sleep(0.01)
        with pytest.raises(AuthFailure) as info:
            await ring.verify(made.key)
        assert info.value.reason == "revoked"
        nursery.cancel_scope.cancel()


async def test_a_broken_database_keeps_the_loaded_keys(tmp_path: Path) -> None:
    db = str(tmp_path / "keys.db")
    with KeyStore(db) as other:
        made = other.create("ci")
    ring = KeyRing(db, refresh=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(ring.run)
        conn = sqlite3.connect(db)
        conn.execute("DROP TABLE api_keys_state")  # what a damaged or foreign file looks like to a read
        conn.commit()
        conn.close()
        with trio.fail_after(10):
            while ring.statistics().load_errors == 0:
                await trio.sleep(0.01)
        assert (await ring.verify(made.key)).name == "ci"
        nursery.cancel_scope.cancel()


async def test_last_used_is_written_in_batches_and_when_the_ring_stops(tmp_path: Path) -> None:
    db = str(tmp_path / "keys.db")
    with KeyStore(db) as other:
        a, b = other.create("a"), other.create("b")

    def last_used(name: str) -> float | None:
        with KeyStore(db) as store:
            found = store.get(name)
            assert found is not None
            return found.last_used

    ring = KeyRing(db, refresh=0.05)
    async with trio.open_nursery() as nursery:
        await nursery.start(ring.run)
        for _ in range(100):
            await ring.verify(a.key)
        with trio.fail_after(10):
            while await trio.to_thread.run_sync(last_used, "a") is None:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert ring.statistics().pending_last_used == 0

    slow = KeyRing(db, refresh=3600)  # never flushes on its own
    async with trio.open_nursery() as nursery:
        await nursery.start(slow.run)
        await slow.verify(b.key)
        assert slow.statistics().pending_last_used == 1
        nursery.cancel_scope.cancel()  # the flush runs as it stops, shielded
    assert last_used("b") is not None


# -- the CLI -------------------------------------------------------------------------------------

def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, "keys", *args], capture_output=True, text=True, timeout=60, cwd=cwd)


def plain_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mcp-gateway: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def gw_config(path: Path, **extra: Any) -> Path:
    data = {"servers": {"a": {"command": "true"}}, "routes": {"/team-a": ["a"], "/": ["a"]},
            "auth": {"api_keys": True}, **extra}
    path.write_text(json.dumps(data))
    return path


async def test_the_cli_makes_a_key_that_the_ring_takes_then_lists_and_revokes_it(tmp_path: Path) -> None:
    conf = gw_config(tmp_path / "gw.json")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    made = await trio.to_thread.run_sync(
        lambda: cli("create", "--config", str(conf), "--name", "ci", "--routes", "/team-a", "--groups", "dev,ops",
                    "--expires", "30d", cwd=elsewhere))
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert made.stdout == key + "\n" and parse_key(key) is not None  # the key alone: KEY=$(...)
    assert key not in made.stderr and "'ci'" in made.stderr and "/team-a" in made.stderr
    assert "shown once" in made.stderr and str(tmp_path / "keys.db") in made.stderr
    assert (tmp_path / "keys.db").exists() and not (elsewhere / "keys.db").exists()  # next to the config file

    ring = KeyRing(str(tmp_path / "keys.db"))
    identity = await ring.verify(key)
    assert identity.name == "ci" and identity.routes == ("/team-a",) and identity.groups == {"dev", "ops"}
    assert identity.expires is not None and 29 * 86400 < identity.expires - time.time() <= 30 * 86400

    table = await trio.to_thread.run_sync(lambda: cli("list", "--config", str(conf)))
    assert table.returncode == 0 and key not in table.stdout
    head, row = table.stdout.splitlines()
    assert head.split()[:3] == ["NAME", "ID", "ROUTES"] and row.split()[0] == "ci" and "active" in row
    listed = json.loads((await trio.to_thread.run_sync(lambda: cli("list", "--config", str(conf), "--json"))).stdout)
    assert [(k["name"], k["routes"], k["groups"], k["status"]) for k in listed] == [
        ("ci", ["/team-a"], ["dev", "ops"], "active")]
    assert key not in json.dumps(listed)

    gone = await trio.to_thread.run_sync(lambda: cli("revoke", "--config", str(conf), "ci"))
    assert gone.returncode == 0 and gone.stdout == "" and "revoked" in gone.stderr
    await ring.refresh_now()
    with pytest.raises(AuthFailure) as info:
        await ring.verify(key)
    assert info.value.reason == "revoked"
    assert json.loads((await trio.to_thread.run_sync(lambda: cli("list", "--config", str(conf), "--json"))).stdout) == []
    every = json.loads((await trio.to_thread.run_sync(
        lambda: cli("list", "--config", str(conf), "--json", "--all"))).stdout)
    assert [k["status"] for k in every] == ["revoked"]


def test_cli_errors_are_one_line_and_exit_code_2(tmp_path: Path) -> None:
    conf = gw_config(tmp_path / "gw.json")
    assert cli("create", "--config", str(conf), "--name", "ci").returncode == 0
    plain_error(cli("create", "--config", str(conf), "--name", "ci"), "'ci' exists")
    plain_error(cli("revoke", "--config", str(conf), "nobody"), "no API key named 'nobody'")
    plain_error(cli("create", "--config", str(conf), "--name", "x", "--expires", "soon"), "--expires",
                "invalid duration")
    plain_error(cli("create", "--config", str(conf), "--name", "x", "--expires", "0"), "--expires")
    plain_error(cli("create", "--config", str(conf), "--name", "x y"), "--name")
    plain_error(cli("create", "--config", str(conf), "--name", "x", "--routes", "team-a"), "--routes")
    off = tmp_path / "off.json"
    off.write_text(json.dumps({"servers": {"a": {"command": "true"}}}))
    for args in (("create", "--config", str(off), "--name", "x"), ("list", "--config", str(off)),
                 ("revoke", "--config", str(off), "x")):
        plain_error(cli(*args), "API keys are off", "api_keys: true")
    nowhere = gw_config(tmp_path / "nowhere.json",
                        auth={"api_keys": {"path": str(tmp_path / "missing-dir" / "keys.db")}})
    plain_error(cli("create", "--config", str(nowhere), "--name", "x"), "cannot open")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    plain_error(cli("list", "--config", str(broken)), "invalid config")
    plain_error(cli("list", "--config", str(tmp_path / "absent.json")), "cannot read config")
    # listing where there is no database yet makes none
    fresh = gw_config(tmp_path / "fresh.json", auth={"api_keys": {"path": str(tmp_path / "fresh.db")}})
    empty = cli("list", "--config", str(fresh), "--json")
    assert empty.returncode == 0 and json.loads(empty.stdout) == [] and not (tmp_path / "fresh.db").exists()


async def test_one_config_line_and_one_command_against_a_running_gateway(tmp_path: Path) -> None:
    """The newcomer's path: ``auth: {api_keys: true}``, ``mcp-gateway run``, ``keys create``; the
    running gateway takes the new key and refuses the revoked one without a restart."""
    conf = tmp_path / "gw.json"
    conf.write_text(json.dumps({"servers": {"a": sdk_server("a")}, "auth": {"api_keys": True}}))
    port = free_port()
    with log_file(tmp_path / "gateway.log") as log:
        proc = await trio.lowlevel.open_process([CLI, "run", "--config", str(conf), "--port", str(port)],
                                                stdout=log, stderr=log)
    try:
        await wait_healthy(port, proc)
        made = await trio.to_thread.run_sync(lambda: cli("create", "--config", str(conf), "--name", "newcomer"))
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip()

        async def status(token: str | None) -> int:
            headers = {"authorization": f"Bearer {token}"} if token else {}
            async with HTTPClient.connect(port) as http:
                reply = await http.post("/mcp", {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                    "protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": {"name": "raw", "version": "0"}}}, headers=headers)
                return reply.status

        assert await status(None) == 401
        with trio.fail_after(20):  # within auth.api_keys.refresh (1s)
            while await status(key) != 200:
                await trio.sleep(0.05)
        gone = await trio.to_thread.run_sync(lambda: cli("revoke", "--config", str(conf), "newcomer"))
        assert gone.returncode == 0, gone.stderr
        with trio.fail_after(20):
            while await status(key) != 401:
                await trio.sleep(0.05)
        assert await status(random_key()) == 401
    finally:
        proc.terminate()
        with trio.fail_after(15):
            await proc.wait()
    logged = (tmp_path / "gateway.log").read_text()
    assert key not in logged and "Traceback" not in logged


# -- the admin API ---------------------------------------------------------------------------------

async def test_keys_through_the_admin_api_reach_the_data_plane_at_once(tmp_path: Path) -> None:
    routes = {"/": ["a"], "/team-a": ["a"]}
    async with admin_gateway(tmp_path, {"a": sdk_server("a")}, routes=routes,
                             auth={"api_keys": {"refresh": "1h"}}) as gw, admin_client(gw.admin_port) as api:
        assert (await api.get("/keys")) == {"keys": []}
        made = await api.call("POST", "/keys", {"name": "ci", "routes": ["/team-a"], "expires": "30d"})
        assert made.status == 201, made
        assert made.headers.get("cache-control") == "no-store"
        key, record = made.json()["key"], made.json()["record"]
        assert parse_key(key) is not None and record["name"] == "ci" and record["routes"] == ["/team-a"]
        assert record["status"] == "active" and 29 * 86400 < record["expires"] - time.time() <= 30 * 86400
        listed = await api.get("/keys")
        assert [k["name"] for k in listed["keys"]] == ["ci"] and key not in json.dumps(listed)

        # The data plane takes it at once (refresh is an hour: the admin API made the ring read).
        async with HTTPClient.connect(gw.port) as http:
            await http.initialize("/team-a/mcp", headers={"authorization": f"Bearer {key}"})
            other_route = await http.post("/mcp", {"jsonrpc": "2.0", "id": 1, "method": "ping"},
                                          headers={"authorization": f"Bearer {key}"})
            assert other_route.status == 403
            nothing = await http.post("/team-a/mcp", {"jsonrpc": "2.0", "id": 1, "method": "ping"})
            assert nothing.status == 401

        for body, status, path in (({"name": "ci"}, 409, "name"), ({"name": "a b"}, 422, "name"),
                                   ({"name": "x", "routes": ["nope"]}, 422, "routes[0]"),
                                   ({"name": "x", "expires": "soon"}, 422, "expires"),
                                   ({"name": "x", "expires": 10**400}, 422, "expires"),
                                   ({"name": "x", "expires": -1}, 422, "expires"),
                                   ({"name": 3}, 400, "name"), ({"name": "x", "routes": "/a"}, 400, "routes"),
                                   ({"name": "x", "secret": "s"}, 400, "secret"), ([], 400, None)):
            reply = await api.call("POST", "/keys", body)
            assert reply.status == status, (body, reply)
            assert reply.json()["error"]["path"] == path, (body, reply.json())
        assert (await api.call("GET", "/keys?all=maybe")).status == 400

        gone = await api.call("DELETE", "/keys/ci")
        assert gone.status == 200 and gone.json()["record"]["status"] == "revoked"
        assert (await api.call("DELETE", "/keys/ci")).status == 404
        assert (await api.call("DELETE", "/keys/no%20such")).status == 404
        async with HTTPClient.connect(gw.port) as http:
            reply = await http.post("/team-a/mcp", {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"}}}, headers={"authorization": f"Bearer {key}"})
            assert reply.status == 401 and key not in reply.body.decode()
        assert [k["status"] for k in (await api.get("/keys?all=true"))["keys"]] == ["revoked"]

        # Every change, and every refused one, is an admin audit row (never the key).
        rows = (await api.get("/audit?kind=admin&limit=100"))["records"]
        keyed = [r for r in rows if (r["method"] or "").split(" ")[-1].startswith("/keys")]
        outcomes = [(r["method"], r["outcome"]) for r in keyed]
        assert ("POST /keys", "ok") in outcomes and ("DELETE /keys/ci", "ok") in outcomes
        assert ("POST /keys", "error") in outcomes and ("DELETE /keys/ci", "error") in outcomes
        assert key not in json.dumps(rows)


async def test_the_admin_api_says_how_to_turn_keys_on(tmp_path: Path) -> None:
    async with admin_gateway(tmp_path, {"a": sdk_server("a")}) as gw, admin_client(gw.admin_port) as api:
        for method, path, body in (("GET", "/keys", ...), ("POST", "/keys", {"name": "ci"}),
                                   ("DELETE", "/keys/ci", ...)):
            reply = await api.call(method, path, body)
            assert reply.status == 409, (path, reply)
            assert reply.json()["error"]["code"] == "keys_off"
            assert "api_keys: true" in reply.json()["error"]["message"]


def _no_key_leaks(response: Any) -> None:
    assert "mcpg_" not in response.text or response.status_code == 201  # a key only in the answer that made it


async def test_generated_key_requests_get_documented_answers(tmp_path: Path) -> None:
    from admin.api import url_rules
    from tests.test_admin_openapi import fuzz_admin

    async with admin_gateway(tmp_path, {"a": sdk_server("a")}, auth={"api_keys": True}) as gw:
        app = gw.gateway.control.server.app
        assert {("/keys", "get"), ("/keys", "post"), ("/keys/{name}", "delete")} <= url_rules(app)
        seen = await trio.to_thread.run_sync(functools.partial(
            fuzz_admin, f"http://127.0.0.1:{gw.admin_port}", 100, path_regex="^/keys", also=_no_key_leaks))
    statuses = {status for _, _, status in seen}
    assert {(m, p) for m, p, _ in seen} == {("GET", "/keys"), ("POST", "/keys"), ("DELETE", "/keys/{name}")}
    assert {200, 201, 404, 422} <= statuses and not any(s >= 500 for s in statuses), statuses
