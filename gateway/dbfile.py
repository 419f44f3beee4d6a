"""One way to open the gateway's SQLite files (the config store, the audit log, API keys, tool pins).

They may share one file, opened by several connections and processes (the gateway and the CLI)
at once. So each connection waits for a busy file instead of failing, and WAL mode (readers never
wait for the writer) is switched on only when the file is not in it yet: SQLite does not wait for
the lock that switch needs, so two openers of a new file would otherwise see "database is locked".
"""

from __future__ import annotations

import sqlite3
import time
from typing import Literal

Synchronous = Literal["NORMAL", "FULL"]


def connect(path: str, *, synchronous: Synchronous = "FULL", timeout: float = 10.0,
            autocommit: bool = False) -> sqlite3.Connection:
    """A connection any thread may use (one at a time), in WAL mode; raises :class:`sqlite3.Error`.
    ``autocommit``: no implicit transactions (the caller writes BEGIN itself)."""
    conn = sqlite3.connect(path, check_same_thread=False, timeout=timeout)
    if autocommit:
        conn.isolation_level = None
    try:
        conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        use_wal(conn, timeout)
        conn.execute(f"PRAGMA synchronous={synchronous}")
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def use_wal(conn: sqlite3.Connection, timeout: float = 5.0) -> None:
    """WAL mode, asked for only when needed and retried while another connection holds the file."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
