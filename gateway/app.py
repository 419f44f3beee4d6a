"""The gateway: wires config, upstream supervisors, routes, sessions and the HTTP server."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from . import logsafe, metrics
from .config import GatewayConfig, ServerConfig, resolve_secret
from .dispatch import Dispatcher
from .http import fdlimit
from .http.mount import MountTable
from .http.policy import OriginPolicy
from .http.server import HTTPServer, Limits, Request, Responder
from .protocol import jsonrpc
from .protocol.jsonrpc import Message
from .protocol.progress import ProgressTable
from .relay import OFFERED, Relay
from .router import Route, Router
from .session import SHUTDOWN, Session, SessionManager
from .transports.modern import ModernFront
from .transports.sse import LegacySSE
from .transports.streamable_http import StreamableHTTP
from .transports.websocket import WebSocketTransport
from .upstream.backend import Backend
from .upstream.channel import Launcher
from .upstream.connection import ChannelConnector
from .upstream.lifecycle import CallBackend, SessionBackend
from .upstream.liveness import LivenessPolicy
from .upstream.process import ProcessLauncher
from .upstream.supervisor import ServerSupervisor

log = logging.getLogger("mcp_gateway")

DEFAULT_PAGE_SIZE = 1000
class GatewayError(Exception):
    """The gateway cannot start as configured (the message says how to fix it)."""


LauncherFactory = Callable[[str, ServerConfig], Launcher]


def process_launcher(name: str, server: ServerConfig) -> Launcher:
    env = dict(server.env)
    for key, ref in server.secrets.items():
        env[key] = resolve_secret(ref, where=f"servers.{name}.secrets.{key}")
    return ProcessLauncher(name, server.argv(), env, server.cwd)


class Gateway:
    """One running gateway. ``run`` owns every task; cancel it (or call ``shutdown``) to stop."""

    def __init__(self, config: GatewayConfig, *, host: str | None = None, port: int | None = None,
                 launcher_factory: LauncherFactory | None = None, page_size: int = DEFAULT_PAGE_SIZE) -> None:
        self.config = config
        logsafe.configure(rate=config.limits.upstream_log_rate, burst=config.limits.upstream_log_burst)
        self.host = host if host is not None else config.listen.host
        self.port = port if port is not None else config.listen.port
        self._launcher_factory = launcher_factory
        self.sandbox: Any = None  # sandbox.gateway_bridge.SandboxRuntime, only with container servers
        if launcher_factory is None and any(s.kind == "container" for s in config.servers.values()):
            from sandbox.gateway_bridge import SandboxRuntime  # Docker only when configured

            self.sandbox = SandboxRuntime(self.host, self.port)
        self.progress = ProgressTable()
        self.relay = Relay()
        self.router = Router(self.progress, routes=lambda: self.routes.values())
        self.sessions = SessionManager(max_sessions=config.limits.max_sessions,
                                       max_per_peer=config.limits.max_sessions_per_peer,
                                       idle_timeout=config.timeouts.session_idle, on_close=self._session_closed)
        self.supervisors: dict[str, Backend] = {
            name: self._backend(name, server) for name, server in config.servers.items()}
        self.routes: dict[str, Route] = {
            prefix: Route(prefix, [self.supervisors[n] for n in names], config.tool_separator, page_size,
                          {n: config.name_prefix(prefix, n) for n in names})
            for prefix, names in config.resolved_routes().items()
        }
        limits = config.limits
        instances = sum(1 if s.lifecycle == "shared" else s.max_instances for s in config.servers.values())
        self.descriptors = fdlimit.budget(limits.max_connections, instances)
        self.dispatcher = Dispatcher(self.router, max_inflight=limits.max_inflight_per_session)
        self.dispatcher.track_sessions(lambda: self.sessions)
        self.modern = ModernFront(self.dispatcher)
        self.streamable = StreamableHTTP(self.dispatcher, self.sessions, self.modern)
        self.dispatcher.stats.enabled = config.metrics.enabled
        self.mounts = MountTable(OriginPolicy(list(config.allowed_origins), self.host),
                                 on_reject=self.dispatcher.stats.reject)
        self.mounts.mount("/healthz", self._healthz)
        self.metrics = metrics.registry_for(self)
        self.stdio_clients = 0  # the stdio front's one client, when it runs
        if config.metrics.data_plane:
            self.mounts.mount("/metrics", self._metrics)
        self.legacy_sse = LegacySSE(self.dispatcher, self.sessions)
        self.websocket = WebSocketTransport(self.dispatcher, self.sessions, max_message=limits.max_message,
                                            ping_interval=config.timeouts.ws_ping)
        for prefix, route in self.routes.items():
            base = "" if prefix == "/" else prefix
            self.mounts.mount(f"{base}/mcp", self.streamable.endpoint(route))
            self.mounts.mount(f"{base}/sse", self.legacy_sse.stream_endpoint(route, f"{base}/message"))
            self.mounts.mount(f"{base}/message", self.legacy_sse.message_endpoint())
            self.mounts.mount(f"{base}/ws", self.websocket.endpoint(route))
        self.http = HTTPServer(self.mounts, host=self.host, port=self.port, limits=Limits(
            max_body=limits.max_body, max_header=limits.max_header, read_timeout=config.timeouts.read,
            idle_timeout=config.timeouts.idle, max_connections=self.descriptors.max_connections,
            max_connections_per_peer=limits.max_connections_per_peer, write_timeout=config.timeouts.write))
        self.http.drain_hooks.append(self.sessions.close_streams)
        self.http.drain_hooks.append(self._close_listeners)
        self.http.drain_hooks.append(self.legacy_sse.close_all)
        self.http.drain_hooks.append(self.websocket.close_all)
        self._nursery: trio.Nursery | None = None

    def _backend(self, name: str, server: ServerConfig) -> Backend:
        launcher = self._launcher(name, server)
        start, call = self.config.start_timeout_for(name), self.config.call_timeout_for(name)
        max_message = self.config.limits.max_message
        ping_interval, ping_timeout = self.config.ping_for(name)
        liveness = LivenessPolicy(ping_interval, ping_timeout, server.ping_after_timeouts)
        connector = ChannelConnector(launcher, max_message=max_message, kind=server.kind)
        offered = {k: v for k, v in OFFERED.items() if k in server.client_capabilities}
        common: dict[str, Any] = dict(
            on_change=self._catalog_changed, on_notification=self._upstream_notification,
            on_request=self.relay.request if offered else None, liveness=liveness, capabilities=offered)
        if server.lifecycle == "shared":
            return ServerSupervisor(name, connector, start_timeout=start, call_timeout=call,
                                    backoff=server.restart_backoff, backoff_max=server.restart_backoff_max, **common)
        cls = SessionBackend if server.lifecycle == "session" else CallBackend
        return cls(name, connector, pool=server.pool, idle_timeout=server.idle_timeout, start_timeout=start,
                   call_timeout=call, max_instances=server.max_instances, **common)

    def _launcher(self, name: str, server: ServerConfig) -> Launcher:
        if self._launcher_factory is not None:
            return self._launcher_factory(name, server)
        kind = server.kind
        if kind == "process":
            return process_launcher(name, server)
        if kind == "container":
            launcher: Launcher = self.sandbox.launcher(name, server)
            return launcher
        raise GatewayError(f"servers.{name}.url: remote (HTTP) upstream servers are not supported yet")

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
                    starting.start_soon(nursery.start, supervisor.run)
            for route in self.routes.values():
                route.rebuild()
            await nursery.start(self.sessions.run)
            await nursery.start(self.dispatcher.exchanges.run)
            port = await nursery.start(self.http.run) if serve_http else 0
            self.port = port
            down = [s.name for s in self.supervisors.values() if s.state != "ready"]
            if down:
                log.warning("serving without %s (not ready; retrying in the background)", ", ".join(down))
            if serve_http:
                log.info("MCP gateway listening on http://%s:%d (%s)", _host_for_url(self.host), port,
                         ", ".join(f"{p} -> {', '.join(r.servers)}" for p, r in self.routes.items()))
            task_status.started(port)

    async def shutdown(self) -> None:
        """Two phases: stop accepting and drain within ``timeouts.shutdown_grace``, then stop all."""
        log.info("shutting down: draining for up to %.0fs", self.config.timeouts.shutdown_grace)
        await self.http.shutdown(self.config.timeouts.shutdown_grace, on_grace_expired=self._end_inflight)
        self.sessions.end_all()
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
            if server not in route.servers:
                continue
            for method in route.rebuild():
                data = jsonrpc.encode(jsonrpc.notification(method))
                for session in route.sessions:
                    session.push(data)
                for listener in route.listeners:
                    if listener.wants(method):
                        listener.notify(method)

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
        })
        await responder.send(200, [(b"content-type", b"application/json")], body)


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host
