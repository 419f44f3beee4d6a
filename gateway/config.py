"""Gateway configuration: a YAML or JSON file -> frozen msgspec Structs.

Every problem is a :class:`ConfigError` whose text is one line starting with the
key path (``servers.time.args[0]: expected a string, got an integer``), with the
file name in front when the config came from a file.

Validation is a small walker over the Struct annotations rather than
``msgspec.convert``: msgspec reports dict keys as ``[...]`` in its error paths, and
``servers.<name>`` is exactly the part of the path a user needs to see. The
walker parses durations/sizes (fields marked ``Duration``/``Size``), checks the
``msgspec.Meta`` bounds, and builds the Structs, so they stay plain msgspec types
(encodable, JSON-schema-able) for the admin API.

Server kinds (DESIGN.md, "Config conventions"): ``image`` makes a container
server, ``url`` a remote server, ``command`` alone a local process (Claude
Desktop's ``command`` + ``args`` + ``env``). A file whose top level is Claude
Desktop's ``{"mcpServers": {...}}`` loads as it is.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
import shlex
import types
from collections.abc import Callable
from typing import Annotated, Any, Final, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

import msgspec
import yaml

from .upstream import ssrf
from .upstream.ssrf import HostGuard

__all__ = [
    "Admin",
    "Audit",
    "ConfigError",
    "ContainerLimits",
    "GatewayConfig",
    "Limits",
    "Listen",
    "Mount",
    "Remote",
    "RouteConfig",
    "SecretError",
    "ServerConfig",
    "Store",
    "Timeouts",
    "describe",
    "format_duration",
    "format_size",
    "load_config",
    "load_document",
    "parse_config",
    "parse_duration",
    "parse_size",
    "resolve_secret",
]

KiB: Final = 1024
MiB: Final = 1024 * KiB
GiB: Final = 1024 * MiB
TiB: Final = 1024 * GiB


class ConfigError(Exception):
    """A configuration problem. ``str(e)`` is one line: ``[source: ]key.path: message``."""

    def __init__(self, message: str, *, path: str = "", source: str = "") -> None:
        self.message, self.path, self.source = message, path, source
        super().__init__(": ".join(part for part in (source, path, message) if part))


class SecretError(ConfigError):
    """A secret reference that cannot be resolved. The message never holds the secret."""


# ---------------------------------------------------------------- durations and sizes

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)([kmgt](?:i?b)?|b)?")
_SIZE_UNITS: Final = {"": 1, "b": 1, "k": KiB, "m": MiB, "g": GiB, "t": TiB}
_DURATION_HINT = "use e.g. 30s, 5m, 250ms, 1h or a number of seconds"
_SIZE_HINT = "use e.g. 256m, 1g or a number of bytes"


def parse_duration(v: object) -> float:
    """Seconds from ``30s``, ``5m``, ``250ms``, ``1h``, ``1m30s``, ``"30"`` or a plain number."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"invalid duration {v!r} (must be a finite number >= 0)")
        return float(v)
    if not isinstance(v, str):
        raise ValueError(
            f"invalid duration: expected a string or a number, got {_what(v)} ({_DURATION_HINT})"
        )
    s = v.strip().lower().replace(" ", "")
    if _NUMBER.fullmatch(s):
        return float(s)
    parts = _DURATION_PART.findall(s)
    # findall skips junk silently, so require the parts to spell the whole string.
    if not parts or "".join(n + u for n, u in parts) != s:
        raise ValueError(f"invalid duration {v!r} ({_DURATION_HINT})")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def parse_size(v: object) -> int:
    """Bytes from ``256m``, ``1g``, ``64k``, ``4MiB``, ``4mb``, ``"512"`` or a plain integer (k = 1024)."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        if isinstance(v, float) and not v.is_integer() or v < 0:
            raise ValueError(f"invalid size {v!r} (must be a whole number of bytes >= 0)")
        return int(v)
    if not isinstance(v, str):
        raise ValueError(f"invalid size: expected a string or an integer, got {_what(v)} ({_SIZE_HINT})")
    m = _SIZE_RE.fullmatch(v.strip().lower().replace(" ", ""))
    if m is None or (m[2] in (None, "b") and "." in m[1]):
        raise ValueError(f"invalid size {v!r} ({_SIZE_HINT})")
    return int(float(m[1]) * _SIZE_UNITS[(m[2] or "")[:1]])


def format_duration(seconds: float) -> str:
    """The shortest of ``250ms``, ``2h``, ``5m``, ``30s`` that parse_duration reads back."""
    if 0 < seconds < 1:
        return f"{seconds * 1000:g}ms"
    for unit, mult in (("h", 3600), ("m", 60)):
        if seconds >= mult and seconds % mult == 0:
            return f"{int(seconds // mult)}{unit}"
    return f"{seconds:g}s"


def format_size(n: int) -> str:
    """``1g``, ``256m``, ``64k`` when exact, else the number of bytes."""
    for unit, mult in (("g", GiB), ("m", MiB), ("k", KiB)):
        if n >= mult and n % mult == 0:
            return f"{n // mult}{unit}"
    return str(n)


class _Unit:
    """``Annotated`` marker: the raw value goes through ``parse``; bounds print with ``fmt``."""

    def __init__(self, parse: Callable[[object], Any], fmt: Callable[[Any], str], what: str) -> None:
        self.parse, self.fmt, self.what = parse, fmt, what


_DURATION: Final = _Unit(parse_duration, format_duration, "a duration")
_SIZE: Final = _Unit(parse_size, format_size, "a size")

Duration = Annotated[float, _DURATION, msgspec.Meta(ge=0)]
PositiveDuration = Annotated[float, _DURATION, msgspec.Meta(gt=0)]
Size = Annotated[int, _SIZE, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]


# ---------------------------------------------------------------- the Structs


class Listen(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Where the data plane listens (port 0: any free port)."""

    host: str = "127.0.0.1"
    port: Port = 8080


class Limits(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Data-plane bounds: sizes in bytes, counts."""

    max_body: Size = 4 * MiB
    max_header: Size = 64 * KiB
    max_message: Size = 16 * MiB  # largest single upstream message (one JSON line)
    max_sessions: PositiveInt = 20000
    # Sessions one client address (an IPv6 /64) may hold; None: max_sessions. At max_sessions the
    # address holding the most sessions loses its least recently used idle one first.
    max_sessions_per_peer: PositiveInt | None = None
    max_inflight_per_session: PositiveInt = 256
    # Capped at start to what the file-descriptor limit allows (see http/fdlimit.py).
    max_connections: PositiveInt = 20000
    # Connections one client address may hold (None: a quarter of max_connections), so that one
    # client's open streams cannot take every slot.
    max_connections_per_peer: PositiveInt | None = None
    # What each upstream server may write to the gateway's log (stderr, log notifications):
    # lines per second sustained, and a burst; the rest is dropped and counted.
    upstream_log_rate: Annotated[float, msgspec.Meta(gt=0)] = 20.0
    upstream_log_burst: PositiveInt = 200


class Timeouts(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Gateway-wide timeouts in seconds; servers may override ``call`` and ``start``."""

    call: PositiveDuration = 60.0
    read: PositiveDuration = 30.0  # to receive a whole request once it started
    write: PositiveDuration = 30.0  # a client that reads nothing of an answer or stream this long is dropped
    idle: PositiveDuration = 120.0  # keep-alive idle
    session_idle: PositiveDuration = 3600.0  # a client session unused this long expires
    shutdown_grace: Duration = 10.0
    start: PositiveDuration = 30.0  # server start + initialize
    # Liveness: an upstream silent this long with no call in flight gets a ping (0: never), and
    # one that does not answer a ping within ping_timeout is restarted.
    ping_interval: Duration = 30.0
    ping_timeout: PositiveDuration = 10.0
    # A WebSocket client silent this long gets a Ping; one silent as long again is closed (0: never).
    ws_ping: Duration = 30.0


class Admin(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The admin API (control plane)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: Port = 8081
    # "env:NAME" or "file:/abs/path"; None: a token generated at first start, printed once to stderr and
    # kept hashed in the store (every start without a store). Required beyond loopback.
    token: str | None = None


class Store(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The config store: a SQLite database (WAL) of versioned config documents (admin/store.py)."""

    path: str


class Audit(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The audit log (admin/audit.py): one row per tools/call, prompts/get, resources/read and admin change."""

    enabled: bool | None = None  # None: on when there is a database (path, or the store's)
    path: str | None = None  # None: the store's database
    retention: Duration = 30 * 86400.0  # rows older than this are deleted (0: kept whatever their age)
    max_rows: PositiveInt | None = 1_000_000  # the oldest rows beyond this are deleted (None: no cap)
    queue: PositiveInt = 10000  # records waiting to be written; beyond, records are dropped and counted


class ContainerLimits(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """cgroup limits of one container."""

    memory: Annotated[int, _SIZE, msgspec.Meta(ge=6 * MiB)] = 256 * MiB  # Docker refuses < 6m
    cpus: Annotated[float, msgspec.Meta(gt=0)] = 0.5
    pids: PositiveInt = 128


class Mount(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """A bind mount into a container; read-only unless ``rw``."""

    source: str
    target: str
    rw: bool = False


class ServerConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """One upstream MCP server: a local process, a hardened container or a remote URL."""

    command: str | list[str] | None = None
    args: list[str] = []
    env: dict[str, str] = {}
    cwd: str | None = None
    image: str | None = None
    url: str | None = None
    # env var name inside the server -> "env:NAME" or "file:/abs/path", read at start time.
    secrets: dict[str, str] = {}
    lifecycle: Literal["shared", "session", "call"] = "shared"
    pool: Annotated[int, msgspec.Meta(ge=0)] = 0
    max_instances: PositiveInt = 64  # session/call lifecycles: most instances at once, warm pool included
    idle_timeout: PositiveDuration = 300.0
    start_timeout: PositiveDuration | None = None  # None: timeouts.start
    call_timeout: PositiveDuration | None = None  # None: timeouts.call
    # Container sandbox: hardened by default, each key loosens one thing.
    limits: ContainerLimits = msgspec.field(default_factory=ContainerLimits)
    network: str = "none"
    mounts: list[Mount] = []
    user: str = "65534:65534"
    allow_root: bool = False
    read_only: bool = True
    tmpfs_size: Size = 64 * MiB
    cap_add: list[str] = []
    restart_backoff: Duration = 0.5
    restart_backoff_max: PositiveDuration = 30.0
    # Whether /ready waits for this server (false: the gateway is ready without it)
    required: bool = True
    # Liveness overrides (None: timeouts.ping_interval / ping_timeout), and how many call
    # timeouts in a row make the gateway ping the server at once, whatever else is in flight.
    ping_interval: Duration | None = None
    ping_timeout: PositiveDuration | None = None
    ping_after_timeouts: PositiveInt = 3
    # Container system calls: "strict" is Docker's default profile minus what a server never needs
    # and an escape would (ptrace, memfd_create, userfaultfd, keyctl, bpf, ...); see sandbox/seccomp.py.
    seccomp: Literal["strict", "docker-default"] = "strict"
    # What the gateway offers the server as its client, relaying each request to the client of the
    # call it belongs to (when that client offered it too); [] offers nothing.
    client_capabilities: list[Literal["sampling", "elicitation", "roots"]] = msgspec.field(
        default_factory=lambda: ["sampling", "elicitation", "roots"])
    # How clients see this server's tool and prompt names: None follows the route (true: the
    # server's name), false serves them unchanged, a string prefixes that instead of the name.
    prefix: bool | str | None = None
    # The audit log stores the arguments of this server's calls (not only their digest).
    audit_arguments: bool = False
    # Remote servers (url): the wire, and the only credentials the server gets (never the client's).
    transport: Literal["streamable-http", "sse", "auto"] = "streamable-http"
    headers: dict[str, str] = {}  # sent with every request (check prints the names only)
    bearer: str | None = None  # "env:NAME" or "file:/abs/path": Authorization: Bearer <it>, read at start
    ca_file: str | None = None  # a PEM CA bundle trusted besides the system's (TLS is always verified)
    connect_timeout: PositiveDuration = 10.0  # a TCP connect and TLS handshake

    @property
    def kind(self) -> Literal["process", "container", "remote"]:
        """``container`` (image), ``remote`` (url) or ``process`` (command)."""
        return "container" if self.image is not None else "remote" if self.url is not None else "process"

    def argv(self) -> list[str]:
        """Process: command + args. Container: its command ([] = the image's default). Remote: []."""
        if self.command is None:
            return []
        head = [self.command] if isinstance(self.command, str) else list(self.command)
        return head + list(self.args)


class Metrics(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Prometheus metrics: served on the admin listener, and on the data plane only if asked."""

    enabled: bool = True  # counting on the hot path (off: nothing is counted; for comparisons)
    data_plane: bool = False  # also serve GET /metrics on the data plane's listener


class Remote(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Where remote (url) servers may be: the SSRF guard (gateway/upstream/ssrf.py). Loopback and
    private addresses are allowed; link-local and cloud metadata addresses are not."""

    allow_hosts: list[str] | None = None  # host names (*.example.com), addresses or CIDRs; None: any
    allow_link_local: bool = False  # 169.254.0.0/16, fe80::/10 and the cloud metadata endpoints


class RouteConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """One route: its servers, in order, and whether tool and prompt names get the server prefix.

    Written either as a plain list of server names or as ``{servers: [...], prefix: false}``.
    """

    servers: list[str]
    prefix: bool = True  # False: names as the servers have them (a server's own `prefix` wins)


class GatewayConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The whole gateway configuration. After parse_config, ``routes`` is resolved."""

    listen: Listen = msgspec.field(default_factory=Listen)
    servers: dict[str, ServerConfig]
    routes: dict[str, RouteConfig] | None = None  # None: {"/": every server}
    tool_separator: str = "__"
    allowed_origins: list[str] = []  # besides localhost; "*" allows any
    limits: Limits = msgspec.field(default_factory=Limits)
    timeouts: Timeouts = msgspec.field(default_factory=Timeouts)
    admin: Admin = msgspec.field(default_factory=Admin)
    store: Store | None = None  # None: no store, the file is the configuration
    audit: Audit = msgspec.field(default_factory=Audit)
    metrics: Metrics = msgspec.field(default_factory=Metrics)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"  # json: one object per line, with route/session/server/tool
    remote: Remote = msgspec.field(default_factory=Remote)

    def resolved_routes(self) -> dict[str, list[str]]:
        """Route path -> server names, with the default ``{"/": all servers}`` applied."""
        return {path: list(route.servers) for path, route in self.route_configs().items()}

    def route_configs(self) -> dict[str, RouteConfig]:
        """Route path -> its settings, with the default ``{"/": all servers}`` applied."""
        return dict(self.routes) if self.routes is not None else {"/": RouteConfig(servers=list(self.servers))}

    def name_prefix(self, route: str, server: str) -> str | None:
        """What a server's tool and prompt names start with on a route (before the separator);
        None: the names are served unchanged."""
        own = self.servers[server].prefix
        if isinstance(own, str):
            return own
        use = own if own is not None else self.route_configs()[route].prefix
        return server if use else None

    def start_timeout_for(self, server: str) -> float:
        """The effective start (+ initialize) timeout of one server."""
        own = self.servers[server].start_timeout
        return self.timeouts.start if own is None else own

    def call_timeout_for(self, server: str) -> float:
        """The effective per-call timeout of one server."""
        own = self.servers[server].call_timeout
        return self.timeouts.call if own is None else own

    def ping_for(self, server: str) -> tuple[float, float]:
        """The effective liveness (ping interval, ping timeout) of one server."""
        s = self.servers[server]
        interval = self.timeouts.ping_interval if s.ping_interval is None else s.ping_interval
        timeout = self.timeouts.ping_timeout if s.ping_timeout is None else s.ping_timeout
        return interval, timeout


# ---------------------------------------------------------------- loading


class _Invalid(Exception):
    """Raised inside the walker; parse_config adds the source and turns it into ConfigError."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path, self.message = path, message


class _Loader(yaml.SafeLoader):  # type: ignore[misc,unused-ignore]
    """``yaml.safe_load`` that refuses duplicate keys (plain PyYAML keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            # A merge key (<<) may legitimately be overridden by explicit keys.
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def root_user_problem(user: str) -> str | None:
    """Why a container ``user`` runs, or may run, as uid 0 or gid 0; None when it is safe.

    A name resolves through the image's /etc/passwd or /etc/group, which we do not read, and a
    uid alone gets the image's group for it (gid 0 when the image does not list the uid).
    Shared by config validation and the sandbox profile, which checks specs built by code too.
    """
    name, sep, group = (part.strip() for part in user.partition(":"))
    if not name or name in ("0", "root"):  # empty: whatever the image says, often root
        return f"{user!r} runs as root (or as the image's user)"
    if not _NUMERIC_ID.fullmatch(name):
        return f"{user!r} names a user, whose uid (maybe 0) only the image's /etc/passwd knows"
    uid = int(name)
    if uid == 0:
        return f"{user!r} runs as root (uid 0)"
    if not sep or not group:
        return (f"{user!r} sets no group, so the group comes from the image (gid 0 if the image does not "
                f"list uid {uid})")
    if not _NUMERIC_ID.fullmatch(group):
        return f"{user!r} names a group, whose gid (maybe 0) only the image's /etc/group knows"
    gid = int(group)
    if gid == 0:
        return f"{user!r} runs with group root (gid 0)"
    for what, n in (("uid", uid), ("gid", gid)):
        if not 0 < n <= _MAX_ID:
            return f"{user!r}: {what} {n} is out of range (1..{_MAX_ID})"
    return None


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read and validate a config file: JSON if it ends in ``.json``, else YAML."""
    return parse_config(load_document(path), source=os.fspath(path))


def load_document(path: str | os.PathLike[str]) -> object:
    """A config file's data, not yet validated (the config store keeps documents as written)."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            text = f.read().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config: {e.strerror or e}", source=source) from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text (byte {e.start})", source=source) from None
    try:
        if source.lower().endswith(".json"):
            data = json.loads(text, object_pairs_hook=_no_duplicates) if text.strip() else None
        else:
            data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}", source=source
        ) from None
    except ValueError as e:  # duplicate key in JSON
        raise ConfigError(f"invalid JSON: {e}", source=source) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"invalid YAML{where}: {e.problem or e.context}", source=source) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML: {' '.join(str(e).split())}", source=source) from None
    return data


def parse_config(data: object, *, source: str = "<config>") -> GatewayConfig:
    """Validate already-loaded Python data (a dict from YAML/JSON) into a GatewayConfig."""
    try:
        return _gateway(data)
    except _Invalid as e:
        # "<config>" is only a placeholder: the message already starts with the key path.
        raise ConfigError(e.message, path=e.path, source="" if source == "<config>" else source) from None


def _gateway(data: object) -> GatewayConfig:
    if data is None:
        raise _Invalid("", "config is empty (expected a mapping with a 'servers' key)")
    if not isinstance(data, dict):
        raise _Invalid("", f"the top level must be a mapping, got {_what(data)}")
    key = "servers"
    if "mcpServers" in data:  # Claude Desktop's format
        if "servers" in data:
            raise _Invalid("mcpServers", "use either servers or mcpServers, not both")
        key = "mcpServers"
    raw_servers = data.get(key)
    if raw_servers is None:
        raise _Invalid("servers", "missing: list at least one server under 'servers:'")
    if not isinstance(raw_servers, dict):
        raise _Invalid(key, f"expected a mapping of server name -> settings, got {_what(raw_servers)}")
    if not raw_servers:
        raise _Invalid(key, "at least one server is required")
    rest = {k: v for k, v in data.items() if k not in ("servers", "mcpServers", "routes")}
    base = _struct(rest, GatewayConfig, "", {"servers": {}, "routes": None})
    if not re.fullmatch(r"[a-zA-Z0-9_.-]{1,4}", base.tool_separator):
        raise _Invalid(
            "tool_separator", f"invalid separator {base.tool_separator!r} (1-4 of a-z A-Z 0-9 _ . -)"
        )
    servers: dict[str, ServerConfig] = {}
    for name, raw in raw_servers.items():
        path = f"{key}.{name}"
        if not isinstance(name, str) or not re.fullmatch(r"[a-zA-Z0-9_-]{1,32}", name):
            raise _Invalid(path, "invalid server name (1-32 characters from a-z A-Z 0-9 _ -)")
        if base.tool_separator in name:
            raise _Invalid(
                path,
                f"server name must not contain the tool separator {base.tool_separator!r} "
                f"(tools are named <server>{base.tool_separator}<tool>)",
            )
        servers[name] = _server(raw, path, claude=key == "mcpServers")
    origins = [_origin(o, f"allowed_origins[{i}]") for i, o in enumerate(base.allowed_origins)]
    a, listen = base.admin, base.listen
    if a.enabled and a.port and a.port == listen.port and a.host == listen.host:
        raise _Invalid("admin.port", f"same address as listen ({listen.host}:{listen.port})")
    _control_plane(base)
    guard = _remote_guard(base.remote)
    for name, server in servers.items():
        if server.kind == "remote":
            refused = guard.check_host(urlsplit(server.url or "").hostname or "")
            if refused is not None:  # decided by the URL alone; names are checked again when connecting
                raise _Invalid(f"{key}.{name}.url", f"refused by the SSRF guard: {refused}")
    routes = _routes(data.get("routes"), servers)
    config: GatewayConfig = msgspec.structs.replace(
        base, servers=servers, routes=routes, allowed_origins=origins
    )
    return config


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
    if a.token is not None and not _SECRET_REF.fullmatch(a.token):  # never echoed: it may be the token
        raise _Invalid("admin.token", "must be 'env:NAME' or 'file:/absolute/path' (value not shown)")
    if a.enabled and a.token is None and not is_loopback(a.host):
        raise _Invalid("admin.token", f"the admin API listens beyond loopback ({a.host}): set admin.token "
                                      "(env:NAME or file:/absolute/path)")
    if base.store is not None and not base.store.path.strip():
        raise _Invalid("store.path", "must not be empty")
    audit = base.audit
    if audit.path is not None and not audit.path.strip():
        raise _Invalid("audit.path", "must not be empty (leave it out to use the store's database)")
    if audit.enabled and audit.path is None and base.store is None:
        raise _Invalid("audit.path", "audit.enabled is true but there is no database: set audit.path or store.path")


def _remote_guard(remote: Remote) -> HostGuard:
    """The SSRF guard of ``remote:``, each entry checked (errors name remote.allow_hosts[i])."""
    for i, entry in enumerate(remote.allow_hosts or []):
        try:
            parsed = ssrf.parse_entry(entry)
        except ValueError as e:
            raise _Invalid(f"remote.allow_hosts[{i}]", str(e)) from None
        if not isinstance(parsed, str) and not remote.allow_link_local and any(
                parsed.overlaps(net) for net in ssrf.LINK_LOCAL if net.version == parsed.version):
            raise _Invalid(f"remote.allow_hosts[{i}]", f"{entry} is link-local; set remote.allow_link_local: "
                                                       "true to allow link-local and metadata addresses")
    return HostGuard.build(remote.allow_hosts, remote.allow_link_local)


# ---------------------------------------------------------------- servers

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
_SECRET_REF = re.compile(r"env:[A-Za-z_][A-Za-z0-9_]*|file:/.+")
_USER = re.compile(r"[a-zA-Z0-9_.-]+(?::[a-zA-Z0-9_.-]+)?")
_NUMERIC_ID = re.compile(r"[+-]?[0-9]+")  # as Docker (Go's Atoi) reads ids: +0, -0 and 000 are all 0
_MAX_ID = 2**31 - 1  # Docker refuses larger ids; refusing them here keeps any 32-bit wrap to 0 out of play
_NETWORK = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")  # no "container:<id>": that joins another's netns
_CAPS: Final = frozenset(
    "AUDIT_CONTROL AUDIT_READ AUDIT_WRITE BLOCK_SUSPEND BPF CHECKPOINT_RESTORE CHOWN DAC_OVERRIDE "
    "DAC_READ_SEARCH FOWNER FSETID IPC_LOCK IPC_OWNER KILL LEASE LINUX_IMMUTABLE MAC_ADMIN MAC_OVERRIDE "
    "MKNOD NET_ADMIN NET_BIND_SERVICE NET_BROADCAST NET_RAW PERFMON SETFCAP SETGID SETPCAP SETUID "
    "SYS_ADMIN SYS_BOOT SYS_CHROOT SYS_MODULE SYS_NICE SYS_PACCT SYS_PTRACE SYS_RAWIO SYS_RESOURCE "
    "SYS_TIME SYS_TTY_CONFIG SYSLOG WAKE_ALARM ALL".split()
)


def _server(raw: object, path: str, *, claude: bool) -> ServerConfig:
    """One server entry: types first, then the kind rules, then per-key checks."""
    if not isinstance(raw, dict):
        raise _Invalid(path, f"expected a mapping, got {_what(raw)}")
    if claude:
        for key in raw:
            if key not in _CLAUDE_KEYS:
                raise _Invalid(
                    f"{path}.{key}", "unknown key (mcpServers entries take command, args, env, type)"
                )
        if "type" in raw and raw["type"] != "stdio":
            raise _Invalid(
                f"{path}.type", f"only 'stdio' servers are supported here, got {_show(raw['type'])}"
            )
        raw = {k: v for k, v in raw.items() if k != "type"}
    if type(raw.get("user")) is int:  # YAML reads `user: 1000` as an integer
        raw = {**raw, "user": str(raw["user"])}
    if "timeout" in raw:
        raise _Invalid(f"{path}.timeout", "unknown key: use call_timeout (each call), start_timeout (start and "
                                          "initialize) or, for a url server, connect_timeout")
    s = _struct(raw, ServerConfig, path)

    def bad(key: str, message: str) -> _Invalid:
        return _Invalid(f"{path}.{key}" if key else path, message)

    set_ = [k for k in ("command", "image", "url") if raw.get(k) is not None]
    if "image" in set_ and "url" in set_:
        raise bad("", "set only one of image (a container) and url (a remote server)")
    if "url" in set_ and "command" in set_:
        raise bad("", "set only one of command (a local process) and url (a remote server)")
    if not set_:
        raise bad("", "set command (a local process), image (a container) or url (a remote server)")
    if s.kind == "container" and (remote_keys := [k for k in _REMOTE_KEYS if k in raw]):
        raise bad(remote_keys[0], "only applies to remote servers (set url)")
    if s.kind == "container":
        if not s.image or not s.image.strip():
            raise bad("image", "must not be empty")
        if isinstance(s.command, str):
            raise bad("command", "with image, command must be a list of strings (e.g. [python, -m, server])")
        if "args" in raw:
            raise bad("args", "not allowed with image; put the arguments in command (a list)")
        if "cwd" in raw:
            raise bad("cwd", "only applies to process servers (a container's working dir is in its image)")
    else:
        loose = [k for k in _CONTAINER_KEYS if k in raw]
        if s.kind == "remote":
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
        if not _SECRET_REF.fullmatch(ref):  # never echo it: it may be a pasted secret
            raise bad(f"secrets.{name}", "must be 'env:NAME' or 'file:/absolute/path' (value not shown)")
        if name in s.env:
            raise bad(f"secrets.{name}", "also set in env; set it in one place")
    if not _USER.fullmatch(s.user):
        raise bad("user", f"invalid user {s.user!r} (use uid[:gid] or name[:group], e.g. 65534:65534)")
    problem = None if s.allow_root else root_user_problem(s.user)
    if problem:
        raise bad("user", f"{problem}; use a numeric non-root uid:gid such as 65534:65534, "
                          "or set allow_root: true if you really mean it")
    if not _NETWORK.fullmatch(s.network):
        raise bad("network", f"invalid network {s.network!r} (none, host or a network's name)")
    for i, m in enumerate(s.mounts):
        for key in ("source", "target"):
            p = getattr(m, key)
            if not p.startswith("/") or "," in p or ":" in p:
                raise bad(f"mounts[{i}].{key}", f"must be an absolute path without ',' or ':', got {p!r}")
        if m.target.rstrip("/") == "":
            raise bad(f"mounts[{i}].target", "must not be /")
    caps = []
    for i, cap in enumerate(s.cap_add):
        norm = cap.upper().removeprefix("CAP_")
        if norm not in _CAPS:
            raise bad(f"cap_add[{i}]", f"unknown capability {cap!r}")
        caps.append(norm)
    if isinstance(s.prefix, str) and not re.fullmatch(r"[a-zA-Z0-9_-]{1,32}", s.prefix):
        raise bad("prefix", f"invalid prefix {s.prefix!r} (1-32 of a-z A-Z 0-9 _ -), or true/false")
    if s.restart_backoff_max < s.restart_backoff:
        raise bad("restart_backoff_max", f"must be >= restart_backoff ({format_duration(s.restart_backoff)})")
    server: ServerConfig = msgspec.structs.replace(s, cap_add=caps)
    return server


def _check_remote(s: ServerConfig, bad: Callable[[str, str], _Invalid]) -> None:
    """A remote server's own keys: headers it may be sent, its bearer reference, its CA file."""
    for name, value in s.headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise bad(f"headers.{name}", "invalid header name")
        if name.lower() in _OWN_HEADERS or name.lower().startswith("mcp-param-"):
            hint = "use bearer (a secret reference)" if name.lower() == "authorization" else "the gateway sets it"
            raise bad(f"headers.{name}", f"not allowed here: {hint}")
        if not _HEADER_VALUE.fullmatch(value):  # never echoed: it may be a key
            raise bad(f"headers.{name}", "invalid header value (printable ASCII only; value not shown)")
    if s.bearer is not None and not _SECRET_REF.fullmatch(s.bearer):  # never echoed: it may be the token
        raise bad("bearer", "must be 'env:NAME' or 'file:/absolute/path' (value not shown)")
    if s.ca_file is not None and not s.ca_file.startswith("/"):
        raise bad("ca_file", f"must be an absolute path, got {s.ca_file!r}")


def _origin(value: str, path: str) -> str:
    """``*`` or ``scheme://host[:port]``, lowercased and without a trailing slash (as browsers send it)."""
    origin = value.strip().rstrip("/").lower()
    if origin != "*" and not re.fullmatch(r"https?://[^/\s?#]+", origin):
        raise _Invalid(path, f"invalid origin {value!r} (use e.g. https://app.example.com, or *)")
    return origin


# ---------------------------------------------------------------- routes

_ROUTE_CHARS = re.compile(r"[a-zA-Z0-9_./-]+")
_ENDPOINT_NAMES: Final = frozenset({"mcp", "sse", "message", "ws"})  # the gateway serves these under a route


def _routes(raw: object, servers: dict[str, ServerConfig]) -> dict[str, RouteConfig]:
    """Normalize route paths and check their server lists; None means everything at ``/``."""
    if raw is None:
        return {"/": RouteConfig(servers=list(servers))}
    if not isinstance(raw, dict):
        raise _Invalid("routes", f"expected a mapping of path -> server names, got {_what(raw)}")
    if not raw:
        raise _Invalid("routes", "no routes (leave routes out to serve every server at /)")
    known = ", ".join(servers)
    out: dict[str, RouteConfig] = {}
    first_key: dict[str, str] = {}
    for key, members in raw.items():
        path = f"routes.{key}"
        if not isinstance(key, str):
            raise _Invalid(path, "a route must be a string path such as /team-a")
        route = key.rstrip("/") or "/"
        segments = route.split("/")[1:]
        if not route.startswith("/"):
            raise _Invalid(path, f"a route must start with '/' (e.g. /{key})")
        if not _ROUTE_CHARS.fullmatch(route):
            raise _Invalid(path, "a route may only contain a-z A-Z 0-9 _ . / -")
        if route != "/" and any(seg in ("", ".", "..") for seg in segments):
            raise _Invalid(path, "empty, '.' or '..' path segment")
        if segments[-1] in _ENDPOINT_NAMES:
            raise _Invalid(path, f"a route must not end with /{segments[-1]} (the gateway adds the endpoints)")
        if route in out:
            raise _Invalid(path, f"same route as {first_key[route]!r}")
        if isinstance(members, dict):
            settings = _struct(members, RouteConfig, path)
            names, names_path = settings.servers, f"{path}.servers"
        else:
            names, names_path = _value(members, list[str], path), path
            settings = RouteConfig(servers=names)
        if not names:
            raise _Invalid(names_path, "lists no servers")
        for i, name in enumerate(names):
            if name not in servers:
                raise _Invalid(f"{names_path}[{i}]", f"unknown server {name!r} (known: {known})")
            if name in names[:i]:
                raise _Invalid(f"{names_path}[{i}]", f"server {name!r} is listed twice")
        out[route], first_key[route] = settings, key
    return out


# ---------------------------------------------------------------- the walker


def _what(v: object) -> str:
    """How a value's type reads in a message. Never the value itself: it may be a secret."""
    if v is None:
        return "null"
    for t, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
                    (list, "a list"), (dict, "a mapping")):  # fmt: skip
        if isinstance(v, t):
            return name
    return f"a {type(v).__name__}"  # e.g. YAML dates


def _show(v: object) -> str:
    """A short rendering of a non-secret scalar for messages."""
    return repr(v) if isinstance(v, str | int | float) and len(repr(v)) <= 60 else _what(v)


def _expect(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Annotated:
        unit = next((m for m in tp.__metadata__ if isinstance(m, _Unit)), None)
        return unit.what if unit else _expect(get_args(tp)[0])
    if origin is list:
        return "a list"
    if origin is dict or (isinstance(tp, type) and issubclass(tp, msgspec.Struct)):
        return "a mapping"
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}.get(tp, str(tp))


def _fits(v: object, tp: Any) -> bool:
    """Whether ``v`` has the rough shape of ``tp`` (to pick a Union member)."""
    origin = get_origin(tp)
    if origin is Annotated:
        return True if any(isinstance(m, _Unit) for m in tp.__metadata__) else _fits(v, get_args(tp)[0])
    if origin is list:
        return isinstance(v, list)
    if origin is dict or (isinstance(tp, type) and issubclass(tp, msgspec.Struct)):
        return isinstance(v, dict)
    return isinstance(v, tp) and not (isinstance(v, bool) and tp is not bool)


def _value(v: object, tp: Any, path: str) -> Any:
    """Check ``v`` against annotation ``tp`` and return the converted value."""
    origin = get_origin(tp)
    if origin is Annotated:
        base, *meta = get_args(tp)
        unit = next((m for m in meta if isinstance(m, _Unit)), None)
        if unit is not None:
            try:
                v = unit.parse(v)
            except ValueError as e:
                raise _Invalid(path, str(e)) from None
        else:
            v = _value(v, base, path)
        fmt = unit.fmt if unit else str
        for m in meta:
            if isinstance(m, msgspec.Meta):
                _bounds(v, m, fmt, path)
        return v
    if origin in (Union, types.UnionType):
        arms = get_args(tp)
        if v is None and type(None) in arms:
            return None
        arms = tuple(a for a in arms if a is not type(None))
        for arm in arms:
            if _fits(v, arm):
                return _value(v, arm, path)
        raise _Invalid(path, f"expected {' or '.join(_expect(a) for a in arms)}, got {_what(v)}")
    if origin is Literal:
        choices = get_args(tp)
        if v not in choices or not isinstance(v, str):
            raise _Invalid(path, f"expected one of {', '.join(map(repr, choices))}, got {_show(v)}")
        return v
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return _struct(v, tp, path)
    if origin is dict:
        if not isinstance(v, dict):
            raise _Invalid(path, f"expected a mapping, got {_what(v)}")
        out = {}
        for key, item in v.items():
            if not isinstance(key, str):
                raise _Invalid(f"{path}.{key}", f"keys must be strings, got {_what(key)}")
            out[key] = _value(item, get_args(tp)[1], f"{path}.{key}")
        return out
    if origin is list:
        if not isinstance(v, list):
            raise _Invalid(path, f"expected a list, got {_what(v)}")
        return [_value(item, get_args(tp)[0], f"{path}[{i}]") for i, item in enumerate(v)]
    if tp is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if not _fits(v, tp):
        raise _Invalid(path, f"expected {_expect(tp)}, got {_what(v)}")
    if tp is float and not math.isfinite(v):  # type: ignore[arg-type]
        raise _Invalid(path, "must be a finite number")
    return v


def _bounds(v: Any, m: msgspec.Meta, fmt: Callable[[Any], str], path: str) -> None:
    if m.ge is not None and m.le is not None and not m.ge <= v <= m.le:
        raise _Invalid(path, f"must be between {fmt(m.ge)} and {fmt(m.le)}, got {fmt(v)}")
    if m.ge is not None and v < m.ge:
        raise _Invalid(path, f"must be at least {fmt(m.ge)}, got {fmt(v)}")
    if m.gt is not None and v <= m.gt:
        raise _Invalid(path, f"must be greater than {fmt(m.gt)}, got {fmt(v)}")


def _struct(raw: object, cls: type[Any], path: str, preset: dict[str, Any] | None = None) -> Any:
    """Build Struct ``cls`` from a mapping; ``preset`` fields are supplied by the caller."""
    if not isinstance(raw, dict):
        raise _Invalid(path, f"expected a mapping, got {_what(raw)}")
    fields = {f.name: f for f in msgspec.structs.fields(cls)}
    preset = preset or {}

    def at(key: object) -> str:
        return f"{path}.{key}" if path else str(key)

    for key in raw:
        if key not in fields or key in preset:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(fields)})"
            raise _Invalid(at(key), "unknown key" + hint)
    kwargs = dict(preset)
    for name, f in fields.items():
        if name in preset:
            continue
        if name in raw:
            kwargs[name] = _value(raw[name], f.type, at(name))
        elif f.required:
            raise _Invalid(at(name), "required key is missing")
    return cls(**kwargs)


# ---------------------------------------------------------------- secrets


def resolve_secret(ref: str, *, where: str = "") -> str:
    """Read a secret reference (``env:NAME`` or ``file:/abs/path``) at use time.

    Errors are :class:`SecretError` naming ``where`` (e.g. ``servers.gh.secrets.TOKEN``)
    and the reference, never the secret. A file's trailing newline is dropped.
    """
    path = where or "secret"
    if not isinstance(ref, str) or not _SECRET_REF.fullmatch(ref):
        raise SecretError("not a secret reference (expected env:NAME or file:/absolute/path)", path=path)
    scheme, _, target = ref.partition(":")
    if scheme == "env":
        value = os.environ.get(target)
        if value is None:
            raise SecretError(f"{ref}: environment variable {target} is not set", path=path)
    else:
        try:
            with open(target, encoding="utf-8") as f:
                value = f.read().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
            raise SecretError(f"{ref}: cannot read ({reason})", path=path) from None
    if not value:
        raise SecretError(f"{ref}: is empty", path=path)
    return value


# ---------------------------------------------------------------- describe


def _days(seconds: float) -> str:
    """A retention: ``30d`` when whole days, else as a duration; 0 is "any age"."""
    if not seconds:
        return "any age"
    return f"{seconds / 86400:g}d" if seconds % 86400 == 0 else format_duration(seconds)


def describe(config: GatewayConfig) -> str:
    """A multi-line summary for ``mcp-gateway check``: every setting that matters for
    security or limits, with its effective value. Secrets appear by name only and env
    vars by name only (Claude Desktop configs often carry API keys in env)."""
    fd, fs = format_duration, format_size
    lim, t, sep = config.limits, config.timeouts, config.tool_separator
    origins = ", ".join("any (*)" if o == "*" else o for o in config.allowed_origins)
    admin = f"{config.admin.host}:{config.admin.port}" if config.admin.enabled else "disabled"
    if config.admin.enabled:
        token = config.admin.token
        admin += (f" (token from {token.partition(':')[0]})" if token else
                  " (token generated at first start, printed once, kept hashed in the store)" if config.store
                  else " (token generated at each start and printed: no store to keep it)")
    au = config.audit
    audit_db = au.path or (config.store.path if config.store else None)
    audit = "disabled" if au.enabled is False or audit_db is None else (
        f"{audit_db}, retention {_days(au.retention)}, max rows "
        f"{au.max_rows or 'unbounded'}, queue {au.queue} (dropped and counted beyond)")
    lines = [
        f"listen: {config.listen.host}:{config.listen.port}",
        f"admin: {admin}",
        f"store: {config.store.path if config.store else 'none (the file is the configuration)'}",
        f"audit log: {audit}",
        f"log level: {config.log_level}, format {config.log_format}",
        f"tool names: <server>{sep}<tool>",
        f"allowed origins: localhost{', ' + origins if origins else ' only'}",
        f"limits: body {fs(lim.max_body)}, header {fs(lim.max_header)}, upstream message "
        f"{fs(lim.max_message)}, sessions {lim.max_sessions}, in-flight per session "
        f"{lim.max_inflight_per_session}, connections {lim.max_connections} (at most what file descriptors "
        f"allow), connections per client address {lim.max_connections_per_peer or lim.max_connections // 4}, "
        f"sessions per client address {lim.max_sessions_per_peer or lim.max_sessions}",
        f"upstream logs: {lim.upstream_log_rate:g} lines/s per server (burst {lim.upstream_log_burst}), "
        "control characters escaped, lines capped",
        f"timeouts: call {fd(t.call)}, read {fd(t.read)}, write {fd(t.write)}, keep-alive idle {fd(t.idle)}, session idle "
        f"{fd(t.session_idle)}, shutdown grace {fd(t.shutdown_grace)}, server start {fd(t.start)}",
        f"liveness: ping idle servers every {fd(t.ping_interval) if t.ping_interval else 'never'}, "
        f"answer within {fd(t.ping_timeout)}",
        f"remote servers: hosts {', '.join(config.remote.allow_hosts) + ' only' if config.remote.allow_hosts is not None else 'any (loopback and private addresses allowed)'}"
        ", link-local and cloud metadata "
        f"{'ALLOWED' if config.remote.allow_link_local else 'refused'}; TLS verified, redirects refused, "
        "client credentials never forwarded",
        f"servers ({len(config.servers)}):",
    ]
    for name, s in config.servers.items():
        lines.append(f"  {name} ({s.kind})")
        if s.kind == "process":
            lines.append(f"    command: {shlex.join(s.argv())}")
            lines.append(f"    cwd: {s.cwd or '(gateway working directory)'}")
            lines.append("    sandbox: none (a local process running as the gateway's user)")
        elif s.kind == "container":
            lines.append(f"    image: {s.image}")
            lines.append(f"    command: {shlex.join(s.argv()) if s.command else '(image default)'}")
        else:
            # A URL may carry credentials (user:token@, ?api_key=): show only where it points.
            u = urlsplit(s.url or "")
            lines.append(f"    url: {u.scheme}://{u.hostname or ''}{f':{u.port}' if u.port else ''}{u.path}")
            lines.append(f"    transport: {s.transport}; lifecycle: {s.lifecycle}, pool {s.pool}, max instances "
                         f"{s.max_instances}; connect timeout {fd(s.connect_timeout)}")
            credentials = [*s.headers] + ([f"Authorization (bearer from {s.bearer.partition(':')[0]})"]
                                          if s.bearer else [])
            lines.append(f"    sends: {', '.join(credentials) or 'no credentials'} (header names only)")
            if s.ca_file:
                lines.append(f"    extra CA bundle: {s.ca_file}")
        if s.env:
            lines.append(f"    env: {', '.join(s.env)}")
        if s.audit_arguments:
            lines.append("    audit: arguments stored in the audit log")
        if s.secrets:
            # The name and where it comes from (env or file); never the reference's target's value.
            sources = [f"{k} (from {ref.partition(':')[0]})" for k, ref in s.secrets.items()]
            lines.append(f"    secrets: {', '.join(sources)}")
        lines.append(
            f"    timeouts: start {fd(config.start_timeout_for(name))}, call {fd(config.call_timeout_for(name))}, "
            f"idle {fd(s.idle_timeout)}; restart backoff {fd(s.restart_backoff)}..{fd(s.restart_backoff_max)}"
        )
        ping, ping_timeout = config.ping_for(name)
        lines.append(f"    liveness: ping when idle {fd(ping) if ping else 'never'} (answer within "
                     f"{fd(ping_timeout)}), and after {s.ping_after_timeouts} call timeouts in a row")
        if s.kind != "container":
            continue
        c = s.limits
        root = root_user_problem(s.user) is not None
        lines += [
            f"    lifecycle: {s.lifecycle}, pool {s.pool}, max instances {s.max_instances}",
            f"    user: {s.user}{' (ROOT)' if root else ''}",
            f"    read-only root filesystem: {'yes' if s.read_only else 'NO'}",
            f"    tmpfs: {fs(s.tmpfs_size)}",
            f"    capabilities: drop ALL, add {', '.join(s.cap_add) or 'none'}",
            "    no-new-privileges: yes",
            f"    network: {s.network}",
            f"    seccomp: {s.seccomp}{' (Docker default profile)' if s.seccomp == 'docker-default' else ''}",
            f"    memory: {fs(c.memory)}, cpus: {c.cpus:g}, pids: {c.pids}",
            "    mounts:" if s.mounts else "    mounts: none",
        ]
        lines += [f"      {m.source} -> {m.target} ({'rw' if m.rw else 'ro'})" for m in s.mounts]
    lines.append("routes:")
    routes = config.route_configs()
    width = max(map(len, routes))
    for route, rc in routes.items():
        names = []
        for server in rc.servers:
            prefix = config.name_prefix(route, server)
            names.append(server if prefix == server else f"{server} (unprefixed names)" if prefix is None
                         else f"{server} (names {prefix}{sep}<name>)")
        lines.append(f"  {route.ljust(width)}  {', '.join(names)}")
    return "\n".join(lines)
