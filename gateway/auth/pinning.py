"""Tool-definition pinning: a tool whose definition changed after it was first served does not
reach a client silently (a "rug pull": an upstream that rewrites a description or a schema after
users approved the tool).

Every tool definition the gateway serves is pinned by its digest (:func:`tool_digest`: SHA-256 of
the definition's canonical JSON, so key order and whitespace are not changes). When a server lists
a tool whose digest differs from its pin, the server's ``on_tool_change`` decides:

- ``block``: the tool is withheld (neither the new definition nor the pinned old one is served:
  the server is no longer serving what was approved, and a call would run the new code) and the
  change waits for an admin;
- ``warn``: the new definition is served, logged at WARNING with a short summary, and the change
  waits for an admin to acknowledge it;
- ``allow``: the new definition is served and becomes the pin (logged at INFO).

A waiting change is approved by its exact digest (:meth:`Pins.approve`), so an approval never
covers a later change the admin did not see. A tool seen for the first time is pinned and served
(trust on first use); a tool that disappears upstream keeps its pin; a tool that goes back to its
pinned definition drops its waiting change (the warning and the count stay).

:class:`Pins` is synchronous and keeps everything in memory (the catalog path calls it); its
:meth:`Pins.run` task writes changes through to a :class:`PinStore` (SQLite, its own tables) in a
worker thread. Definitions are untrusted text: names and keys are logged through
:func:`gateway.logsafe.clean`.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, get_args

import msgspec
import sqlite_utils
import trio
from msgspec import Raw

from .. import dbfile
from ..config.access import OnToolChange
from ..logsafe import clean
from ..protocol.catalog import Entry, entry_str
from ..protocol.jsonrpc import DECODE_FAILURES

log = logging.getLogger("mcp_gateway.pinning")

PINS: Final = "tool_pins"
CHANGES: Final = "tool_changes"
MODES: Final[tuple[OnToolChange, ...]] = get_args(OnToolChange)
MAX_DIFF: Final = 64 * 1024  # characters of a diff served by the admin API (a huge description stays readable)
_REMEMBERED: Final = 8  # digests per tool already reported: an upstream flipping between two is logged once each
_FINAL_FLUSH: Final = 10.0  # seconds a cancelled writer still gets to write what changed
_RETRY: Final = 1.0  # seconds before a refused write is tried again

_any_decoder: Final = msgspec.json.Decoder()
_sorted_encoder: Final = msgspec.json.Encoder(order="sorted")

Key = tuple[str, str]  # (server, tool as the server names it)
_Memo = tuple[tuple[tuple[str, Raw], ...], bytes, str]


def canonical(entry: Entry) -> bytes:
    """A tool definition as canonical JSON: every member the client sees, keys sorted at every
    depth, no whitespace."""
    members: dict[str, Any] = {}
    for key, value in entry.items():
        try:
            members[key] = _any_decoder.decode(value)
        except DECODE_FAILURES:  # (not JSON: cannot come from a decoded message) its bytes as they are
            members[key] = Raw(bytes(value))
    return _sorted_encoder.encode(members)


def tool_digest(entry: Entry) -> str:
    """SHA-256 (hex) of :func:`canonical`: the same for the same definition however it is written."""
    return hashlib.sha256(canonical(entry)).hexdigest()


def _pretty(definition: str) -> list[str]:
    if not definition:
        return []
    text = msgspec.json.format(definition.encode(), indent=2).decode()
    return text.splitlines(keepends=True)


def unified_diff(server: str, tool: str, old: str, new: str, old_digest: str, new_digest: str) -> str:
    """The two canonical definitions pretty-printed (keys sorted), as a unified diff (capped)."""
    lines = difflib.unified_diff(_pretty(old), _pretty(new), f"{server}/{tool} pinned {old_digest[:12]}",
                                 f"{server}/{tool} new {new_digest[:12]}", n=3)
    out = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    if len(out) > MAX_DIFF:
        out = out[:MAX_DIFF] + f"\n… (diff cut at {MAX_DIFF} characters)\n"
    return out


def summary(old: str, new: str) -> str:
    """Which members changed (``description changed, inputSchema changed``), for one log line."""
    try:
        before, after = _any_decoder.decode(old), _any_decoder.decode(new)
    except DECODE_FAILURES:
        return "definition changed"
    if not isinstance(before, dict) or not isinstance(after, dict):
        return "definition changed"
    parts = [f"{k} {'added' if k not in before else 'removed' if k not in after else 'changed'}"
             for k in sorted(before.keys() | after.keys()) if before.get(k, ...) != after.get(k, ...)]
    shown = ", ".join(clean(p, 80) for p in parts[:6])
    return shown + (f" and {len(parts) - 6} more" if len(parts) > 6 else "") if parts else "definition changed"


# -- records ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Pin:
    """The approved definition of one tool of one server."""

    server: str
    tool: str
    digest: str
    definition: str  # canonical JSON
    first_seen: float  # Unix seconds this definition was first seen
    approved_at: float | None = None  # None: pinned on first use
    approved_by: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"server": self.server, "tool": self.tool, "digest": self.digest, "first_seen": self.first_seen,
                "approved_at": self.approved_at, "approved_by": self.approved_by}


@dataclass(frozen=True, slots=True)
class PendingChange:
    """A definition that differs from the pin, waiting for an admin (one per tool: the latest)."""

    server: str
    tool: str
    digest: str
    definition: str  # canonical JSON
    first_seen: float
    mode: OnToolChange  # what the server's on_tool_change did with it when last seen


@dataclass(frozen=True, slots=True)
class ToolChange:
    """A change as the admin sees it: the pinned and the new definition, and their diff."""

    server: str
    tool: str
    old_digest: str
    old_definition: str  # canonical JSON
    new_digest: str
    new_definition: str
    diff: str
    first_seen: float  # when the new definition was first seen
    mode: OnToolChange  # block: withheld from clients; warn: served
    approved_at: float | None = None
    approved_by: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"server": self.server, "tool": self.tool, "mode": self.mode, "first_seen": self.first_seen,
                "old": {"digest": self.old_digest, "definition": _any_decoder.decode(self.old_definition)},
                "new": {"digest": self.new_digest, "definition": _any_decoder.decode(self.new_definition)},
                "diff": self.diff, "approved_at": self.approved_at, "approved_by": self.approved_by}


@dataclass(frozen=True, slots=True)
class PinStatistics:
    pinned: int  # tools with a pin
    pending: int  # changes waiting for an admin
    blocked: int  # tools withheld from clients now (on_tool_change: block)
    changes: int  # changed definitions detected since start (each new digest once)
    approvals: int  # changes approved since start
    writes: int  # batches written to the store
    write_errors: int  # batches the store refused (kept in memory, tried again)


class PinError(Exception):
    """An approval refused; ``status`` is the admin API's (404 unknown, 409 stale)."""

    status = 400
    code = "invalid_request"


class UnknownChange(PinError):
    status = 404
    code = "not_found"


class StaleChange(PinError):
    status = 409
    code = "stale_digest"


class PinStoreError(Exception):
    """The pin database cannot be opened (the message names the file)."""


# -- the store -------------------------------------------------------------------------------------

class PinStore:
    """Pins and waiting changes in tables ``tool_pins`` and ``tool_changes`` of one SQLite file
    (which may hold other tables: they are never touched). ``path=None``: nothing is kept (every
    start trusts what it sees first).

    Blocking: open it before the event loop or in a thread; :class:`Pins` writes from its thread.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.pins: list[Pin] = []  # as loaded at open
        self.changes: list[PendingChange] = []
        self._db: sqlite_utils.Database | None = None
        if path is None:
            return
        try:
            conn = dbfile.connect(path)  # FULL: rare writes, and an approval must last
        except sqlite3.Error as exc:
            raise PinStoreError(f"{path}: cannot open the tool pins: {exc}") from None
        try:
            db = sqlite_utils.Database(conn, execute_plugins=False)
            with db.atomic():
                db.execute(f"CREATE TABLE IF NOT EXISTS {PINS} (server TEXT NOT NULL, tool TEXT NOT NULL, "
                           "digest TEXT NOT NULL, definition TEXT NOT NULL, first_seen REAL NOT NULL, "
                           "approved_at REAL, approved_by TEXT, PRIMARY KEY (server, tool))")
                db.execute(f"CREATE TABLE IF NOT EXISTS {CHANGES} (server TEXT NOT NULL, tool TEXT NOT NULL, "
                           "digest TEXT NOT NULL, definition TEXT NOT NULL, first_seen REAL NOT NULL, "
                           "mode TEXT NOT NULL, PRIMARY KEY (server, tool))")
            self.pins = [Pin(str(r["server"]), str(r["tool"]), str(r["digest"]), str(r["definition"]),
                             float(r["first_seen"]), r["approved_at"], r["approved_by"])
                         for r in db.query(f"SELECT * FROM {PINS}")]
            self.changes = [PendingChange(str(r["server"]), str(r["tool"]), str(r["digest"]), str(r["definition"]),
                                          float(r["first_seen"]), _mode(r["mode"]))
                            for r in db.query(f"SELECT * FROM {CHANGES}")]
        except (sqlite3.Error, TypeError, ValueError) as exc:
            conn.close()
            raise PinStoreError(f"{path}: cannot use the tool pins: {exc}") from None
        self._db = db

    @property
    def persistent(self) -> bool:
        return self._db is not None

    def write(self, pins: Sequence[Pin], changes: Sequence[PendingChange], cleared: Sequence[Key]) -> None:
        """Upsert pins and waiting changes, delete the cleared changes: one transaction."""
        db = self._db
        if db is None:
            return
        with db.atomic():
            db.conn.executemany(f"INSERT OR REPLACE INTO {PINS} VALUES (?, ?, ?, ?, ?, ?, ?)",
                                [(p.server, p.tool, p.digest, p.definition, p.first_seen, p.approved_at,
                                  p.approved_by) for p in pins])
            db.conn.executemany(f"INSERT OR REPLACE INTO {CHANGES} VALUES (?, ?, ?, ?, ?, ?)",
                                [(c.server, c.tool, c.digest, c.definition, c.first_seen, c.mode)
                                 for c in changes])
            db.conn.executemany(f"DELETE FROM {CHANGES} WHERE server = ? AND tool = ?", list(cleared))

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()


def _mode(value: Any) -> OnToolChange:
    for mode in MODES:
        if value == mode:
            return mode
    return "block"  # a row this version cannot read: the safe reading


# -- the core --------------------------------------------------------------------------------------

@dataclass(slots=True)
class _Counters:
    changes: int = 0
    approvals: int = 0
    writes: int = 0
    write_errors: int = 0
    reported: dict[Key, deque[str]] = field(default_factory=dict)


class Pins:
    """The pins of one gateway, in memory; :meth:`run` writes them through to the store."""

    def __init__(self, store: PinStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock
        self._pins: dict[Key, Pin] = {(p.server, p.tool): p for p in store.pins}
        self._pending: dict[Key, PendingChange] = {(c.server, c.tool): c for c in store.changes
                                                   if (c.server, c.tool) in self._pins}
        self._withheld: dict[str, frozenset[str]] = {}  # per server, as of its last screen
        self._memo: dict[str, dict[int, _Memo]] = {}  # per server: id(entry) -> (members, canonical, digest)
        self._dirty: set[Key] = set()
        self._counters = _Counters()
        self._wake = trio.Event()
        self._lock = trio.Lock()  # one flush at a time, in the order changes were taken
        self._limiter = trio.CapacityLimiter(1)
        #: Called with a server's name after one of its changes was approved (rebuild its routes).
        self.on_change: Callable[[str], None] | None = None

    @property
    def persistent(self) -> bool:
        """False: pins last until the gateway stops (every start trusts what it sees first)."""
        return self.store.persistent

    def statistics(self) -> PinStatistics:
        c = self._counters
        return PinStatistics(pinned=len(self._pins), pending=len(self._pending),
                             blocked=sum(len(w) for w in self._withheld.values()), changes=c.changes,
                             approvals=c.approvals, writes=c.writes, write_errors=c.write_errors)

    # -- screening (the catalog path: synchronous, idempotent) ---------------------------------------
    def screen(self, server: str, mode: OnToolChange, tools: list[Entry]) -> list[Entry]:
        """The tools of ``server`` (its own names, before the route renames them) clients may see.

        The same input gives the same output, and a change is logged and counted once per new
        digest, however often a catalog is rebuilt. A nameless entry passes (the aggregator refuses
        it); of two entries with one name only the first is screened and kept, as the aggregator does.
        """
        out: list[Entry] = []
        withheld: set[str] = set()
        names: set[str] = set()
        memo = self._memo.get(server, {})
        fresh: dict[int, _Memo] = {}
        for entry in tools:
            name = entry_str(entry, "name")
            if name is None:
                out.append(entry)
                continue
            if name in names:
                continue
            names.add(name)
            # Every route rebuilds from the same entry objects until the server lists again: their
            # canonical form is computed once. The memo keeps the members it saw and compares them
            # (Raw compares its bytes), so an entry changed in place is never taken for its old self.
            members = tuple(entry.items())
            known = memo.get(id(entry))
            if known is None or known[0] != members:
                definition = canonical(entry)
                known = (members, definition, hashlib.sha256(definition).hexdigest())
            fresh[id(entry)] = known
            if self._admit(server, name, mode, known[1], known[2]):
                out.append(entry)
            else:
                withheld.add(name)
        self._memo[server] = fresh
        if withheld or server in self._withheld:
            self._withheld[server] = frozenset(withheld)
        return tools if len(out) == len(tools) else out  # (only ever drops: the same list when nothing went)

    def _admit(self, server: str, name: str, mode: OnToolChange, definition: bytes, digest: str) -> bool:
        key = (server, name)
        pin = self._pins.get(key)
        if pin is None:  # first use: trusted, pinned
            self._pins[key] = Pin(server, name, digest, definition.decode(), self._clock())
            self._touch(key)
            return True
        if pin.digest == digest:
            if key in self._pending:  # back to what was approved: nothing left to approve
                del self._pending[key]
                self._touch(key)
                log.info("server %s: tool %s is back to its pinned definition %s", clean(server, 100),
                         clean(name, 100), digest[:12], extra={"server": server})
            return True
        text = definition.decode()
        if mode == "allow":
            if self._first_report(key, digest):
                log.info("server %s: tool %s changed (%s); pinned the new definition %s (on_tool_change: allow)",
                         clean(server, 100), clean(name, 100), summary(pin.definition, text), digest[:12],
                         extra={"server": server})
            self._pins[key] = Pin(server, name, digest, text, self._clock(), self._clock(), "on_tool_change: allow")
            self._pending.pop(key, None)
            self._counters.reported.pop(key, None)
            self._touch(key)
            return True
        pending = self._pending.get(key)
        if pending is None or pending.digest != digest:
            self._pending[key] = PendingChange(server, name, digest, text, self._clock(), mode)
            self._touch(key)
            if self._first_report(key, digest):
                what = ("withheld from clients until an admin approves it" if mode == "block"
                        else "served (on_tool_change: warn) until an admin acknowledges it")
                log.warning("server %s: tool %s changed since it was pinned (%s): %s -> %s; %s "
                            "(POST /tools/changes/%s/%s/approve)", clean(server, 100), clean(name, 100),
                            summary(pin.definition, text), pin.digest[:12], digest[:12], what,
                            clean(server, 100), clean(name, 100), extra={"server": server})
        elif pending.mode != mode:  # the server's on_tool_change was changed by a reload
            self._pending[key] = replace(pending, mode=mode)
            self._touch(key)
        return mode == "warn"

    def _first_report(self, key: Key, digest: str) -> bool:
        seen = self._counters.reported.setdefault(key, deque(maxlen=_REMEMBERED))
        if digest in seen:
            return False
        seen.append(digest)
        self._counters.changes += 1
        return True

    def _touch(self, key: Key) -> None:
        self._dirty.add(key)
        self._wake.set()

    # -- the admin's side -----------------------------------------------------------------------------
    def pinned(self) -> list[Pin]:
        return [self._pins[k] for k in sorted(self._pins)]

    def pending(self) -> list[ToolChange]:
        return [self._change(c) for _, c in sorted(self._pending.items())]

    def _change(self, change: PendingChange, approved_at: float | None = None,
                approved_by: str | None = None) -> ToolChange:
        pin = self._pins[(change.server, change.tool)]
        return ToolChange(change.server, change.tool, pin.digest, pin.definition, change.digest, change.definition,
                          unified_diff(change.server, change.tool, pin.definition, change.definition, pin.digest,
                                       change.digest),
                          change.first_seen, change.mode, approved_at, approved_by)

    def approve(self, server: str, tool: str, digest: str, who: str) -> ToolChange:
        """Make the waiting change with exactly this ``digest`` the pin. UnknownChange when the tool
        has no waiting change, StaleChange when its waiting change is another digest (it changed
        again since the admin looked)."""
        key = (server, tool)
        change = self._pending.get(key)
        if change is None:
            raise UnknownChange(f"no change of tool {tool!r} of server {server!r} is waiting for approval")
        if change.digest != digest:
            raise StaleChange(f"the waiting change of tool {tool!r} of server {server!r} is digest "
                              f"{change.digest}, not {clean(digest, 80)}: it changed again, review it first")
        now = self._clock()
        approved = self._change(change, now, who)
        self._pins[key] = Pin(server, tool, digest, change.definition, change.first_seen, now, who)
        del self._pending[key]
        self._counters.reported.pop(key, None)
        self._counters.approvals += 1
        withheld = self._withheld.get(server)
        if withheld is not None and tool in withheld:
            self._withheld[server] = withheld - {tool}
        self._touch(key)
        log.info("server %s: tool %s: definition %s approved by %s", clean(server, 100), clean(tool, 100),
                    digest[:12], clean(who, 100), extra={"server": server})
        if self.on_change is not None:
            self.on_change(server)
        return approved

    # -- writing through --------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write what changes to the store until cancelled; then what is left (shielded, bounded)."""
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                if not await self.flush():
                    await trio.sleep(_RETRY)
                    self._wake.set()
        finally:
            with trio.move_on_after(_FINAL_FLUSH, shield=True):
                await self.flush()

    async def flush(self) -> bool:
        """Write every change made so far (in a worker thread); False if the store refused it (the
        changes stay in memory and are written with the next flush)."""
        async with self._lock:
            keys, self._dirty = self._dirty, set()
            if not keys or not self.store.persistent:
                return True
            pins = [self._pins[k] for k in keys if k in self._pins]
            changes = [self._pending[k] for k in keys if k in self._pending]
            cleared = [k for k in keys if k not in self._pending]
            try:
                await trio.to_thread.run_sync(self.store.write, pins, changes, cleared, limiter=self._limiter)
            except sqlite3.Error as exc:
                self._dirty |= keys
                self._counters.write_errors += 1
                log.error("tool pins: %d change(s) not written yet, the database refused them: %s", len(keys), exc)
                return False
            self._counters.writes += 1
            return True
