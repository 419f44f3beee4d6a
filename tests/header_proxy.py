"""A small reverse proxy for tests that adds headers to every request (h11 in front, httpx2 behind).

For clients that cannot send a header of their own, e.g. the conformance suite's, which has no
option for an ``Authorization`` header: it talks to the proxy, the proxy to the gateway with the
key. Responses stream through (SSE included); hop-by-hop headers are not forwarded.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import h11
import httpx2
import trio

_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade", b"content-length",
        b"proxy-authorization", b"proxy-connection"}


async def serve(target_port: int, headers: Sequence[tuple[bytes, bytes]], *,
                task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Listen on 127.0.0.1 (``started`` with the port) until cancelled."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{target_port}", timeout=None) as client:
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(functools.partial(_connection, client, list(headers)), listeners)


async def _connection(client: httpx2.AsyncClient, extra: list[tuple[bytes, bytes]], stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            request, body = await _read_request(conn, stream)
            if request is None:
                return
            forwarded = [(k, v) for k, v in request.headers if k.lower() not in _HOP and k.lower() != b"host"]
            upstream = client.build_request(request.method.decode(), request.target.decode(),
                                            headers=forwarded + extra, content=body)
            response = await client.send(upstream, stream=True)
            try:
                out = [(k.encode(), v.encode()) for k, v in response.headers.multi_items()
                       if k.lower().encode() not in _HOP]
                await stream.send_all(conn.send(h11.Response(status_code=response.status_code, headers=out)))
                async for chunk in response.aiter_raw():
                    await stream.send_all(conn.send(h11.Data(data=chunk)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
            finally:
                await response.aclose()
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError, httpx2.HTTPError):
        return  # either side went away: so does this connection
    finally:
        await stream.aclose()


async def _read_request(conn: h11.Connection, stream: trio.SocketStream) -> tuple[h11.Request | None, bytes]:
    request: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            conn.receive_data(data)
            if not data and request is None:
                return None, b""
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return request, bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            return None, b""
