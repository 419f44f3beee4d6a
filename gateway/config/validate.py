"""The rules that relate keys to each other and to the kind of server, with key paths in every error.

Types and per-key bounds come from the schema through the walker; the container sandbox's rules
from :mod:`.container` (shared with the sandbox); what is left is here: server kinds (``image``
makes a container server, ``url`` a remote one, ``command`` alone a local process, DESIGN.md
"Config conventions"), Claude Desktop's ``{"mcpServers": {...}}``, names, routes, origins, remote
servers' headers and the SSRF guard, and the control plane's settings.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Final
from urllib.parse import SplitResult, urlsplit

import msgspec

from ..upstream import ssrf
from ..upstream.ssrf import HostGuard
from . import container
from .access import Auth
from .errors import Invalid, show, what
from .schema import GatewayConfig, Remote, RouteConfig, ServerConfig
from .secrets import SECRET_REF
from .units import format_duration
from .walker import build, convert


def gateway(data: object) -> GatewayConfig:
    if data is None:
        raise Invalid("", "config is empty (expected a mapping with a 'servers' key)")
    if not isinstance(data, dict):
        raise Invalid("", f"the top level must be a mapping, got {what(data)}")
    key = "servers"
    if "mcpServers" in data:  # Claude Desktop's format
        if "servers" in data:
            raise Invalid("mcpServers", "use either servers or mcpServers, not both")
        key = "mcpServers"
    raw_servers = data.get(key)
    if raw_servers is None:
        raise Invalid("servers", "missing: list at least one server under 'servers:'")
    if not isinstance(raw_servers, dict):
        raise Invalid(key, f"expected a mapping of server name -> settings, got {what(raw_servers)}")
    if not raw_servers:
        raise Invalid(key, "at least one server is required")
    rest = {k: v for k, v in data.items() if k not in ("servers", "mcpServers", "routes")}
    base = build(rest, GatewayConfig, "", {"servers": {}, "routes": None})
    if not re.fullmatch(r"[a-zA-Z0-9_.-]{1,4}", base.tool_separator):
        raise Invalid(
            "tool_separator", f"invalid separator {base.tool_separator!r} (1-4 of a-z A-Z 0-9 _ . -)"
        )
    servers: dict[str, ServerConfig] = {}
    for name, raw in raw_servers.items():
        path = f"{key}.{name}"
        if not isinstance(name, str) or not re.fullmatch(r"[a-zA-Z0-9_-]{1,32}", name):
            raise Invalid(path, "invalid server name (1-32 characters from a-z A-Z 0-9 _ -)")
        if base.tool_separator in name:
            raise Invalid(
                path,
                f"server name must not contain the tool separator {base.tool_separator!r} "
                f"(tools are named <server>{base.tool_separator}<tool>)",
            )
        servers[name] = _server(raw, path, claude=key == "mcpServers")
    origins = [_origin(o, f"allowed_origins[{i}]") for i, o in enumerate(base.allowed_origins)]
    a, listen = base.admin, base.listen
    if a.enabled and a.port and a.port == listen.port and a.host == listen.host:
        raise Invalid("admin.port", f"same address as listen ({listen.host}:{listen.port})")
    _control_plane(base)
    guard = _remote_guard(base.remote)
    for name, server in servers.items():
        if server.kind in ("remote", "http"):
            url, at = (server.http.base_url, "http.base_url") if server.http is not None else (server.url, "url")
            refused = guard.check_host(urlsplit(url or "").hostname or "")
            if refused is not None:  # decided by the URL alone; names are checked again when connecting
                raise Invalid(f"{key}.{name}.{at}", f"refused by the SSRF guard: {refused}")
    routes = _routes(data.get("routes"), servers)
    config: GatewayConfig = msgspec.structs.replace(
        base, servers=servers, routes=routes, allowed_origins=origins
    )
    _access(config)
    return config


def _access(config: GatewayConfig) -> None:
    """auth, policy and rate_limits: what needs what (key paths)."""
    auth, host = config.auth, config.listen.host
    if auth is None and not is_loopback(host):
        raise Invalid("auth", f"the data plane listens on {host} (beyond loopback) without authentication: set "
                              "auth: {api_keys: true} (then `mcp-gateway keys create --name NAME`) or auth.jwt, "
                              "or write `auth: none` to serve anyone who can reach it")
    if isinstance(auth, Auth):
        if not auth.methods:
            raise Invalid("auth", "no method: set api_keys: true or jwt (or write `auth: none` for no authentication)")
        if auth.resource is not None:
            _absolute_url(auth.resource, "auth.resource")
        for i, server in enumerate(auth.authorization_servers):
            _absolute_url(server, f"auth.authorization_servers[{i}]")
        if auth.keys is not None and auth.keys.path is not None and not auth.keys.path.strip():
            raise Invalid("auth.api_keys.path", "must not be empty (leave it out for the default)")
        if auth.jwt is not None:
            _jwt(auth)
    for i, rule in enumerate(config.policy):
        if (rule.allow is None) == (rule.deny is None):
            raise Invalid(f"policy[{i}]", "a rule is either {allow: {...}} or {deny: {...}}")
        _who(rule.match.who, f"policy[{i}].{rule.effect}.who")
    for i, limit in enumerate(config.rate_limits):
        path = f"rate_limits[{i}]"
        if limit.rate is None and limit.concurrent is None:
            raise Invalid(path, "set rate (calls per second, with burst) or concurrent, or both")
        if limit.rate is not None and not limit.rate > 0:
            raise Invalid(f"{path}.rate", f"must be more than 0 calls per second, got {limit.rate}")
        if limit.burst is not None and limit.rate is None:
            raise Invalid(f"{path}.burst", "a burst needs a rate (calls per second) to refill it")
        _who(limit.who, f"{path}.who")


def _who(patterns: list[str], path: str) -> None:
    for i, pattern in enumerate(patterns):
        kind, sep, name = pattern.partition(":")
        if sep and (kind not in ("group", "scope") or not name):
            raise Invalid(f"{path}[{i}]", f"{pattern!r}: a caller is NAME, group:NAME, scope:NAME or *")


def _absolute_url(url: str, path: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
        raise Invalid(path, f"{url!r} is not an absolute http(s) URL without a fragment")


def _jwt(auth: Auth) -> None:
    jwt = auth.jwt
    assert jwt is not None
    sources = [k for k in ("jwks_url", "jwks_file", "public_key_file", "secret") if getattr(jwt, k) is not None]
    if len(sources) != 1:
        raise Invalid("auth.jwt", "set exactly one of jwks_url, jwks_file, public_key_file or secret "
                                  f"(the keys tokens are verified with), got {sources or 'none'}")
    shared = [a for a in jwt.algorithms if a.startswith("HS")]
    if not jwt.algorithms:
        raise Invalid("auth.jwt.algorithms", "list at least one algorithm")
    if jwt.secret is not None:
        if not SECRET_REF.fullmatch(jwt.secret):
            raise Invalid("auth.jwt.secret", "must be 'env:NAME' or 'file:/absolute/path' (value not shown)")
        if len(shared) != len(jwt.algorithms):
            raise Invalid("auth.jwt.algorithms", "a shared secret verifies HS256/HS384/HS512 only")
    elif shared:
        raise Invalid("auth.jwt.algorithms", f"{shared[0]} needs a shared secret (auth.jwt.secret); public keys "
                                             "verify the others")
    if jwt.jwks_url is not None:
        _absolute_url(jwt.jwks_url, "auth.jwt.jwks_url")
        parts = urlsplit(jwt.jwks_url)
        if parts.scheme != "https" and not is_loopback(parts.hostname or ""):
            raise Invalid("auth.jwt.jwks_url", "must be https (plain http only on loopback)")
    if not jwt.issuer.strip():
        raise Invalid("auth.jwt.issuer", "must not be empty")
    if jwt.audience is None and auth.resource is None:
        raise Invalid("auth.jwt.audience", "tokens are checked for this gateway's audience: set auth.resource "
                                           "(this gateway's URI, e.g. https://mcp.example.com) or auth.jwt.audience")


def is_loopback(host: str) -> bool:
    """Whether a listen address is loopback only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _control_plane(base: GatewayConfig) -> None:
    """admin.token, store and audit: the rules the admin API and the CLI rely on (key paths)."""
    a = base.admin
    if a.token is not None and not SECRET_REF.fullmatch(a.token):  # never echoed: it may be the token
        raise Invalid("admin.token", "must be 'env:NAME' or 'file:/absolute/path' (value not shown)")
    if a.enabled and a.token is None and not is_loopback(a.host):
        raise Invalid("admin.token", f"the admin API listens beyond loopback ({a.host}): set admin.token "
                                      "(env:NAME or file:/absolute/path)")
    if base.store is not None and not base.store.path.strip():
        raise Invalid("store.path", "must not be empty")
    audit = base.audit
    if audit.path is not None and not audit.path.strip():
        raise Invalid("audit.path", "must not be empty (leave it out to use the store's database)")
    if audit.enabled and audit.path is None and base.store is None:
        raise Invalid("audit.path", "audit.enabled is true but there is no database: set audit.path or store.path")


def _remote_guard(remote: Remote) -> HostGuard:
    """The SSRF guard of ``remote:``, each entry checked (errors name remote.allow_hosts[i])."""
    for i, entry in enumerate(remote.allow_hosts or []):
        try:
            parsed = ssrf.parse_entry(entry)
        except ValueError as e:
            raise Invalid(f"remote.allow_hosts[{i}]", str(e)) from None
        if not isinstance(parsed, str) and not remote.allow_link_local and any(
                parsed.overlaps(net) for net in ssrf.LINK_LOCAL if net.version == parsed.version):
            raise Invalid(f"remote.allow_hosts[{i}]", f"{entry} is link-local; set remote.allow_link_local: "
                                                       "true to allow link-local and metadata addresses")
    return HostGuard.build(remote.allow_hosts, remote.allow_link_local)



_CONTAINER_KEYS: Final = (
    "limits", "network", "mounts", "user", "allow_root", "read_only", "tmpfs_size", "cap_add", "seccomp",
)  # fmt: skip
_CLAUDE_KEYS: Final = ("command", "args", "env", "type")
_REMOTE_KEYS: Final = ("transport", "headers", "bearer", "ca_file", "connect_timeout")
# Headers the gateway sets itself on requests to a remote server (or that would break HTTP framing).
_OWN_HEADERS: Final = frozenset({
    "host", "content-length", "content-type", "content-encoding", "transfer-encoding", "connection", "accept",
    "accept-encoding", "te", "upgrade", "expect", "keep-alive", "proxy-authorization", "mcp-session-id",
    "mcp-protocol-version", "mcp-method", "mcp-name", "last-event-id", "authorization"})
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEADER_VALUE = re.compile(r"[\x20-\x7e\t]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
def _server(raw: object, path: str, *, claude: bool) -> ServerConfig:
    """One server entry: types first, then the kind rules, then per-key checks."""
    if not isinstance(raw, dict):
        raise Invalid(path, f"expected a mapping, got {what(raw)}")
    if claude:
        for key in raw:
            if key not in _CLAUDE_KEYS:
                raise Invalid(
                    f"{path}.{key}", "unknown key (mcpServers entries take command, args, env, type)"
                )
        if "type" in raw and raw["type"] != "stdio":
            raise Invalid(
                f"{path}.type", f"only 'stdio' servers are supported here, got {show(raw['type'])}"
            )
        raw = {k: v for k, v in raw.items() if k != "type"}
    if type(raw.get("user")) is int:  # YAML reads `user: 1000` as an integer
        raw = {**raw, "user": str(raw["user"])}
    if "timeout" in raw:
        raise Invalid(f"{path}.timeout", "unknown key: use call_timeout (each call), start_timeout (start and "
                                          "initialize) or, for a url server, connect_timeout")
    s: ServerConfig = build(raw, ServerConfig, path)

    def bad(key: str, message: str) -> Invalid:
        return Invalid(f"{path}.{key}" if key else path, message)

    if raw.get("http") is not None:
        _check_http(raw, s, bad)
    set_ = [k for k in ("command", "image", "url") if raw.get(k) is not None]
    if "image" in set_ and "url" in set_:
        raise bad("", "set only one of image (a container) and url (a remote server)")
    if "url" in set_ and "command" in set_:
        raise bad("", "set only one of command (a local process) and url (a remote server)")
    if not set_ and s.kind != "http":
        raise bad("", "set command (a local process), image (a container), url (a remote server) or http "
                      "(a REST API)")
    if s.kind == "container" and (remote_keys := [k for k in _REMOTE_KEYS if k in raw]):
        raise bad(remote_keys[0], "only applies to remote servers (set url)")
    if s.kind == "container":
        if isinstance(s.command, str):
            raise bad("command", "with image, command must be a list of strings (e.g. [python, -m, server])")
        if "args" in raw:
            raise bad("args", "not allowed with image; put the arguments in command (a list)")
        if "cwd" in raw:
            raise bad("cwd", "only applies to process servers (a container's working dir is in its image)")
    else:
        loose = [k for k in _CONTAINER_KEYS if k in raw]
        if s.kind == "http":
            pass  # _check_http refused every key that does not apply
        elif s.kind == "remote":
            # lifecycle and pool apply to processes too (a process per session or per call).
            for key in ("args", "env", "cwd", "secrets", *loose):
                if key in raw:
                    hint = " (its credentials are bearer and headers)" if key in ("env", "secrets") else ""
                    raise bad(key, f"does not apply to remote servers (url){hint}")
            if not re.fullmatch(r"https?://\S+", s.url or "") or not urlsplit(s.url or "").hostname:
                # Not echoed: a URL may carry credentials.
                raise bad("url", "expected an http:// or https:// URL")
            _check_remote(s, bad)
        elif loose:
            raise bad(loose[0], "only applies to container servers (set image)")
        elif remote := [k for k in _REMOTE_KEYS if k in raw]:
            raise bad(remote[0], "only applies to remote servers (set url)")
        elif not s.argv() or not s.argv()[0].strip():
            raise bad("command", "must not be empty")
    for name in s.env:
        if not name or "=" in name or "\0" in name:
            raise bad(f"env.{name}", "invalid environment variable name")
    for name, ref in s.secrets.items():
        if not _ENV_NAME.fullmatch(name):
            raise bad(f"secrets.{name}", "invalid name (use an environment variable name, e.g. API_TOKEN)")
        if not SECRET_REF.fullmatch(ref):  # never echo it: it may be a pasted secret
            raise bad(f"secrets.{name}", "must be 'env:NAME' or 'file:/absolute/path' (value not shown)")
    both = container.env_conflict(s.env, s.secrets)
    if both is not None:
        raise bad(f"secrets.{both}", "also set in env; set it in one place")
    if s.kind == "container":
        try:
            s = msgspec.structs.replace(s, cap_add=container.check(
                image=s.image, user=s.user, allow_root=s.allow_root, network=s.network,
                mounts=[(m.source, m.target) for m in s.mounts], cap_add=s.cap_add, memory=s.limits.memory,
                cpus=s.limits.cpus, pids=s.limits.pids, tmpfs_size=s.tmpfs_size, seccomp=s.seccomp))
        except container.RuleError as e:
            raise bad(e.key, e.message) from None
    if isinstance(s.prefix, str) and not re.fullmatch(r"[a-zA-Z0-9_-]{1,32}", s.prefix):
        raise bad("prefix", f"invalid prefix {s.prefix!r} (1-32 of a-z A-Z 0-9 _ -), or true/false")
    if s.restart_backoff_max < s.restart_backoff:
        raise bad("restart_backoff_max", f"must be >= restart_backoff ({format_duration(s.restart_backoff)})")
    return s


def _check_remote(s: ServerConfig, bad: Callable[[str, str], Invalid]) -> None:
    """A remote server's own keys: headers it may be sent, its bearer reference, its CA file."""
    for name, value in s.headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise bad(f"headers.{name}", "invalid header name")
        if name.lower() in _OWN_HEADERS or name.lower().startswith("mcp-param-"):
            hint = "use bearer (a secret reference)" if name.lower() == "authorization" else "the gateway sets it"
            raise bad(f"headers.{name}", f"not allowed here: {hint}")
        if not _HEADER_VALUE.fullmatch(value):  # never echoed: it may be a key
            raise bad(f"headers.{name}", "invalid header value (printable ASCII only; value not shown)")
    if s.bearer is not None and not SECRET_REF.fullmatch(s.bearer):  # never echoed: it may be the token
        raise bad("bearer", "must be 'env:NAME' or 'file:/absolute/path' (value not shown)")
    if s.ca_file is not None and not s.ca_file.startswith("/"):
        raise bad("ca_file", f"must be an absolute path, got {s.ca_file!r}")


# What an http server (a REST API) takes besides http: the keys that apply to every kind.
_HTTP_SERVER_KEYS: Final = ("http", "prefix", "required", "audit_arguments", "tools", "on_tool_change",
                            "redact_results")
_HTTP_HINTS: Final = {
    "headers": " (put them under http.headers)", "call_timeout": " (use http.timeout)",
    "connect_timeout": " (use http.timeout)", "ca_file": " (use http.ca_file)",
    "bearer": " (write http.headers: {Authorization: \"Bearer ${env:NAME}\"})",
    "secrets": " (write ${env:NAME} in an http.headers value)", "env": " (write ${env:NAME} in an http.headers value)"}
# Headers an http server may not set: HTTP's framing, and what the gateway sets itself.
_REST_OWN_HEADERS: Final = frozenset({
    "host", "content-length", "content-encoding", "transfer-encoding", "connection", "accept-encoding", "te",
    "upgrade", "expect", "keep-alive", "proxy-authorization", "proxy-connection", "trailer"})
_KINDS: Final = {"command": "a local process", "image": "a container", "url": "a remote MCP server"}


def _check_http(raw: dict[str, object], s: ServerConfig, bad: Callable[[str, str], Invalid]) -> None:
    """An http server: no other kind's keys, a base_url, headers with well-formed secret references,
    and tools that can be served (the OpenAPI document is read now: its errors name http.openapi)."""
    from ..upstream import openapi
    from .rest import template_problem

    for key in ("command", "image", "url"):
        if raw.get(key) is not None:
            raise bad("", f"set only one of http (a REST API) and {key} ({_KINDS[key]})")
    for key in raw:
        if key not in _HTTP_SERVER_KEYS:
            raise bad(key, f"does not apply to http servers (a REST API){_HTTP_HINTS.get(key, '')}")
    api = s.http
    assert api is not None
    try:
        parts: SplitResult | None = urlsplit(api.base_url)
        _port = parts.port if parts is not None else None  # (a port that is not a number raises)
    except ValueError:
        parts = None
    # Never echoed: a URL may carry credentials.
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or re.search(r"\s", api.base_url):
        raise bad("http.base_url", "expected an http:// or https:// URL")
    if "@" in parts.netloc:
        raise bad("http.base_url", "must not hold credentials (user:password@); send them in http.headers")
    if parts.fragment or api.base_url.endswith("#"):
        raise bad("http.base_url", "must not have a fragment (#...)")
    for name, value in api.headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise bad(f"http.headers.{name}", "invalid header name")
        if name.lower() in _REST_OWN_HEADERS:
            raise bad(f"http.headers.{name}", "not allowed here: the gateway sets it")
        problem = template_problem(value)
        if problem is not None:  # never echoed: it may be a pasted key
            raise bad(f"http.headers.{name}", f"{problem} (value not shown)")
        if not _HEADER_VALUE.fullmatch(value):
            raise bad(f"http.headers.{name}", "invalid header value (printable ASCII only; value not shown)")
    if api.ca_file is not None and not api.ca_file.startswith("/"):
        raise bad("http.ca_file", f"must be an absolute path, got {api.ca_file!r}")
    if api.openapi is not None and not api.openapi.strip():
        raise bad("http.openapi", "must not be empty (a path to an OpenAPI document, or leave it out)")
    if api.openapi is None and not api.tools:
        raise bad("http", "no tools: set openapi (an OpenAPI 3.0 or 3.1 document) or tools (by hand), or both")
    if api.openapi is None and api.operations is not None:
        raise bad("http.operations", "chooses operations of an OpenAPI document: set http.openapi")
    try:
        found = openapi.load(api)
    except openapi.SpecError as e:
        raise bad(f"http.{e.key}", e.message) from None
    if not found.tools:
        raise bad("http.openapi" if api.openapi else "http.tools", "the document has no operations to serve")


def _origin(value: str, path: str) -> str:
    """``*`` or ``scheme://host[:port]``, lowercased and without a trailing slash (as browsers send it)."""
    origin = value.strip().rstrip("/").lower()
    if origin != "*" and not re.fullmatch(r"https?://[^/\s?#]+", origin):
        raise Invalid(path, f"invalid origin {value!r} (use e.g. https://app.example.com, or *)")
    return origin



_ROUTE_CHARS = re.compile(r"[a-zA-Z0-9_./-]+")
_ENDPOINT_NAMES: Final = frozenset({"mcp", "sse", "message", "ws"})  # the gateway serves these under a route


def _routes(raw: object, servers: dict[str, ServerConfig]) -> dict[str, RouteConfig]:
    """Normalize route paths and check their server lists; None means everything at ``/``."""
    if raw is None:
        return {"/": RouteConfig(servers=list(servers))}
    if not isinstance(raw, dict):
        raise Invalid("routes", f"expected a mapping of path -> server names, got {what(raw)}")
    if not raw:
        raise Invalid("routes", "no routes (leave routes out to serve every server at /)")
    known = ", ".join(servers)
    out: dict[str, RouteConfig] = {}
    first_key: dict[str, str] = {}
    for key, members in raw.items():
        path = f"routes.{key}"
        if not isinstance(key, str):
            raise Invalid(path, "a route must be a string path such as /team-a")
        route = key.rstrip("/") or "/"
        segments = route.split("/")[1:]
        if not route.startswith("/"):
            raise Invalid(path, f"a route must start with '/' (e.g. /{key})")
        if not _ROUTE_CHARS.fullmatch(route):
            raise Invalid(path, "a route may only contain a-z A-Z 0-9 _ . / -")
        if route != "/" and any(seg in ("", ".", "..") for seg in segments):
            raise Invalid(path, "empty, '.' or '..' path segment")
        if segments[-1] in _ENDPOINT_NAMES:
            raise Invalid(path, f"a route must not end with /{segments[-1]} (the gateway adds the endpoints)")
        if route in out:
            raise Invalid(path, f"same route as {first_key[route]!r}")
        if isinstance(members, dict):
            settings = build(members, RouteConfig, path)
            names, names_path = settings.servers, f"{path}.servers"
        else:
            names, names_path = convert(members, list[str], path), path
            settings = RouteConfig(servers=names)
        if not names:
            raise Invalid(names_path, "lists no servers")
        for i, name in enumerate(names):
            if name not in servers:
                raise Invalid(f"{names_path}[{i}]", f"unknown server {name!r} (known: {known})")
            if name in names[:i]:
                raise Invalid(f"{names_path}[{i}]", f"server {name!r} is listed twice")
        out[route], first_key[route] = settings, key
    return out
