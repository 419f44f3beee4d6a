"""The seam between an upstream MCP connection and what carries its bytes.

An :class:`UpstreamConnection` speaks newline-delimited JSON-RPC over a
:class:`Channel`; it does not care whether the bytes cross process pipes
(:mod:`gateway.upstream.process`) or a Docker attach socket (:mod:`sandbox`).
A :class:`Launcher` makes channels: one per start (and restart) of the server.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol


class LaunchError(Exception):
    """The server could not be started at all (bad command, missing image, Docker down)."""


class Channel(Protocol):
    """A live byte pipe to one running MCP server."""

    async def send_all(self, data: bytes) -> None:
        """Write bytes to the server's stdin. Raises trio.BrokenResourceError once it is gone."""

    async def receive_some(self) -> bytes | bytearray:
        """Return the next chunk of the server's stdout; ``b""`` at end of stream.

        Implementations route stderr to the gateway log themselves (prefixed with
        the server name) so the caller only ever sees protocol bytes.
        """

    async def wait(self) -> str:
        """Wait for the server to exit and describe how, for error messages.

        Examples: ``"exited with status 1"``, ``"was killed by signal 9"``,
        ``"was OOM-killed (exit 137)"``.
        """


class Launcher(Protocol):
    """Starts one instance of a configured server."""

    name: str

    def open(self) -> AbstractAsyncContextManager[Channel]:
        """Start the server and yield its channel; on exit stop it and release everything.

        Stopping is best effort and bounded in time: terminate, wait briefly, kill,
        remove (containers). Raises :class:`LaunchError` when the start fails.
        """
        ...
