"""API keys: ``Authorization: Bearer mcpg_<id>_<secret>``.

A key is ``mcpg_`` + a 12-character id (random, lowercase base32: no ``_``, so the key splits
without ambiguity) + ``_`` + a 43-character secret (``secrets.token_urlsafe(32)``). The plain key
is shown once, when it is made; the database keeps only HMAC-SHA256(pepper, key). Keys carry 256
random bits, so a fast keyed hash is as strong as a slow one here, and it lets every request be
checked in microseconds. The pepper is a random server secret in a file of its own next to the
database (``<db>.secret``, mode 0600): a copy of the database alone verifies nothing.

- :class:`KeyStore`: the table ``api_keys`` in a SQLite file (WAL), blocking; the CLI uses it
  directly, the event loop through :meth:`KeyRing.call`;
- :class:`KeyRing`: what the data plane verifies against, in memory. It reloads every
  ``refresh`` (cheaply: a generation counter says whether anything changed), so keys made or
  revoked by another process are seen within that long, and writes last-used times in batches.

A flood of bad keys costs what good keys cost: one dict lookup and one HMAC each (an unknown id
gets a throwaway HMAC too), and at most one database read per ``refresh`` in all.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import sqlite3
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar

import trio

from .. import dbfile
from ..config import Auth, GatewayConfig
from . import AuthFailure, Identity

log = logging.getLogger("mcp_gateway.auth")

T = TypeVar("T")

KEY_PREFIX: Final = "mcpg_"
ID_LENGTH: Final = 12
SECRET_LENGTH: Final = 43  # len(secrets.token_urlsafe(32))
PEPPER_BYTES: Final = 32
MAX_ROUTES: Final = 64
MAX_GROUPS: Final = 64
MAX_EXPIRY: Final = 100 * 365 * 86400.0  # a key that expires later than this is an error, not "never"

_KEY = re.compile(rf"{KEY_PREFIX}([a-z2-7]{{{ID_LENGTH}}})_([A-Za-z0-9_-]{{{SECRET_LENGTH}}})")
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_GROUP = re.compile(r"[A-Za-z0-9_.@:-]{1,64}")
_ROUTE = re.compile(r"/[\x21-\x7e]{0,255}")  # printable ASCII, no spaces
NAME_RULE: Final = "1-64 characters of A-Z a-z 0-9 _ . @ -"

Status = Literal["active", "expired", "revoked"]

TABLE: Final = "api_keys"
STATE: Final = "api_keys_state"


class KeyStoreError(Exception):
    """The key database cannot be used (the message names the file and says why)."""


class KeyExists(KeyStoreError):
    """A key that is not revoked already has that name."""


class KeyNotFound(KeyStoreError):
    """No key (that is not revoked) has that name."""


class InvalidKeyRequest(KeyStoreError, ValueError):
    """A name, route, group or expiry that is not allowed; ``field`` names which."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


# -- the key's shape ---------------------------------------------------------------------------------

def new_key() -> tuple[str, str]:
    """A fresh (id, plain key)."""
    key_id = base64.b32encode(secrets.token_bytes(10)).decode().lower()[:ID_LENGTH]
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def parse_key(token: str) -> str | None:
    """The id of a token of our shape, or None (the secret is only checked against the hash)."""
    if len(token) != len(KEY_PREFIX) + ID_LENGTH + 1 + SECRET_LENGTH:
        return None
    found = _KEY.fullmatch(token)
    return found[1] if found else None


def check_name(name: object, what: str = "name") -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidKeyRequest(what, f"a key's name is {NAME_RULE}")
    return name


def check_routes(routes: Iterable[object] | None) -> tuple[str, ...] | None:
    """Route paths (``/team-a``; a trailing ``/`` dropped), in order, once each; None or empty: all routes."""
    if routes is None:
        return None
    out: list[str] = []
    for i, route in enumerate(routes):
        if not isinstance(route, str) or not _ROUTE.fullmatch(route):
            raise InvalidKeyRequest(f"routes[{i}]", "a route is a path that starts with / (printable, no spaces)")
        route = route.rstrip("/") or "/"
        if route not in out:
            out.append(route)
    if len(out) > MAX_ROUTES:
        raise InvalidKeyRequest("routes", f"at most {MAX_ROUTES} routes")
    return tuple(out) or None


def check_groups(groups: Iterable[object]) -> tuple[str, ...]:
    out: list[str] = []
    for i, group in enumerate(groups):
        if not isinstance(group, str) or not _GROUP.fullmatch(group):
            raise InvalidKeyRequest(f"groups[{i}]", "a group is 1-64 characters of A-Z a-z 0-9 _ . @ : -")
        if group not in out:
            out.append(group)
    if len(out) > MAX_GROUPS:
        raise InvalidKeyRequest("groups", f"at most {MAX_GROUPS} groups")
    return tuple(out)


def check_lifetime(seconds: float) -> float:
    """A key's lifetime from now, in seconds (> 0, at most 100 years)."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidKeyRequest("expires", "a key's lifetime must be more than 0 seconds")
    if seconds > MAX_EXPIRY:
        raise InvalidKeyRequest("expires", "at most 100 years (leave expires out for a key that never expires)")
    return seconds


def keys_db_path(config: GatewayConfig, config_file: str | None) -> str | None:
    """Where this configuration keeps its API keys; None when API keys are off.

    ``auth.api_keys.path`` when set (a relative path is relative to the working directory, as
    ``store.path`` is), else the store's database, else ``keys.db`` next to the config file.
    """
    settings = config.auth.keys if isinstance(config.auth, Auth) else None
    if settings is None:
        return None
    if settings.path:
        return settings.path
    if config.store is not None:
        return config.store.path
    return os.path.join(os.path.dirname(config_file) if config_file else "", "keys.db")


# -- the pepper --------------------------------------------------------------------------------------

def pepper_path(db: str) -> str:
    return f"{db}.secret"


def load_pepper(db: str, *, create: bool = True) -> bytes:
    """The server secret of database ``db``: read, or made (0600) when there is none yet.

    It is written to a private temporary file and then linked into place: a link fails when the
    name exists, so two processes starting at once cannot both make one, and nobody ever reads a
    half-written file.
    """
    path = pepper_path(db)
    try:
        return _read_pepper(path)
    except FileNotFoundError:
        if not create:
            raise KeyStoreError(f"{path}: the server secret of the API keys in {db} is missing: restore it (keys "
                                "cannot be verified without it)") from None
    temp = f"{path}.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(PEPPER_BYTES).hex().encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):  # another process made it first: theirs stands
            os.link(temp, path)
    except OSError as exc:
        raise KeyStoreError(f"{path}: cannot create the API keys' server secret: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)
    return _read_pepper(path)


def _read_pepper(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            text = f.read(1024)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise KeyStoreError(f"{path}: cannot read the API keys' server secret: {exc.strerror or exc}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s: the API keys' server secret is readable by others: chmod 600 it", path)
    try:
        pepper = bytes.fromhex(text.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        pepper = b""
    if len(pepper) != PEPPER_BYTES:
        raise KeyStoreError(f"{path}: not an API keys' server secret ({PEPPER_BYTES * 2} hex digits); without "
                            f"the original, the keys of this database cannot be verified")
    return pepper


# -- records -----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One key as listed: never its secret, never its hash."""

    id: str
    name: str
    routes: tuple[str, ...] | None
    groups: tuple[str, ...]
    created: float
    expires: float | None
    last_used: float | None
    revoked: float | None

    def status(self, now: float | None = None) -> Status:
        if self.revoked is not None:
            return "revoked"
        if self.expires is not None and self.expires <= (time.time() if now is None else now):
            return "expired"
        return "active"

    def as_json(self, now: float | None = None) -> dict[str, Any]:
        return {"name": self.name, "id": self.id, "routes": list(self.routes) if self.routes is not None else None,
                "groups": list(self.groups), "created": self.created, "expires": self.expires,
                "last_used": self.last_used, "revoked": self.revoked, "status": self.status(now)}


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just made: the plain ``key`` exists only here (shown once, then gone)."""

    key: str = field(repr=False)
    record: KeyRecord


@dataclass(frozen=True, slots=True)
class StoredKey:
    """What the ring needs of a key: its record and its hash."""

    record: KeyRecord
    digest: bytes = field(repr=False)


def _record(row: sqlite3.Row) -> KeyRecord:
    routes = json.loads(row["routes"]) if row["routes"] is not None else None
    return KeyRecord(id=row["id"], name=row["name"], routes=tuple(routes) if routes else None,
                     groups=tuple(json.loads(row["groups"] or "[]")), created=row["created"],
                     expires=row["expires"], last_used=row["last_used"], revoked=row["revoked"])


# -- the store ---------------------------------------------------------------------------------------

class KeyStore:
    """The API keys of one SQLite file (the table ``api_keys``; other tables are left alone).

    Blocking. One connection, used by one thread at a time, any thread.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            conn = dbfile.connect(path, timeout=5, autocommit=True)
        except sqlite3.Error as exc:
            raise KeyStoreError(f"{path}: cannot open the API keys' database: {exc}") from None
        conn.row_factory = sqlite3.Row
        self._db = conn
        try:
            with self._write():
                conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id TEXT PRIMARY KEY, name TEXT NOT NULL, "
                             "digest BLOB NOT NULL, routes TEXT, groups TEXT NOT NULL, created REAL NOT NULL, "
                             "expires REAL, last_used REAL, revoked REAL)")
                # One live key per name; revoked ones stay (a revoked key is told apart from a wrong one).
                conn.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {TABLE}_live_name ON {TABLE} (name) "
                             "WHERE revoked IS NULL")
                conn.execute(f"CREATE TABLE IF NOT EXISTS {STATE} (id INTEGER PRIMARY KEY CHECK (id = 1), "
                             "generation INTEGER NOT NULL, pepper_check TEXT)")
                conn.execute(f"INSERT OR IGNORE INTO {STATE} (id, generation) VALUES (1, 0)")
                check = conn.execute(f"SELECT pepper_check FROM {STATE} WHERE id = 1").fetchone()[0]
                # A database whose secret is lost cannot verify its keys: say so, never make a new one.
                self._pepper = load_pepper(path, create=check is None)
                mine = hmac.new(self._pepper, b"mcp-gateway api keys", hashlib.sha256).hexdigest()[:16]
                if check is None:
                    conn.execute(f"UPDATE {STATE} SET pepper_check = ? WHERE id = 1", [mine])
                elif not hmac.compare_digest(check, mine):
                    raise KeyStoreError(f"{pepper_path(path)} is not the server secret of {path}: its keys "
                                        "cannot be verified (restore the original file)")
        except sqlite3.Error as exc:
            conn.close()
            raise KeyStoreError(f"{path}: cannot use the API keys' database: {exc}") from None
        except KeyStoreError:
            conn.close()
            raise

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """A write transaction (BEGIN IMMEDIATE: two writers wait for each other, never deadlock)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise

    def _bump(self) -> None:
        self._db.execute(f"UPDATE {STATE} SET generation = generation + 1 WHERE id = 1")

    def digest(self, key: str) -> bytes:
        """What is stored of a key: HMAC-SHA256 with this database's pepper."""
        return hmac.new(self._pepper, key.encode(), hashlib.sha256).digest()

    def _guard(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except sqlite3.Error as exc:
            raise KeyStoreError(f"{self.path}: cannot {what}: {exc}") from None

    def create(self, name: str, *, routes: Iterable[str] | None = None, groups: Iterable[str] = (),
               expires: float | None = None) -> NewKey:
        """A new key (``expires``: Unix time, or None for never). KeyExists if the name is taken."""
        name = check_name(name)
        found_routes = check_routes(routes)
        found_groups = check_groups(groups)
        now = time.time()
        if expires is not None and (not math.isfinite(expires) or expires <= now):
            raise InvalidKeyRequest("expires", "must be in the future")

        def insert() -> NewKey:
            with self._write():
                if self._db.execute(f"SELECT 1 FROM {TABLE} WHERE name = ? AND revoked IS NULL", [name]).fetchone():
                    raise KeyExists(f"an API key named {name!r} exists (revoke it first to replace it)")
                for _ in range(8):  # 60 random bits: a clash is all but impossible, but cheap to handle
                    key_id, key = new_key()
                    try:
                        self._db.execute(
                            f"INSERT INTO {TABLE} (id, name, digest, routes, groups, created, expires) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)",
                            [key_id, name, self.digest(key),
                             json.dumps(list(found_routes)) if found_routes is not None else None,
                             json.dumps(list(found_groups)), now, expires])
                    except sqlite3.IntegrityError:
                        if self._db.execute(f"SELECT 1 FROM {TABLE} WHERE name = ? AND revoked IS NULL",
                                            [name]).fetchone():
                            raise KeyExists(f"an API key named {name!r} exists") from None
                        continue
                    self._bump()
                    return NewKey(key, KeyRecord(key_id, name, found_routes, found_groups, now, expires, None, None))
            raise KeyStoreError(f"{self.path}: could not pick a key id")

        return self._guard("create the key", insert)

    def list(self, include_revoked: bool = False) -> list[KeyRecord]:
        """Keys by creation time (oldest first)."""
        where = "" if include_revoked else "WHERE revoked IS NULL"
        return self._guard("list the keys", lambda: [
            _record(r) for r in self._db.execute(f"SELECT * FROM {TABLE} {where} ORDER BY created, id")])

    def get(self, name: str) -> KeyRecord | None:
        """The key (not revoked) of that name."""
        row = self._guard("read the key", lambda: self._db.execute(
            f"SELECT * FROM {TABLE} WHERE name = ? AND revoked IS NULL", [name]).fetchone())
        return _record(row) if row is not None else None

    def revoke(self, name: str) -> KeyRecord:
        """Revoke the key of that name (KeyNotFound if there is none that is not revoked)."""
        def update() -> KeyRecord:
            with self._write():
                row = self._db.execute(f"SELECT * FROM {TABLE} WHERE name = ? AND revoked IS NULL",
                                       [name]).fetchone()
                if row is None:
                    raise KeyNotFound(f"no API key named {name[:64]!r}")
                now = time.time()
                self._db.execute(f"UPDATE {TABLE} SET revoked = ? WHERE id = ?", [now, row["id"]])
                self._bump()
            record = _record(row)
            return KeyRecord(record.id, record.name, record.routes, record.groups, record.created, record.expires,
                             record.last_used, now)

        return self._guard("revoke the key", update)

    def generation(self) -> int:
        """A number that changes whenever a key is made or revoked."""
        row = self._guard("read the keys", lambda: self._db.execute(
            f"SELECT generation FROM {STATE} WHERE id = 1").fetchone())
        return int(row[0]) if row is not None else 0

    def load(self, since: int | None = None) -> tuple[int, builtins.list[StoredKey] | None]:
        """(generation, every key with its hash), in one read; the keys are None when the
        generation is still ``since`` (nothing changed)."""
        def read() -> tuple[int, builtins.list[StoredKey] | None]:
            self._db.execute("BEGIN")
            try:
                row = self._db.execute(f"SELECT generation FROM {STATE} WHERE id = 1").fetchone()
                generation = int(row[0]) if row is not None else 0
                if generation == since:
                    return generation, None
                rows = self._db.execute(f"SELECT * FROM {TABLE}").fetchall()
            finally:
                self._db.execute("COMMIT")
            return generation, [StoredKey(_record(r), bytes(r["digest"])) for r in rows]

        return self._guard("read the keys", read)

    def touch(self, last_used: Mapping[str, float]) -> None:
        """Record when keys were last used (``id -> Unix time``; an earlier time never wins)."""
        if not last_used:
            return

        def update() -> None:
            with self._write():
                self._db.executemany(
                    f"UPDATE {TABLE} SET last_used = max(coalesce(last_used, 0), ?) WHERE id = ?",
                    [(when, key_id) for key_id, when in last_used.items()])

        self._guard("record when keys were used", update)


# -- the ring ----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class KeyRingStatistics:
    keys: int  # keys that are neither revoked nor expired
    verified: int
    refused: dict[str, int]  # AuthFailure.reason -> count
    reloads: int  # reads of the database (most find nothing changed)
    loads: int  # reads that found a change and loaded every key
    load_errors: int
    pending_last_used: int  # last-used times not yet written


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes = field(repr=False)
    identity: Identity
    revoked: bool
    expires: float | None


_MALFORMED = "malformed API key"
_UNKNOWN = "invalid API key"  # a wrong id and a wrong secret look the same to the caller
_FLUSH_DEADLINE = 2.0
_PROVEN_MAX = 4096  # verified keys remembered (each skips its HMAC while its entry is unchanged)


class KeyRing:
    """The keys the data plane verifies against (in memory; see the module docstring).

    ``run`` loads them, then reloads every ``refresh`` seconds and writes last-used times;
    ``verify`` works without ``run`` too (it loads on first use).
    """

    def __init__(self, store_or_path: KeyStore | str, *, refresh: float = 1.0,
                 wall_clock: Callable[[], float] = time.time) -> None:
        if isinstance(store_or_path, KeyStore):
            self._store: KeyStore | None = store_or_path
            self.path = store_or_path.path
            self._owns_store = False
        else:
            self._store, self.path, self._owns_store = None, store_or_path, True
        self.refresh = refresh
        self._wall = wall_clock
        self._limiter = trio.CapacityLimiter(1)  # one connection: one thread at a time
        self._entries: dict[str, _Entry] = {}
        self._generation: int | None = None
        self._checked_at: float | None = None  # trio time of the last read of the database
        self._reloading: trio.Event | None = None
        self._used: dict[str, float] = {}
        self._dummy = b"\0" * 32
        self._proven: dict[str, tuple[str, _Entry]] = {}  # key -> (id, entry) its HMAC matched
        self._digest: Callable[[str], bytes] | None = None  # the store's (its pepper), once it is open
        self._verified = 0
        self._refused: Counter[str] = Counter()
        self._reloads = self._loads = self._load_errors = 0
        self._last_error: str | None = None

    @property
    def store(self) -> KeyStore:
        """The store (opened by the first load: ``run`` or :meth:`refresh_now`)."""
        if self._store is None:
            raise KeyStoreError(f"{self.path}: the API keys' database is not open yet")
        return self._store

    async def call(self, fn: Callable[[KeyStore], T]) -> T:
        """``fn(store)`` in the store's thread (the admin API's changes go through here)."""
        def work() -> T:
            if self._store is None:
                self._store = KeyStore(self.path)
            return fn(self._store)

        return await trio.to_thread.run_sync(work, limiter=self._limiter)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the keys (KeyStoreError if the database cannot be used), then keep them fresh."""
        try:
            await self._reload(force=True, quiet=False)
            task_status.started()
            while True:
                assert self._checked_at is not None
                due = self._checked_at + self.refresh
                if trio.current_time() < due:
                    # A reload on a miss may have happened meanwhile: look again when woken.
                    await trio.sleep_until(due)
                    continue
                await self._reload(force=False, quiet=True)
                await self._flush()
        finally:
            with trio.CancelScope(deadline=trio.current_time() + _FLUSH_DEADLINE, shield=True):
                await self._flush()
                if self._owns_store and self._store is not None:
                    store, self._store = self._store, None
                    await trio.to_thread.run_sync(store.close, limiter=self._limiter)

    async def refresh_now(self) -> None:
        """Read the database now (after a change through the admin API: it takes effect at once)."""
        await self._reload(force=True, quiet=False)

    async def _reload(self, *, force: bool, quiet: bool) -> None:
        """One read of the database, shared: callers that come while one is under way wait for it
        (``force``: and then read again, so a change made before the call is surely seen)."""
        while self._reloading is not None:
            await self._reloading.wait()
            if not force:
                return
        event = self._reloading = trio.Event()
        try:
            try:
                generation, stored = await self.call(lambda s: s.load(self._generation))
            except KeyStoreError as exc:
                self._load_errors += 1
                if not quiet:
                    raise
                if str(exc) != self._last_error:  # once per kind of failure, not every refresh
                    log.warning("API keys: %s (the keys loaded before stay in use)", exc)
                    self._last_error = str(exc)
                return
            finally:
                self._checked_at = trio.current_time()
                self._reloads += 1
            if self._last_error is not None:
                log.warning("API keys: %s can be read again", self.path)
                self._last_error = None
            if self._digest is None and self._store is not None:
                self._digest = self._store.digest
            if stored is not None:
                self._entries = {k.record.id: self._entry(k) for k in stored}
                self._generation = generation
                self._loads += 1
        finally:
            self._reloading = None
            event.set()

    @staticmethod
    def _entry(key: StoredKey) -> _Entry:
        r = key.record
        identity = Identity(r.name, "key", groups=frozenset(r.groups), routes=r.routes, expires=r.expires)
        return _Entry(key.digest, identity, r.revoked is not None, r.expires)

    def _refuse(self, reason: str, message: str) -> AuthFailure:
        self._refused[reason] += 1
        return AuthFailure(reason, message)

    def remembered(self, token: str) -> Identity | None:
        """:meth:`verify`'s answer without awaiting anything, for a key that matched before: None
        when it did not (verify() then decides). Raises AuthFailure as verify() does."""
        proven = self._proven.get(token)
        if proven is not None and self._entries.get(proven[0]) is proven[1]:
            # This exact key matched this entry's hash before, and the entry is still the one loaded
            # (a reload that changed any key made new entries): no HMAC again. Revocation and expiry
            # are checked as for any key.
            return self._accept(proven[0], proven[1])
        return None

    async def verify(self, token: str) -> Identity:
        """The identity of an API key, or AuthFailure (malformed, unknown_key, revoked, expired)."""
        known = self.remembered(token)
        if known is not None:
            return known
        key_id = parse_key(token)
        if key_id is None:
            raise self._refuse("malformed", _MALFORMED)
        if self._generation is None:  # never loaded (no run): load now
            try:
                await self._reload(force=False, quiet=False)
            except KeyStoreError:
                raise self._refuse("unavailable", "API keys cannot be checked right now") from None
        entry = self._entries.get(key_id)
        if entry is None and (self._checked_at is None or trio.current_time() - self._checked_at >= self.refresh):
            # Perhaps made since the last read (by the CLI): one shared read, at most once per refresh.
            await self._reload(force=False, quiet=True)
            entry = self._entries.get(key_id)
        digest = self._digest
        if digest is None:  # (a load succeeded, so this cannot happen)
            raise self._refuse("unavailable", "API keys cannot be checked right now")
        if entry is None:
            # The same work as for a known id, so that timing tells nothing and costs the same.
            hmac.compare_digest(digest(token), self._dummy)
            raise self._refuse("unknown_key", _UNKNOWN)
        if not hmac.compare_digest(digest(token), entry.digest):
            raise self._refuse("unknown_key", _UNKNOWN)
        if len(self._proven) >= _PROVEN_MAX:
            self._proven.clear()  # many keys in use: start over rather than track recency per call
        self._proven[token] = (key_id, entry)
        return self._accept(key_id, entry)

    def _accept(self, key_id: str, entry: _Entry) -> Identity:
        # Only the holder of the real key learns that it was revoked or has expired.
        if entry.revoked:
            raise self._refuse("revoked", "API key revoked")
        now = self._wall()
        if entry.expires is not None and entry.expires <= now:
            raise self._refuse("expired", "API key expired")
        self._used[key_id] = now
        self._verified += 1
        return entry.identity

    async def _flush(self) -> None:
        """Write the last-used times gathered since the last flush (kept for the next on failure)."""
        if not self._used or self._store is None:
            return
        batch, self._used = self._used, {}
        try:
            await self.call(lambda s: s.touch(batch))
        except KeyStoreError as exc:
            log.warning("API keys: %s", exc)
            for key_id, when in batch.items():
                self._used[key_id] = max(when, self._used.get(key_id, 0.0))

    def statistics(self) -> KeyRingStatistics:
        now = self._wall()
        live = sum(1 for e in self._entries.values()
                   if not e.revoked and (e.expires is None or e.expires > now))
        return KeyRingStatistics(keys=live, verified=self._verified, refused=dict(self._refused),
                                 reloads=self._reloads, loads=self._loads, load_errors=self._load_errors,
                                 pending_last_used=len(self._used))
