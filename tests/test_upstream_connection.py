"""UpstreamConnection over an in-memory channel: id mapping, fail-all, cancellation, framing."""

from __future__ import annotations

import json

import pytest
import trio
import trio.lowlevel
import trio.testing
from msgspec import Raw

from gateway.protocol.errors import Cancelled, SessionEnded
from gateway.session import CANCELLED, SESSION_ENDED, InFlight
from gateway.upstream.connection import CallError, UpstreamConnection, UpstreamGone


class MemoryChannel:
    """A Channel whose far end the test drives directly."""

    def __init__(self) -> None:
        self.to_server, self.server_in = trio.testing.memory_stream_one_way_pair()
        self.server_out, self.from_server = trio.testing.memory_stream_one_way_pair()
        self.exit = "exited with status 7"

    async def send_all(self, data: bytes) -> None:
        await self.to_server.send_all(data)

    async def receive_some(self) -> bytes:
        return await self.from_server.receive_some(65536)

    async def wait(self) -> str:
        return self.exit


async def _read_messages(stream: trio.abc.ReceiveStream, count: int) -> list[dict]:
    buf = b""
    while buf.count(b"\n") < count:
        buf += await stream.receive_some(65536)
    return [json.loads(line) for line in buf.split(b"\n") if line]


async def test_ids_are_gateway_allocated_and_answers_matched_in_any_order() -> None:
    ch = MemoryChannel()
    conn = UpstreamConnection("up", ch)
    results: dict[str, Raw] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run)

        async def call(tag: str) -> None:
            results[tag] = await conn.call("tools/call", {"name": Raw(json.dumps(tag).encode())})

        for tag in ("a", "b", "c"):
            nursery.start_soon(call, tag)
        sent = await _read_messages(ch.server_in, 3)
        assert sorted(m["id"] for m in sent) == [1, 2, 3]
        # answer in reverse order, in one write split across the line boundary
        out = b"".join(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": {"echo": m["params"]["name"]}})
                       .encode() + b"\n" for m in reversed(sent))
        await ch.server_out.send_all(out[:17])
        await ch.server_out.send_all(out[17:])
        with trio.fail_after(1):
            while len(results) < 3:
                await trio.lowlevel.checkpoint()
        assert {k: json.loads(bytes(v))["echo"] for k, v in results.items()} == {"a": "a", "b": "b", "c": "c"}
        nursery.cancel_scope.cancel()


async def test_stream_end_fails_every_waiter_with_the_exit_description() -> None:
    ch = MemoryChannel()
    conn = UpstreamConnection("up", ch)
    errors: list[CallError] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run)

        async def call() -> None:
            try:
                await conn.call("tools/call")
            except UpstreamGone as exc:
                errors.append(exc)

        for _ in range(5):
            nursery.start_soon(call)
        await _read_messages(ch.server_in, 5)
        await ch.server_out.aclose()
    assert len(errors) == 5
    assert all(e.message == "server 'up' exited with status 7" and e.code == -32000 for e in errors)
    with pytest.raises(UpstreamGone):
        await conn.call("ping")


async def test_a_request_without_a_cancel_scope_is_cancelled_through_its_waiter() -> None:
    """The hot path's call runs in no cancel scope: cancelling its InFlight wakes the call, which
    ends as a cancelled one does (upstream told, late answer dropped) with the reason's error."""
    ch = MemoryChannel()
    conn = UpstreamConnection("up", ch)
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run)
        request = InFlight()
        failures: list[CallError] = []

        async def call() -> None:
            try:
                await conn.call("tools/call", inflight=request)
            except CallError as exc:
                failures.append(exc)

        nursery.start_soon(call)
        (sent,) = await _read_messages(ch.server_in, 1)
        assert request.waiter is not None and request.scope is None  # waiting, with no scope of its own
        request.cancel(SESSION_ENDED)
        (cancel,) = await _read_messages(ch.server_in, 1)
        assert cancel["method"] == "notifications/cancelled" and cancel["params"]["requestId"] == sent["id"]
        with trio.fail_after(1):
            while not failures:
                await trio.lowlevel.checkpoint()
        assert isinstance(failures[0], SessionEnded) and request.waiter is None and conn.in_flight == 0
        await ch.server_out.send_all(b'{"jsonrpc":"2.0","id":%d,"result":{}}\n' % sent["id"])  # dropped
        with pytest.raises(Cancelled):  # cancelled before it was sent: nothing goes upstream
            await conn.call("tools/call", inflight=_cancelled())
        answered = InFlight()

        async def answer_then_cancel() -> None:
            (late,) = await _read_messages(ch.server_in, 1)
            await ch.server_out.send_all(b'{"jsonrpc":"2.0","id":%d,"result":{"ok":1}}\n' % late["id"])
            with trio.fail_after(1):
                while answered.waiter is not None and not answered.waiter.event.is_set():  # type: ignore[attr-defined]
                    await trio.lowlevel.checkpoint()
            answered.cancel(CANCELLED)  # the answer is in: it wins, as against a cancel scope

        nursery.start_soon(answer_then_cancel)
        assert json.loads(bytes(await conn.call("ping", inflight=answered))) == {"ok": 1}
        nursery.cancel_scope.cancel()


def _cancelled() -> InFlight:
    request = InFlight()
    request.cancel(CANCELLED)
    return request


async def test_cancelled_call_is_cancelled_upstream_and_late_answer_dropped() -> None:
    ch = MemoryChannel()
    conn = UpstreamConnection("up", ch)
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run)
        with trio.move_on_after(0.05):
            await conn.call("tools/call")
        request, cancel = await _read_messages(ch.server_in, 2)
        assert cancel == {"jsonrpc": "2.0", "method": "notifications/cancelled",
                          "params": {"requestId": request["id"], "reason": "cancelled by the gateway"}}
        assert conn.in_flight == 0
        await ch.server_out.send_all(b'{"jsonrpc":"2.0","id":%d,"result":{}}\n' % request["id"])
        # the next call still works and gets its own answer
        async with trio.open_nursery() as inner:
            got: list[Raw] = []

            async def call() -> None:
                got.append(await conn.call("ping"))

            inner.start_soon(call)
            (ping,) = await _read_messages(ch.server_in, 1)
            await ch.server_out.send_all(b'{"jsonrpc":"2.0","id":%d,"result":{"ok":1}}\n' % ping["id"])
        assert bytes(got[0]) == b'{"ok":1}'
        nursery.cancel_scope.cancel()


async def test_upstream_error_is_passed_through_and_junk_lines_are_skipped() -> None:
    ch = MemoryChannel()
    conn = UpstreamConnection("up", ch)
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run)

        async def answer() -> None:
            (req,) = await _read_messages(ch.server_in, 1)
            await ch.server_out.send_all(b"some debug print on stdout\n\n" + json.dumps(
                {"jsonrpc": "2.0", "id": req["id"], "error": {"code": -32602, "message": "bad", "data": [1]}}
            ).encode() + b"\n")

        nursery.start_soon(answer)
        with pytest.raises(CallError) as info:
            await conn.call("tools/call")
        assert (info.value.code, info.value.message, bytes(info.value.data)) == (-32602, "bad", b"[1]")
        nursery.cancel_scope.cancel()


async def test_server_ping_is_answered_and_oversized_message_closes() -> None:
    ch = MemoryChannel()
    conn = UpstreamConnection("up", ch, max_message=1000)
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run)
        await ch.server_out.send_all(b'{"jsonrpc":"2.0","id":"s1","method":"ping"}\n'
                                     b'{"jsonrpc":"2.0","id":"s2","method":"sampling/createMessage"}\n')
        pong, refused = await _read_messages(ch.server_in, 2)
        assert pong == {"jsonrpc": "2.0", "id": "s1", "result": {}}
        assert refused["error"]["code"] == -32601
        await ch.server_out.send_all(b"x" * 2000)
        with trio.fail_after(1):
            await conn.closed.wait()
        assert "larger than 1000 bytes" in (conn.close_reason or "")
