"""The admin API's routes (Quart, on quart-trio): JSON in and out.

Every request needs ``Authorization: Bearer <admin token>`` (401 otherwise, before routing, so
an unauthenticated client learns nothing, not even which paths exist). Errors are
``{"error": {"code", "message", "path"}}``: ``code`` a stable string, ``path`` the config key
path for validation errors (from ``ConfigError.path``), else the request field, else null.

Changes edit the current config document and hand the whole of it to
:meth:`admin.control.ControlPlane.change`: the config file's rules, then ``gateway.apply``, then
a new version in the store. The routes here and ``admin/openapi.py`` are checked against each
other by tests/test_admin_openapi.py.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
import trio
from quart import Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from gateway import metrics
from gateway.config.load import no_duplicate_keys
from gateway.protocol.catalog import entry_str

from . import documents
from .audit import OUTCOMES, SESSION_PREFIX
from .auth import WHO, TokenCheck, bearer
from .control import Caller, ChangeError
from .openapi import document as openapi_document
from .store import to_yaml

if TYPE_CHECKING:
    from .control import ControlPlane

log = logging.getLogger("mcp_gateway.admin")

MAX_BODY = 1024 * 1024
MAX_PAGE = 1000
_SQLITE_MAX = 2**63 - 1
_CODES = {400: "invalid_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
          408: "request_timeout", 413: "too_large", 415: "unsupported_media_type"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.path = status, code, message, path


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Response(body, status=status, content_type="application/json", headers=headers)


def error(status: int, code: str, message: str, path: str | None = None,
          headers: dict[str, str] | None = None) -> Response:
    return _json({"error": {"code": code, "message": message, "path": path}}, status, headers)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


async def _raw() -> bytes:
    data = await request.get_data(as_text=False)
    return data if isinstance(data, bytes) else data.encode()


async def _body() -> Any:
    """The request's JSON body (400/415 when it is not JSON; keys must not repeat, as in a file)."""
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as Content-Type: application/json")
    raw = await _raw()
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicate_keys, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        text = "JSON is nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {text}") from None


def _int_arg(name: str, default: int | None, low: int, high: int) -> int | None:
    value = request.args.get(name)
    if value is None:
        return default
    if not value.isascii() or not value.isdigit() or len(value) > 19 or not low <= int(value) <= high:
        raise ApiError(400, "invalid_request", f"{name}: expected an integer from {low} to {high}", name)
    return int(value)


def _time_arg(name: str) -> float | None:
    value = request.args.get(name)
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ApiError(400, "invalid_request", f"{name}: expected Unix seconds or an ISO 8601 time",
                           name) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp()
    if not math.isfinite(seconds):
        raise ApiError(400, "invalid_request", f"{name}: expected a finite time", name)
    return seconds


def _version_id(value: int) -> int:
    if value > _SQLITE_MAX:
        raise ApiError(404, "not_found", f"no version {value}")
    return value


def create_app(control: ControlPlane, tokens: TokenCheck) -> QuartTrio:
    """The admin app of one gateway."""
    gateway = control.gateway
    app = QuartTrio("mcp_gateway_admin", static_folder=None)
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY, BODY_TIMEOUT=30, RESPONSE_TIMEOUT=120,
                      PROVIDE_AUTOMATIC_OPTIONS=False, JSON_SORT_KEYS=False)

    def caller(server: str | None = None, body: bytes | None = None) -> Caller:
        return Caller(who=WHO, method=f"{request.method} {request.path}"[:300], peer=request.remote_addr,
                      body=body, server=server)

    # -- plumbing --------------------------------------------------------------------------------
    @app.before_request
    async def authenticate() -> Response | None:
        if await tokens.check(bearer(request.headers.get("authorization"))):
            return None
        return error(401, "unauthorized", "send Authorization: Bearer <admin token>",
                     headers={"WWW-Authenticate": 'Bearer realm="mcp-gateway admin"'})

    @app.after_request
    async def audit_refusals(response: Response) -> Response:
        """Every change asked for is in the audit log: those refused before reaching the control
        plane (a malformed request, an unknown server, no token) too."""
        if request.method in ("POST", "PUT", "DELETE") and not g.get("audited") and response.status_code >= 400:
            detail = ""
            try:
                found = json.loads(await response.get_data(as_text=True)).get("error") or {}
                where = f"{found['path']}: " if found.get("path") else ""
                detail = f"{found.get('code')}: {where}{found.get('message')}"
            except (ValueError, AttributeError, TypeError):
                pass
            who = WHO if response.status_code != 401 else "(no valid token)"
            raw = await _raw() if response.status_code != 413 else None
            await control.audit_action(Caller(who=who, method=f"{request.method} {request.path}"[:300],
                                              peer=request.remote_addr, body=raw),
                                       detail, outcome="error", code=response.status_code)
        return response

    @app.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> Response:
        return error(exc.status, exc.code, exc.message, exc.path)

    @app.errorhandler(ChangeError)
    async def change_error(exc: ChangeError) -> Response:
        return error(exc.status, exc.code, exc.message, exc.path)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        headers = {}
        if status == 405 and getattr(exc, "valid_methods", None):
            headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
        return error(status, _CODES.get(status, f"http_{status}"), exc.description or exc.name, None, headers)

    @app.errorhandler(Exception)
    async def internal(exc: Exception) -> Response:
        log.exception("admin API: %s %s failed", request.method, request.path)
        return error(500, "internal", "the admin API failed on this request (the gateway's log says why)")

    def _document() -> dict[str, Any]:
        """The current document to edit (needs a store: changes are versions)."""
        if control.store is None or control.document is None:
            raise ApiError(409, "no_store", "changes through the admin API need a config store: set store.path "
                                            "in the config file")
        return documents.normalized(control.document)

    def _written() -> dict[str, Any]:
        """The running configuration as written (the store's document, or one made from the config)."""
        return control.document if control.document is not None else documents.document_of(gateway.config)

    # -- health, metrics, the document -------------------------------------------------------------
    @app.get("/health")
    async def health() -> Response:
        ready, waiting = gateway.readiness() if hasattr(gateway, "readiness") else (True, {})
        servers = {n: {"state": s.state, "restarts": s.restarts, "error": s.last_error}
                   for n, s in gateway.supervisors.items()}
        audit = control.audit.statistics() if control.audit is not None else None
        return _json({
            "status": "ok" if all(s.state == "ready" for s in gateway.supervisors.values()) else "degraded",
            "ready": ready, "waiting": waiting, "servers": servers, "sessions": len(gateway.sessions),
            "version": control.version, "reloads": gateway.reloads,
            "audit": None if audit is None else {
                "queued": audit.queued, "written": audit.written,
                "dropped": audit.dropped_queue_full + audit.dropped_write_error},
        })

    @app.get("/metrics")
    async def scrape() -> Response:
        body, content_type = metrics.render(gateway.metrics, request.headers.get("accept", "").encode("latin-1"))
        return Response(body, status=200, content_type=content_type.decode())

    @app.get("/openapi.json")
    async def openapi() -> Response:
        return _json(openapi_document())

    # -- servers -----------------------------------------------------------------------------------
    def _server_view(name: str) -> dict[str, Any]:
        backend = gateway.supervisors[name]
        stats = backend.statistics()
        catalog = backend.catalog
        tools = [t for t in (entry_str(e, "name") for e in catalog.tools) if t] if catalog is not None else []
        instances = sum(stats.instances.values())
        entry = documents.server_entries(_written()).get(name)
        return {
            "name": name, "kind": stats.kind, "lifecycle": stats.lifecycle, "state": stats.state,
            "healthy": stats.healthy, "instances": dict(stats.instances),
            "containers": instances if stats.kind == "container" else 0, "restarts": stats.restarts,
            "last_error": stats.last_error, "inflight": stats.inflight, "pool_available": stats.pool_available,
            "tools": tools, "routes": [p for p, r in gateway.routes.items() if name in r.servers],
            "config": documents.redact_server(entry) if entry is not None else None,
        }

    @app.get("/servers")
    async def list_servers() -> Response:
        return _json({"servers": [_server_view(n) for n in gateway.supervisors]})

    @app.get("/servers/<name>")
    async def get_server(name: str) -> Response:
        if name not in gateway.supervisors:
            raise ApiError(404, "not_found", f"no server {name!r}")
        return _json(_server_view(name))

    async def _put_server(name: str, settings: Any, routes: list[str] | None, raw: bytes,
                          *, must_be_new: bool) -> Response:
        doc = _document()
        servers = doc.setdefault("servers", {})
        if not isinstance(servers, dict):
            raise ApiError(409, "conflict", "the current document has no servers mapping", "servers")
        existed = name in servers
        if must_be_new and existed:
            raise ApiError(409, "conflict", f"server {name!r} exists (PUT /servers/{name} replaces it)", "name")
        try:
            servers[name] = documents.unredact(name, settings, servers.get(name))
        except documents.Unredactable as exc:
            raise ApiError(422, "invalid_config", str(exc), exc.path) from None
        for i, route in enumerate(routes or []):
            table = doc.get("routes")
            if not isinstance(table, dict) or route not in table:
                raise ApiError(422, "invalid_config", f"no route {route!r} in the config (PUT /routes adds routes)",
                               f"routes[{i}]")
            members = table[route]
            names = members.get("servers") if isinstance(members, dict) else members
            if isinstance(names, list) and name not in names:
                names.append(name)
        what = f"{'replace' if existed else 'add'} server {name}"
        g.audited = True  # (the control plane writes the audit row, whatever happens)
        result = await control.change(doc, caller=caller(name, raw), what=what, source="api")
        status = 200 if existed else 201
        return _json({**result.as_json(), "server": _server_view(name) if name in gateway.supervisors else None},
                     status)

    @app.post("/servers")
    async def create_server() -> Response:
        body = await _body()
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_request", "expected an object {name, server, routes?}")
        unknown = [k for k in body if k not in ("name", "server", "routes")]
        if unknown:
            raise ApiError(400, "invalid_request", f"unknown key {unknown[0]!r} (known: name, server, routes)",
                           unknown[0])
        name, settings, routes = body.get("name"), body.get("server"), body.get("routes")
        if not isinstance(name, str):
            raise ApiError(400, "invalid_request", "name: expected a string", "name")
        if not isinstance(settings, dict):
            raise ApiError(400, "invalid_request", "server: expected an object (the server's settings)", "server")
        if routes is not None and (not isinstance(routes, list) or not all(isinstance(r, str) for r in routes)):
            raise ApiError(400, "invalid_request", "routes: expected a list of route paths", "routes")
        return await _put_server(name, settings, routes, await _raw(), must_be_new=True)

    @app.put("/servers/<name>")
    async def replace_server(name: str) -> Response:
        body = await _body()
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_request", "expected an object: the server's settings")
        return await _put_server(name, body, None, await _raw(), must_be_new=False)

    @app.delete("/servers/<name>")
    async def delete_server(name: str) -> Response:
        doc = _document()
        servers = doc.get("servers")
        if not isinstance(servers, dict) or name not in servers:
            raise ApiError(404, "not_found", f"no server {name!r}")
        del servers[name]
        routes = doc.get("routes")
        if isinstance(routes, dict):  # it leaves every route too (a route left empty is refused by the rules)
            for members in routes.values():
                names = members.get("servers") if isinstance(members, dict) else members
                if isinstance(names, list) and name in names:
                    names.remove(name)
        g.audited = True  # (the control plane writes the audit row, whatever happens)
        result = await control.change(doc, caller=caller(name), what=f"remove server {name}", source="api")
        return _json(result.as_json())

    # -- routes ------------------------------------------------------------------------------------
    @app.get("/routes")
    async def list_routes() -> Response:
        configs = gateway.config.route_configs()
        out = {}
        for prefix, route in gateway.routes.items():
            rc = configs.get(prefix)
            out[prefix] = {
                "servers": list(route.servers), "prefix": rc.prefix if rc is not None else True,
                "tool_mode": rc.tool_mode if rc is not None else "all",
                "tools": [t for t in (entry_str(e, "name") for e in route.catalog.tools) if t],
                "collisions": list(route.catalog.collisions), "sessions": len(route.sessions),
            }
        return _json({"routes": out, "explicit": gateway.config.routes is not None and "routes" in _written()})

    @app.put("/routes")
    async def replace_routes() -> Response:
        body = await _body()
        doc = _document()
        if body is None:
            doc.pop("routes", None)  # the default: every server at /
        elif isinstance(body, dict):
            doc["routes"] = body
        else:
            raise ApiError(400, "invalid_request", "expected an object (route path -> servers) or null")
        g.audited = True  # (the control plane writes the audit row, whatever happens)
        result = await control.change(doc, caller=caller(None, await _raw()), what="replace routes",
                                      source="api")
        return _json(result.as_json())

    # -- who may call what: policy rules and rate limits (docs/access.md) -------------------------
    @app.get("/policy")
    async def get_policy() -> Response:
        config, access = gateway.config, gateway.access
        limits = access.limiter.statistics()
        return _json({"policy": [msgspec.to_builtins(r) for r in config.policy],
                      "rate_limits": [msgspec.to_builtins(r) for r in config.rate_limits],
                      "refused_by_rule": list(limits.refused), "in_flight": limits.in_flight})

    @app.put("/policy")
    async def replace_policy() -> Response:
        """Replace ``policy`` and/or ``rate_limits`` (each key given; null or [] removes them)."""
        body = await _body()
        if not isinstance(body, dict) or not body or set(body) - {"policy", "rate_limits"}:
            raise ApiError(400, "invalid_request", "expected an object with policy and/or rate_limits (lists)")
        doc = _document()
        for key, value in body.items():
            if value is None or value == []:
                doc.pop(key, None)
            elif isinstance(value, list):
                doc[key] = value
            else:
                raise ApiError(400, "invalid_request", f"{key}: expected a list of rules or null")
        g.audited = True  # (the control plane writes the audit row, whatever happens)
        result = await control.change(doc, caller=caller(None, await _raw()),
                                      what=f"replace {' and '.join(sorted(body))}", source="api")
        return _json(result.as_json())

    # -- the configuration and its versions --------------------------------------------------------
    @app.get("/config")
    async def effective_config() -> Response:
        return _json({"version": control.version, "config": documents.effective(gateway.config)})

    def _store() -> Any:
        if control.store is None:
            raise ApiError(404, "no_store", "no config store (set store.path): there are no versions")
        return control.store

    @app.get("/versions")
    async def list_versions() -> Response:
        store = _store()
        limit = _int_arg("limit", 50, 1, MAX_PAGE)
        before = _int_arg("before", None, 1, _SQLITE_MAX)
        assert limit is not None
        found = await store.versions(limit=limit + 1, before=before)
        page, more = found[:limit], len(found) > limit
        return _json({"versions": [v.as_json(control.version) for v in page], "current": control.version,
                      "next": str(page[-1].id) if more and page else None})

    @app.get("/versions/<int:version>")
    async def get_version(version: int) -> Response:
        found = await _store().get(_version_id(version))
        if found is None:
            raise ApiError(404, "not_found", f"no version {version}")
        return _json({**found.as_json(control.version), "document": documents.redact(found.document)})

    @app.get("/versions/<int:version>/diff")
    async def diff_version(version: int) -> Response:
        store = _store()
        new = await store.get(_version_id(version))
        if new is None:
            raise ApiError(404, "not_found", f"no version {version}")
        against = _int_arg("against", None, 1, _SQLITE_MAX)
        if against is None:
            older = await store.versions(limit=1, before=new.id)
            old = await store.get(older[0].id) if older else None
        else:
            old = await store.get(against)
            if old is None:
                raise ApiError(404, "not_found", f"no version {against}", "against")
        old_doc = old.document if old is not None else {}
        return _json({
            "from": old.id if old is not None else None, "to": new.id,
            "changes": documents.changes(old_doc, new.document),
            "diff": documents.unified_diff(old_doc, new.document, f"version {old.id if old else 0}",
                                           f"version {new.id}"),
        })

    @app.post("/versions/<int:version>/rollback")
    async def rollback(version: int) -> Response:
        _store()
        g.audited = True  # (the control plane writes the audit row, whatever happens)
        result = await control.rollback(_version_id(version), caller=caller())
        return _json(result.as_json())

    @app.get("/versions/<int:version>/yaml")
    async def version_yaml(version: int) -> Response:
        found = await _store().get(_version_id(version))
        if found is None:
            raise ApiError(404, "not_found", f"no version {version}")
        return Response(to_yaml(documents.redact(found.document)), status=200, content_type="application/yaml")

    @app.post("/reload")
    async def reload() -> Response:
        g.audited = True  # (the control plane writes the audit row, whatever happens)
        result = await control.reload(caller=caller(), why="admin API")
        return _json(result.as_json())

    # -- the audit log ---------------------------------------------------------------------------
    @app.get("/audit")
    async def audit() -> Response:
        if control.audit is None:
            raise ApiError(404, "no_audit", "the audit log is off (set store.path or audit.path)")
        filters: dict[str, Any] = {}
        for name in ("since", "until"):
            when = _time_arg(name)
            if when is not None:
                filters[name] = when
        for arg, column in (("route", "route"), ("server", "server"), ("tool", "name"), ("method", "method"),
                            ("client", "client"), ("session", "session")):
            value = request.args.get(arg)
            if value:
                filters[column] = value[:SESSION_PREFIX] if arg == "session" else value
        # Typed filters: an empty value is no value of their type (400), as an empty ?limit= is.
        outcome = request.args.get("outcome")
        if outcome is not None:
            if outcome not in OUTCOMES:
                raise ApiError(400, "invalid_request", f"outcome: one of {', '.join(OUTCOMES)}", "outcome")
            filters["outcome"] = outcome
        kind = request.args.get("kind")
        if kind is not None:
            if kind not in ("call", "admin"):
                raise ApiError(400, "invalid_request", "kind: call or admin", "kind")
            filters["kind"] = kind
        code = request.args.get("error_code")
        if code is not None:
            try:
                filters["error_code"] = int(code)
            except ValueError:
                raise ApiError(400, "invalid_request", "error_code: expected an integer", "error_code") from None
            if not -_SQLITE_MAX <= filters["error_code"] <= _SQLITE_MAX:
                raise ApiError(400, "invalid_request", "error_code: out of range", "error_code")
        limit = _int_arg("limit", 100, 1, MAX_PAGE)
        cursor = _int_arg("cursor", None, 1, _SQLITE_MAX)
        assert limit is not None
        rows = await control.audit.query(filters, limit=limit + 1, before=cursor)
        page = rows[:limit]
        return _json({"records": page, "next": str(page[-1]["id"]) if len(rows) > limit and page else None})

    # -- sessions ----------------------------------------------------------------------------------
    def _session_view(session: Any, now: float) -> dict[str, Any]:
        info = session.client_info if isinstance(session.client_info, dict) else {}
        client = {k: str(info[k])[:200] for k in ("name", "version") if info.get(k) is not None}
        return {"id": session.id[:SESSION_PREFIX], "route": session.route.prefix, "version": session.version,
                "client": client, "peer": session.peer, "idle_seconds": round(max(0.0, now - session.last_used), 3),
                "inflight": len(session.inflight), "streams": session.streams}

    @app.get("/sessions")
    async def list_sessions() -> Response:
        limit = _int_arg("limit", MAX_PAGE, 1, 100_000)
        now = trio.current_time()
        every = list(gateway.sessions)
        return _json({"sessions": [_session_view(s, now) for s in every[:limit]], "total": len(every)})

    @app.delete("/sessions/<prefix>")
    async def end_session(prefix: str) -> Response:
        matches = [s for s in gateway.sessions if s.id.startswith(prefix)] if prefix else []
        if not matches:
            raise ApiError(404, "not_found", "no session with that id prefix")
        if len(matches) > 1:
            raise ApiError(409, "conflict", f"{len(matches)} sessions start with that prefix: give more of the id")
        session = matches[0]
        gateway.sessions.end(session)
        g.audited = True  # (the control plane writes the audit row, whatever happens)
        await control.audit_action(caller(), f"ended session {session.id[:SESSION_PREFIX]}")
        return Response("", status=204)

    from .keys_api import register_keys

    register_keys(app, control)
    from .pins_api import register as register_pins  # (here: it uses this module's helpers)

    register_pins(app, control, caller)
    from .web import register_web  # the web page under /ui (issue 12)

    register_web(app, control, tokens)
    return app


def url_rules(app: QuartTrio) -> set[tuple[str, str]]:
    """(OpenAPI path, method) of every route the app serves (HEAD and OPTIONS aside)."""
    out = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule
        for converter in ("int:", "path:", "string:"):
            path = path.replace(f"<{converter}", "<")
        path = path.replace("<", "{").replace(">", "}")
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                out.add((path, method.lower()))
    return out
