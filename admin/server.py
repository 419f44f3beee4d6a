"""The admin API's listener: the Quart (quart-trio) app of admin/api.py, served by hypercorn's
trio ``serve()`` on a socket of its own, in the gateway's trio process.

The socket is bound by :meth:`AdminServer.bind` (the CLI calls it before the event loop starts,
so a taken port is a plain error naming ``admin.port``) and handed to hypercorn as ``fd://``.
:meth:`stop` is the graceful end: hypercorn stops accepting, finishes the requests it is
serving (within ``GRACE``), and :meth:`run` returns.
"""

from __future__ import annotations

import functools
import logging
import socket
from typing import TYPE_CHECKING

import trio

from gateway.config import Admin, ConfigError, resolve_secret

from .auth import TokenCheck, check_listen, token_check

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from .control import ControlPlane

log = logging.getLogger("mcp_gateway.admin")

GRACE = 3.0  # seconds the requests being served get at shutdown


class AdminServer:
    """The admin API of one gateway; ``run`` serves it until ``stop`` (or cancellation)."""

    def __init__(self, control: ControlPlane, admin: Admin) -> None:
        self.control = control
        self.admin = admin
        self.port: int | None = None
        self.tokens: TokenCheck | None = None
        self.app: QuartTrio | None = None
        self._socket: socket.socket | None = None
        self._stop = trio.Event()
        self._finished: trio.Event | None = None  # set when run returns (None: it never ran)

    def bind(self) -> None:
        """Listen on ``admin.host``:``admin.port`` (refused beyond loopback without admin.token)."""
        from gateway.app import ConfigRefused

        from .auth import AuthError
        from .control import loopback_socket

        if self._socket is not None:
            return
        try:
            check_listen(self.admin)
            if self.admin.token is not None:  # readable now, or the gateway does not start
                resolve_secret(self.admin.token, where="admin.token")
        except (AuthError, ConfigError) as exc:
            raise ConfigRefused(str(exc)) from None
        try:
            self._socket = loopback_socket(self.admin.host, self.admin.port)
        except OSError as exc:
            raise ConfigRefused(f"admin.port: the admin API cannot listen on {self.admin.host}:{self.admin.port}: "
                               f"{exc.strerror or exc}") from None
        self.port = int(self._socket.getsockname()[1])

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Check the token source (generating one if needed), then serve; ``started`` with the port."""
        from hypercorn.config import Config
        from hypercorn.trio import serve

        from .api import create_app

        self.bind()
        assert self._socket is not None and self.port is not None
        self.tokens = await token_check(self.admin, self.control.store)
        self.app = create_app(self.control, self.tokens)
        config = Config()
        sock, self._socket = self._socket, None
        config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns the socket from here
        config.accesslog = None  # every change is in the audit log; requests are not logged
        http_log = logging.getLogger("mcp_gateway.admin.http")
        if not http_log.isEnabledFor(logging.DEBUG):
            http_log.setLevel(logging.WARNING)  # hypercorn's "Running on ..." says what our own line says
        config.errorlog = http_log
        config.graceful_timeout = GRACE
        config.keep_alive_timeout = 5
        config.read_timeout = 30
        config.h11_max_incomplete_size = 64 * 1024
        config.include_server_header = False
        self._finished = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(functools.partial(serve, self.app, config, shutdown_trigger=self._stop.wait))
                host = f"[{self.admin.host}]" if ":" in self.admin.host else self.admin.host
                log.info("admin API listening on http://%s:%d", host, self.port)
                task_status.started(self.port)
        finally:
            self._finished.set()

    async def stop(self) -> None:
        """Graceful end: hypercorn finishes what it serves (within GRACE s), then ``run`` returns."""
        self._stop.set()
        if self._finished is not None:
            with trio.move_on_after(GRACE + 1):
                await self._finished.wait()
