"""gateway/fdio.py: the wait-then-read helper behaves like trio's receive_some at its edges (data,
EOF, a reset peer, a closed descriptor, cancellation), over real socket pairs and pipes."""

from __future__ import annotations

import os
import socket
import struct

import pytest
import trio

from gateway.fdio import read_when_readable


async def test_data_eof_and_a_waiting_read_that_is_cancellable() -> None:
    a, b = trio.socket.socketpair()
    with a, b:
        with trio.move_on_after(0.05) as scope:  # nothing there: it waits (and a cancel ends the wait)
            await read_when_readable(b.fileno(), 100)
        assert scope.cancelled_caught
        await a.send(b"hello")
        assert await read_when_readable(b.fileno(), 100) == b"hello"
        a.shutdown(socket.SHUT_WR)
        assert await read_when_readable(b.fileno(), 100) == b""


async def test_a_reset_peer_is_broken_and_a_closed_descriptor_is_closed() -> None:
    a, b = trio.socket.socketpair()
    b.close()
    with pytest.raises(trio.ClosedResourceError):
        await read_when_readable(b.fileno(), 100)
    a.close()
    listener = trio.socket.socket()
    with listener:
        await listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = trio.socket.socket()
        await client.connect(listener.getsockname())
        server, _ = await listener.accept()
        with server:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()  # RST, not FIN
            with pytest.raises(trio.BrokenResourceError):
                await read_when_readable(server.fileno(), 100)


async def test_a_pipe_reads_what_was_written() -> None:
    r, w = os.pipe()
    os.set_blocking(r, False)
    try:
        os.write(w, b"x" * 10)
        assert await read_when_readable(r, 4) == b"xxxx"
        assert await read_when_readable(r, 100) == b"x" * 6
    finally:
        os.close(r)
        os.close(w)
