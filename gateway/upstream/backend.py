"""What the router needs from a configured server, whatever its lifecycle."""

from __future__ import annotations

from typing import Any, Protocol

import trio
from msgspec import Raw

from ..protocol.catalog import ServerCatalog


class Backend(Protocol):
    """A configured server: ``shared`` (ServerSupervisor), ``session`` or ``call`` (lifecycle.py)."""

    name: str
    catalog: ServerCatalog | None
    state: str
    last_error: str | None
    restarts: int

    async def run(self, *, task_status: trio.TaskStatus[None] = ...) -> None: ...

    async def call(self, method: str, params: Any = ..., *, session: Any = None,
                   timeout: float | None = None) -> Raw: ...

    def session_ended(self, session: Any) -> None: ...
