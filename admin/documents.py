"""Config documents (the data of a config file): built from a parsed config, redacted, compared.

Pure functions, no I/O. A *document* is what ``parse_config`` reads; the admin API edits
documents and hands the whole result to ``parse_config``, so every change meets the same rules
as the file does.
"""

from __future__ import annotations

import copy
import difflib
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import msgspec

from gateway.config import GatewayConfig, RouteConfig

from .store import to_yaml

#: What a redacted value reads as. Sent back unchanged (PUT of what GET gave), it means "keep the
#: current value", so a client can round-trip a server without ever seeing its secrets.
REDACTED = "(redacted)"
_SERVER_KEYS = ("servers", "mcpServers")


def _plain(value: Any) -> Any:
    if isinstance(value, msgspec.Struct):
        return _struct_document(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _struct_document(struct: msgspec.Struct) -> dict[str, Any]:
    """The fields of ``struct`` that differ from their defaults (so kind rules still hold)."""
    out: dict[str, Any] = {}
    for field in msgspec.structs.fields(struct):
        value = getattr(struct, field.name)
        if not field.required:
            default = field.default_factory() if field.default_factory is not msgspec.NODEFAULT else field.default
            if value == default:
                continue
        out[field.name] = _plain(value)
    return out


def document_of(config: GatewayConfig) -> dict[str, Any]:
    """A document that ``parse_config`` reads back as ``config`` (defaults left out).

    Used when a store is empty and the running config came from elsewhere (a program, a test);
    the document of a file is always the file's own data.
    """
    doc = _struct_document(config)
    default_routes = {"/": RouteConfig(servers=list(config.servers))}
    if config.routes is None or config.routes == default_routes:
        doc.pop("routes", None)
    else:
        doc["routes"] = {path: _route_document(r) for path, r in config.routes.items()}
    return doc


def _route_document(route: RouteConfig) -> list[str] | dict[str, Any]:
    """A route as a file writes it: the list of servers, or the mapping when it has settings."""
    if route.prefix and route.tools is None and route.tool_mode == "all":
        return list(route.servers)
    out: dict[str, Any] = {"servers": list(route.servers)}
    if not route.prefix:
        out["prefix"] = False
    if route.tools is not None:
        out["tools"] = msgspec.to_builtins(route.tools)
    if route.tool_mode != "all":
        out["tool_mode"] = route.tool_mode
    return out


def effective(config: GatewayConfig) -> dict[str, Any]:
    """Every setting with its effective value (defaults included), redacted."""
    data = msgspec.to_builtins(config)
    data["routes"] = {path: msgspec.to_builtins(r) for path, r in config.route_configs().items()}
    return redact(data)


def server_entries(document: dict[str, Any]) -> dict[str, Any]:
    """The document's servers (``servers``, or Claude Desktop's ``mcpServers``)."""
    for key in _SERVER_KEYS:
        found = document.get(key)
        if isinstance(found, dict):
            return found
    return {}


def normalized(document: dict[str, Any]) -> dict[str, Any]:
    """A copy whose servers are under ``servers`` (a Claude Desktop file's entries become plain
    process servers: only their ``type: stdio`` goes), for edits through the API."""
    doc = copy.deepcopy(document)
    if "mcpServers" in doc and "servers" not in doc:
        entries = doc.pop("mcpServers")
        if isinstance(entries, dict):
            doc = {"servers": {name: ({k: v for k, v in entry.items() if k != "type"}
                                      if isinstance(entry, dict) else entry)
                               for name, entry in entries.items()}, **doc}
    return doc


def redact_url(url: str) -> str:
    """A URL without what may be a credential: the password, and every query value."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:{REDACTED}@{host}" if ":" in userinfo else f"{REDACTED}@{host}"
    query = "&".join(f"{k}={REDACTED}" for k, _ in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact_server(entry: Any) -> Any:
    if not isinstance(entry, dict):
        return entry
    out = _redact_section(entry, "url")
    if isinstance(out.get("http"), dict):  # a REST API: its headers and base URL alike
        out["http"] = _redact_section(out["http"], "base_url")
    return out  # secrets and bearer are references (env:NAME, file:/path): shown as they are


def _redact_section(section: dict[str, Any], url_key: str) -> dict[str, Any]:
    out = dict(section)
    for key in ("env", "headers"):  # literal values: Claude Desktop files carry API keys in env
        if isinstance(out.get(key), dict):
            out[key] = dict.fromkeys(out[key], REDACTED)
    if isinstance(out.get(url_key), str):
        out[url_key] = redact_url(out[url_key])
    return out


def redact(document: dict[str, Any]) -> dict[str, Any]:
    """A copy to show: literal values that may be secrets replaced by :data:`REDACTED`."""
    out = dict(document)
    for key in _SERVER_KEYS:
        if isinstance(out.get(key), dict):
            out[key] = {name: redact_server(entry) for name, entry in out[key].items()}
    return out


class Unredactable(ValueError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


def unredact(name: str, new: Any, old: Any) -> Any:
    """A server entry sent back with :data:`REDACTED` values: those become the current ones.

    A redacted value with no current value to stand for is refused (it would become the literal
    text), naming its key path.
    """
    if not isinstance(new, dict):
        return new
    previous = old if isinstance(old, dict) else {}
    out = _unredact_section(f"servers.{name}", new, previous, "url")
    if isinstance(out.get("http"), dict):
        before = previous.get("http")
        out["http"] = _unredact_section(f"servers.{name}.http", out["http"],
                                        before if isinstance(before, dict) else {}, "base_url")
    return out


def _unredact_section(path: str, new: dict[str, Any], previous: dict[str, Any], url_key: str) -> dict[str, Any]:
    out = dict(new)
    for key in ("env", "headers"):
        values = out.get(key)
        if not isinstance(values, dict):
            continue
        found = previous.get(key)
        before: dict[str, Any] = found if isinstance(found, dict) else {}
        restored = {}
        for k, v in values.items():
            if v == REDACTED:
                if k not in before:
                    raise Unredactable(f"{path}.{key}.{k}",
                                       f"{REDACTED} keeps the current value, and there is none: send the value")
                v = before[k]
            restored[k] = v
        out[key] = restored
    url, old_url = out.get(url_key), previous.get(url_key)
    if isinstance(url, str) and REDACTED in url:
        if isinstance(old_url, str) and redact_url(old_url) == url:
            out[url_key] = old_url
        else:
            raise Unredactable(f"{path}.{url_key}", f"{REDACTED} keeps the current URL only when the rest "
                                                    "of it is unchanged: send the whole URL")
    return out


def changes(old: Any, new: Any, path: str = "") -> list[dict[str, str]]:
    """Key paths that differ between two documents (added, removed, changed); no values, so
    nothing secret: the redacted unified diff shows those that may be shown."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[dict[str, str]] = []
        for key in [*old, *(k for k in new if k not in old)]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in new:
                out.append({"path": sub, "op": "removed"})
            elif key not in old:
                out.append({"path": sub, "op": "added"})
            else:
                out += changes(old[key], new[key], sub)
        return out
    return [] if old == new else [{"path": path or "(document)", "op": "changed"}]


def unified_diff(old: dict[str, Any], new: dict[str, Any], old_name: str, new_name: str) -> str:
    """The unified diff of the two documents' redacted YAML."""
    lines = difflib.unified_diff(to_yaml(redact(old)).splitlines(keepends=True),
                                 to_yaml(redact(new)).splitlines(keepends=True), old_name, new_name)
    return "".join(lines)
