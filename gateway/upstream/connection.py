"""One JSON-RPC connection to one upstream MCP server over a :class:`Channel`.

The gateway allocates its own integer ids upstream and keeps a pending table
``upstream id -> waiter``; answers are matched by that id only, so client ids
(which may repeat across sessions) never meet upstream. When the stream ends,
every waiter fails at once with the server's exit description.

The server is untrusted: whatever it writes is one of (a) a message, delivered;
(b) a message that needed repair (bad UTF-8, lone surrogate escapes), delivered
repaired; (c) bytes that name one of our calls but cannot be read, which end that
call at once with -32003; (d) anything else, logged (escaped, rate-limited) and
dropped. Nothing it writes can raise out of :meth:`UpstreamConnection.run`: a
failure while handling its output (a gateway bug) closes this connection only,
its calls fail at once, and its owner restarts it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import msgspec
import trio
from msgspec import UNSET, Raw, UnsetType

from .. import logsafe
from ..protocol import jsonrpc
from ..protocol.errors import (
    CallError as CallError,
    UpstreamError as UpstreamError,
    UpstreamGone as UpstreamGone,
    UpstreamInvalid,
    UpstreamTimeout,
)
from ..protocol.jsonrpc import Message, ProtocolError
from .channel import Channel, Launcher
from .peer import PeerHandlers, ServerRequest, answer_now, relayed_answer

if TYPE_CHECKING:
    from ..session import InFlight

log = logging.getLogger("mcp_gateway.upstream")


class _Waiter:
    __slots__ = ("event", "response", "failure", "origin", "deadline", "timed_out", "cancelled")

    def __init__(self, origin: Any = None, deadline: float = math.inf) -> None:
        self.event = trio.Event()
        self.response: Message | None = None
        self.failure: CallError | None = None
        self.origin = origin  # the client request this call serves (for the relay)
        self.deadline = deadline  # trio time; the connection's timer ends the call then
        self.timed_out = False
        self.cancelled = False  # the client's request was cancelled while it waited (InFlight)

    def cancel(self) -> None:
        if not self.event.is_set():  # an answer already in wins, as it would against a cancel scope
            self.cancelled = True
            self.event.set()


_TICK = 0.05  # seconds: the longest the call timer sleeps while calls are pending (timeout precision)




class UpstreamConnection:
    """Request/response multiplexing over one channel. Owned by a supervisor's nursery."""

    def __init__(
        self,
        name: str,
        channel: Channel,
        *,
        max_message: int = 16 * 1024 * 1024,
        handlers: PeerHandlers | None = None,
        exit_grace: float = 0.5,
    ) -> None:
        self.name = name
        self._channel = channel
        self._max_message = max_message
        self._handlers = handlers or PeerHandlers()
        self._nursery: trio.Nursery | None = None
        self._serving = 0  # server requests being relayed
        self._exit_grace = exit_grace
        self._next_id = 1
        self._pending: dict[int, _Waiter] = {}
        self._timer_idle: trio.Event | None = None  # set when a call arrives while the timer waits for one
        self._send, self._outbox = trio.open_memory_channel[bytes](4096)
        self.closed = trio.Event()
        self.close_reason: str | None = None
        self.in_flight_peak = 0
        self._log = logsafe.peer_log(name)
        self._scope: trio.CancelScope | None = None
        # Liveness (see liveness.py): when the server last said anything, and how many calls in
        # a row ran out of time; ``suspect`` wakes the watchdog after too many of those.
        self.last_received = trio.current_time()
        self.consecutive_timeouts = 0
        self.suspect = trio.Event()
        self.invalid_messages = 0
        self.repaired_messages = 0

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def abort(self, reason: str) -> None:
        """Close the connection now: every call in flight fails with ``reason``."""
        if self.close_reason is None:
            self.close_reason = reason
        if self._scope is not None:
            self._scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Pump both directions until the server's stdout ends (or :meth:`abort`), then fail
        every waiter. Never raises an exception from the server's side: see the module docstring."""
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                self._nursery = nursery
                nursery.start_soon(self._writer)
                nursery.start_soon(self._timer)
                task_status.started()
                try:
                    reason = await self._reader()
                except Exception as exc:  # containment: a bug reached through one server's output
                    log.exception("%s: failed handling the server's output", self.name)
                    reason = self.close_reason = (
                        f"server {self.name!r}: the gateway failed to handle its output "
                        f"({type(exc).__name__}); connection closed")
                log.warning("%s", reason)
                nursery.cancel_scope.cancel()
        finally:
            if self.close_reason is None:
                self.close_reason = f"server {self.name!r} connection closed"
            self._fail_all(self.close_reason)
            self._outbox.close()  # callers blocked on a full outbox fail now instead of hanging
            self.closed.set()

    cancels_inflight: Final = True  # call() wakes the client's request it is given when that is cancelled

    async def call(self, method: str, params: Raw | dict[str, Raw] | UnsetType = UNSET,
                   *, timeout: float = math.inf, origin: Any = None, inflight: InFlight | None = None) -> Raw:
        """Send a request and wait for its result. Raises :class:`CallError`.

        If the caller is cancelled (client cancelled or disconnected), the server is
        told with ``notifications/cancelled`` and a late answer is dropped. ``inflight``: the
        client's request, running in no cancel scope; cancelling it ends the call the same way
        (with the error that says why it stopped).
        """
        if self.closed.is_set():
            raise UpstreamGone(self.close_reason or f"server {self.name!r} is not running")
        if inflight is not None and inflight.reason is not None:
            raise inflight.stopped()
        upstream_id = self._next_id
        self._next_id += 1
        # The deadline covers queueing too: a server that stops reading its stdin fills the outbox,
        # and callers must then time out rather than wait forever. It is kept by the connection's
        # timer, not by a cancel scope per call (those cost a tenth of a call's CPU).
        waiter = _Waiter(origin, trio.current_time() + timeout)
        self._pending[upstream_id] = waiter
        if len(self._pending) > self.in_flight_peak:
            self.in_flight_peak = len(self._pending)
        if self._timer_idle is not None:
            self._timer_idle.set()
        completed = sent = False
        try:
            data = jsonrpc.encode(jsonrpc.request(upstream_id, method, params))
            try:
                try:
                    self._send.send_nowait(data)
                except trio.WouldBlock:
                    # (a request without a scope of its own gets one here: its cancel must reach this wait)
                    sent = await (self._send_in_time(data, timeout) if inflight is None
                                  else inflight.scoped(self._send_in_time, data, timeout))
                else:
                    sent = True
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise UpstreamGone(self.close_reason or f"server {self.name!r} is not running") from None
            if inflight is not None:
                inflight.waiter = waiter  # its cancel wakes this wait (waiter.cancel)
            try:
                await waiter.event.wait()
            finally:
                if inflight is not None:
                    inflight.waiter = None
            if waiter.cancelled:
                assert inflight is not None  # only InFlight.cancel sets it
                raise inflight.stopped()
            if waiter.timed_out:
                self.consecutive_timeouts += 1
                self.suspect.set()
                raise UpstreamTimeout(f"server {self.name!r} did not answer {method} within {timeout:g}s")
            completed = True
        finally:
            if not completed:  # cancelled by our caller, or timed out: the server may stop working on it
                abandoned = self._pending.pop(upstream_id, None) is not None or waiter.timed_out
                if abandoned and sent:
                    self._notify_nowait("notifications/cancelled",
                                        {"requestId": jsonrpc.raw(upstream_id),
                                         "reason": jsonrpc.raw("cancelled by the gateway")})
        if waiter.failure is not None:
            raise waiter.failure
        response = waiter.response
        assert response is not None
        if response.error is not UNSET:
            err = response.error
            raise UpstreamError(err.code, err.message, err.data)
        assert response.result is not UNSET
        return response.result

    async def _send_in_time(self, data: bytes, timeout: float) -> bool:
        """The rare full outbox: wait for room, within ``timeout``; whether it was sent."""
        with trio.move_on_after(timeout) as scope:
            await self._send.send(data)
        return not scope.cancelled_caught

    async def notify(self, method: str, params: Raw | dict[str, Raw] | UnsetType = UNSET) -> None:
        try:
            await self._send.send(jsonrpc.encode(jsonrpc.notification(method, params)))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise UpstreamGone(self.close_reason or f"server {self.name!r} is not running") from None

    def _notify_nowait(self, method: str, params: dict[str, Raw]) -> None:
        try:
            self._send.send_nowait(jsonrpc.encode(jsonrpc.notification(method, params)))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # best effort: the call is already abandoned on our side

    async def _timer(self) -> None:
        """End the calls whose deadline passed (UpstreamTimeout): one timer for the connection."""
        pending = self._pending
        while True:
            if not pending:
                self._timer_idle = trio.Event()
                await self._timer_idle.wait()
                self._timer_idle = None
                continue
            now = trio.current_time()
            earliest = math.inf
            expired = []
            for upstream_id, waiter in pending.items():
                if waiter.deadline <= now:
                    expired.append(upstream_id)
                elif waiter.deadline < earliest:
                    earliest = waiter.deadline
            for upstream_id in expired:
                waiter = pending.pop(upstream_id)
                waiter.timed_out = True
                waiter.event.set()
            await trio.sleep_until(min(earliest, now + _TICK))

    def _fail_all(self, reason: str) -> None:
        pending, self._pending = self._pending, {}
        for waiter in pending.values():
            waiter.failure = UpstreamGone(reason)
            waiter.event.set()

    async def _writer(self) -> None:
        """Write queued messages, batching whatever is ready into one write."""
        batch: list[bytes] = []
        try:
            async for first in self._outbox:
                batch.append(first)
                batch.append(b"\n")
                while True:
                    try:
                        batch.append(self._outbox.receive_nowait())
                        batch.append(b"\n")
                    except trio.WouldBlock:
                        break
                await self._channel.send_all(b"".join(batch))
                batch.clear()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("%s: stdin closed: %r", self.name, exc)
        except Exception as exc:  # containment, as in run(): end this connection, never the gateway
            log.exception("%s: writing to the server failed", self.name)
            self.abort(f"server {self.name!r}: writing to it failed ({type(exc).__name__}); connection closed")

    async def _reader(self) -> str:
        """Split stdout into lines and dispatch them; return why the stream ended."""
        parts: list[bytes | bytearray] = []
        buffered = 0
        while True:
            try:
                data = await self._channel.receive_some()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                data = b""
                log.debug("%s: stdout read failed: %r", self.name, exc)
            if not data:
                return await self._describe_end()
            self.last_received = trio.current_time()
            newline = data.find(b"\n")
            if newline == -1:
                parts.append(data)
                buffered += len(data)
                if buffered > self._max_message:
                    self.close_reason = (f"server {self.name!r} sent a message larger than "
                                         f"{self._max_message} bytes; connection closed")
                    return self.close_reason
                continue
            if parts:
                data = b"".join(parts) + data
                newline = data.find(b"\n", buffered)
                parts.clear()
                buffered = 0
            view = memoryview(data)
            ascii_only = data.isascii()  # one C scan per chunk; UTF-8 is checked per line only if not
            start = 0
            while newline != -1:
                if newline > start:
                    self._dispatch(view[start:newline], ascii_only)
                start = newline + 1
                newline = data.find(b"\n", start)
            if start < len(data):
                parts.append(data[start:])
                buffered = len(data) - start

    async def _describe_end(self) -> str:
        with trio.move_on_after(self._exit_grace):
            how = await self._channel.wait()
            self.close_reason = f"server {self.name!r} {how}"
            return self.close_reason
        self.close_reason = f"server {self.name!r} closed its output"
        return self.close_reason

    def _dispatch(self, line: memoryview, ascii_only: bool = False) -> None:
        try:
            msg, repaired = jsonrpc.decode_untrusted(line, ascii_only=ascii_only)
        except ProtocolError as exc:
            self._invalid(line, exc)
            return
        if repaired is not None:
            self.repaired_messages += 1
            self._log.log(logging.WARNING, f"{repaired} in a message ({len(line)} bytes)",
                          what="repaired output: ")
        if msg.is_response:
            waiter = self._pending.pop(msg.id, None) if isinstance(msg.id, int) else None
            if waiter is None:
                log.debug("%s: dropping answer to unknown or abandoned id %r", self.name, msg.id)
                return
            self.consecutive_timeouts = 0
            waiter.response = msg
            waiter.event.set()
        elif msg.is_notification:
            if self._handlers.notification is not None:
                try:
                    self._handlers.notification(msg, self._origins())
                except Exception:  # a hostile or buggy notification must not end the connection
                    log.exception("%s: handling notification %s failed", self.name,
                                  logsafe.clean(str(msg.method), 100))
        else:
            self._answer_server_request(msg)

    def _invalid(self, line: memoryview, exc: ProtocolError) -> None:
        """Output that is not a readable message: if it names one of our calls, that call ends
        now with the reason (never waits out its timeout); the rest is logged and dropped."""
        self.invalid_messages += 1
        target = exc.salvaged_id
        waiter = self._pending.pop(target, None) if isinstance(target, int) else None
        if waiter is not None:
            self.consecutive_timeouts = 0
            waiter.failure = UpstreamInvalid(f"server {self.name!r} sent an invalid answer: {exc.message}")
            waiter.event.set()
        if bytes(line[:64]).strip():
            self._log.log(logging.WARNING, line[:200],
                          what=f"ignoring output that is not JSON-RPC ({logsafe.clean(exc.message, 200)}): ")

    def _origins(self) -> list[Any]:
        """The client requests of the calls in flight (a stdio server says nothing more)."""
        return [w.origin for w in self._pending.values() if w.origin is not None]

    def _answer_server_request(self, msg: Message) -> None:
        """The server's own requests: ``ping`` is answered here; the rest (sampling, elicitation,
        roots) is relayed in a task of its own (bounded), if the gateway relays any."""
        handler = self._handlers.request
        out = answer_now(msg, relaying=handler is not None and self._nursery is not None, serving=self._serving)
        if out is not None:
            self._answer(out)
            return
        assert handler is not None and self._nursery is not None
        self._serving += 1
        self._nursery.start_soon(self._relay, handler, msg)

    async def _relay(self, handler: Callable[[ServerRequest], Awaitable[Raw]], msg: Message) -> None:
        try:
            data = await relayed_answer(self.name, handler, msg, ServerRequest(str(msg.method), msg.params,
                                                                               self._origins()))
        finally:
            self._serving -= 1
        try:
            await self._send.send(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the connection is gone

    def _answer(self, out: Message) -> None:
        try:
            self._send.send_nowait(jsonrpc.encode(out))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            log.warning("%s: could not answer the server (outbox full)", self.name)


class ChannelConnector:
    """A :class:`~gateway.upstream.peer.Connector` for servers that speak over a byte channel: each
    connect starts the server through its launcher and speaks newline-delimited JSON-RPC to it."""

    def __init__(self, launcher: Launcher, *, max_message: int, kind: str = "process") -> None:
        self.name = launcher.name
        self.kind = kind  # process or container (for statistics)
        self.launcher = launcher
        self._max_message = max_message

    @asynccontextmanager
    async def connect(self, handlers: PeerHandlers) -> AsyncIterator[UpstreamConnection]:
        async with self.launcher.open() as channel:
            yield UpstreamConnection(self.name, channel, max_message=self._max_message, handlers=handlers)


_init_decoder = msgspec.json.Decoder(dict[str, Any])


def decode_object(raw: Raw) -> dict[str, Any]:
    return _init_decoder.decode(raw)
