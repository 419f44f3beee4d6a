"""A remote MCP server over HTTP: the :class:`~gateway.upstream.peer.UpstreamPeer` of ``url:`` servers.

One :class:`HttpConnector` per configured server makes one :class:`HttpPeer` per start (a
session), so lifecycles, pools, restarts, timeouts and liveness work as for every other kind. The
HTTP client is httpx2 (the official SDK's): connection pooling, TLS verified (``ca_file`` adds a
CA bundle), redirects refused, no proxy, netrc or CA settings taken from the environment, and
every TCP connection made by :class:`GuardedBackend`, which resolves the name, checks every
address (:mod:`gateway.upstream.ssrf`) and connects to a checked one, never to a second lookup.

Which wire, decided when the gateway sends ``initialize`` (the Instance does, as for any server):

- **2026-07-28** (``streamable-http`` and ``auto``): ``server/discover`` is tried first; a server
  whose ``supportedVersions`` holds 2026-07-28 is spoken to statelessly: no ``initialize`` on the
  wire (its result is made from the discover result), every request carries the ``_meta``
  envelope (version, the capabilities the gateway offers, its info) and the ``MCP-Protocol-
  Version``/``Mcp-Method``/``Mcp-Name`` (and ``Mcp-Param-*``) headers. An ``input_required``
  result is answered here: each input request is relayed to the client of the call (exactly: it
  belongs to that call), then the request is sent again with the answers and the request state,
  at most 10 rounds, all within the call's timeout. ``ping`` does not exist there: liveness sends
  ``server/discover`` instead. ``logging/setLevel`` becomes the per-request log level. List changes
  arrive on a ``subscriptions/listen`` stream (for the lists the server says can change).
- **Streamable HTTP, handshake era**: ``initialize`` opens a session (``Mcp-Session-Id``); each
  message is a POST answered with JSON or an SSE stream. What arrives on a call's stream (progress,
  log messages, the server's requests) belongs to that call and is handed over with its origin
  only (``exact``); answers to the server's requests are POSTed back. After ``initialized`` the GET
  stream is opened (405: the server has none) for list changes and unassociated messages
  (``origins``: every call in flight), reconnected with backoff and ``Last-Event-ID``. A 404 for
  our session (the server restarted and forgot it) starts a new session once, transparently for
  the call that hit it, and says so in the log. The session is DELETEd when the peer ends.
- **Legacy HTTP+SSE** (``sse``, or ``auto`` when POSTing ``initialize`` gets 400/404/405): GET the
  URL, wait for the ``endpoint`` event (an endpoint on another origin is refused), POST there;
  every answer arrives on the stream, which is the session: when it ends, the peer ends.

Bounds: a body or an SSE event larger than ``max_message`` ends that call (or stream) with a clear
error, read incrementally, never buffered whole; compressed bodies are not asked for and refused;
calls obey their timeouts (cancel scopes), connecting obeys ``connect_timeout``. A server that
cannot be connected to (after a few quick retries) ends the peer: its owner restarts it with
backoff, as it restarts a process that exited.

Credentials: only the configured ``headers`` and ``bearer`` are sent; nothing of the client's
request (its Authorization, cookies, any header) reaches an upstream, since a peer only ever gets
methods and params. Neither the bearer nor the URL is logged (httpx2's request log is silenced: it
prints URLs, which may carry keys).
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import urljoin, urlsplit

import httpcore2
import httpx2
import msgspec
import trio
from msgspec import UNSET, Raw, UnsetType

from .. import logsafe
from ..protocol import jsonrpc
from ..protocol.errors import (
    UPSTREAM_UNAVAILABLE,
    CallError,
    UpstreamError,
    UpstreamGone,
    UpstreamInvalid,
    UpstreamTimeout,
)
from ..protocol.jsonrpc import Message, ProtocolError
from ..protocol.mcp import HANDSHAKE_VERSIONS
from ..protocol.modern import (
    CLIENT_CAPABILITIES_KEY,
    CLIENT_INFO_KEY,
    LOG_LEVEL_KEY,
    NAME_BEARING,
    PROTOCOL_VERSION_KEY,
    SERVER_INFO_KEY,
    ParamHeaders,
    encode_header_value,
    param_header_map,
    param_headers,
)
from .channel import LaunchError
from .peer import MAX_SERVER_REQUESTS, PeerHandlers, ServerRequest, answer_now, relayed_answer
from .sse_decode import Event, EventTooLarge, SSEDecoder
from .ssrf import HostGuard, IPAddress

if TYPE_CHECKING:
    from ..config import GatewayConfig, ServerConfig

log = logging.getLogger("mcp_gateway.upstream")
# httpx2 logs every request's URL at INFO: a URL may carry a key, and a call per line is noise.
logging.getLogger("httpx2").setLevel(logging.WARNING)

Transport = Literal["streamable-http", "sse", "auto"]
MODERN: Final = "2026-07-28"
USER_AGENT: Final = "mcp-gateway/0.1.0"
MAX_INPUT_ROUNDS: Final = 10  # input_required rounds of one call (the SDKs' default)
_CONNECT_RETRIES: Final = (0.1, 0.25, 0.5)  # quick retries of a refused connection before the peer ends
_RESUME_ATTEMPTS: Final = 3  # GETs with Last-Event-ID for a call's stream cut before its answer
_GET_READ_TIMEOUT: Final = 300.0  # a GET stream silent this long is reopened (a half-open TCP connection)
_SIDE_TIMEOUT: Final = 30.0  # answers to server requests, notifications, re-initialize from a stream
_SESSION_ID_CHARS: Final = frozenset(range(0x21, 0x7F))  # visible ASCII, as the spec requires
_ACCEPT_BOTH: Final = "application/json, text/event-stream"
_INPUT_REQUIRED: Final = b'"input_required"'

_dict_decoder: Final = msgspec.json.Decoder(dict[str, Raw])
_any_decoder: Final = msgspec.json.Decoder()


class HostRefused(httpcore2.ConnectError):
    """The SSRF guard refused every address (or the name) of the host."""


class _Refused(Exception):
    """An HTTP status other than success (for the era and transport fallbacks)."""

    def __init__(self, status: int, error: CallError) -> None:
        super().__init__(error.message)
        self.status, self.error = status, error


# -- the connection: resolve, check, connect to a checked address --------------------------------


class GuardedBackend(httpcore2.AsyncNetworkBackend):
    """httpcore2's trio backend behind the SSRF guard: each TCP connection resolves its host once,
    checks every address, and connects to one of those addresses (DNS rebinding cannot slip a
    second answer in between); TLS still verifies the certificate against the host name."""

    def __init__(self, guard: HostGuard) -> None:
        self._guard = guard
        self._inner = httpcore2.TrioBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore2.AsyncNetworkStream:
        deadline = trio.current_time() + (math.inf if timeout is None else timeout)
        addresses = await _resolve(host, port, deadline)
        why = self._guard.check_resolved(host, addresses)
        if why is not None:
            raise HostRefused(f"refused by the SSRF guard: {why}")
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(str(address), port, timeout=max(0.0, deadline - trio.current_time()),
                                                      local_address=local_address, socket_options=socket_options)
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                failure = exc
        raise failure or httpcore2.ConnectError(f"{host} has no address")

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore2.AsyncNetworkStream:
        raise httpcore2.ConnectError("unix sockets are not used for remote servers")

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


async def _resolve(host: str, port: int, deadline: float) -> list[IPAddress]:
    import ipaddress

    literal = host.strip("[]").split("%", 1)[0]
    try:
        return [ipaddress.ip_address(literal)]
    except ValueError:
        pass
    with trio.move_on_at(deadline):
        try:
            infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore2.ConnectError(f"cannot resolve {host}: {exc}") from None
        out: list[IPAddress] = []
        for *_, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if address not in out:
                out.append(address)
        return out
    raise httpcore2.ConnectTimeout(f"resolving {host} took too long")


class GuardedTransport(httpx2.AsyncHTTPTransport):
    """httpx2's transport with its connection pool built on :class:`GuardedBackend`."""

    def __init__(self, ssl_context: ssl.SSLContext, guard: HostGuard, limits: httpx2.Limits) -> None:
        super().__init__(verify=ssl_context, trust_env=False, limits=limits)
        # The pool httpx2 builds has no network_backend parameter; this one is the same pool on ours.
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=ssl_context, max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
            http1=True, http2=False, network_backend=GuardedBackend(guard))


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """Verification on (the system's CAs, or certifi's), plus ``ca_file`` when given."""
    context = httpx2.create_ssl_context(verify=True, trust_env=False)
    if ca_file is not None:
        context.load_verify_locations(cafile=ca_file)
    return context


# -- the connector ---------------------------------------------------------------------------------


class HttpConnector:
    """A :class:`~gateway.upstream.peer.Connector` for a remote server: each connect is one HTTP
    client (its connection pool) and one session with the server."""

    def __init__(self, name: str, url: str, *, transport: Transport = "streamable-http",
                 headers: Mapping[str, str] | None = None, bearer: str | None = None,
                 connect_timeout: float = 10.0, ca_file: str | None = None, max_message: int = 16 * 1024 * 1024,
                 guard: HostGuard | None = None, delete_timeout: float = 2.0) -> None:
        self.name = name
        self.kind = "remote"  # for statistics
        self.url = url
        self.transport: Transport = transport
        self._headers = {"user-agent": USER_AGENT, "accept-encoding": "identity", **(headers or {})}
        if bearer is not None:
            self._headers["authorization"] = f"Bearer {bearer}"
        self._connect_timeout = connect_timeout
        self._ca_file = ca_file
        self._max_message = max_message
        self.guard = guard or HostGuard()
        self._delete_timeout = delete_timeout
        self.sessions_deleted = 0

    @property
    def header_names(self) -> list[str]:
        """The names of the headers every request carries (never their values)."""
        return sorted(self._headers)

    def where(self) -> str:
        """The URL without credentials (userinfo, query), for messages."""
        u = urlsplit(self.url)
        return f"{u.scheme}://{u.hostname or ''}{f':{u.port}' if u.port else ''}{u.path}"

    async def _client(self) -> httpx2.AsyncClient:
        try:
            context = await trio.to_thread.run_sync(ssl_context, self._ca_file)  # reads CA files
        except (OSError, ssl.SSLError) as exc:
            raise LaunchError(f"server {self.name!r}: cannot load ca_file {self._ca_file}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
        limits = httpx2.Limits(max_connections=512, max_keepalive_connections=32, keepalive_expiry=30.0)
        return httpx2.AsyncClient(
            transport=GuardedTransport(context, self.guard, limits), headers=self._headers, trust_env=False,
            follow_redirects=False, timeout=httpx2.Timeout(self._connect_timeout, read=None, write=None, pool=None))

    @asynccontextmanager
    async def connect(self, handlers: PeerHandlers) -> AsyncIterator[HttpPeer]:
        host = urlsplit(self.url).hostname or ""
        refused = self.guard.check_host(host)
        if refused is not None:
            raise LaunchError(f"server {self.name!r}: {self.where()} refused by the SSRF guard: {refused}")
        # Preflight of the name's addresses: a clear start error rather than a failed initialize
        # (every connection is checked again when it is made: DNS may answer differently then).
        try:
            port = urlsplit(self.url).port or (443 if self.url.startswith("https") else 80)
            addresses = await _resolve(host, port, trio.current_time() + self._connect_timeout)
        except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
            raise LaunchError(f"server {self.name!r}: {self.where()}: {exc}") from None
        refused = self.guard.check_resolved(host, addresses)
        if refused is not None:
            raise LaunchError(f"server {self.name!r}: {self.where()} refused by the SSRF guard: {refused}")
        async with await self._client() as client:
            peer = HttpPeer(self.name, client, self.url, transport=self.transport, max_message=self._max_message,
                            handlers=handlers, where=self.where())
            try:
                yield peer
            finally:
                with trio.CancelScope(shield=True):  # minimal cleanup: one bounded DELETE
                    if await peer.end_session(self._delete_timeout):
                        self.sessions_deleted += 1


def connector_for(name: str, server: ServerConfig, config: GatewayConfig) -> HttpConnector:
    """The connector of a configured remote server (the bearer is resolved now, held in memory)."""
    from ..config import resolve_secret

    assert server.url is not None
    bearer = resolve_secret(server.bearer, where=f"servers.{name}.bearer") if server.bearer else None
    remote = config.remote
    return HttpConnector(name, server.url, transport=server.transport, headers=dict(server.headers), bearer=bearer,
                         connect_timeout=server.connect_timeout, ca_file=server.ca_file,
                         max_message=config.limits.max_message,
                         guard=HostGuard.build(remote.allow_hosts, remote.allow_link_local))


# -- the peer --------------------------------------------------------------------------------------


class _Waiter:
    __slots__ = ("event", "response", "failure", "origin", "scope")

    def __init__(self, origin: Any) -> None:
        self.event = trio.Event()
        self.response: Message | None = None
        self.failure: CallError | None = None
        self.origin = origin
        self.scope: trio.CancelScope | None = None  # the call's own work (cancelled when the peer ends)


@dataclass(slots=True)
class _Exchange:
    """One request on its way: what the answer is read for."""

    upstream_id: int
    method: str
    waiter: _Waiter


class HttpPeer:
    """One session with one remote server; see the module docstring."""

    def __init__(self, name: str, client: httpx2.AsyncClient, url: str, *, transport: Transport,
                 max_message: int, handlers: PeerHandlers | None = None, where: str = "") -> None:
        self.name = name
        self._client = client
        self._url = url
        self._where = where or url
        self._transport: Transport = transport
        self._max_message = max_message
        self._handlers = handlers or PeerHandlers()
        self.mode: Literal["modern", "streamable", "sse"] | None = None
        self.version: str | None = None  # the protocol version spoken
        self.session_id: str | None = None
        self._endpoint: str | None = None  # legacy SSE: where to POST
        self._init_params: dict[str, Raw] = {}
        self._modern_meta: dict[str, Raw] = {}
        # 2026-07-28 log messages are opt-in per request: ask for every level, as a handshake-era
        # server sends them until told otherwise (the relay filters what each client gets).
        self._log_level: str | None = "debug"
        self._param_headers: dict[str, ParamHeaders] = {}
        self._next_id = 1
        self._pending: dict[int, _Waiter] = {}
        self._nursery: trio.Nursery | None = None
        self._scope: trio.CancelScope | None = None
        self._get_scope: trio.CancelScope | None = None
        self._reinit_lock = trio.Lock()
        self._serving = 0
        self._answering = 0
        self.closed = trio.Event()
        self.close_reason: str | None = None
        self.last_received = trio.current_time()
        self.consecutive_timeouts = 0
        self.suspect = trio.Event()
        self.reinitialized = 0
        self.in_flight_peak = 0
        self._log = logsafe.peer_log(name)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    # -- lifetime -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the session's background tasks (GET or SSE stream, relays) until :meth:`abort`."""
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        except Exception as exc:  # containment: a bug reached through one server's output
            log.exception("%s: failed handling the server's output", self.name)
            self.close_reason = self.close_reason or (
                f"server {self.name!r}: the gateway failed to handle its output ({type(exc).__name__}); "
                "connection closed")
        finally:
            if self.close_reason is None:
                self.close_reason = f"server {self.name!r} connection closed"
            self._nursery = None
            self._fail_all(self.close_reason)
            self.closed.set()

    def abort(self, reason: str) -> None:
        """End the session now: every call in flight fails with ``reason``."""
        if self.close_reason is None:
            self.close_reason = reason
        self._fail_all(reason)
        if self._scope is not None:
            self._scope.cancel()

    def _fail_all(self, reason: str) -> None:
        pending, self._pending = self._pending, {}
        for waiter in pending.values():
            waiter.failure = UpstreamGone(reason)
            waiter.event.set()
            if waiter.scope is not None:
                waiter.scope.cancel()

    async def end_session(self, timeout: float) -> bool:
        """DELETE our session (Streamable HTTP, handshake era); True if the server took it."""
        session, self.session_id = self.session_id, None
        if self.mode != "streamable" or session is None:
            return False
        with trio.move_on_after(timeout):
            try:
                response = await self._client.delete(self._url, headers=self._session_headers(session))
            except httpx2.HTTPError as exc:
                log.debug("%s: DELETE of the session failed: %r", self.name, exc)
                return False
            log.debug("%s: session deleted (HTTP %d)", self.name, response.status_code)
            return response.status_code < 300 or response.status_code == 405
        return False

    # -- the seam ---------------------------------------------------------------------------------

    async def call(self, method: str, params: Raw | dict[str, Raw] | UnsetType = UNSET, *,
                   timeout: float = math.inf, origin: Any = None) -> Raw:
        if self.closed.is_set() or self.close_reason is not None:
            raise UpstreamGone(self.close_reason or f"server {self.name!r} is not running")
        if method == "initialize":
            return await self._guarded(self._initialize, _as_members(params), timeout)
        if self.mode == "modern":
            if method == "ping":  # 2026-07-28 has no ping: a discover answered is life
                await self._call(method, "server/discover", UNSET, timeout, origin)
                return jsonrpc.RAW_EMPTY_OBJECT
            if method == "logging/setLevel":  # per request in 2026-07-28
                level = jsonrpc.decode_any(_as_members(params).get("level", Raw(b"null")))
                self._log_level = level if isinstance(level, str) else None
                return jsonrpc.RAW_EMPTY_OBJECT
        return await self._call(method, method, params, timeout, origin)

    async def notify(self, method: str, params: Raw | dict[str, Raw] | UnsetType = UNSET) -> None:
        if self.closed.is_set():
            raise UpstreamGone(self.close_reason or f"server {self.name!r} is not running")
        if self.mode == "modern":
            return  # no client notifications on the 2026-07-28 wire (closing a stream cancels)
        await self._post_message(jsonrpc.encode(jsonrpc.notification(method, params)))
        if method == "notifications/initialized" and self.mode == "streamable":
            self._start_get_stream()

    async def _guarded(self, fn: Callable[..., Awaitable[Raw]], *args: Any) -> Raw:
        try:
            return await fn(*args)
        except _Refused as exc:
            raise exc.error from None

    async def _call(self, method: str, wire_method: str, params: Raw | dict[str, Raw] | UnsetType,
                    timeout: float, origin: Any) -> Raw:
        """One call within ``timeout``: a request (and, for 2026-07-28, its input_required rounds)."""
        with trio.move_on_after(timeout):
            try:
                result = await self._request(wire_method, params, origin)
                if self.mode == "modern":
                    result = await self._input_rounds(wire_method, params, origin, result)
                    if wire_method == "tools/list":
                        self._learn_param_headers(result)
            except _Refused as exc:
                raise exc.error from None
            return result
        self.consecutive_timeouts += 1
        self.suspect.set()
        raise UpstreamTimeout(f"server {self.name!r} did not answer {method} within {timeout:g}s")

    async def _request(self, method: str, params: Raw | dict[str, Raw] | UnsetType, origin: Any) -> Raw:
        """One JSON-RPC request and its answer; cancellation tells the server (handshake era)."""
        upstream_id = self._next_id
        self._next_id += 1
        waiter = _Waiter(origin)
        self._pending[upstream_id] = waiter
        self.in_flight_peak = max(self.in_flight_peak, len(self._pending))
        completed = sent = False
        try:
            with trio.CancelScope() as waiter.scope:
                if self.mode == "sse":
                    sent = True
                    await self._post_message(jsonrpc.encode(jsonrpc.request(upstream_id, method, params)))
                    await waiter.event.wait()
                else:
                    sent = True
                    waiter.response = await self._exchange(_Exchange(upstream_id, method, waiter), params)
            if waiter.failure is not None:
                raise waiter.failure
            completed = True
        finally:
            if self._pending.get(upstream_id) is waiter:
                del self._pending[upstream_id]
            if not completed and sent and self.mode in ("streamable", "sse") and waiter.failure is None:
                self._cancel_upstream(upstream_id)
        response = waiter.response
        assert response is not None
        self.consecutive_timeouts = 0
        if response.error is not UNSET:
            err = response.error
            raise UpstreamError(err.code, err.message, err.data)
        if response.result is UNSET:
            raise UpstreamInvalid(f"server {self.name!r} sent an answer without a result")
        return response.result

    def _cancel_upstream(self, upstream_id: int) -> None:
        if self._nursery is None or self.closed.is_set():
            return
        message = jsonrpc.encode(jsonrpc.notification("notifications/cancelled", {
            "requestId": jsonrpc.raw(upstream_id), "reason": jsonrpc.raw("cancelled by the gateway")}))
        self._nursery.start_soon(self._side_post, message, "notifications/cancelled")

    async def _side_post(self, message: bytes, what: str) -> None:
        """A POST nobody waits for (a cancellation, an answer to the server): bounded, logged."""
        with trio.move_on_after(_SIDE_TIMEOUT):
            try:
                await self._post_message(message)
            except (CallError, _Refused) as exc:
                log.debug("%s: sending %s failed: %s", self.name, what, getattr(exc, "message", exc))

    # -- initialize: which era and which wire -----------------------------------------------------

    async def _initialize(self, params: dict[str, Raw], timeout: float) -> Raw:
        self._init_params = params
        with trio.move_on_after(timeout):
            return await self._negotiate(params)
        raise UpstreamTimeout(f"server {self.name!r} did not answer initialize within {timeout:g}s")

    async def _negotiate(self, params: dict[str, Raw]) -> Raw:
        """2026-07-28 if ``server/discover`` says so, else the handshake; ``auto`` falls back to the
        legacy SSE transport when POSTing ``initialize`` gets 400/404/405 (the spec's rule)."""
        if self._transport in ("streamable-http", "auto"):
            discovered = await self._discover()
            if discovered is not None:
                return discovered
            try:
                return await self._handshake()
            except _Refused as exc:
                if self._transport != "auto" or exc.status not in (400, 404, 405):
                    raise
                log.info("%s: POST initialize got HTTP %d: trying the legacy HTTP+SSE transport",
                         self.name, exc.status)
        await self._open_sse()
        self.mode = "sse"
        result = await self._request("initialize", params, None)
        self.version = _protocol_version(result)
        return result

    async def _discover(self) -> Raw | None:
        """``server/discover`` at 2026-07-28; the initialize result it stands for, or None (handshake)."""
        meta = {PROTOCOL_VERSION_KEY: jsonrpc.raw(MODERN),
                CLIENT_CAPABILITIES_KEY: self._init_params.get("capabilities", jsonrpc.RAW_EMPTY_OBJECT),
                CLIENT_INFO_KEY: self._init_params.get("clientInfo", jsonrpc.RAW_EMPTY_OBJECT)}
        self.mode = "modern"
        self._modern_meta = meta
        try:
            raw = await self._request("server/discover", UNSET, None)
            result = _dict_decoder.decode(raw)
            versions = _any_decoder.decode(result.get("supportedVersions", Raw(b"[]")))
            if not isinstance(versions, list) or MODERN not in versions:
                raise ValueError("no 2026-07-28 in supportedVersions")
        except UpstreamGone:
            raise  # unreachable: no era to try
        except (CallError, _Refused, *jsonrpc.DECODE_FAILURES) as exc:
            log.debug("%s: server/discover: %s; using the handshake", self.name, getattr(exc, "message", exc))
            self.mode, self._modern_meta = None, {}
            return None
        self.version = MODERN
        info: Any = {}
        if "_meta" in result:
            try:
                info = _any_decoder.decode(result["_meta"]).get(SERVER_INFO_KEY, {})
            except (*jsonrpc.DECODE_FAILURES, AttributeError):
                info = {}
        synthesized: dict[str, Raw] = {"protocolVersion": jsonrpc.raw(MODERN),
                                       "capabilities": result.get("capabilities", jsonrpc.RAW_EMPTY_OBJECT),
                                       "serverInfo": jsonrpc.raw(info if isinstance(info, dict) else {})}
        if "instructions" in result:
            synthesized["instructions"] = result["instructions"]
        log.info("%s: speaking MCP %s (stateless) to %s", self.name, MODERN, self._where)
        if self._nursery is not None:
            self._nursery.start_soon(self._listen, result.get("capabilities", jsonrpc.RAW_EMPTY_OBJECT))
        return Raw(jsonrpc.encoder.encode(synthesized))

    async def _handshake(self) -> Raw:
        """POST ``initialize``: a new session (its id, the version it speaks)."""
        self.mode, self.session_id, self.version = "streamable", None, None
        result = await self._request("initialize", self._init_params, None)
        self.version = _protocol_version(result)
        return result

    async def _reinitialize(self, stale: str | None, why: str) -> None:
        """A new session after the server forgot ours (404); once, whoever noticed first."""
        async with self._reinit_lock:
            if self.session_id != stale or self.closed.is_set():
                return  # another call (or the GET stream) did it meanwhile
            log.warning("%s: the server forgot our session (HTTP 404 %s); initializing a new session",
                        self.name, why)
            if self._get_scope is not None:
                self._get_scope.cancel()
            raw = await self._handshake()
            await self.notify("notifications/initialized")
            self.reinitialized += 1
            log.warning("%s: new session started; refreshing its lists", self.name)
            try:
                caps = _any_decoder.decode(_dict_decoder.decode(raw).get("capabilities", Raw(b"{}")))
            except jsonrpc.DECODE_FAILURES:
                caps = {}
            for kind in ("tools", "prompts", "resources"):  # a restarted server may offer other lists
                if isinstance(caps, dict) and kind in caps:
                    self._deliver_notification(jsonrpc.notification(f"notifications/{kind}/list_changed"), [])

    # -- Streamable HTTP: one POST per message ----------------------------------------------------

    def _session_headers(self, session: str | None = None) -> dict[str, str]:
        headers: dict[str, str] = {}
        session = session if session is not None else self.session_id
        if session is not None:
            headers["mcp-session-id"] = session
        if self.version is not None and self.mode != "modern":
            headers["mcp-protocol-version"] = self.version
        return headers

    def _request_body(self, upstream_id: int, method: str, params: Raw | dict[str, Raw] | UnsetType
                      ) -> tuple[bytes, dict[str, str]]:
        headers = {"accept": _ACCEPT_BOTH, "content-type": "application/json"}
        if self.mode != "modern":
            headers.update(self._session_headers())
            return jsonrpc.encode(jsonrpc.request(upstream_id, method, params)), headers
        members = _as_members(params)
        meta = dict(self._modern_meta)
        if self._log_level is not None:
            meta[LOG_LEVEL_KEY] = jsonrpc.raw(self._log_level)
        if "_meta" in members:
            try:
                meta = {**_dict_decoder.decode(members["_meta"]), **meta}
            except jsonrpc.DECODE_FAILURES:
                pass
        members["_meta"] = Raw(jsonrpc.encoder.encode(meta))
        headers.update({"mcp-protocol-version": MODERN, "mcp-method": method})
        key = NAME_BEARING.get(method)
        name = jsonrpc.decode_any(members[key]) if key is not None and key in members else None
        if isinstance(name, str):
            headers["mcp-name"] = encode_header_value(name)
            if method == "tools/call" and name in self._param_headers and "arguments" in members:
                headers.update(param_headers(self._param_headers[name], members["arguments"]))
        return jsonrpc.encode(jsonrpc.request(upstream_id, method, members)), headers

    async def _exchange(self, ex: _Exchange, params: Raw | dict[str, Raw] | UnsetType) -> Message:
        """POST a request, read its answer (JSON or SSE); a 404 for our session re-initializes once."""
        for attempt in (1, 2):
            stale = self.session_id
            body, headers = self._request_body(ex.upstream_id, ex.method, params)
            async with self._stream("POST", headers, body) as response:
                status = response.status_code
                if status == 404 and stale is not None and self.mode == "streamable" and ex.method != "initialize":
                    if attempt == 2:
                        raise _Refused(404, CallError(UPSTREAM_UNAVAILABLE, (
                            f"server {self.name!r} answered 404 (session not found) again for a new session")))
                else:
                    return await self._read_answer(response, ex)
            await self._reinitialize(stale, f"for {ex.method}")
        raise AssertionError("unreachable")

    async def _read_answer(self, response: httpx2.Response, ex: _Exchange) -> Message:
        status = response.status_code
        if ex.method == "initialize" and self.mode == "streamable" and status < 300:
            self._take_session_id(response)
        content_type = _content_type(response)
        if status == 202:
            raise _Refused(202, UpstreamInvalid(f"server {self.name!r} answered {ex.method} with 202 Accepted "
                                                "and no answer"))
        if status == 200 and content_type == "text/event-stream":
            return await self._read_call_stream(response, ex)
        if content_type == "application/json" or content_type.endswith("+json"):
            body = await self._read_body(response)
            try:
                msg, _ = jsonrpc.decode_untrusted(body)
            except ProtocolError as exc:
                raise _Refused(status, UpstreamInvalid(
                    f"server {self.name!r} sent an invalid answer to {ex.method} (HTTP {status}): "
                    f"{exc.message}")) from None
            if msg.is_response and msg.id == ex.upstream_id:
                return msg
            if msg.is_response and msg.error is not UNSET:  # e.g. 400 with id null: its refusal, with its words
                raise _Refused(status, UpstreamError(msg.error.code, f"server {self.name!r} refused {ex.method} "
                                                     f"(HTTP {status}): {msg.error.message}", msg.error.data))
        if status < 300:
            raise _Refused(status, UpstreamInvalid(
                f"server {self.name!r} answered {ex.method} with HTTP {status} and no JSON-RPC answer "
                f"({content_type or 'no content type'})"))
        raise _Refused(status, _status_error(self.name, ex.method, response))

    async def _read_body(self, response: httpx2.Response) -> bytes:
        _check_encoding(self.name, response)
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > self._max_message:
            raise self._too_large("an answer")
        parts: list[bytes] = []
        size = 0
        async for chunk in response.aiter_raw():
            self.last_received = trio.current_time()
            size += len(chunk)
            if size > self._max_message:
                raise self._too_large("an answer")
            parts.append(chunk)
        return b"".join(parts)

    def _too_large(self, what: str) -> UpstreamInvalid:
        return UpstreamInvalid(f"server {self.name!r} sent {what} larger than {self._max_message} bytes "
                               "(limits.max_message); the call ended")

    async def _read_call_stream(self, response: httpx2.Response, ex: _Exchange) -> Message:
        """A call's SSE stream: what arrives on it belongs to the call; resumed if cut before its answer."""
        decoder = SSEDecoder(self._max_message)
        origins = [ex.waiter.origin] if ex.waiter.origin is not None else []
        for attempt in range(_RESUME_ATTEMPTS + 1):
            found = await self._read_events(response, decoder, ex.upstream_id, origins, exact=True)
            if found is not None:
                return found
            if decoder.last_id is None or self.mode != "streamable" or attempt == _RESUME_ATTEMPTS:
                break
            await trio.sleep(min(max((decoder.retry or 1000) / 1000, 0.05), 5.0))
            headers = {"accept": "text/event-stream", "last-event-id": decoder.last_id, **self._session_headers()}
            await response.aclose()
            async with self._stream("GET", headers) as resumed:
                if resumed.status_code != 200 or _content_type(resumed) != "text/event-stream":
                    break
                found = await self._read_events(resumed, decoder, ex.upstream_id, origins, exact=True)
                if found is not None:
                    return found
        raise _Refused(200, CallError(UPSTREAM_UNAVAILABLE, (
            f"server {self.name!r} ended the stream of {ex.method} before answering")))

    async def _read_events(self, response: httpx2.Response, decoder: SSEDecoder, upstream_id: int | None,
                           origins: list[Any], *, exact: bool) -> Message | None:
        """Dispatch a stream's messages until it ends (None) or ``upstream_id``'s answer arrives."""
        _check_encoding(self.name, response)
        try:
            async for chunk in response.aiter_raw():
                self.last_received = trio.current_time()
                for event in decoder.feed(chunk):
                    found = self._on_event(event, upstream_id, origins, exact)
                    if found is not None:
                        return found
        except EventTooLarge:
            raise _Refused(200, self._too_large("an event")) from None
        return None

    def _on_event(self, event: Event, upstream_id: int | None, origins: list[Any], exact: bool) -> Message | None:
        if event.event != "message" or not event.data.strip():
            return None
        try:
            msg, _ = jsonrpc.decode_untrusted(event.data)
        except ProtocolError as exc:
            if upstream_id is not None and exc.salvaged_id == upstream_id:
                raise _Refused(200, UpstreamInvalid(
                    f"server {self.name!r} sent an invalid answer: {exc.message}")) from None
            self._log.log(logging.WARNING, event.data[:200],
                          what=f"ignoring an event that is not JSON-RPC ({logsafe.clean(exc.message, 200)}): ")
            return None
        if msg.is_response:
            if upstream_id is not None and msg.id == upstream_id:
                return msg
            self._deliver_response(msg)
        elif msg.is_notification:
            self._deliver_notification(msg, origins if exact else self._origins())
        else:
            self._serve_request(msg, origins if exact else self._origins(), exact)
        return None

    def _deliver_response(self, msg: Message) -> None:
        """An answer on the legacy SSE stream: its waiter, if any. (On Streamable HTTP each call reads
        its answer from its own stream: one arriving elsewhere, for another call, is dropped.)"""
        waiter = self._pending.get(msg.id) if isinstance(msg.id, int) and self.mode == "sse" else None
        if waiter is None or waiter.event.is_set():
            log.debug("%s: dropping answer to unknown or abandoned id %r", self.name, msg.id)
            return
        waiter.response = msg
        waiter.event.set()

    def _deliver_notification(self, msg: Message, origins: list[Any]) -> None:
        if self._handlers.notification is not None:
            try:
                self._handlers.notification(msg, origins)
            except Exception:  # a hostile or buggy notification must not end anything
                log.exception("%s: handling notification %s failed", self.name, logsafe.clean(str(msg.method), 100))

    def _origins(self) -> list[Any]:
        return [w.origin for w in self._pending.values() if w.origin is not None]

    def _take_session_id(self, response: httpx2.Response) -> None:
        session = response.headers.get("mcp-session-id")
        if session is None:
            return
        if not session or len(session) > 1024 or not set(session.encode("latin-1", "replace")) <= _SESSION_ID_CHARS:
            raise _Refused(200, UpstreamInvalid(f"server {self.name!r} sent an invalid Mcp-Session-Id"))
        self.session_id = session

    async def _post_message(self, body: bytes) -> None:
        """POST a notification or an answer (no answer expected: 202)."""
        if self.mode == "sse":
            url, headers = self._endpoint or self._url, {"content-type": "application/json"}
        else:
            url, headers = self._url, {"accept": _ACCEPT_BOTH, "content-type": "application/json",
                                       **self._session_headers()}
        async with self._stream("POST", headers, body, url=url) as response:
            status = response.status_code
            await self._read_body(response)
            if status >= 300:
                raise _Refused(status, _status_error(self.name, "a message", response))

    # -- the server's own requests ----------------------------------------------------------------

    def _serve_request(self, msg: Message, origins: list[Any], exact: bool) -> None:
        handler = self._handlers.request
        if self.mode == "modern":  # 2026-07-28 servers ask through input_required results, not requests
            log.debug("%s: ignoring a server request (%s) on the 2026-07-28 wire", self.name,
                      logsafe.clean(str(msg.method), 100))
            return
        out = answer_now(msg, relaying=handler is not None and self._nursery is not None, serving=self._serving)
        if out is not None:
            self._answer(out)
            return
        assert handler is not None and self._nursery is not None
        self._serving += 1
        self._nursery.start_soon(self._relay, handler, msg, origins, exact)

    async def _relay(self, handler: Callable[[ServerRequest], Awaitable[Raw]], msg: Message,
                     origins: list[Any], exact: bool) -> None:
        try:
            data = await relayed_answer(self.name, handler, msg,
                                        ServerRequest(str(msg.method), msg.params, origins, exact=exact))
        finally:
            self._serving -= 1
        await self._side_post(data, f"the answer to {msg.method}")

    def _answer(self, out: Message) -> None:
        """An answer we need not think about (ping, a refusal): bounded, like the relays."""
        if self._nursery is None or self.mode == "modern" or self._answering >= MAX_SERVER_REQUESTS:
            log.debug("%s: not answering a server request (too many at once)", self.name)
            return
        self._answering += 1

        async def send() -> None:
            try:
                await self._side_post(jsonrpc.encode(out), "an answer")
            finally:
                self._answering -= 1

        self._nursery.start_soon(send)

    # -- 2026-07-28: input_required rounds, Mcp-Param-* headers -----------------------------------

    async def _input_rounds(self, method: str, params: Raw | dict[str, Raw] | UnsetType, origin: Any,
                            result: Raw) -> Raw:
        """Answer ``input_required`` results: relay each input request to the call's client, retry."""
        delay = 0.05
        for _ in range(MAX_INPUT_ROUNDS):
            if _INPUT_REQUIRED not in bytes(memoryview(result)):
                return result
            try:
                members = _dict_decoder.decode(result)
                kind = jsonrpc.decode_any(members.get("resultType", Raw(b"null")))
            except jsonrpc.DECODE_FAILURES:
                return result
            if kind != "input_required":
                return result
            try:
                requests = _dict_decoder.decode(members["inputRequests"]) if "inputRequests" in members else {}
            except jsonrpc.DECODE_FAILURES:
                raise UpstreamInvalid(f"server {self.name!r} sent invalid inputRequests (not an object)") from None
            retry = _as_members(params)
            retry.pop("inputResponses", None)
            retry.pop("requestState", None)
            if requests:
                retry["inputResponses"] = Raw(jsonrpc.encoder.encode(await self._ask(requests, origin)))
                delay = 0.05
            else:
                await trio.sleep(delay)  # state only: the server is working; back off a little
                delay = min(delay * 2, 0.25)
            if "requestState" in members:
                retry["requestState"] = members["requestState"]
            result = await self._request(method, retry, origin)
        raise UpstreamInvalid(f"server {self.name!r} still asked for input after {MAX_INPUT_ROUNDS} rounds")

    async def _ask(self, requests: dict[str, Raw], origin: Any) -> dict[str, Raw]:
        handler = self._handlers.request
        answers: dict[str, Raw] = {}
        refused: list[CallError] = []

        async def one(key: str, raw: Raw) -> None:
            try:
                request = _dict_decoder.decode(raw)
                method = jsonrpc.decode_any(request.get("method", Raw(b"null")))
            except jsonrpc.DECODE_FAILURES:
                method = None
            if not isinstance(method, str):
                refused.append(UpstreamInvalid(f"server {self.name!r} sent an invalid input request {key!r}"))
                return
            if handler is None:
                refused.append(UpstreamError(jsonrpc.METHOD_NOT_FOUND, (
                    f"server {self.name!r} asked for {method}, and the gateway relays nothing for it")))
                return
            try:
                answers[key] = await handler(ServerRequest(method, request.get("params", UNSET),
                                                           [origin] if origin is not None else [], exact=True))
            except CallError as exc:
                refused.append(exc)
                nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            for key, raw in list(requests.items())[:MAX_SERVER_REQUESTS]:
                nursery.start_soon(one, key, raw)
        if refused:
            raise refused[0]
        return answers

    def _learn_param_headers(self, result: Raw) -> None:
        """Which tools annotate arguments as ``Mcp-Param-*`` headers (their calls must send them)."""
        if b"x-mcp-header" not in bytes(memoryview(result)):
            return
        try:
            tools = _any_decoder.decode(result).get("tools", [])
        except (*jsonrpc.DECODE_FAILURES, AttributeError):
            return
        for tool in tools if isinstance(tools, list) else []:
            if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                found = param_header_map(tool.get("inputSchema"))
                if found:
                    self._param_headers[tool["name"]] = found

    # -- streams: GET (Streamable HTTP) and the legacy SSE stream ---------------------------------

    def _start_get_stream(self) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(self._get_stream, self.session_id)

    async def _get_stream(self, session: str | None) -> None:
        """The session's server-to-client stream, reopened with backoff until the peer ends."""
        delay, last_id, opened = 0.5, None, False
        with trio.CancelScope() as scope:
            self._get_scope = scope
            while session is not None and session == self.session_id:
                decoder = SSEDecoder(self._max_message)
                headers = {"accept": "text/event-stream", **self._session_headers(session)}
                if last_id is not None:
                    headers["last-event-id"] = last_id
                try:
                    async with self._stream("GET", headers, timeout=_GET_READ_TIMEOUT, background=True) as response:
                        status = response.status_code
                        if status == 405:
                            log.debug("%s: the server offers no GET stream", self.name)
                            return
                        if status == 404:
                            # Our session was forgotten only if this stream worked before; a server
                            # that answers every GET with 404 has no stream (re-initializing would loop).
                            if opened:
                                self._spawn_reinitialize(session)
                            else:
                                log.debug("%s: the server offers no GET stream (404)", self.name)
                            return
                        if status != 200 or _content_type(response) != "text/event-stream":
                            raise _Refused(status, _status_error(self.name, "the GET stream", response))
                        delay, opened = 0.5, True
                        await self._read_events(response, decoder, None, [], exact=False)
                except UpstreamGone:
                    return  # the peer ended (an SSRF refusal, or it was aborted)
                except (CallError, _Refused) as exc:
                    log.info("%s: GET stream: %s; reopening in %.1fs", self.name,
                             getattr(exc, "message", exc), delay)
                last_id = decoder.last_id or last_id
                await trio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _listen(self, capabilities: Raw) -> None:
        """2026-07-28: ``subscriptions/listen`` for the lists the server says can change (what the GET
        stream is in the handshake era), reopened with backoff until the peer ends."""
        caps = jsonrpc.decode_any(capabilities)
        caps = caps if isinstance(caps, dict) else {}
        wanted = {f"{kind}ListChanged": True for kind in ("tools", "prompts", "resources")
                  if isinstance(caps.get(kind), dict) and caps[kind].get("listChanged")}
        if not wanted:
            return
        params = {"notifications": jsonrpc.raw(wanted)}
        delay = 0.5
        while not self.closed.is_set():
            listen_id = self._next_id  # not a call in flight: liveness must not see a busy server
            self._next_id += 1
            body, headers = self._request_body(listen_id, "subscriptions/listen", params)
            decoder = SSEDecoder(self._max_message)
            try:
                async with self._stream("POST", headers, body, timeout=_GET_READ_TIMEOUT, background=True) as response:
                    if response.status_code != 200 or _content_type(response) != "text/event-stream":
                        log.debug("%s: no subscriptions/listen (HTTP %d)", self.name, response.status_code)
                        return  # an answer instead of a stream: the server has none
                    delay = 0.5
                    await self._read_events(response, decoder, listen_id, [], exact=False)
            except UpstreamGone:
                return
            except (CallError, _Refused) as exc:
                log.info("%s: subscriptions/listen: %s; reopening in %.1fs", self.name,
                         getattr(exc, "message", exc), delay)
            await trio.sleep(delay)
            delay = min(delay * 2, 30.0)

    def _spawn_reinitialize(self, stale: str | None) -> None:
        async def run() -> None:
            with trio.move_on_after(_SIDE_TIMEOUT):
                try:
                    await self._reinitialize(stale, "on the GET stream")
                except (CallError, _Refused) as exc:
                    log.warning("%s: starting a new session failed: %s", self.name, getattr(exc, "message", exc))

        if self._nursery is not None:
            self._nursery.start_soon(run)

    async def _open_sse(self) -> None:
        assert self._nursery is not None
        await self._nursery.start(self._sse_stream)

    async def _sse_stream(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Legacy HTTP+SSE: the stream is the session; ``started`` once the endpoint is known."""
        decoder = SSEDecoder(self._max_message)
        async with self._stream("GET", {"accept": "text/event-stream"}) as response:
            if response.status_code != 200 or _content_type(response) != "text/event-stream":
                raise _Refused(response.status_code, _status_error(self.name, "the SSE stream", response))
            _check_encoding(self.name, response)
            chunks = response.aiter_raw()
            try:
                async for chunk in chunks:
                    self.last_received = trio.current_time()
                    for event in decoder.feed(chunk):
                        if self._endpoint is None:
                            if event.event == "endpoint":
                                self._endpoint = self._checked_endpoint(event.data)
                                task_status.started()
                        else:
                            self._on_event(event, None, [], exact=False)
                reason = f"server {self.name!r} closed its SSE stream"
            except EventTooLarge:
                reason = f"server {self.name!r} sent an event larger than {self._max_message} bytes; stream closed"
            except (CallError, _Refused) as exc:
                if self._endpoint is None:
                    raise
                reason = f"server {self.name!r}: SSE stream lost: {getattr(exc, 'message', exc)}"
        if self._endpoint is None:
            raise _Refused(200, UpstreamGone(f"server {self.name!r} closed its SSE stream before naming an endpoint"))
        log.warning("%s", reason)
        self.abort(reason)

    def _checked_endpoint(self, data: bytes) -> str:
        endpoint = urljoin(self._url, data.decode("utf-8", "replace").strip())
        here, there = urlsplit(self._url), urlsplit(endpoint)
        if (here.scheme, here.hostname, here.port) != (there.scheme, there.hostname, there.port):
            raise _Refused(200, UpstreamInvalid(
                f"server {self.name!r} named an endpoint on another origin ({there.hostname}); refused"))
        return endpoint

    # -- HTTP --------------------------------------------------------------------------------------

    @asynccontextmanager
    async def _stream(self, method: str, headers: dict[str, str], body: bytes | None = None, *,
                      url: str | None = None, timeout: float | None = None,
                      background: bool = False) -> AsyncIterator[httpx2.Response]:
        """One HTTP request, its response streamed; redirects refused; transport errors mapped.

        A connection that cannot be made is retried a few times quickly; then the server is
        unreachable and the peer ends (its owner restarts it with backoff), unless the request
        is a ``background`` one (the GET stream reconnects on its own)."""
        request = self._client.build_request(method, url or self._url, headers=headers, content=body,
                                             timeout=httpx2.Timeout(self._client.timeout.connect, read=timeout,
                                                                    write=None, pool=None))
        for attempt, pause in enumerate((*_CONNECT_RETRIES, None)):
            try:
                response = await self._client.send(request, stream=True, follow_redirects=False)
                break
            except (httpx2.ConnectError, httpx2.ConnectTimeout) as exc:
                refused, tls = isinstance(exc.__cause__, HostRefused), tls_failure(exc)
                reason = (f"server {self.name!r}: {self._where} {exc}" if refused else
                          f"server {self.name!r}: TLS with {self._where} failed: {tls}" if tls else
                          f"server {self.name!r} is unreachable at {self._where}: {describe_failure(exc)}")
                if background and not refused:
                    raise CallError(UPSTREAM_UNAVAILABLE, reason) from None
                if refused or tls or pause is None:  # (a refusal or a certificate does not change in a second)
                    log.warning("%s", reason)
                    self.abort(reason)
                    raise UpstreamGone(reason) from None
                log.debug("%s: connecting failed (attempt %d): %r", self.name, attempt + 1, exc)
                await trio.sleep(pause)
            except httpx2.HTTPError as exc:
                raise CallError(UPSTREAM_UNAVAILABLE, f"server {self.name!r}: {method} failed: "
                                                      f"{exc or type(exc).__name__}") from None
        try:
            if 300 <= response.status_code < 400:
                location = response.headers.get("location", "")
                host = urlsplit(urljoin(str(request.url), location)).hostname or "(no location)"
                raise _Refused(response.status_code, CallError(UPSTREAM_UNAVAILABLE, (
                    f"server {self.name!r} answered with a redirect (HTTP {response.status_code}) to host "
                    f"{logsafe.clean(host, 100)}; redirects are refused (configure the final URL)")))
            try:
                yield response
            except httpx2.HTTPError as exc:
                raise CallError(UPSTREAM_UNAVAILABLE, f"server {self.name!r}: connection lost during {method}: "
                                                      f"{exc or type(exc).__name__}") from None
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await response.aclose()


# -- helpers -----------------------------------------------------------------------------------------


def _as_members(params: Raw | dict[str, Raw] | UnsetType) -> dict[str, Raw]:
    """The top level of request params (values stay raw); {} for none or a non-object."""
    if isinstance(params, dict):
        return dict(params)
    if isinstance(params, UnsetType):
        return {}
    try:
        return _dict_decoder.decode(params)
    except jsonrpc.DECODE_FAILURES:
        return {}


def _protocol_version(result: Raw) -> str:
    try:
        version = jsonrpc.decode_any(_dict_decoder.decode(result).get("protocolVersion", Raw(b"null")))
    except jsonrpc.DECODE_FAILURES:
        version = None
    return version if isinstance(version, str) and version in HANDSHAKE_VERSIONS else HANDSHAKE_VERSIONS[-1]


def describe_failure(exc: BaseException) -> str:
    """The most specific words in an exception chain (httpcore wraps errors in empty ones)."""
    words, seen = "", 0
    cursor: BaseException | None = exc
    while cursor is not None and seen < 10:
        if str(cursor):
            words = str(cursor)
        cursor, seen = cursor.__cause__ or cursor.__context__, seen + 1
    return words or type(exc).__name__


def tls_failure(exc: BaseException) -> str | None:
    """What TLS said, if an exception chain holds a TLS failure (a bad certificate, mostly)."""
    cursor: BaseException | None = exc
    for _ in range(10):
        if cursor is None:
            return None
        if isinstance(cursor, ssl.SSLError):
            return str(cursor)
        cursor = cursor.__cause__ or cursor.__context__
    return None


def _content_type(response: httpx2.Response) -> str:
    return response.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _check_encoding(name: str, response: httpx2.Response) -> None:
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise _Refused(response.status_code, UpstreamInvalid(
            f"server {name!r} sent a {logsafe.clean(encoding, 20)}-encoded body, which was not asked for"))


def _status_error(name: str, what: str, response: httpx2.Response) -> CallError:
    status = response.status_code
    hint = {401: " (check its bearer and headers)", 403: " (check its bearer and headers)",
            413: " (the request is too large for it)", 429: " (it is rate limiting us)"}.get(status, "")
    phrase = response.reason_phrase or httpx2.codes.get_reason_phrase(status)
    return CallError(UPSTREAM_UNAVAILABLE, f"server {name!r} answered {what} with HTTP {status} {phrase}{hint}")


