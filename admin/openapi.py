"""The admin API's OpenAPI 3.1 document (GET /openapi.json), written by hand.

tests/test_admin_openapi.py holds it to the app: every route of the app's url_map is here and
every path here is a route, and a property test (schemathesis) sends generated requests to the
running app and checks each answer against the status codes and schemas below.
"""

from __future__ import annotations

from typing import Any

NULLABLE_STR = {"type": ["string", "null"]}
NULLABLE_INT = {"type": ["integer", "null"]}
NULLABLE_NUM = {"type": ["number", "null"]}
_STRINGS = {"type": "array", "items": {"type": "string"}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: dict[str, Any], optional: dict[str, Any] | None = None, *, extra: bool = False) -> dict[str, Any]:
    return {"type": "object", "properties": {**required, **(optional or {})}, "required": list(required),
            "additionalProperties": extra}


_SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": _obj({"code": {"type": "string"}, "message": {"type": "string"},
                                  "path": NULLABLE_STR})}),
    "Health": _obj({
        "status": {"enum": ["ok", "degraded"]}, "ready": {"type": "boolean"},
        "waiting": {"type": "object", "additionalProperties": {"type": "string"}},
        "servers": {"type": "object", "additionalProperties": _obj(
            {"state": {"type": "string"}, "restarts": {"type": "integer"}, "error": NULLABLE_STR})},
        "sessions": {"type": "integer"}, "version": NULLABLE_INT, "reloads": {"type": "integer"},
        "audit": {"oneOf": [{"type": "null"}, _obj({"queued": {"type": "integer"}, "written": {"type": "integer"},
                                                     "dropped": {"type": "integer"}})]},
    }),
    "Server": _obj({
        "name": {"type": "string"}, "kind": {"enum": ["process", "container", "remote", "http"]},
        "lifecycle": {"enum": ["shared", "session", "call"]}, "state": {"type": "string"},
        "healthy": {"type": "boolean"},
        "instances": {"type": "object", "additionalProperties": {"type": "integer"}},
        "containers": {"type": "integer", "minimum": 0}, "restarts": {"type": "integer", "minimum": 0},
        "last_error": NULLABLE_STR, "inflight": {"type": "integer", "minimum": 0},
        "pool_available": {"type": "integer", "minimum": 0},
        "tools": {"type": "array", "items": {"type": "string"}},
        "routes": {"type": "array", "items": {"type": "string"}},
        "config": {"type": ["object", "null"], "description": "the server's settings as written, redacted"},
    }),
    "ServerList": _obj({"servers": {"type": "array", "items": _ref("Server")}}),
    "ServerSettings": {
        "type": "object", "description": "a server's settings, exactly as under servers.<name> in the config file "
                                         "(every key: docs/configuration.md); the rules are the file's",
        "properties": {
            "command": {"type": ["string", "array"], "items": {"type": "string"}}, "args": _STRINGS,
            "env": {"type": "object", "additionalProperties": {"type": "string"}}, "cwd": {"type": "string"},
            "image": {"type": "string"}, "url": {"type": "string"},
            "secrets": {"type": "object", "additionalProperties": {"type": "string"}},
            "lifecycle": {"enum": ["shared", "session", "call"]}, "pool": {"type": "integer", "minimum": 0},
            "max_instances": {"type": "integer", "minimum": 1},
            "call_timeout": {"type": ["string", "number"]}, "start_timeout": {"type": ["string", "number"]},
            "prefix": {"type": ["boolean", "string"]}, "audit_arguments": {"type": "boolean"},
            "required": {"type": "boolean"}},
        "additionalProperties": True,
        "examples": [{"command": "uvx", "args": ["mcp-server-time"], "call_timeout": "30s"}]},
    "NewServer": _obj({"name": {"type": "string"}, "server": _ref("ServerSettings")},
                      {"routes": {"type": "array", "items": {"type": "string"},
                                  "description": "explicit routes to add the server to"}}) | {
        "examples": [{"name": "time", "server": {"command": "uvx", "args": ["mcp-server-time"]}}]},
    "Applied": _obj({"added": {"type": "array", "items": {"type": "string"}},
                     "removed": {"type": "array", "items": {"type": "string"}},
                     "changed": {"type": "array", "items": {"type": "string"}}, "routes": {"type": "boolean"}},
                    extra=True),
    "Change": _obj({"version": NULLABLE_INT, "changed": {"type": "boolean"}, "applied": _ref("Applied")}),
    "ServerChange": _obj({"version": NULLABLE_INT, "changed": {"type": "boolean"}, "applied": _ref("Applied"),
                          "server": {"oneOf": [{"type": "null"}, _ref("Server")]}}),
    "Route": _obj({"servers": {"type": "array", "items": {"type": "string"}}, "prefix": {"type": "boolean"},
                   "tool_mode": {"enum": ["all", "search"]},
                   "tools": {"type": "array", "items": {"type": "string"}},
                   "collisions": {"type": "array", "items": {"type": "string"}}, "sessions": {"type": "integer"}}),
    "Routes": _obj({"routes": {"type": "object", "additionalProperties": _ref("Route")},
                    "explicit": {"type": "boolean"}}),
    "RouteTable": {"type": ["object", "null"], "description": "routes as in the config file (path -> server "
                                                              "names, or {servers, prefix, tools, tool_mode}); null: every server at /",
                   "additionalProperties": {"oneOf": [
                       {"type": "array", "items": {"type": "string"}},
                       _obj({"servers": {"type": "array", "items": {"type": "string"}}},
                            {"prefix": {"type": "boolean"}, "tool_mode": {"enum": ["all", "search"]},
                             "tools": _obj({}, {"allow": {"type": ["array", "null"], "items": {"type": "string"}},
                                                "deny": {"type": "array", "items": {"type": "string"}}})})]}},
    "Config": _obj({"version": NULLABLE_INT, "config": {"type": "object"}}),
    "Policy": _obj({"policy": {"type": "array", "items": {"type": "object"}},
                    "rate_limits": {"type": "array", "items": {"type": "object"}},
                    "refused_by_rule": {"type": "array", "items": {"type": "integer"}},
                    "in_flight": {"type": "integer"}}),
    "PolicyChange": {"type": "object", "minProperties": 1, "additionalProperties": False,
                     "description": "policy and/or rate_limits as in the config file (null or []: none)",
                     "properties": {"policy": {"type": ["array", "null"], "items": {"type": "object"}},
                                    "rate_limits": {"type": ["array", "null"], "items": {"type": "object"}}}},
    "VersionInfo": _obj({"id": {"type": "integer"}, "created": {"type": "number"}, "who": {"type": "string"},
                         "what": {"type": "string"}, "source": {"type": "string"}, "digest": {"type": "string"},
                         "current": {"type": "boolean"}}),
    "VersionList": _obj({"versions": {"type": "array", "items": _ref("VersionInfo")}, "current": NULLABLE_INT,
                         "next": NULLABLE_STR}),
    "Version": _obj({"id": {"type": "integer"}, "created": {"type": "number"}, "who": {"type": "string"},
                     "what": {"type": "string"}, "source": {"type": "string"}, "digest": {"type": "string"},
                     "current": {"type": "boolean"}, "document": {"type": "object"}}),
    "Diff": _obj({"from": NULLABLE_INT, "to": {"type": "integer"},
                  "changes": {"type": "array", "items": _obj({"path": {"type": "string"},
                                                              "op": {"enum": ["added", "removed", "changed"]}})},
                  "diff": {"type": "string", "description": "unified diff of the redacted YAML"}}),
    "AuditRecord": _obj({
        "id": {"type": "integer"}, "time": {"type": "number"}, "kind": {"enum": ["call", "admin"]},
        "route": NULLABLE_STR, "session": NULLABLE_STR, "identity": NULLABLE_STR, "client": NULLABLE_STR,
        "peer": NULLABLE_STR, "method": NULLABLE_STR, "server": NULLABLE_STR, "name": NULLABLE_STR,
        "duration": NULLABLE_NUM, "outcome": {"type": "string"}, "error_code": NULLABLE_INT,
        "request_bytes": NULLABLE_INT, "response_bytes": NULLABLE_INT, "args_digest": NULLABLE_STR,
        "arguments": NULLABLE_STR, "version": NULLABLE_INT, "detail": NULLABLE_STR}),
    "AuditPage": _obj({"records": {"type": "array", "items": _ref("AuditRecord")}, "next": NULLABLE_STR}),
    "Session": _obj({"id": {"type": "string"}, "route": {"type": "string"}, "version": {"type": "string"},
                     "client": {"type": "object", "additionalProperties": {"type": "string"}},
                     "peer": {"type": "string"}, "idle_seconds": {"type": "number", "minimum": 0},
                     "inflight": {"type": "integer"}, "streams": {"type": "integer"}}),
    "SessionList": _obj({"sessions": {"type": "array", "items": _ref("Session")}, "total": {"type": "integer"}}),
    # API keys (admin/keys_api.py)
    "ApiKey": _obj({
        "name": {"type": "string"}, "id": {"type": "string"},
        "routes": {"type": ["array", "null"], "items": {"type": "string"},
                   "description": "the routes the key may use; null: every route"},
        "groups": _STRINGS, "created": {"type": "number"}, "expires": NULLABLE_NUM,
        "last_used": NULLABLE_NUM, "revoked": NULLABLE_NUM, "status": {"enum": ["active", "expired", "revoked"]}}),
    "ApiKeyList": _obj({"keys": {"type": "array", "items": _ref("ApiKey")}}),
    "NewApiKey": _obj({"name": {"type": "string", "pattern": "^[A-Za-z0-9_.@-]{1,64}$"}}, {
        "routes": {"type": ["array", "null"], "items": {"type": "string", "pattern": "^/[!-~]{0,255}$"},
                   "description": "the routes the key may use (default: every route)"},
        "groups": {"type": "array", "items": {"type": "string", "pattern": "^[A-Za-z0-9_.@:-]{1,64}$"}},
        "expires": {"type": ["string", "number", "null"], "description": "lifetime: 30d, 12h or seconds "
                                                                        "(default: never)"}}) | {
        "examples": [{"name": "ci", "routes": ["/team-a"], "expires": "30d"}]},
    "CreatedApiKey": _obj({"key": {"type": "string", "description": "the key: shown this once, kept hashed"},
                           "record": _ref("ApiKey")}),
    "RevokedApiKey": _obj({"record": _ref("ApiKey")}),
    # tool-definition pins (admin/pins_api.py)
    "ToolDefinition": _obj({"digest": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                            "definition": {"type": "object", "description": "the tool as the server lists it"}}),
    "ToolChange": _obj({
        "server": {"type": "string"}, "tool": {"type": "string", "description": "the server's own tool name"},
        "mode": {"enum": ["block", "warn", "allow"], "description": "block: withheld from clients; warn: served"},
        "first_seen": {"type": "number"}, "old": _ref("ToolDefinition"), "new": _ref("ToolDefinition"),
        "diff": {"type": "string", "description": "unified diff of the two definitions (keys sorted)"},
        "approved_at": NULLABLE_NUM, "approved_by": NULLABLE_STR}),
    "ToolChanges": _obj({"changes": {"type": "array", "items": _ref("ToolChange")}}),
    "ToolApproval": _obj({"digest": {"type": "string", "pattern": "^[0-9a-f]{64}$",
                                     "description": "the change's new digest, as GET /tools/changes shows it"}}),
    "ApprovedToolChange": _obj({"change": _ref("ToolChange"),
                                "saved": {"type": "boolean", "description": "false: the database refused it for "
                                                                            "now (it holds until a restart)"}}),
    "ToolPin": _obj({"server": {"type": "string"}, "tool": {"type": "string"},
                     "digest": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "first_seen": {"type": "number"},
                     "approved_at": NULLABLE_NUM, "approved_by": NULLABLE_STR}),
    "ToolPins": _obj({"pins": {"type": "array", "items": _ref("ToolPin")},
                      "persistent": {"type": "boolean", "description": "false: pins last until the gateway stops"}}),
}

_ERRORS = {
    400: "invalid request (a parameter or the JSON body)", 401: "no or wrong admin token",
    404: "not found", 409: "conflict (exists, ambiguous, the change was refused by the running gateway, no store)",
    413: "body too large", 415: "the body is not application/json", 422: "the configuration is invalid "
    "(error.path names the key)", 503: "the config store refused the change (the previous config runs)",
}


def _json_response(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _op(op_id: str, summary: str, ok: dict[int, dict[str, Any]], errors: tuple[int, ...] = (),
        params: list[dict[str, Any]] | None = None, body: str | None = None) -> dict[str, Any]:
    responses: dict[str, Any] = {str(k): v for k, v in ok.items()}
    for code in (401, *errors):
        responses[str(code)] = _json_response(_ERRORS[code], "Error")
    op: dict[str, Any] = {"operationId": op_id, "summary": summary, "responses": responses}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    return op


def _path(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_NAME = _path("name", {"type": "string", "minLength": 1})
_VERSION = _path("version", {"type": "integer", "minimum": 1})
_LIMIT = _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size")
_CHANGE = (400, 404, 409, 413, 415, 422, 503)


def _key_paths() -> dict[str, Any]:
    """/keys (admin/keys_api.py): 409 also when API keys are off, 503 when their database fails."""
    off = "a key of that name exists, or API keys are off (auth: {api_keys: true})"
    failed = "the API keys' database failed"
    ops = {
        "/keys": {
            "get": _op("listKeys", "API keys (never their secrets)", {200: _json_response("keys", "ApiKeyList")},
                       (400, 409, 503), [_query("all", {"enum": ["true", "false", "1", "0"]}, "revoked keys too")]),
            "post": _op("createKey", "Make an API key (the key is in this answer only)",
                        {201: _json_response("made", "CreatedApiKey")}, (400, 409, 413, 415, 422, 503),
                        body="NewApiKey"),
        },
        "/keys/{name}": {"delete": _op("revokeKey", "Revoke an API key", {200: _json_response("revoked",
                                                                                              "RevokedApiKey")},
                                       (404, 409, 503), [_NAME])},
    }
    for methods in ops.values():
        for op in methods.values():
            for code, text in (("409", off), ("503", failed)):
                if code in op["responses"]:
                    op["responses"][code] = {**op["responses"][code], "description": text}
    return ops


def _pin_paths() -> dict[str, Any]:
    """/tools/changes and /tools/pins (admin/pins_api.py)."""
    server = _query("server", {"type": "string"}, "only this server's")
    approve = _op("approveToolChange", "Approve a changed tool definition (exactly this digest): it is served",
                  {200: _json_response("approved", "ApprovedToolChange")}, (400, 404, 409, 413, 415),
                  [_path("server", {"type": "string", "minLength": 1}),
                   _path("tool", {"type": "string", "minLength": 1})], body="ToolApproval")
    approve["responses"]["404"] = {**approve["responses"]["404"], "description": "no change of that tool waits"}
    approve["responses"]["409"] = {**approve["responses"]["409"],
                                   "description": "stale_digest: the tool changed again since (review it again)"}
    return {
        "/tools/changes": {"get": _op("listToolChanges", "Changed tool definitions waiting for an admin, with diffs",
                                      {200: _json_response("changes", "ToolChanges")}, (), [server])},
        "/tools/changes/{server}/{tool}/approve": {"post": approve},
        "/tools/pins": {"get": _op("listToolPins", "Pinned tool definitions (digests, approvals)",
                                   {200: _json_response("pins", "ToolPins")}, (), [server])},
    }


def document() -> dict[str, Any]:
    """The OpenAPI document of the admin API."""
    paths: dict[str, Any] = {
        "/health": {"get": _op("health", "Status of the gateway and its servers",
                               {200: _json_response("status", "Health")})},
        "/metrics": {"get": _op("metrics", "Prometheus metrics (text format, or OpenMetrics when asked)", {
            200: {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}},
                                                        "application/openmetrics-text": {"schema": {"type": "string"}}}}})},
        "/openapi.json": {"get": _op("openapi", "This document",
                                     {200: {"description": "the OpenAPI document",
                                            "content": {"application/json": {"schema": {"type": "object"}}}}})},
        "/servers": {
            "get": _op("listServers", "Servers with live status",
                       {200: _json_response("servers", "ServerList")}),
            "post": _op("createServer", "Add a server (optionally to explicit routes)",
                        {201: _json_response("added", "ServerChange")}, _CHANGE, body="NewServer"),
        },
        "/servers/{name}": {
            "get": _op("getServer", "One server with live status", {200: _json_response("server", "Server")},
                       (404,), [_NAME]),
            "put": _op("replaceServer", "Replace a server's settings (or add it)",
                       {200: _json_response("replaced", "ServerChange"), 201: _json_response("added", "ServerChange")},
                       _CHANGE, [_NAME], body="ServerSettings"),
            "delete": _op("deleteServer", "Remove a server (and it from every route)",
                          {200: _json_response("removed", "Change")}, (404, 409, 422, 503), [_NAME]),
        },
        "/routes": {
            "get": _op("listRoutes", "Routes with their servers and tools", {200: _json_response("routes", "Routes")}),
            "put": _op("replaceRoutes", "Replace the routes", {200: _json_response("applied", "Change")},
                       _CHANGE, body="RouteTable"),
        },
        "/policy": {
            "get": _op("getPolicy", "Policy rules and rate limits, with refusals per rate limit",
                       {200: _json_response("policy", "Policy")}),
            "put": _op("replacePolicy", "Replace the policy rules and/or rate limits (applied without a restart)",
                       {200: _json_response("applied", "Change")}, _CHANGE, body="PolicyChange"),
        },
        "/config": {"get": _op("getConfig", "The effective configuration (every default; secrets redacted)",
                               {200: _json_response("config", "Config")})},
        "/versions": {"get": _op("listVersions", "Config versions, newest first",
                                 {200: _json_response("versions", "VersionList")}, (400, 404), [
                                     _LIMIT, _query("before", {"type": "integer", "minimum": 1},
                                                    "the next page: versions older than this id (next)")])},
        "/versions/{version}": {"get": _op("getVersion", "One version and its document (redacted)",
                                           {200: _json_response("version", "Version")}, (404,), [_VERSION])},
        "/versions/{version}/yaml": {"get": _op(
            "getVersionYaml", "One version's document as YAML (redacted)",
            {200: {"description": "YAML", "content": {"application/yaml": {"schema": {
                "type": "object", "description": "a YAML mapping: the config document"}}}}},
            (404,), [_VERSION])},
        "/versions/{version}/diff": {"get": _op(
            "diffVersion", "What a version changed (against the previous one, or against=N)",
            {200: _json_response("diff", "Diff")}, (400, 404),
            [_VERSION, _query("against", {"type": "integer", "minimum": 1}, "the version to compare with")])},
        "/versions/{version}/rollback": {"post": _op(
            "rollback", "Make an old version's document current again (as a new version)",
            {200: _json_response("applied", "Change")}, (404, 409, 422, 503), [_VERSION])},
        "/reload": {"post": _op("reload", "Read the config file again (with a store: a new version if it changed)",
                                {200: _json_response("applied", "Change")}, (409, 422, 503))},
        "/audit": {"get": _op("queryAudit", "Audit records, newest first", {200: _json_response("records",
                                                                                              "AuditPage")},
                              (400, 404), [
            _query("since", {"type": "string"}, "Unix seconds or ISO 8601, inclusive"),
            _query("until", {"type": "string"}, "Unix seconds or ISO 8601, exclusive"),
            _query("route", {"type": "string"}), _query("server", {"type": "string"}),
            _query("tool", {"type": "string"}, "the tool or prompt name, or the resource URI"),
            _query("method", {"type": "string"}), _query("client", {"type": "string"}),
            _query("session", {"type": "string"}, "a session id (prefix)"),
            _query("outcome", {"enum": ["ok", "tool_error", "error", "timeout", "cancelled"]}),
            _query("error_code", {"type": "integer"}), _query("kind", {"enum": ["call", "admin"]}),
            _LIMIT, _query("cursor", {"type": "integer", "minimum": 1}, "next from the previous page")])},
        "/sessions": {"get": _op("listSessions", "Client sessions", {200: _json_response("sessions", "SessionList")},
                                 (400,), [_query("limit", {"type": "integer", "minimum": 1, "maximum": 100000})])},
        "/sessions/{prefix}": {"delete": _op("endSession", "End one session (by id prefix)",
                                             {204: {"description": "ended"}}, (404, 409),
                                             [_path("prefix", {"type": "string", "minLength": 1})])},
    }
    paths.update(_key_paths())
    paths.update(_pin_paths())
    return {
        "openapi": "3.1.0",
        "info": {"title": "mcp-gateway admin API", "version": "1"},
        "paths": paths,
        "components": {"schemas": _SCHEMAS, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }
