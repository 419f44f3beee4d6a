"""The config store: the gateway's configuration as versioned documents in SQLite (sqlite-utils, WAL).

A document is the configuration as a user writes it (the YAML file's data, durations as written),
never the parsed form, so that ``mcp-gateway export`` gives back a file that reads the same. Every
change is a new row of ``config_versions`` (who, when, what, where it came from, the document);
``store_meta.current`` names the version the gateway runs. A roll back is a new version holding an
old document, so history only grows.

:class:`ConfigStore` is blocking (sqlite3). On the event loop use :class:`AsyncStore`, which runs
every call in a worker thread under a limiter of one (one connection, one thread at a time).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlite_utils
import trio
import yaml

from gateway import dbfile

SCHEMA = 1
VERSIONS = "config_versions"
META = "store_meta"

T = TypeVar("T")


class StoreError(Exception):
    """The store cannot be opened or written (the message names the file)."""


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One version, without its document (for lists)."""

    id: int
    created: float  # Unix seconds
    who: str
    what: str  # a one-line summary of the change
    source: str  # "file:<path>", "api", "rollback:<n>", "startup"
    digest: str  # sha256 of the canonical JSON of the document

    def as_json(self, current: int | None) -> dict[str, Any]:
        return {"id": self.id, "created": self.created, "who": self.who, "what": self.what,
                "source": self.source, "digest": self.digest, "current": self.id == current}


@dataclass(frozen=True, slots=True)
class Version(VersionInfo):
    document: dict[str, Any]


def digest(document: Any) -> str:
    """A document's identity: key order and formatting do not matter."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def to_yaml(document: dict[str, Any]) -> str:
    """A document as the YAML a user would write (key order kept)."""
    text: str = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=False, width=110)
    return text


def jsonable(document: Any, where: str = "") -> Any:
    """The document as JSON data; a value JSON cannot hold (a YAML date) is a StoreError naming its path.

    Validated configs hold only strings, numbers, booleans, null, lists and string-keyed mappings,
    so this only trips on a document that was not validated first.
    """
    if isinstance(document, dict):
        out = {}
        for key, value in document.items():
            if not isinstance(key, str):
                raise StoreError(f"{where or 'document'}: keys must be strings")
            out[key] = jsonable(value, f"{where}.{key}" if where else key)
        return out
    if isinstance(document, list):
        return [jsonable(v, f"{where}[{i}]") for i, v in enumerate(document)]
    if document is None or isinstance(document, str | int | float | bool):
        return document
    raise StoreError(f"{where}: a {type(document).__name__} cannot be stored (use a string)")


class ConfigStore:
    """The versioned documents in one SQLite file. Blocking: see the module docstring."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            # One connection, used by one thread at a time (AsyncStore's limiter), any thread.
            conn = dbfile.connect(path)  # FULL: config changes are rare, each one is durable
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open the store: {exc}") from None
        self.db = sqlite_utils.Database(conn, execute_plugins=False)
        try:
            self._create()
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"{path}: cannot use the store: {exc}") from None

    def _create(self) -> None:
        with self.db.atomic():
            if VERSIONS not in self.db.table_names():
                self.db.execute(f"CREATE TABLE {VERSIONS} (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                                "created REAL NOT NULL, who TEXT NOT NULL, what TEXT NOT NULL, "
                                "source TEXT NOT NULL, digest TEXT NOT NULL, document TEXT NOT NULL)")
                self.db.table(VERSIONS).create_index(["source", "id"], if_not_exists=True)
            if META not in self.db.table_names():
                self.db.table(META).create({"key": str, "value": str}, pk="key")
            found = self.meta("schema")
            if found is None:
                self.db.table(META).insert({"key": "schema", "value": str(SCHEMA)})
            elif int(found) > SCHEMA:
                raise StoreError(f"{self.path}: written by a newer mcp-gateway (store schema {found})")

    def close(self) -> None:
        self.db.close()

    # -- metadata (the current version, the admin token's hash) --------------------------------
    def meta(self, key: str) -> str | None:
        rows = list(self.db.query(f"SELECT value FROM {META} WHERE key = ?", [key]))
        return str(rows[0]["value"]) if rows else None

    def set_meta(self, key: str, value: str, *, only_if_absent: bool = False) -> bool:
        """Write ``key``; with ``only_if_absent``, False (and nothing written) when it exists."""
        with self.db.atomic():
            if only_if_absent and self.meta(key) is not None:
                return False
            self.db.table(META).upsert({"key": key, "value": value}, pk="key")
        return True

    # -- versions ------------------------------------------------------------------------------
    def current_id(self) -> int | None:
        value = self.meta("current")
        return int(value) if value is not None else None

    def current(self) -> Version | None:
        found = self.current_id()
        return self.get(found) if found is not None else None

    def get(self, version: int) -> Version | None:
        rows = list(self.db.query(f"SELECT * FROM {VERSIONS} WHERE id = ?", [version]))
        if not rows:
            return None
        row: dict[str, Any] = rows[0]
        return Version(id=row["id"], created=row["created"], who=row["who"], what=row["what"],
                       source=row["source"], digest=row["digest"], document=json.loads(row["document"]))

    def versions(self, *, limit: int = 50, before: int | None = None) -> list[VersionInfo]:
        """Newest first; ``before``: only versions older than that id (the next page)."""
        where, args = ("WHERE id < ?", [before]) if before is not None else ("", [])
        rows = self.db.query(f"SELECT id, created, who, what, source, digest FROM {VERSIONS} {where} "
                             f"ORDER BY id DESC LIMIT ?", [*args, limit])
        return [VersionInfo(**row) for row in rows]

    def count(self) -> int:
        return int(next(iter(self.db.query(f"SELECT count(*) AS n FROM {VERSIONS}")))["n"])

    def commit(self, document: dict[str, Any], *, who: str, what: str, source: str) -> Version:
        """Store ``document`` as a new version and make it current, in one transaction."""
        data = jsonable(document)
        row: dict[str, Any] = {"created": time.time(), "who": who[:200], "what": what[:500], "source": source[:1000],
               "digest": digest(data), "document": json.dumps(data, ensure_ascii=False)}
        with self.db.atomic():
            cursor = self.db.execute(
                f"INSERT INTO {VERSIONS} (created, who, what, source, digest, document) VALUES (?, ?, ?, ?, ?, ?)",
                [row["created"], row["who"], row["what"], row["source"], row["digest"], row["document"]])
            version_id = int(cursor.lastrowid or 0)
            self.db.table(META).upsert({"key": "current", "value": str(version_id)}, pk="key")
        return Version(id=version_id, created=float(row["created"]), who=str(row["who"]), what=str(row["what"]),
                       source=str(row["source"]), digest=str(row["digest"]), document=data)

    def last_from(self, source: str) -> VersionInfo | None:
        rows = list(self.db.query(f"SELECT id, created, who, what, source, digest FROM {VERSIONS} "
                                  "WHERE source = ? ORDER BY id DESC LIMIT 1", [source]))
        return VersionInfo(**rows[0]) if rows else None

    def import_file(self, document: dict[str, Any], path: str, *, who: str) -> tuple[Version, bool]:
        """``mcp-gateway run --config FILE``: the version to run, and whether the file became a new one.

        The file becomes a new version when it differs from the current version AND from what was
        last imported from that same file: a file left as it was does not undo the changes made
        through the admin API since it was imported; an edited file always wins.
        """
        source = f"file:{os.path.abspath(path)}"
        data = jsonable(document)
        current = self.current()
        found = digest(data)
        if current is not None:
            if current.digest == found:
                return current, False
            last = self.last_from(source)
            if last is not None and last.digest == found:
                return current, False
        return self.commit(data, who=who, what=f"imported {os.path.basename(path)}", source=source), True


class AsyncStore:
    """:class:`ConfigStore` for the event loop: every call in a worker thread, one at a time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._store: ConfigStore | None = None
        self._limiter = trio.CapacityLimiter(1)

    async def run_sync(self, fn: Callable[[ConfigStore], T]) -> T:
        """Run ``fn(store)`` in the store's thread (opening the store first if needed)."""
        def call() -> T:
            if self._store is None:
                self._store = ConfigStore(self.path)
            return fn(self._store)

        return await trio.to_thread.run_sync(call, limiter=self._limiter)

    async def open(self) -> None:
        await self.run_sync(lambda store: None)

    async def aclose(self) -> None:
        def close() -> None:
            if self._store is not None:
                self._store.close()
                self._store = None

        with trio.CancelScope(shield=True):  # a connection left open would hold the WAL
            await trio.to_thread.run_sync(close, limiter=self._limiter)

    async def current(self) -> Version | None:
        return await self.run_sync(lambda s: s.current())

    async def current_id(self) -> int | None:
        return await self.run_sync(lambda s: s.current_id())

    async def get(self, version: int) -> Version | None:
        return await self.run_sync(lambda s: s.get(version))

    async def versions(self, *, limit: int, before: int | None) -> list[VersionInfo]:
        return await self.run_sync(lambda s: s.versions(limit=limit, before=before))

    async def commit(self, document: dict[str, Any], *, who: str, what: str, source: str) -> Version:
        return await self.run_sync(lambda s: s.commit(document, who=who, what=what, source=source))

    async def import_file(self, document: dict[str, Any], path: str, *, who: str) -> tuple[Version, bool]:
        return await self.run_sync(lambda s: s.import_file(document, path, who=who))

    async def meta(self, key: str) -> str | None:
        return await self.run_sync(lambda s: s.meta(key))

    async def set_meta(self, key: str, value: str, *, only_if_absent: bool = False) -> bool:
        return await self.run_sync(lambda s: s.set_meta(key, value, only_if_absent=only_if_absent))
