"""MCP over WebSocket at ``/ws`` and ``/<route>/ws`` (not yet built: answers 501)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..dispatch import Dispatcher
from ..http.server import Handler, Request, Responder
from ..session import SessionManager

if TYPE_CHECKING:
    from ..router import Route


class WebSocketTransport:
    def __init__(self, dispatcher: Dispatcher, sessions: SessionManager, *, max_message: int,
                 ping_interval: float = 30.0) -> None:
        self.dispatcher = dispatcher
        self.sessions = sessions
        self.max_message = max_message
        self.ping_interval = ping_interval

    def endpoint(self, route: Route) -> Handler:
        async def handle(request: Request, responder: Responder) -> None:
            await responder.send(501, [], b"")
        return handle

    def close_all(self) -> None:
        """Draining: close every WebSocket (1001 going away)."""
