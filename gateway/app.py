"""The gateway: wires config, upstream supervisors, routes, sessions and the HTTP server."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
import trio

from . import logsafe, metrics
from .auth import LOCAL, oauth
from .auth.access import Access
from .config import ConfigError, GatewayConfig, ServerConfig, is_loopback, resolve_secret
from .dispatch import CallRecord, Dispatcher
from .http import fdlimit
from .http.mount import MountTable
from .http.policy import OriginPolicy
from .http.server import Handler, HTTPServer, Limits, Request, Responder
from .protocol import jsonrpc
from .protocol.jsonrpc import Message
from .protocol.progress import ProgressTable
from .relay import OFFERED, Relay, offer_for
from .router import Route, Router
from .session import SHUTDOWN, Session, SessionManager
from .transports.modern import ModernFront
from .transports.sse import LegacySSE
from .transports.streamable_http import StreamableHTTP
from .transports.websocket import WebSocketTransport
from .upstream.backend import Backend
from .upstream.channel import Launcher
from .upstream.connection import ChannelConnector
from .upstream.http_peer import connector_for
from .upstream.lifecycle import CallBackend, SessionBackend
from .upstream.liveness import LivenessPolicy
from .upstream.peer import Connector
from .upstream.process import ProcessLauncher
from .upstream.rest import rest_backend
from .upstream.supervisor import ServerSupervisor

log = logging.getLogger("mcp_gateway")
access_log = logging.getLogger("mcp_gateway.access")

DEFAULT_PAGE_SIZE = 1000


class ConfigRefused(Exception):
    """The gateway cannot start as configured, or a reload cannot apply (the message says how to fix it)."""


LauncherFactory = Callable[[str, ServerConfig], Launcher]
#: (host, port) -> a container runtime: ``startup()``, ``shutdown()``, ``launcher(name, server)``,
#: ``start_seconds`` (a stats.Histogram), ``instance_id``, ``identity``. The composition root
#: (gateway/cli/compose.py) passes the sandbox's; the core never imports it.
ContainerRuntimeFactory = Callable[[str, int], Any]


def process_launcher(name: str, server: ServerConfig) -> Launcher:
    env = dict(server.env)
    for key, ref in server.secrets.items():
        env[key] = resolve_secret(ref, where=f"servers.{name}.secrets.{key}")
    return ProcessLauncher(name, server.argv(), env, server.cwd)


def _offer_for_session(configured: dict[str, Any], session: Any) -> dict[str, Any]:
    """An instance of one client session is offered what its client offered (of the configured)."""
    return offer_for(configured, getattr(session, "client_capabilities", None))


def _log_call(record: CallRecord) -> None:
    """The access log (at debug): one line per audited call, with its context for JSON logs."""
    access_log.debug("%s %s %s: %s in %.1f ms", record.method, record.server, logsafe.clean(str(record.name), 200),
                     record.outcome, record.duration * 1000,
                     extra={"route": record.route, "session": record.session and record.session[:8],
                            "server": record.server, "tool": record.name, "method": record.method,
                            "peer": record.peer, "identity": record.identity})


class Gateway:
    """One running gateway. ``run`` owns every task; cancel it (or call ``shutdown``) to stop."""

    def __init__(self, config: GatewayConfig, *, host: str | None = None, port: int | None = None,
                 launcher_factory: LauncherFactory | None = None, page_size: int = DEFAULT_PAGE_SIZE,
                 containers: ContainerRuntimeFactory | None = None,
                 control_plane: Callable[[Gateway], Any] | None = None, config_file: str | None = None) -> None:
        self.config = config
        self.config_file = config_file  # where relative defaults (the API keys' database) are found
        logsafe.configure(rate=config.limits.upstream_log_rate, burst=config.limits.upstream_log_burst)
        self.host = host if host is not None else config.listen.host
        self.port = port if port is not None else config.listen.port
        if config.auth is None and not is_loopback(self.host):  # --host can move it after validation
            raise ConfigRefused(f"auth: the data plane would listen on {self.host} (beyond loopback) without "
                                "authentication: set auth: {api_keys: true} (then `mcp-gateway keys create "
                                "--name NAME`) or auth.jwt, or write `auth: none` to serve anyone who can reach it")
        self._launcher_factory = launcher_factory
        self._containers = containers
        self.sandbox: Any = None  # the container runtime (sandbox.gateway_bridge.SandboxRuntime), when needed
        if any(s.kind == "container" for s in config.servers.values()):
            self.sandbox = self._container_runtime()
        self.progress = ProgressTable()
        self.relay = Relay()
        # Who may call what (auth, policy, rate limits, tool filters and pins, redaction).
        self.access = Access(config, config_file=config_file)
        self.access.pins.on_change = self._catalog_changed  # an approved change: the tool appears
        self.router = Router(self.progress, routes=lambda: self.routes.values(), access=self.access)
        self.sessions = SessionManager(max_sessions=config.limits.max_sessions,
                                       max_per_peer=config.limits.max_sessions_per_peer,
                                       idle_timeout=config.timeouts.session_idle, on_close=self._session_closed)
        self.supervisors: dict[str, Backend] = {
            name: self._backend(name, server) for name, server in config.servers.items()}
        self.routes: dict[str, Route] = {
            prefix: Route(prefix, [self.supervisors[n] for n in names], config.tool_separator, page_size,
                          {n: config.name_prefix(prefix, n) for n in names},
                          tool_mode=config.route_configs()[prefix].tool_mode, access=self.access)
            for prefix, names in config.resolved_routes().items()
        }
        limits = config.limits
        instances = sum(1 if s.lifecycle == "shared" else s.max_instances for s in config.servers.values())
        self.descriptors = fdlimit.budget(limits.max_connections, instances)
        self.dispatcher = Dispatcher(self.router, max_inflight=limits.max_inflight_per_session)
        self.dispatcher.track_sessions(lambda: self.sessions)
        self._access_log()
        self.modern = ModernFront(self.dispatcher)
        self.streamable = StreamableHTTP(self.dispatcher, self.sessions, self.modern)
        self.dispatcher.stats.enabled = config.metrics.enabled
        self.mounts = MountTable(OriginPolicy(list(config.allowed_origins), self.host),
                                 on_reject=self.dispatcher.stats.reject)
        self.mounts.guard = self.access.guard  # None: no authentication (loopback only, or auth: none)
        self.mounts.anonymous = LOCAL
        self._mount_well_known()
        self.mounts.mount("/healthz", self._healthz)
        self.mounts.mount("/health", self._health)
        self.mounts.mount("/ready", self._ready)
        self.metrics = metrics.registry_for(self)
        self.stdio_clients = 0  # the stdio front's one client, when it runs
        if config.metrics.data_plane:
            self.mounts.mount("/metrics", self._metrics)
        self.legacy_sse = LegacySSE(self.dispatcher, self.sessions)
        self.websocket = WebSocketTransport(self.dispatcher, self.sessions, max_message=limits.max_message,
                                            ping_interval=config.timeouts.ws_ping)
        for prefix, route in self.routes.items():
            self._mount_route(prefix, route)
        self.http = HTTPServer(self.mounts, host=self.host, port=self.port, limits=Limits(
            max_body=limits.max_body, max_header=limits.max_header, read_timeout=config.timeouts.read,
            idle_timeout=config.timeouts.idle, max_connections=self.descriptors.max_connections,
            max_connections_per_peer=limits.max_connections_per_peer, write_timeout=config.timeouts.write))
        self.http.drain_hooks.append(self.sessions.close_streams)
        self.http.drain_hooks.append(self._close_listeners)
        self.http.drain_hooks.append(self.legacy_sse.close_all)
        self.http.drain_hooks.append(self.websocket.close_all)
        self._nursery: trio.Nursery | None = None
        self._page_size = page_size
        self._backend_scopes: dict[int, trio.CancelScope] = {}  # id(backend) -> the scope it runs in
        self._apply_lock = trio.Lock()
        self.reloads = 0
        # Awaited by shutdown() after the drain, before everything stops (e.g. the audit log's flush).
        self.shutdown_hooks: list[Callable[[], Awaitable[None]]] = []
        self.control: Any = None  # admin.control.ControlPlane: admin API, config store, audit log
        if config.admin.enabled or config.store is not None or config.audit.path is not None:
            if control_plane is None:
                raise ConfigRefused("admin, store and audit need the control plane: build the gateway with "
                                   "gateway.cli.compose.build_gateway")
            self.control = control_plane(self)

    @property
    def keyring(self) -> Any:
        """The API keys (gateway.auth.keys.KeyRing), or None when they are off (the admin API uses it)."""
        return self.access.keyring

    @property
    def pins(self) -> Any:
        """The tool-definition pins (gateway.auth.pinning.Pins)."""
        return self.access.pins

    def _mount_well_known(self) -> None:
        """RFC 9728 protected-resource metadata, when this gateway names its resource URI: at the
        well-known path here, and after it each route's endpoint paths (mounted with the route)."""
        self._metadata: Handler | None = None
        auth = self.config.authentication
        if auth is None or auth.resource is None:
            return
        document = oauth.protected_resource_metadata(auth)

        async def metadata(request: Request, responder: Responder) -> None:
            if request.method not in (b"GET", b"HEAD"):
                await responder.send(405, [(b"allow", b"GET, HEAD, OPTIONS")], b"")
                return
            await responder.send(200, [(b"content-type", b"application/json"),
                                       (b"cache-control", b"max-age=300")], document)

        self._metadata = metadata
        self.mounts.mount(oauth.WELL_KNOWN, metadata)

    def _mount_route(self, prefix: str, route: Route) -> None:
        base = "" if prefix == "/" else prefix
        self.mounts.mount(f"{base}/mcp", self.streamable.endpoint(route), route=prefix)
        self.mounts.mount(f"{base}/sse", self.legacy_sse.stream_endpoint(route, f"{base}/message"), route=prefix)
        self.mounts.mount(f"{base}/message", self.legacy_sse.message_endpoint(), route=prefix)
        self.mounts.mount(f"{base}/ws", self.websocket.endpoint(route), route=prefix)
        if self._metadata is not None:  # a route added by a reload gets its metadata paths too
            for path in oauth.metadata_paths(f"{base}/{e}" for e in _ENDPOINTS)[1:]:
                self.mounts.mount(path, self._metadata)

    def _unmount_route(self, prefix: str) -> None:
        base = "" if prefix == "/" else prefix
        for endpoint in _ENDPOINTS:
            self.mounts.unmount(f"{base}/{endpoint}")
        for path in oauth.metadata_paths(f"{base}/{e}" for e in _ENDPOINTS)[1:]:
            self.mounts.unmount(path)  # (none mounted when there is no metadata: unmounting nothing is fine)

    def _backend(self, name: str, server: ServerConfig, config: GatewayConfig | None = None) -> Backend:
        config = config or self.config
        if server.kind == "http":  # a REST API: no process, no MCP peer, one backend (upstream/rest.py)
            return rest_backend(name, server, config, on_change=self._catalog_changed)
        start, call = config.start_timeout_for(name), config.call_timeout_for(name)
        max_message = config.limits.max_message
        ping_interval, ping_timeout = config.ping_for(name)
        liveness = LivenessPolicy(ping_interval, ping_timeout, server.ping_after_timeouts)
        connector: Connector = (connector_for(name, server, config) if server.kind == "remote" else
                                ChannelConnector(self._launcher(name, server), max_message=max_message,
                                                 kind=server.kind))
        offered: dict[str, Any] = {k: v for k, v in OFFERED.items() if k in server.client_capabilities}
        common: dict[str, Any] = dict(
            on_change=self._catalog_changed, on_notification=self._upstream_notification,
            on_request=self.relay.request if offered else None, liveness=liveness, capabilities=offered,
            offer_for=functools.partial(_offer_for_session, offered))
        if server.lifecycle == "shared":
            return ServerSupervisor(name, connector, start_timeout=start, call_timeout=call,
                                    backoff=server.restart_backoff, backoff_max=server.restart_backoff_max, **common)
        cls = SessionBackend if server.lifecycle == "session" else CallBackend
        return cls(name, connector, pool=server.pool, idle_timeout=server.idle_timeout, start_timeout=start,
                   call_timeout=call, max_instances=server.max_instances, **common)

    def _container_runtime(self) -> Any:
        """The container runtime for container servers (None when a launcher factory starts them)."""
        if self._launcher_factory is not None:
            return None
        if self._containers is None:
            raise ConfigRefused("container servers need a container runtime: build the gateway with "
                               "gateway.cli.compose.build_gateway")
        return self._containers(self.host, self.port)

    def _launcher(self, name: str, server: ServerConfig) -> Launcher:
        if self._launcher_factory is not None:
            return self._launcher_factory(name, server)
        kind = server.kind
        if kind == "process":
            return process_launcher(name, server)
        if kind == "container":
            launcher: Launcher = self.sandbox.launcher(name, server)
            return launcher
        raise ConfigRefused(f"servers.{name}: a {kind} server is not started by a launcher")

    async def run(self, *, serve_http: bool = True,
                  task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every server (in parallel), then serve; ``started`` with the bound port.

        The port is bound first, so a taken address fails fast with a plain OSError. Without
        ``serve_http`` (the stdio front) nothing listens, and ``started`` gets 0.
        """
        if serve_http:
            await self.http.bind()
        if self.sandbox is not None:
            await self.sandbox.startup()
        try:
            await self._serve(task_status, serve_http)
        finally:
            if self.sandbox is not None:
                await self.sandbox.shutdown()

    async def _serve(self, task_status: trio.TaskStatus[int], serve_http: bool) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            async with trio.open_nursery() as starting:
                for supervisor in self.supervisors.values():
                    starting.start_soon(self._start_backend, supervisor)
            for route in self.routes.values():
                route.rebuild()
            await nursery.start(self.sessions.run)
            await nursery.start(self.dispatcher.exchanges.run)
            if self.control is not None:  # before the data plane: no call goes unaudited
                await nursery.start(functools.partial(self.control.run, serve_api=serve_http))
            await nursery.start(self.access.run)  # the API keys are loaded before the first request
            port = await nursery.start(self.http.run) if serve_http else 0
            self.port = port
            down = [s.name for s in self.supervisors.values() if s.state != "ready"]
            if down:
                log.warning("serving without %s (not ready; retrying in the background)", ", ".join(down))
            if serve_http:
                log.info("MCP gateway listening on http://%s:%d (%s)", _host_for_url(self.host), port,
                         ", ".join(f"{p} -> {', '.join(r.servers)}" for p, r in self.routes.items()))
            task_status.started(port)

    async def _start_backend(self, backend: Backend) -> None:
        """Run a backend in the gateway's nursery, in a cancel scope of its own (a reload stops it
        alone); returns after its first start attempt."""
        assert self._nursery is not None
        scope = trio.CancelScope()
        self._backend_scopes[id(backend)] = scope

        async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await backend.run(task_status=task_status)
            finally:
                self._backend_scopes.pop(id(backend), None)

        await self._nursery.start(run)

    async def apply(self, config: GatewayConfig) -> dict[str, Any]:
        """Apply a new configuration to the running gateway: only the difference (hot reload).

        New servers start; removed ones finish their calls in flight (within the shutdown grace),
        then stop; changed ones restart (a new instance, containers too) while every other server
        and every client session keeps running; routes and names update in one step and clients
        get list_changed. A change that cannot be applied whole (settings that need a restart, a
        server that cannot be built) raises :class:`ConfigRefused` and leaves everything as it was.
        """
        async with self._apply_lock:
            old = self.config
            fixed = _restart_needed(old, config)
            if fixed:
                raise ConfigRefused(f"{', '.join(fixed)} cannot change while the gateway runs: restart it for that")
            added = [n for n in config.servers if n not in old.servers]
            removed = [n for n in old.servers if n not in config.servers]
            changed = [n for n in config.servers if n in old.servers and _server_changed(old, config, n)]
            if self.sandbox is None and any(config.servers[n].kind == "container" for n in added + changed):
                sandbox = self._container_runtime()
                if sandbox is not None:
                    await sandbox.startup()
                    self.sandbox = sandbox
            try:
                fresh = {n: self._backend(n, config.servers[n], config) for n in added + changed}
            except (ConfigError, OSError) as exc:
                raise ConfigRefused(f"the new configuration cannot be applied: {exc}") from exc
            async with trio.open_nursery() as starting:  # first start attempts, side by side
                for backend in fresh.values():
                    starting.start_soon(self._start_backend, backend)
            # The swap: no await from here to the end of the routes, so no request sees half of it.
            retired = [self.supervisors[n] for n in removed + changed]
            for name in removed:
                del self.supervisors[name]
            self.supervisors.update(fresh)
            self.config = config
            self.mounts.policy = OriginPolicy(list(config.allowed_origins), self.host)
            self.access.apply(config)  # policy, rate limits, tool filters, redactors (routes rebuild below)
            if config.log_level != old.log_level:
                logging.getLogger().setLevel(config.log_level.upper())
                self._access_log()
            self.dispatcher.stats.enabled = config.metrics.enabled
            routes_changed = self._apply_routes(config)
            for backend in retired:
                assert self._nursery is not None
                self._nursery.start_soon(self._retire, backend)
            self.reloads += 1
            summary = {"added": added, "removed": removed, "changed": changed, "routes": routes_changed}
            log.info("configuration applied: %s", ", ".join(f"{k} {v}" for k, v in summary.items() if v) or
                     "nothing changed")
            return summary

    def _access_log(self) -> None:
        """The access log observes calls only at debug: at other levels no call builds a record."""
        if _log_call in self.dispatcher.observers:
            self.dispatcher.observers.remove(_log_call)
        if access_log.isEnabledFor(logging.DEBUG):
            self.dispatcher.observers.append(_log_call)

    def _apply_routes(self, config: GatewayConfig) -> bool:
        """Routes as the new config says (sessions keep their route objects); clients hear of changes."""
        wanted = config.resolved_routes()
        changed = set(wanted) != set(self.routes)
        for prefix in [p for p in self.routes if p not in wanted]:
            gone = self.routes.pop(prefix)
            self._unmount_route(prefix)
            for session in list(gone.sessions):
                self.sessions.end(session)  # its route is gone
            for listener in list(gone.listeners):
                listener.close()
        for prefix, names in wanted.items():
            backends = [self.supervisors[n] for n in names]
            prefixes = {n: config.name_prefix(prefix, n) for n in names}
            tool_mode = config.route_configs()[prefix].tool_mode
            found = self.routes.get(prefix)
            if found is None:
                self.routes[prefix] = fresh_route = Route(prefix, backends, config.tool_separator, self._page_size,
                                                          prefixes, tool_mode=tool_mode, access=self.access)
                self._mount_route(prefix, fresh_route)
                continue
            route = found
            if list(route.servers) != names or route.name_prefixes != prefixes or route.tool_mode != tool_mode or \
                    route.separator != config.tool_separator or any(route.servers[n] is not b for n, b in
                                                                    zip(names, backends, strict=True)):
                changed = True
            route.reconfigure(backends, config.tool_separator, prefixes, tool_mode)
            self._announce(route)
        return changed

    def _announce(self, route: Route) -> None:
        """Rebuild a route's catalog and tell its clients what changed (list_changed)."""
        for method in route.rebuild():
            data = jsonrpc.encode(jsonrpc.notification(method))
            for session in route.sessions:
                session.push(data)
            for listener in route.listeners:
                if listener.wants(method):
                    listener.notify(method)

    async def _retire(self, backend: Backend) -> None:
        """A server a reload removed or replaced: its calls in flight finish (within the shutdown
        grace), then it stops, and its instances and containers with it."""
        grace = self.config.timeouts.shutdown_grace
        with trio.move_on_after(grace):
            # Polled: the backends count calls, they do not signal "idle" (a reload is rare).
            while backend.statistics().inflight:  # noqa: ASYNC110
                await trio.sleep(0.05)
        scope = self._backend_scopes.get(id(backend))
        if scope is not None:
            scope.cancel()
        log.info("%s: the old instance stopped (reload)", backend.name)

    async def shutdown(self) -> None:
        """Two phases: stop accepting and drain within ``timeouts.shutdown_grace``, then stop all."""
        log.info("shutting down: draining for up to %.0fs", self.config.timeouts.shutdown_grace)
        await self.http.shutdown(self.config.timeouts.shutdown_grace, on_grace_expired=self._end_inflight)
        self.sessions.end_all()
        for hook in self.shutdown_hooks:
            await hook()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _end_inflight(self) -> None:
        """The grace is over: every call still running is answered "shutting down" (not dropped)."""
        count = self.dispatcher.cancel_all(SHUTDOWN)
        if count:
            log.warning("shutdown grace over: ending %d call(s) still running", count)

    def _close_listeners(self) -> None:
        for route in self.routes.values():
            for listener in list(route.listeners):
                listener.close()

    # -- events from upstreams -------------------------------------------------------------
    def _catalog_changed(self, server: str) -> None:
        for route in self.routes.values():
            if server in route.servers and route.servers[server] is self.supervisors.get(server):
                self._announce(route)

    def _upstream_notification(self, server: str, msg: Message, origins: list[Any]) -> None:
        method = msg.method
        if method == "notifications/progress":
            if not self.progress.deliver(server, jsonrpc.decode_params(msg)):
                log.debug("%s: progress for an unknown or finished call", server)
        elif method == "notifications/resources/updated":
            params = jsonrpc.decode_params(msg)
            uri_raw = params.get("uri")
            uri = jsonrpc.decode_any(uri_raw)
            if not isinstance(uri, str):
                return
            data = jsonrpc.encode(msg)
            for route in self.routes.values():
                # only the server that owns the URI may announce its updates
                if server in route.servers and route.catalog.server_for_uri(uri) in (server, None):
                    for session in route.sessions:
                        if session.subscriptions and uri in session.subscriptions:
                            session.push(data)
                    for listener in route.listeners:
                        if uri in listener.subscriptions:
                            listener.notify("notifications/resources/updated", {"uri": uri})
        elif method == "notifications/message":
            self.relay.notification(server, msg, origins)
        else:
            log.debug("%s: notification %s not forwarded", server, method)

    def _session_closed(self, session: Session) -> None:
        session.route.sessions.discard(session)
        for backend in session.route.servers.values():
            backend.session_ended(session)

    async def _metrics(self, request: Request, responder: Responder) -> None:
        if request.method not in (b"GET", b"HEAD"):
            await responder.send(405, [(b"allow", b"GET, HEAD")], b"")
            return
        body, content_type = metrics.render(self.metrics, request.header(b"accept"))
        await responder.send(200, [(b"content-type", content_type)], body)

    async def _health(self, request: Request, responder: Responder) -> None:
        """Live: the process serves HTTP (nothing else is looked at: it must stay cheap)."""
        await responder.send(200, [(b"content-type", b"application/json")], b'{"status":"live"}')

    def readiness(self) -> tuple[bool, dict[str, str]]:
        """Ready when every required server is; else the reasons, by server."""
        waiting = {name: backend.last_error or backend.state for name, backend in self.supervisors.items()
                   if self.config.servers[name].required and backend.state != "ready"}
        if self.http.draining:
            waiting["gateway"] = "shutting down"
        return not waiting, waiting

    async def _ready(self, request: Request, responder: Responder) -> None:
        """Ready: 200 when every required server is ready, else 503 with the reasons."""
        ready, waiting = self.readiness()
        body = jsonrpc.encoder.encode({"status": "ready" if ready else "not ready", "waiting": waiting})
        await responder.send(200 if ready else 503, [(b"content-type", b"application/json")], body)

    async def _healthz(self, request: Request, responder: Responder) -> None:
        if request.method not in (b"GET", b"HEAD"):
            await responder.send(405, [(b"allow", b"GET, HEAD")], b"")
            return
        ready = all(s.state == "ready" for s in self.supervisors.values())
        body = jsonrpc.encoder.encode({
            "status": "ok" if ready else "degraded",
            "servers": {n: {"state": s.state, "restarts": s.restarts, "error": s.last_error}
                        for n, s in self.supervisors.items()},
            "routes": {p: {"collisions": r.catalog.collisions} for p, r in self.routes.items()
                       if r.catalog.collisions},
            "sessions": len(self.sessions),
            "reloads": self.reloads,  # configurations applied since start: did my SIGHUP take?
        })
        await responder.send(200, [(b"content-type", b"application/json")], body)


#: The endpoints each route mounts (Streamable HTTP, legacy SSE and its messages, WebSocket).
_ENDPOINTS: Final = ("mcp", "sse", "message", "ws")

#: What a reload may change while the gateway runs: everything else needs a restart.
_LIVE = frozenset({"servers", "routes", "tool_separator", "allowed_origins", "log_level", "timeouts", "remote",
                   "metrics", "policy", "rate_limits"})
#: Timeouts a reload applies (through the servers they belong to); the others are fixed at start.
_LIVE_TIMEOUTS = frozenset({"call", "start", "ping_interval", "ping_timeout"})


def _restart_needed(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """The settings that differ but can only change with a restart (key paths)."""
    fixed = [f for f in old.__struct_fields__ if f not in _LIVE and getattr(old, f) != getattr(new, f)]
    fixed += [f"timeouts.{f}" for f in old.timeouts.__struct_fields__
              if f not in _LIVE_TIMEOUTS and getattr(old.timeouts, f) != getattr(new.timeouts, f)]
    if old.metrics.data_plane != new.metrics.data_plane:  # metrics.enabled is live: counting on or off
        fixed.append("metrics.data_plane")
    return fixed


#: Server settings read where they are used (names, readiness, the audit log): a change restarts nothing.
_LIVE_SERVER_KEYS: Final = ("prefix", "required", "audit_arguments", "tools", "on_tool_change", "redact_results")


def _server_changed(old: GatewayConfig, new: GatewayConfig, name: str) -> bool:
    """Whether a server must restart: its own settings, or the effective ones it takes from the gateway."""
    same = dict.fromkeys(_LIVE_SERVER_KEYS, None)
    if msgspec.structs.replace(old.servers[name], **same) != msgspec.structs.replace(new.servers[name], **same):
        return True
    if (old.start_timeout_for(name), old.call_timeout_for(name), old.ping_for(name)) != \
            (new.start_timeout_for(name), new.call_timeout_for(name), new.ping_for(name)):
        return True
    # The SSRF guard (remote:) is built into a server's connections when it starts.
    return old.servers[name].kind in ("remote", "http") and old.remote != new.remote


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host
