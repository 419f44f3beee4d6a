"""The configuration's shape: frozen msgspec Structs with their defaults and documented keys.

Types and bounds that are the same for every value of a key live here (``Annotated`` with
``msgspec.Meta`` and the units' markers, which the validator reads); rules that relate keys to
each other, or to the kind of server, live in :mod:`.validate` and :mod:`.container`.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from . import container
from .access import Auth, OnToolChange, RateLimit, Rule, ToolFilter
from .rest import RestApi
from .units import SIZE, Duration, KiB, MiB, Port, PositiveDuration, PositiveInt, Size


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

    # Bounds in container.check (the sandbox checks settings built by code with the same rules).
    memory: Annotated[int, SIZE] = container.DEFAULT_MEMORY
    cpus: float = container.DEFAULT_CPUS
    pids: int = container.DEFAULT_PIDS


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
    http: RestApi | None = None  # a REST API served as tools (config/rest.py)
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
    network: str = container.DEFAULT_NETWORK
    mounts: list[Mount] = []
    user: str = container.DEFAULT_USER
    allow_root: bool = False
    read_only: bool = True
    tmpfs_size: Annotated[int, SIZE] = container.DEFAULT_TMPFS
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
    # Tools of this server hidden from every client (its own tool names).
    tools: ToolFilter | None = None
    # A tool whose definition (description, schemas) changed since it was first served: withheld
    # until an admin approves it (block), served and logged (warn), or served (allow). None: block
    # for remote servers, warn for the others.
    on_tool_change: OnToolChange | None = None
    # Replace the values of the gateway's secrets (and common credential shapes) in this server's
    # tool results before they reach a client.
    redact_results: bool = False

    @property
    def kind(self) -> Literal["process", "container", "remote", "http"]:
        """``container`` (image), ``remote`` (url), ``http`` (a REST API) or ``process`` (command)."""
        if self.http is not None:
            return "http"
        return "container" if self.image is not None else "remote" if self.url is not None else "process"

    @property
    def tool_change(self) -> OnToolChange:
        """What happens when one of its tool definitions changes (the default follows the kind)."""
        if self.on_tool_change is not None:
            return self.on_tool_change
        return "block" if self.kind == "remote" else "warn"

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
    tools: ToolFilter | None = None  # tools hidden on this route from every caller (the names clients see)
    # "all": tools/list is the whole catalog; "search": two tools instead, one that searches the
    # catalog and one that calls a tool by name (for clients whose context the catalog would flood).
    tool_mode: Literal["all", "search"] = "all"


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
    # Who clients are (None: no authentication, loopback only; "none": open on any address, on purpose).
    auth: Auth | Literal["none"] | None = None
    policy: list[Rule] = []  # who may see and call what (none: every caller everything)
    rate_limits: list[RateLimit] = []

    @property
    def authentication(self) -> Auth | None:
        """The auth methods in force, or None when clients are not authenticated."""
        return self.auth if isinstance(self.auth, Auth) and self.auth.methods else None

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
