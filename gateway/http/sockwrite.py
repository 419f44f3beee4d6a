"""Writing to a client's socket without a timer or a scheduler round when the kernel takes it all.

trio's ``send_all`` yields to the scheduler after every successful send, and a write bounded in time
needs a cancel scope with a deadline; both cost more than the ``send`` itself for the answers the
gateway writes (a few hundred bytes into an empty socket buffer). :func:`send_within` first offers
the bytes to the socket directly (it is non-blocking under trio); only what the kernel does not take
at once is written the usual way, within the timeout. Callers guarantee one writer per socket at a
time (a connection writes one response at a time; a WebSocket's frames go out under its lock).
"""

from __future__ import annotations

import errno
import os

import trio


def write_now(stream: trio.abc.Stream, data: bytes | memoryview) -> int:
    """How many bytes of ``data`` the socket under ``stream`` took at once (0: it would block, or the
    stream is not a socket). Raises trio.BrokenResourceError / ClosedResourceError as send_all does."""
    sock = getattr(stream, "socket", None)
    if sock is None:
        return 0
    fd = sock.fileno()
    if fd < 0:
        raise trio.ClosedResourceError("the socket was already closed")
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0
    except OSError as exc:
        if exc.errno == errno.EBADF:
            raise trio.ClosedResourceError("the socket was already closed") from None
        raise trio.BrokenResourceError(f"socket connection broken: {exc}") from exc


async def send_within(stream: trio.abc.Stream, data: bytes, timeout: float) -> None:
    """``stream.send_all(data)`` within ``timeout`` seconds (trio.BrokenResourceError after it: the
    client read nothing for that long); see the module docstring."""
    sent = write_now(stream, data)
    if sent == len(data):
        return
    with trio.move_on_after(timeout) as scope:
        await stream.send_all(memoryview(data)[sent:])
    if scope.cancelled_caught:
        raise trio.BrokenResourceError(f"the client read nothing for {timeout:g}s")
