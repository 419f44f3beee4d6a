"""The audit log: one row per tools/call, prompts/get, resources/read and admin change, in SQLite.

Off the hot path: :meth:`AuditLog.observe` (a ``Dispatcher.observers`` entry) turns a
:class:`~gateway.dispatch.CallRecord` into a row and puts it on a bounded trio memory channel
with ``send_nowait``; a full channel drops the row and counts it (``mcp_audit_dropped_total``),
it never makes a call wait. The writer task takes what is queued in batches and inserts each
batch in one transaction in a worker thread (its own limiter, its own connection). On a graceful
shutdown :meth:`aclose` closes the channel and waits until the writer has written everything
queued; if the writer is cancelled instead, it still writes what is queued, shielded and bounded.

Arguments are never stored by default: a row holds an HMAC-SHA256 of the arguments' bytes as the
client sent them (a key kept in the database, so digests of the same arguments match across
restarts but cannot be brute-forced from the rows alone), and the arguments themselves only for
servers with ``audit_arguments: true`` (at most 64 KiB). Session ids are cut to a prefix: a full
``Mcp-Session-Id`` is a credential.

Retention: rows older than ``retention`` and the oldest beyond ``max_rows`` are deleted at start
and every minute, in chunks (a long delete would hold the write lock).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import sqlite_utils
import trio

from gateway import dbfile
from gateway.dispatch import CallRecord

log = logging.getLogger("mcp_gateway.audit")

TABLE: Final = "audit_log"
META: Final = "audit_meta"
SESSION_PREFIX: Final = 12  # characters of a session id kept (72 bits: tells sessions apart, opens none)
MAX_ARGUMENTS: Final = 64 * 1024
BATCH: Final = 500
LINGER: Final = 0.005  # seconds a row may wait for others to share its transaction (bench/README, "The audit row")
LEGACY_INDEXES: Final = ("idx_audit_log_server_name", "idx_audit_log_session", "idx_audit_log_route")
DELETE_CHUNK: Final = 10_000
OUTCOMES: Final = ("ok", "tool_error", "error", "timeout", "cancelled")
COLUMNS: Final = ("time", "kind", "route", "session", "identity", "client", "peer", "method", "server", "name",
                  "duration", "outcome", "error_code", "request_bytes", "response_bytes", "args_digest",
                  "arguments", "version", "detail")
_FINAL_FLUSH: Final = 10.0  # seconds a cancelled writer still gets to write what is queued


@dataclass(frozen=True, slots=True)
class AuditStatistics:
    queued: int
    written: int
    dropped_queue_full: int
    dropped_write_error: int
    deleted: int  # by retention


Row = tuple[Any, ...]


def split_outcome(outcome: str) -> tuple[str, int | None]:
    """``error -32602`` -> (``error``, -32602); the others stand alone."""
    head, _, code = outcome.partition(" ")
    try:
        return head, int(code) if code else None
    except ValueError:
        return head, None


class Digester:
    """HMAC-SHA256 (RFC 2104) with the key's padded inner and outer hashes computed once: each
    digest is then two hash copies and updates, a third of what ``hmac`` costs to set the key up
    per message (the same bytes out: tests check it against ``hmac``)."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        block = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def hexdigest(self, data: bytes) -> str:
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()


ROWS_PER_STATEMENT: Final = 250  # x 19 columns: well within SQLite's 32,766 variables (older builds)


@functools.lru_cache(maxsize=ROWS_PER_STATEMENT + 1)  # batch sizes vary with the linger
def _insert_sql(rows: int) -> str:
    one = "(" + ", ".join("?" * len(COLUMNS)) + ")"
    return f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES " + ", ".join([one] * rows)


class AuditDatabase:
    """The audit table in one SQLite file (blocking: used from AuditLog's thread only)."""

    def __init__(self, path: str) -> None:
        # WAL + NORMAL: a crash loses no committed batch, a power loss at most the last one.
        conn = dbfile.connect(path, synchronous="NORMAL")
        self.db = sqlite_utils.Database(conn, execute_plugins=False)
        with self.db.atomic():
            if TABLE not in self.db.table_names():
                self.db.execute(
                    f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, "
                    "kind TEXT NOT NULL, route TEXT, session TEXT, identity TEXT, client TEXT, peer TEXT, "
                    "method TEXT, server TEXT, name TEXT, duration REAL, outcome TEXT NOT NULL, "
                    "error_code INTEGER, request_bytes INTEGER, response_bytes INTEGER, args_digest TEXT, "
                    "arguments TEXT, version INTEGER, detail TEXT)")
                self.db.table(TABLE).create_index(["time"], if_not_exists=True)
            # Only `time` is indexed (retention and since/until; rows arrive in time order, so it is
            # appended to, about 0.2 us a row). An index on session or server+name has an insertion
            # point per session or tool: each cost 3-4 us a row of SQLite work on the gateway's own
            # core (9.5 us a row with both, 5.6 without: bench/README, "The audit row"). A filtered
            # query instead reads newest first until `limit` rows match: a full scan of the default
            # max_rows (1,000,000) takes about 0.1 s. Databases made before this lose those indexes.
            for legacy in LEGACY_INDEXES:
                self.db.execute(f"DROP INDEX IF EXISTS {legacy}")
            if META not in self.db.table_names():
                self.db.table(META).create({"key": str, "value": str}, pk="key")
            rows = list(self.db.query(f"SELECT value FROM {META} WHERE key = 'digest_key'"))
            if rows:
                self.key = bytes.fromhex(rows[0]["value"])
            else:
                self.key = secrets.token_bytes(32)
                self.db.table(META).insert({"key": "digest_key", "value": self.key.hex()})

    def insert(self, rows: list[Row]) -> None:
        """Rows in one transaction, ROWS_PER_STATEMENT to a statement: the sqlite3 module releases
        the GIL around each statement it steps, so a row per statement (executemany) would hand the
        GIL back and forth with the event loop (which runs on the same core) for every row."""
        with self.db.atomic():
            for start in range(0, len(rows), ROWS_PER_STATEMENT):
                chunk = rows[start:start + ROWS_PER_STATEMENT]
                self.db.conn.execute(_insert_sql(len(chunk)), [value for row in chunk for value in row])

    def enforce(self, *, retention: float, max_rows: int | None, now: float) -> int:
        """Delete rows older than ``retention`` s (0: none) and the oldest beyond ``max_rows``."""
        deleted = 0
        if retention > 0:
            deleted += self._delete_chunked("time < ?", now - retention)
        if max_rows is not None:
            found = list(self.db.query(f"SELECT id FROM {TABLE} ORDER BY id DESC LIMIT 1 OFFSET ?", [max_rows]))
            if found:  # this row and every older one are beyond max_rows
                deleted += self._delete_chunked("id <= ?", found[0]["id"])
        return deleted

    def _delete_chunked(self, where: str, arg: Any) -> int:
        """Delete the rows matching ``where``, oldest first, DELETE_CHUNK per transaction."""
        deleted = 0
        while True:
            with self.db.atomic():
                cur = self.db.execute(f"DELETE FROM {TABLE} WHERE id IN (SELECT id FROM {TABLE} "
                                      f"WHERE {where} ORDER BY id LIMIT {DELETE_CHUNK})", [arg])
            deleted += max(cur.rowcount, 0)
            if cur.rowcount < DELETE_CHUNK:
                return deleted

    def query(self, filters: dict[str, Any], *, limit: int, before: int | None) -> list[dict[str, Any]]:
        """Rows newest first, each filter an exact match (``since``/``until`` bound ``time``)."""
        where, args = [], []
        for key, value in filters.items():
            if key == "since":
                where.append("time >= ?")
            elif key == "until":
                where.append("time < ?")
            elif key in COLUMNS:
                where.append(f"{key} = ?")
            else:
                raise ValueError(key)
            args.append(value)
        if before is not None:
            where.append("id < ?")
            args.append(before)
        sql = f"SELECT id, {', '.join(COLUMNS)} FROM {TABLE}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return list(self.db.query(sql + " ORDER BY id DESC LIMIT ?", [*args, limit]))

    def count(self) -> int:
        return int(next(iter(self.db.query(f"SELECT count(*) AS n FROM {TABLE}")))["n"])

    def close(self) -> None:
        self.db.close()


class AuditLog:
    """The audit log of one gateway: ``observe`` on the hot path, ``run`` writes (see the module)."""

    def __init__(self, path: str, *, queue: int, retention: float, max_rows: int | None,
                 store_arguments: Callable[[str | None], bool] = lambda server: False,
                 server_of: Callable[[CallRecord], str | None] = lambda record: record.server,
                 retention_interval: float = 60.0) -> None:
        self.path = path
        self.retention = retention
        self.max_rows = max_rows
        self.retention_interval = retention_interval
        self._store_arguments = store_arguments
        self._server_of = server_of  # prompts/get and resources/read records name no server: the route knows
        self._send, self._recv = trio.open_memory_channel[Row](queue)
        self._limiter = trio.CapacityLimiter(1)  # one connection, one thread at a time
        self._db: AuditDatabase | None = None
        self._mac = Digester(b"")  # the database's key once open() read it
        self._done = trio.Event()
        self._holding: list[Row] = []
        self._running = False
        self.written = 0
        self.dropped_queue_full = 0
        self.dropped_write_error = 0
        self.deleted = 0

    def statistics(self) -> AuditStatistics:
        return AuditStatistics(queued=self._send.statistics().current_buffer_used, written=self.written,
                               dropped_queue_full=self.dropped_queue_full,
                               dropped_write_error=self.dropped_write_error, deleted=self.deleted)

    # -- the hot path ------------------------------------------------------------------------------
    def digest(self, data: bytes | None) -> str | None:
        if not data:
            return None
        return self._mac.hexdigest(data)[:32]

    def observe(self, record: CallRecord) -> None:
        """A Dispatcher observer: queue the record's row; never blocks, never raises (a full
        queue drops the row and counts it)."""
        raw = bytes(memoryview(record.arguments)) if record.arguments is not None else None
        server = record.server if record.server is not None else self._server_of(record)
        arguments = None
        if raw is not None and self._store_arguments(server):
            arguments = (raw.decode("utf-8", "replace") if len(raw) <= MAX_ARGUMENTS
                         else f"(not stored: {len(raw)} bytes, over {MAX_ARGUMENTS // 1024} KiB)")
        outcome, code = split_outcome(record.outcome)
        row: Row = (
            record.time, "call", record.route, record.session[:SESSION_PREFIX] if record.session else None,
            None if record.identity is None else str(record.identity)[:200],
            record.client[:200] if record.client else None, record.peer, record.method, server, record.name,
            record.duration if math.isfinite(record.duration) else None, outcome, code, record.request_bytes,
            record.response_bytes, self.digest(raw), arguments, None, None)
        try:
            self._send.send_nowait(row)
        except trio.WouldBlock:
            self.dropped_queue_full += 1
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self.dropped_queue_full += 1  # after the flush at shutdown: nothing writes any more

    # -- admin changes: written at once, never dropped --------------------------------------------
    async def record_admin(self, *, method: str, identity: str, peer: str | None, server: str | None,
                           outcome: str, code: int | None, version: int | None, detail: str,
                           body: bytes | None, duration: float) -> None:
        row: Row = (time.time(), "admin", None, None, identity, None, peer, method, server, None, duration,
                    outcome, code, len(body or b""), None, self.digest(body), None, version, detail[:1000])
        await self._write([row])

    # -- the writer --------------------------------------------------------------------------------
    async def open(self) -> None:
        def open_db() -> bytes:
            self._db = AuditDatabase(self.path)
            return self._db.key

        self._mac = Digester(await trio.to_thread.run_sync(open_db, limiter=self._limiter))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the database, then write what is queued until :meth:`aclose` (or cancellation)."""
        if self._db is None:
            await self.open()
        self._running = True
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._retention_loop)
                task_status.started()
                await self._write_queued()
                nursery.cancel_scope.cancel()  # the channel is closed and drained: done
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(_FINAL_FLUSH):
                    await self._flush_rest()  # cancelled without aclose: still write what is queued
                await self._close_db()
            self._running = False
            self._done.set()

    async def _write_queued(self) -> None:
        async for row in self._recv:
            batch = self._holding = [row]  # rows out of the queue, not yet written (see _flush_rest)
            # What comes within LINGER goes in the same transaction: under load one commit (and
            # one thread hop) per LINGER instead of per few calls, on the gateway's own core. The
            # rows wait in the queue meanwhile, so audit.queue still bounds what is held. Longer
            # is not cheaper: 20 ms measured the same rate and a longer p99 (the writer then holds
            # the shared core for a millisecond or more at a time).
            await trio.sleep(LINGER)
            while len(batch) < BATCH:
                try:
                    batch.append(self._recv.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            await self._write(batch)
            self._holding = []

    async def _flush_rest(self) -> None:
        rest, self._holding = self._holding, []  # a batch the cancellation caught before its write
        while True:
            try:
                rest.append(self._recv.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
        for start in range(0, len(rest), BATCH):
            await self._write(rest[start:start + BATCH])

    async def _write(self, rows: list[Row]) -> None:
        db = self._db
        if db is None:
            self.dropped_write_error += len(rows)
            return
        for attempt in range(3):  # a locked database (a long reader elsewhere) usually clears quickly
            try:
                await trio.to_thread.run_sync(db.insert, rows, limiter=self._limiter)
            except sqlite3.Error as exc:
                if attempt == 2:
                    self.dropped_write_error += len(rows)
                    log.error("audit log: %d record(s) lost, the database refused them: %s", len(rows), exc)
                    return
                await trio.sleep(0.1 * (attempt + 1))
            else:
                self.written += len(rows)
                return

    async def _retention_loop(self) -> None:
        while True:
            await self.enforce_retention()
            await trio.sleep(self.retention_interval)

    async def enforce_retention(self, now: float | None = None) -> int:
        """Delete what retention says (also run every ``retention_interval``); how many rows went."""
        db = self._db
        if db is None:
            return 0
        when = time.time() if now is None else now
        try:
            deleted = await trio.to_thread.run_sync(
                lambda: db.enforce(retention=self.retention, max_rows=self.max_rows, now=when), limiter=self._limiter)
        except sqlite3.Error as exc:
            log.error("audit log: retention failed: %s", exc)
            return 0
        self.deleted += deleted
        if deleted:
            log.info("audit log: retention deleted %d row(s)", deleted)
        return deleted

    async def query(self, filters: dict[str, Any], *, limit: int, before: int | None) -> list[dict[str, Any]]:
        db = self._db
        if db is None:
            return []
        return await trio.to_thread.run_sync(lambda: db.query(filters, limit=limit, before=before),
                                             limiter=self._limiter)

    async def count(self) -> int:
        db = self._db
        if db is None:
            return 0
        return await trio.to_thread.run_sync(db.count, limiter=self._limiter)

    async def _close_db(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await trio.to_thread.run_sync(db.close, limiter=self._limiter)

    async def aclose(self) -> None:
        """Stop taking records, and return once every queued one is written (graceful shutdown)."""
        self._send.close()
        if self._running:
            await self._done.wait()
        else:
            await self._flush_rest()
            await self._close_db()
