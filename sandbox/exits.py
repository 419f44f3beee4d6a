"""How this run's containers exit (status code, OOM kill), from one Docker events stream per run.

Containers are created with auto-remove, so asking the engine after an exit ("inspect") races the
removal and loses the OOM flag. The engine announces both on its events stream before it removes
anything: ``oom`` when the kernel's OOM killer struck, then ``die`` with an ``exitCode`` attribute.
:class:`ContainerExits` reads one stream, filtered by the run's instance label, in one thread of its
own (it blocks for the run's whole life, so it must not hold a slot of the shared Docker limiter);
each container the launcher starts is registered with :meth:`ContainerExits.watch` before it starts
and gets its result as an :class:`ExitWatch`.

If the stream breaks (the engine restarted), every open watch is marked ``lost`` and callers fall
back to waiting on the container itself; later containers get no watch at all.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import docker
import trio

from sandbox.docker_io import DOCKER_ERRORS

log = logging.getLogger("mcp_gateway.sandbox")


class ExitWatch:
    """The exit of one container: ``done`` is set once it died (or once the stream was lost)."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.status: int | None = None
        self.oom = False
        #: The events stream ended before this container died: ask the container instead.
        self.lost = False


class ContainerExits:
    """One events stream (``oom`` and ``die`` of containers carrying ``labels``) for a gateway run.

    ``start`` opens it (a blocking call, through ``limiter``) and starts the reader thread;
    ``aclose`` closes it and waits for the thread. Between the two, :meth:`watch` registers
    containers; results are delivered on the trio thread, so watches need no locking.
    """

    def __init__(
        self,
        client_factory: Callable[[], docker.DockerClient],
        labels: Mapping[str, str],
        limiter: trio.CapacityLimiter,
    ) -> None:
        self._factory = client_factory
        self._filters = {
            "type": ["container"],
            "event": ["oom", "die"],
            "label": [f"{k}={v}" for k, v in labels.items()],
        }
        self._limiter = limiter
        self._watches: dict[str, ExitWatch] = {}
        self._stream: Any = None  # docker.types.CancellableStream while running
        self._thread: threading.Thread | None = None
        self._ended = trio.Event()
        self._closing = False
        self.events_seen = 0

    @property
    def running(self) -> bool:
        return self._stream is not None and not self._ended.is_set()

    async def start(self) -> None:
        """Open the stream (the engine has subscribed us when this returns) and start reading it."""
        if self._stream is not None:
            raise RuntimeError("ContainerExits.start called twice")

        def open_stream() -> Any:
            return self._factory().events(decode=True, filters=self._filters)

        self._stream = await trio.to_thread.run_sync(open_stream, limiter=self._limiter)
        token = trio.lowlevel.current_trio_token()
        self._thread = threading.Thread(
            target=self._read, args=(self._stream, token), name="mcp-gateway-docker-events", daemon=True
        )
        self._thread.start()

    def _read(self, stream: Iterator[dict[str, Any]], token: trio.lowlevel.TrioToken) -> None:
        """The reader thread: hand each event to the trio thread, in order; say when the stream ends."""
        try:
            for event in stream:
                token.run_sync_soon(self._on_event, event)
        except DOCKER_ERRORS as exc:
            log.debug("docker events stream: %r", exc)
        except trio.RunFinishedError:
            return
        except Exception:  # never die silently: a stuck watch would cost every caller its exit_grace
            log.exception("docker events stream failed")
        try:
            token.run_sync_soon(self._on_stream_end)
        except trio.RunFinishedError:
            pass

    def _on_event(self, event: dict[str, Any]) -> None:
        self.events_seen += 1
        watch = self._watches.get(str(event.get("id", "")))
        if watch is None or watch.done.is_set():
            return
        action = event.get("Action") or event.get("status")
        if action == "oom":
            watch.oom = True
        elif action == "die":
            code = (event.get("Actor") or {}).get("Attributes", {}).get("exitCode")
            try:
                watch.status = int(code)
            except (TypeError, ValueError):
                watch.status = None
            watch.done.set()

    def _on_stream_end(self) -> None:
        if not self._closing:
            log.warning("the Docker events stream ended; container exits are now read from each container")
        for watch in self._watches.values():
            if not watch.done.is_set():
                watch.lost = True
                watch.done.set()
        self._ended.set()

    def watch(self, container_id: str) -> ExitWatch | None:
        """Register a container (before it starts); ``None`` when the stream is not running."""
        if not self.running:
            return None
        watch = self._watches[container_id] = ExitWatch()
        return watch

    def forget(self, container_id: str) -> None:
        """Drop a container's watch (it has been removed): keeps the table as small as the live set."""
        self._watches.pop(container_id, None)

    async def aclose(self) -> None:
        """Close the stream and wait (bounded) for the reader thread to notice."""
        if self._stream is None or self._ended.is_set():
            return
        self._closing = True
        try:
            # Shuts the socket down: the reader's blocking read returns at once. No round trip.
            self._stream.close()
        except (OSError, *DOCKER_ERRORS) as exc:
            log.debug("closing the docker events stream: %r", exc)
        with trio.move_on_after(5):
            await self._ended.wait()
