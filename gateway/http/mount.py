"""The data plane's mount table: path -> handler, behind one Origin/Host/CORS gate.

Every HTTP endpoint is a peer here (``/mcp``, ``/sse``, ``/message``, ``/ws``, their
``/<route>/...`` forms, ``/healthz``): a request is checked (Origin, Host), given its CORS
headers, answered for a CORS preflight, and only then handed to the handler of its exact
path. An MCP endpoint (mounted with its route) also needs a caller: the guard authenticates the
request and sets ``request.identity``, or answers the refusal (401/403) itself. Nothing behind
the table repeats those checks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from .policy import PREFLIGHT_HEADERS, OriginPolicy
from .server import Handler, Request, Responder


class Guard(Protocol):
    async def identify(self, request: Request, route: str) -> Any:
        """The caller's identity, or a refusal ``(status, headers, body)`` to send as it is."""

    def remembered(self, request: Request, route: str) -> Any:
        """What :meth:`identify` would return, without awaiting, for a credential verified before;
        None when it must be awaited."""

_JSON = [(b"content-type", b"application/json")]


class MountTable:
    def __init__(self, policy: OriginPolicy, on_reject: Callable[[str], None] | None = None) -> None:
        self.policy = policy
        self._handlers: dict[str, Handler] = {}
        self._routes: dict[str, str] = {}  # MCP endpoint path -> its route: these need a caller
        self._on_reject = on_reject or (lambda reason: None)  # counts refusals for metrics
        self.guard: Guard | None = None
        self.anonymous: Any = None  # the identity of every caller when there is no guard

    def mount(self, path: str, handler: Handler, *, route: str | None = None) -> None:
        """``route``: the path is an MCP endpoint of that route (the guard runs before it)."""
        if path in self._handlers:
            raise ValueError(f"{path} is mounted twice")
        self._handlers[path] = handler
        if route is not None:
            self._routes[path] = route

    def unmount(self, path: str) -> None:
        self._handlers.pop(path, None)
        self._routes.pop(path, None)

    @property
    def paths(self) -> list[str]:
        return sorted(self._handlers)

    async def __call__(self, request: Request, responder: Responder) -> None:
        policy = self.policy
        origin = request.header(b"origin")
        if not policy.origin_ok(origin):
            self._on_reject("origin")
            await _forbidden(responder, "Forbidden: Origin not allowed")
            return
        if origin is not None and request.header(b"upgrade") is not None and not policy.may_read(origin):
            # A WebSocket has no CORS: a page that may connect may also read every answer. So a
            # browser's upgrade needs an origin that may read (allowed_origins), not just localhost.
            self._on_reject("origin")
            await _forbidden(responder, "Forbidden: Origin not allowed to open a WebSocket (allowed_origins)")
            return
        responder.extra_headers = policy.cors_headers(origin)
        if not policy.host_ok(request.header(b"host")):
            self._on_reject("host")
            await _forbidden(responder, "Forbidden: Host not allowed")
            return
        path = request.path
        handler = self._handlers.get(path)
        if handler is None:
            path = path.rstrip("/")
            handler = self._handlers.get(path)
        if handler is None:
            endpoints = ", ".join(p for p in self.paths if p.endswith("/mcp"))
            await responder.send(404, [(b"content-type", b"text/plain; charset=utf-8")],
                                 f"Not found: {path}; MCP endpoints: {endpoints}\n".encode())
            return
        if request.method == b"OPTIONS":  # a CORS preflight (its Origin passed the check above)
            await responder.send(204, PREFLIGHT_HEADERS, b"")
            return
        route = self._routes.get(path)
        if route is not None:
            guard = self.guard
            if guard is None:
                request.identity = self.anonymous
            else:
                found = guard.remembered(request, route)  # the usual case: no coroutine per request
                if found is None:
                    found = await guard.identify(request, route)
                if isinstance(found, tuple):  # counted by the guard, by reason
                    await responder.send(*found)
                    return
                request.identity = found
        await handler(request, responder)


async def _forbidden(responder: Responder, message: str) -> None:
    body = b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"' + message.encode() + b'"}}'
    await responder.send(403, _JSON, body)
