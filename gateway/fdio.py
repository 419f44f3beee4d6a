"""Reading and writing a socket or pipe with fewer system calls and scheduler rounds than trio's streams.

trio's ``send_all`` yields to the scheduler after every successful send, and a write bounded in time
needs a cancel scope with a deadline; both cost more than the ``send`` itself for the answers the
gateway writes (a few hundred bytes into an empty socket buffer). :func:`send_within` first offers
the bytes to the socket directly (it is non-blocking under trio); only what the kernel does not take
at once is written the usual way, within the timeout. An upstream's stdin pipe uses :func:`write_now`
the same way. Callers guarantee one writer per descriptor at a time (a connection writes one response
at a time; a WebSocket's frames go out under its lock; an upstream has one writer task).

Reading is the other way round: trio's ``receive_some`` first tries the read, and waits only when it
fails. A client that has just been answered, or an upstream that has just been written to, has
nothing to send yet, so that first read almost always fails (a system call and an exception per
message). :func:`read_when_readable` waits first, then reads once. Callers guarantee one reader per
descriptor (trio's own conflict check is not there).
"""

from __future__ import annotations

import errno
import os

import trio


class WriteTimeout(trio.BrokenResourceError):
    """The peer read nothing for the whole timeout: treated as gone."""


def write_fd(fd: int, data: bytes | memoryview) -> int:
    """How many bytes of ``data`` the non-blocking descriptor ``fd`` (a socket or a pipe that trio
    owns) took at once; 0 if it would block. Raises trio.BrokenResourceError / ClosedResourceError
    as trio's send_all does."""
    if fd < 0:
        raise trio.ClosedResourceError("already closed")
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0
    except OSError as exc:
        if exc.errno == errno.EBADF:
            raise trio.ClosedResourceError("already closed") from None
        raise trio.BrokenResourceError(f"connection broken: {exc}") from exc


def _fileno(stream: object) -> int | None:
    """The descriptor under trio's SocketStream or FdStream (-1 once closed); None for other streams."""
    sock = getattr(stream, "socket", None)
    if sock is not None:
        return int(sock.fileno())
    fileno = getattr(stream, "fileno", None)
    return int(fileno()) if callable(fileno) else None


def write_now(stream: trio.abc.SendStream, data: bytes | memoryview) -> int:
    """:func:`write_fd` on the socket or pipe under ``stream`` (0 when it has no descriptor)."""
    fd = _fileno(stream)
    return 0 if fd is None else write_fd(fd, data)


async def send_within(stream: trio.abc.Stream, data: bytes, timeout: float) -> None:
    """``stream.send_all(data)`` within ``timeout`` seconds (:class:`WriteTimeout` after it: the
    client read nothing for that long); see the module docstring."""
    sent = write_now(stream, data)
    if sent == len(data):
        return
    with trio.move_on_after(timeout) as scope:
        await stream.send_all(memoryview(data)[sent:])
    if scope.cancelled_caught:
        raise WriteTimeout(f"the client read nothing for {timeout:g}s")


async def read_when_readable(fd: int, size: int) -> bytes:
    """Up to ``size`` bytes from the non-blocking descriptor ``fd`` once it is readable (b"" at EOF).
    Raises trio.BrokenResourceError for a reset peer and trio.ClosedResourceError once closed,
    as trio's receive_some does; a checkpoint, so cancellable while it waits."""
    while True:
        if fd < 0:
            raise trio.ClosedResourceError("already closed")
        await trio.lowlevel.wait_readable(fd)
        try:
            return os.read(fd, size)
        except BlockingIOError:
            continue  # readable, then taken (a spurious wakeup): wait again
        except OSError as exc:
            if exc.errno == errno.EBADF:
                raise trio.ClosedResourceError("already closed") from None
            raise trio.BrokenResourceError(f"connection broken: {exc}") from exc


async def receive_some(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    """``stream.receive_some(size)``, through :func:`read_when_readable` when the stream is a
    socket (trio's SocketStream) or a pipe (trio's FdStream)."""
    fd = _fileno(stream)
    if fd is not None:
        return await read_when_readable(fd, size)
    data = await stream.receive_some(size)
    return data if isinstance(data, bytes) else bytes(data)
