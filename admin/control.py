"""The control plane of one gateway: config store, audit log and admin API, and the one way a
configuration changes.

Every change, whichever way it arrives (the admin API, a roll back, the config file edited or
SIGHUP while a store is configured), goes through :meth:`ControlPlane.change`, one at a time:

1. ``parse_config`` on the whole new document: the rules of the config file, the errors with
   their key paths (nothing else changes when it fails);
2. ``gateway.apply``: the running gateway takes the difference, or refuses it whole;
3. the store: a new version (who, when, what), made current in the same transaction. Should the
   store fail after the gateway took the change, the previous configuration is applied again, so
   the store and the running gateway never disagree.

Every admin change, refused ones included, is an ``admin`` row of the audit log (written at once,
never dropped).
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from gateway.config import ConfigError, load_document, parse_config
from gateway.dispatch import CallRecord

from .audit import AuditLog
from .documents import document_of
from .store import AsyncStore, StoreError, Version, digest

if TYPE_CHECKING:
    from gateway.app import Gateway

    from .server import AdminServer

log = logging.getLogger("mcp_gateway.admin")


class ChangeError(Exception):
    """A change refused: ``status`` and ``code`` for the API, ``path`` the config key when known."""

    def __init__(self, status: int, code: str, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.path = status, code, message, path


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks for a change, for the version (who) and the audit log."""

    who: str
    method: str  # e.g. "PUT /servers/time"
    peer: str | None = None
    body: bytes | None = None
    server: str | None = None


@dataclass(frozen=True, slots=True)
class ChangeResult:
    version: Version | None  # None: the document was the current one (nothing to do)
    summary: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"version": self.version.id if self.version else None, "changed": self.version is not None,
                "applied": self.summary or {"added": [], "removed": [], "changed": [], "routes": False}}


class ControlPlane:
    """Owns the store, the audit log and the admin server of one gateway (``run`` starts them)."""

    def __init__(self, gateway: Gateway) -> None:
        cfg = gateway.config
        self.gateway = gateway
        self.store = AsyncStore(cfg.store.path) if cfg.store is not None else None
        audit_db = cfg.audit.path or (cfg.store.path if cfg.store is not None else None)
        self.audit: AuditLog | None = None
        if cfg.audit.enabled is not False and audit_db is not None:
            self.audit = AuditLog(audit_db, queue=cfg.audit.queue, retention=cfg.audit.retention,
                                  max_rows=cfg.audit.max_rows, store_arguments=self._audit_arguments,
                                  server_of=self._server_of)
        self.server: AdminServer | None = None
        if cfg.admin.enabled:
            from .server import AdminServer

            self.server = AdminServer(self, cfg.admin)
        self.config_file: str | None = None  # set by `mcp-gateway run`: what a reload reads
        self.document: dict[str, Any] | None = None  # the current version's document (with a store)
        self.version: int | None = None
        self.started = time.time()
        self._lock = trio.Lock()

    def _audit_arguments(self, server: str | None) -> bool:
        found = self.gateway.config.servers.get(server) if server is not None else None
        return bool(found is not None and found.audit_arguments)

    def _server_of(self, record: CallRecord) -> str | None:
        """The server a prompts/get or resources/read went to (the dispatcher names tools only)."""
        route = self.gateway.routes.get(record.route)
        if route is None or record.name is None:
            return None
        if record.method == "prompts/get":
            found = route.catalog.prompt_index.get(record.name)
            return found[0] if found else None
        if record.method == "resources/read":
            server: str | None = route.catalog.server_for_uri(record.name)
            return server
        return None

    def bind(self) -> None:
        """Before the event loop (``mcp-gateway run``): check the audit database and the admin token
        source, and bind the admin listener, so that each problem is one ConfigRefused naming its key."""
        from gateway.app import ConfigRefused

        from .audit import AuditDatabase

        if self.audit is not None:
            try:
                AuditDatabase(self.audit.path).close()
            except sqlite3.Error as exc:
                key = "audit.path" if self.gateway.config.audit.path else "store.path"
                raise ConfigRefused(f"{key}: cannot open the audit log {self.audit.path}: {exc}") from None
        if self.server is not None:
            self.server.bind()

    async def run(self, *, serve_api: bool = True, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Open the store (and align it with the running config), start the audit writer and the
        admin API, then serve until cancelled; ``aclose`` (a gateway shutdown hook) ends them cleanly."""
        try:
            async with trio.open_nursery() as nursery:
                if self.store is not None:
                    await self.store.open()
                    await self._align_store()
                if self.audit is not None:
                    await nursery.start(self.audit.run)
                    self.gateway.dispatcher.observers.append(self.audit.observe)
                if self.server is not None and serve_api:
                    await nursery.start(self.server.run)
                self.gateway.shutdown_hooks.append(self.aclose)
                task_status.started()
        finally:
            if self.store is not None:
                await self.store.aclose()

    async def _align_store(self) -> None:
        """The store's current version must be what runs: else the running config becomes one."""
        assert self.store is not None
        current = await self.store.current()
        running = self.gateway.config
        if current is not None:
            try:
                same = parse_config(current.document) == running
            except ConfigError:
                same = False
            if same:
                self.document, self.version = current.document, current.id
                return
        document = document_of(running)
        version = await self.store.commit(document, who="gateway", what="the configuration it started with",
                                          source="startup")
        log.info("config store: version %d is the running configuration", version.id)
        self.document, self.version = version.document, version.id

    async def aclose(self) -> None:
        """Graceful end (after the data plane drained): stop the admin API, then flush the audit log."""
        if self.server is not None:
            await self.server.stop()
        if self.audit is not None:
            await self.audit.aclose()

    # -- changes -----------------------------------------------------------------------------------
    async def change(self, document: dict[str, Any], *, caller: Caller, what: str, source: str) -> ChangeResult:
        """Validate, apply and store a new document (see the module docstring); ChangeError if refused."""
        started = trio.current_time()
        async with self._lock:
            try:
                result = await self._change(document, caller=caller, what=what, source=source)
            except ChangeError as exc:
                where = f"{exc.path}: " if exc.path else ""
                await self._audit(caller, "error", exc.status, None, f"{exc.code}: {where}{exc.message}", started)
                raise
            await self._audit(caller, "ok", None, result.version.id if result.version else None,
                              what if result.version else f"{what} (unchanged)", started)
            return result

    async def _change(self, document: dict[str, Any], *, caller: Caller, what: str, source: str) -> ChangeResult:
        from gateway.app import ConfigRefused

        if self.store is None:
            raise ChangeError(409, "no_store", "changes through the admin API need a config store: set store.path "
                                               "in the config file")
        try:
            config = parse_config(document)
        except ConfigError as exc:
            raise ChangeError(422, "invalid_config", exc.message, exc.path or None) from None
        if self.document is not None and digest(document) == digest(self.document):
            return ChangeResult(None)
        try:
            summary = await self.gateway.apply(config)
        except ConfigRefused as exc:
            raise ChangeError(409, "apply_refused", str(exc)) from None
        try:
            version = await self.store.commit(document, who=caller.who, what=what, source=source)
        except (StoreError, sqlite3.Error) as exc:
            log.error("config store: the change could not be stored (%s); applying the previous configuration "
                      "again", exc)
            await self._restore()
            raise ChangeError(503, "store_unavailable", f"the config store refused the change: {exc}") from None
        self.document, self.version = version.document, version.id
        return ChangeResult(version, summary)

    async def _restore(self) -> None:
        from gateway.app import ConfigRefused

        if self.document is None:
            return
        try:
            await self.gateway.apply(parse_config(self.document))
        except (ConfigRefused, ConfigError) as exc:  # the gateway keeps the new one: say so loudly
            log.error("config store: the previous configuration could not be applied again: %s", exc)

    async def rollback(self, version: int, *, caller: Caller) -> ChangeResult:
        assert self.store is not None
        found = await self.store.get(version)
        if found is None:
            await self._audit(caller, "error", 404, None, f"not_found: no version {version}", trio.current_time())
            raise ChangeError(404, "not_found", f"no version {version}")
        return await self.change(found.document, caller=caller, what=f"roll back to version {version}",
                                 source=f"rollback:{version}")

    async def reload(self, *, caller: Caller, why: str) -> ChangeResult:
        """Read the config file again (``mcp-gateway run``'s); without one, apply the current version.

        With a store, a changed file is a change (a new version); else the gateway applies it as is."""
        started = trio.current_time()
        if self.store is not None and self.config_file is not None:
            return await self._reload(caller=caller, why=why)
        try:
            result = await self._reload(caller=caller, why=why)
        except ChangeError as exc:
            await self._audit(caller, "error", exc.status, None, f"{exc.code}: {exc.message}", started)
            raise
        await self._audit(caller, "ok", None, self.version, f"reload ({why}): {result.summary}", started)
        return result

    async def _reload(self, *, caller: Caller, why: str) -> ChangeResult:
        path = self.config_file
        if path is None:
            if self.document is None:
                raise ChangeError(409, "no_source", "nothing to reload from: no config file and no store")
            from gateway.app import ConfigRefused

            try:
                summary = await self.gateway.apply(parse_config(self.document))
            except (ConfigRefused, ConfigError) as exc:
                raise ChangeError(409, "apply_refused", str(exc)) from None
            return ChangeResult(None, summary)
        try:
            data, source = await trio.to_thread.run_sync(lambda: (load_document(path), f"file:{os.path.abspath(path)}"))
        except ConfigError as exc:
            raise ChangeError(422, "invalid_config", exc.message, exc.path or None) from None
        if not isinstance(data, dict):
            raise ChangeError(422, "invalid_config", "the top level must be a mapping", None)
        if self.store is not None and self.document is not None and digest(data) != digest(self.document):
            last = await self.store.run_sync(lambda s: s.last_from(source))
            if last is not None and last.digest == digest(data):
                # The file is as it was when imported: the changes made since (the admin API) stay.
                log.info("reload (%s): %s has not changed since version %d; version %s stays current",
                         why, path, last.id, self.version)
                return ChangeResult(None)
        if self.store is None:
            from gateway.app import ConfigRefused

            try:
                summary = await self.gateway.apply(parse_config(data, source=path))
            except ConfigError as exc:
                raise ChangeError(422, "invalid_config", exc.message, exc.path or None) from None
            except ConfigRefused as exc:
                raise ChangeError(409, "apply_refused", str(exc)) from None
            return ChangeResult(None, summary)
        return await self.change(data, caller=caller, what=f"reload of {path} ({why})", source=source)

    async def reload_logged(self, why: str) -> bool:
        """A reload the gateway itself asks for (SIGHUP, the config file changed): logged; True if applied."""
        try:
            result = await self.reload(caller=Caller(who=f"config file ({why})", method="RELOAD"), why=why)
        except ChangeError as exc:
            where = f"{exc.path}: " if exc.path else ""
            log.error("reload (%s) refused, the running configuration stays: %s%s", why, where, exc.message)
            return False
        log.info("reload (%s): %s", why, f"version {result.version.id}, {result.summary}" if result.version
                 else "nothing changed")
        return True

    async def _audit(self, caller: Caller, outcome: str, code: int | None, version: int | None, detail: str,
                     started: float) -> None:
        if self.audit is not None:
            await self.audit.record_admin(method=caller.method, identity=caller.who, peer=caller.peer,
                                          server=caller.server, outcome=outcome, code=code, version=version,
                                          detail=detail, body=caller.body, duration=trio.current_time() - started)

    async def audit_action(self, caller: Caller, detail: str, *, outcome: str = "ok", code: int | None = None) -> None:
        """An admin action that is not a config change (ending a session, a refused request): one audit row."""
        await self._audit(caller, outcome, code, self.version, detail, trio.current_time())


def loopback_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket (IPv6 when the host is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock
