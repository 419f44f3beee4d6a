"""A bare trio + h11 + msgspec HTTP-to-stdio forwarder: the ceiling of this design, as a baseline.

``python -m bench.bare_forwarder --port P [-- CMD ...]`` starts CMD (default: ``python -m
bench.fast_upstream``) and serves POST /mcp: each JSON-RPC request gets a fresh upstream id, goes
down the pipe, and its answer comes back as ``application/json`` with the client's id restored;
notifications get 202. No sessions, no routing, no limits beyond the basics, no name prefixes: the
least work an HTTP front for a stdio server can do in Python with these libraries. ``bench/run``
measures it next to the gateway so the gap between the two is the cost of the gateway's features
(the issue quotes 6,300 calls/s for such a forwarder on this machine class).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import subprocess
import sys

import h11
import msgspec
import trio

_EMPTY = msgspec.Raw()


class Request(msgspec.Struct):
    """An incoming JSON-RPC message; only ``id`` is looked at."""

    id: msgspec.Raw = _EMPTY
    method: str = ""
    params: msgspec.Raw = _EMPTY


class Reply(msgspec.Struct):
    """An upstream answer: our id, and the rest forwarded raw."""

    id: int | None = None
    result: msgspec.Raw = _EMPTY
    error: msgspec.Raw = _EMPTY


_request = msgspec.json.Decoder(Request)
_reply = msgspec.json.Decoder(Reply)
_JSON = [(b"content-type", b"application/json")]
MAX_BODY = 4 * 1024 * 1024


class Upstream:
    """One stdio server; answers are matched to waiters by our own integer ids."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.ids = itertools.count(1)
        self.waiting: dict[int, list[object]] = {}  # id -> [event, reply]
        self.out: list[bytes] = []  # lines waiting for the writer: one write per batch
        self.wakeup = trio.Event()

    async def writer(self) -> None:
        assert self.proc.stdin is not None
        while True:
            await self.wakeup.wait()
            self.wakeup = trio.Event()
            data = b"".join(self.out)
            self.out.clear()
            await self.proc.stdin.send_all(data)

    def send(self, line: bytes) -> None:
        self.out.append(line)
        self.wakeup.set()

    async def reader(self) -> None:
        assert self.proc.stdout is not None
        buf = b""
        while chunk := await self.proc.stdout.receive_some(1 << 20):
            buf += chunk
            cut = buf.rfind(b"\n")
            if cut < 0:
                continue
            for reply in _reply.decode_lines(buf[: cut + 1]):
                slot = self.waiting.pop(reply.id, None) if reply.id is not None else None
                if slot is not None:
                    slot[1] = reply
                    slot[0].set()  # type: ignore[attr-defined]
            buf = buf[cut + 1 :]
        for slot in self.waiting.values():  # EOF: fail every waiter at once
            slot[0].set()  # type: ignore[attr-defined]

    async def call(self, msg: Request) -> bytes:
        uid = next(self.ids)
        slot: list[object] = [trio.Event(), None]
        self.waiting[uid] = slot
        line = b'{"jsonrpc":"2.0","id":%d,"method":"%s"%s}\n' % (
            uid,
            msg.method.encode(),
            b',"params":' + bytes(msg.params) if msg.params else b"",
        )
        self.send(line)
        await slot[0].wait()  # type: ignore[attr-defined]
        reply = slot[1]
        if not isinstance(reply, Reply):
            return b'{"jsonrpc":"2.0","id":%s,"error":{"code":-32603,"message":"upstream gone"}}' % bytes(msg.id)
        key, value = (b"result", reply.result) if reply.result else (b"error", reply.error)
        return b'{"jsonrpc":"2.0","id":%s,"%s":%s}' % (bytes(msg.id), key, bytes(value))

    def notify(self, body: bytes) -> None:
        self.send(body.strip() + b"\n")


async def handle(stream: trio.abc.Stream, upstream: Upstream) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                conn.receive_data(data)  # type: ignore[arg-type]  # trio returns bytes | bytearray
                if not data and conn.their_state is not h11.DONE:
                    return
                continue
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED and conn.our_state is h11.MUST_CLOSE:
                return
            if event is h11.PAUSED:
                conn.start_next_cycle()
                continue
            if not isinstance(event, h11.Request):
                continue
            body = bytearray()
            while True:
                ev = conn.next_event()
                if ev is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))  # type: ignore[arg-type]
                elif isinstance(ev, h11.Data):
                    body += ev.data
                    if len(body) > MAX_BODY:
                        return
                elif isinstance(ev, h11.EndOfMessage):
                    break
                else:
                    return
            status, out = 405, b""
            if event.method == b"POST":
                try:
                    msg = _request.decode(body)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    status, out = 400, b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}'
                else:
                    if msg.id:
                        status, out = 200, await upstream.call(msg)
                    else:
                        upstream.notify(bytes(body))
                        status = 202
            headers = [*_JSON, (b"content-length", b"%d" % len(out))] if out else [(b"content-length", b"0")]
            data = conn.send(h11.Response(status_code=status, headers=headers))
            data += conn.send(h11.Data(data=out)) if out else b""
            data += conn.send(h11.EndOfMessage())
            await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
        return
    finally:
        await trio.aclose_forcefully(stream)


async def serve(port: int, cmd: list[str]) -> None:
    async with trio.open_nursery() as nursery:
        run = functools.partial(trio.run_process, cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        proc = await nursery.start(run)
        upstream = Upstream(proc)
        nursery.start_soon(upstream.reader)
        nursery.start_soon(upstream.writer)
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
        print(f"bare forwarder on http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/mcp", flush=True)
        await trio.serve_listeners(functools.partial(handle, upstream=upstream), listeners)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.bare_forwarder", description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8090)
    ap.add_argument("cmd", nargs="*", help="upstream command (after --)")
    opts = ap.parse_args()
    try:
        trio.run(serve, opts.port, opts.cmd or [sys.executable, "-m", "bench.fast_upstream"])
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
