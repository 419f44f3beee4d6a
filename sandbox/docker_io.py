"""Byte I/O with a container over Docker's attach socket.

Docker multiplexes a non-TTY container's stdout and stderr on one connection as frames: an 8-byte
header (byte 0: stream, 1 stdout / 2 stderr; bytes 1-3: zero; bytes 4-7: big-endian payload
length) then the payload. :class:`FrameDemuxer` parses that sans-IO; :class:`DockerChannel` is the
:class:`gateway.upstream.channel.Channel` over the raw socket, driven by trio.
"""

from __future__ import annotations

import logging
import socket
import struct
from typing import TYPE_CHECKING, Any

import docker.errors
import requests
import trio

from gateway import logsafe

if TYPE_CHECKING:
    from sandbox.exits import ExitWatch

log = logging.getLogger("mcp_gateway.upstream")

STDIN, STDOUT, STDERR = 0, 1, 2
#: What the Docker SDK raises: its own errors, and requests' when the engine is unreachable.
DOCKER_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)
#: A frame header as two words: stream << 24 (the low 24 bits must be zero), payload length.
_HEADER = struct.Struct(">LL")
_RECEIVE_SIZE = 64 * 1024
#: Longest stderr line kept in memory; longer ones are logged in pieces.
_MAX_STDERR_LINE = 8 * 1024


class FrameError(Exception):
    """The attach stream is not Docker's multiplexed format (or ended mid-frame)."""


class FrameDemuxer:
    """Sans-IO parser for Docker's multiplexed attach stream.

    Payloads are passed on as soon as their bytes arrive, so memory stays bounded by what
    :meth:`feed` is given, however large a frame claims to be.
    """

    def __init__(self) -> None:
        self._header = bytearray()
        self._stream = 0
        self._remaining = 0  # payload bytes still due for the current frame

    @property
    def at_boundary(self) -> bool:
        """True when no frame is half-read (a clean place for the stream to end)."""
        return not self._header and self._remaining == 0

    def feed(self, data: bytes | bytearray) -> list[tuple[int, bytes]]:
        """Consume ``data``; return ``(stream, payload)`` pieces in order, same-stream runs merged.

        Linear in ``len(data)`` however small the frames: a run's payload slices are joined once.
        """
        out: list[tuple[int, bytes]] = []
        run: list[bytes | bytearray | memoryview] = []  # payload slices of the current same-stream run
        run_stream = -1
        stream, remaining = self._stream, self._remaining
        header: bytes | bytearray
        view = memoryview(data)
        pos, end = 0, len(data)
        while pos < end:
            if remaining == 0:
                if self._header or end - pos < 8:  # a header split across feeds
                    take = min(8 - len(self._header), end - pos)
                    self._header += data[pos : pos + take]
                    pos += take
                    if len(self._header) < 8:
                        break
                    header = bytes(self._header)
                    self._header.clear()
                else:
                    header = data[pos : pos + 8]
                    pos += 8
                word, remaining = _HEADER.unpack(header)
                stream = word >> 24
                if word & 0xFFFFFF or stream > STDERR:
                    self._stream, self._remaining = 0, 0
                    raise FrameError(
                        f"bad frame header {bytes(header).hex()} (is the container running with a TTY?)"
                    )
                continue
            take = min(remaining, end - pos)
            if stream != run_stream:
                if run:
                    out.append((run_stream, b"".join(run)))
                    run = []
                run_stream = stream
            # Small slices as bytes (cheapest to make); large ones as views, copied once by join.
            run.append(data[pos : pos + take] if take < 512 else view[pos : pos + take])
            pos += take
            remaining -= take
        if run:
            out.append((run_stream, b"".join(run)))
        self._stream, self._remaining = stream, remaining
        return out


def describe_exit(status_code: int | None, oom_killed: bool) -> str:
    """Say how a container ended, for error messages (``"was OOM-killed (exit 137)"``)."""
    if status_code is None:
        return "exited (status unknown)"
    if oom_killed:
        return f"was OOM-killed (exit {status_code})"
    # Docker's init (tini) exits 128+N when the server died of signal N, like a shell does.
    if 128 < status_code < 128 + 65:
        return f"was killed by signal {status_code - 128}"
    return f"exited with status {status_code}"


def attach_raw_socket(api: docker.APIClient, container_id: str) -> tuple[socket.socket, bytes]:
    """Attach to stdin/stdout/stderr and return ``(our own socket, bytes already read)``. Blocking.

    Call it before ``start()`` so no output can be missed. The SDK's HTTP machinery keeps its own
    references to the connection (and Python defers closing a socket while a ``makefile`` of it is
    open), so we take a ``dup()`` of the descriptor and close theirs: then closing our socket really
    closes the connection, which tells Docker to close the server's stdin.
    """
    wrapped: Any = api.attach_socket(container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
    inner = getattr(wrapped, "_sock", wrapped)  # socket.SocketIO for unix:// and tcp:// engines
    if not isinstance(inner, socket.socket) or type(inner).__name__ == "SSLSocket":
        raise docker.errors.DockerException(
            f"cannot drive a {type(inner).__name__} attach stream; use the local socket (/var/run/docker.sock)"
        )
    ours = inner.dup()
    ours.setblocking(False)
    inner.setblocking(False)
    leftover = b""
    try:
        # http.client reads the 101 response through a buffer that may hold stream bytes read past
        # the headers. The socket is non-blocking now, so peek() returns only what is buffered.
        leftover = bytes(wrapped._response.raw._fp.fp.peek())
    except (AttributeError, OSError, ValueError):
        pass
    inner.close()
    if hasattr(wrapped, "close"):
        wrapped.close()
    return ours, leftover


class DockerChannel:
    """A :class:`gateway.upstream.channel.Channel` to one running container.

    ``receive_some`` yields stdout bytes only; stderr is logged line by line as ``[name] line``.
    ``wait`` reads the exit from ``exit_watch`` (the run's events stream, :mod:`sandbox.exits`);
    without one, or once that stream is lost, it blocks on the container in a worker thread of its
    own (a wait may last for hours, so it must not hold a slot of the shared Docker limiter).
    """

    def __init__(
        self,
        name: str,
        sock: socket.socket,
        container: Any,
        *,
        initial: bytes = b"",
        exit_watch: ExitWatch | None = None,
    ) -> None:
        self.name = name
        self.container = container
        self._exit_watch = exit_watch
        self._stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        self._demux = FrameDemuxer()
        self._pending = initial  # bytes read before we took over the socket
        self._out = bytearray()  # stdout received but not yet returned
        self._stderr = bytearray()
        self._eof = False
        self._exit: str | None = None
        self._wait_lock = trio.Lock()
        self._wait_limiter = trio.CapacityLimiter(1)
        self._plog = logsafe.peer_log(name)  # stderr is the server's: escaped and rate-limited

    async def send_all(self, data: bytes) -> None:
        """Write to the server's stdin (trio.BrokenResourceError once it is gone)."""
        await self._stream.send_all(data)

    async def send_eof(self) -> None:
        """Close the server's stdin (the container was created with StdinOnce)."""
        await self._stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Next stdout bytes (at most ``max_bytes``); ``b""`` once the container's output has ended."""
        while not self._out and not self._eof:
            if self._pending:
                data, self._pending = self._pending, b""
            else:
                try:
                    data = await self._stream.receive_some(_RECEIVE_SIZE)
                except trio.BrokenResourceError as exc:
                    # A reset connection ends the stream just the same for our caller.
                    log.debug("[%s] attach stream broken: %r", self.name, exc)
                    data = b""
            if not data:
                self._end_of_stream()
                break
            try:
                pieces = self._demux.feed(data)
            except FrameError as exc:
                log.error("[%s] %s; closing the channel", self.name, exc)
                self._end_of_stream()
                break
            for stream, payload in pieces:
                if stream == STDERR:
                    self._log_stderr(payload)
                else:
                    self._out += payload
        n = len(self._out) if max_bytes is None else max_bytes
        data = bytes(self._out[:n])
        del self._out[:n]
        return data

    def _end_of_stream(self) -> None:
        self._eof = True
        if not self._demux.at_boundary:
            log.warning("[%s] attach stream ended in the middle of a frame", self.name)
        if self._stderr:
            self._plog.log(logging.INFO, self._stderr)
            self._stderr.clear()

    def _log_stderr(self, payload: bytes) -> None:
        self._stderr += payload
        while True:
            nl = self._stderr.find(b"\n")
            if nl >= 0:
                line, cut = self._stderr[:nl], nl + 1
            elif len(self._stderr) >= _MAX_STDERR_LINE:
                line, cut = self._stderr[:_MAX_STDERR_LINE], _MAX_STDERR_LINE
            else:
                return
            del self._stderr[:cut]
            self._plog.log(logging.INFO, line.rstrip(b"\r"))

    async def wait(self) -> str:
        """Wait for the container to exit; describe how (computed once, then cached)."""
        async with self._wait_lock:
            if self._exit is None:
                watch = self._exit_watch
                if watch is not None:
                    await watch.done.wait()
                    if not watch.lost:
                        self._exit = describe_exit(watch.status, watch.oom)
                        return self._exit
                self._exit = await trio.to_thread.run_sync(
                    self._wait_blocking, abandon_on_cancel=True, limiter=self._wait_limiter
                )
        return self._exit

    def _wait_blocking(self) -> str:
        """Wait on the container itself. With auto-remove, the OOM flag may be gone by the time we ask
        (then a kill by the OOM killer reads as "killed by signal 9"): the events stream is the
        reliable source, this the fallback."""
        try:
            status = self.container.wait().get("StatusCode")
        except docker.errors.NotFound:
            return "was removed"
        except DOCKER_ERRORS as exc:
            return f"was lost (Docker engine error: {exc})"
        try:
            self.container.reload()
            oom = bool(self.container.attrs["State"].get("OOMKilled"))
        except DOCKER_ERRORS:
            oom = False  # removed meanwhile, or the engine went away: the status code must do
        return describe_exit(status, oom)

    @property
    def container_id(self) -> str:
        return str(self.container.id)

    async def aclose(self) -> None:
        """Close the attach connection (Docker then closes the server's stdin)."""
        await self._stream.aclose()
