"""An upstream that writes anything: the connection never raises, never hangs a call whose answer
(or failure) it can tell, and keeps working; plus the liveness watchdog on a virtual clock.

The far end is driven directly over in-memory streams (no process: the bytes are the point).
"""

from __future__ import annotations

import json
import math

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings, strategies as st
from msgspec import Raw

from gateway.protocol import jsonrpc
from gateway.upstream.connection import CallError, UpstreamConnection, UpstreamGone
from gateway.upstream.liveness import LivenessPolicy, watch
from gateway.upstream.peer import PeerHandlers
from tests.test_upstream_connection import MemoryChannel, _read_messages

POISON = [
    b"[" * 200_000, b"{" * 100_000, b'{"a":' * 50_000, b"\x00\x00", b"\xff\xfe", b"1" * 100_000,
    b'"\\udcff"', b'{"jsonrpc":"2.0","id":' + b"9" * 5000 + b',"result":{}}', b"not json at all",
    b'{"jsonrpc":"2.0","method":"notifications/message","params":' + b"[" * 100_000 + b"}",
    b'{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":' + b"[" * 5000 + b"}}",
    b'{"jsonrpc":"2.0","id":"x","method":"sampling/createMessage","params":{}}',
    b'{"jsonrpc":"2.0","id":99999,"result":{}}', b'{"jsonrpc":"2.0","id":null,"error":{"code":1,"message":"m"}}',
]


_pending = bytearray()


async def _next_call(ch: MemoryChannel) -> dict[str, object]:
    """The next request the gateway sent (skipping its answers to the server's own requests)."""
    while True:
        while b"\n" not in _pending:
            _pending.extend(await ch.server_in.receive_some(65536))
        line, _, rest = bytes(_pending).partition(b"\n")
        _pending[:] = rest
        msg = json.loads(line)
        if "method" in msg:
            return msg  # type: ignore[no-any-return]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(junk=st.lists(st.one_of(st.sampled_from(POISON), st.binary(max_size=300)), max_size=8),
       cut=st.integers(min_value=1, max_value=4096),
       answer=st.sampled_from(["plain", "deep", "surrogate", "bad_utf8", "truncated", "nul"]))
async def test_junk_never_escapes_the_reader_and_the_call_ends_at_once(junk: list[bytes], cut: int,
                                                                       answer: str) -> None:
    ch = MemoryChannel()
    _pending.clear()
    notes: list[jsonrpc.Message] = []
    conn = UpstreamConnection("junk", ch, handlers=PeerHandlers(notification=lambda m, _: notes.append(m)))
    outcome: list[object] = []
    with trio.fail_after(10):  # never a hang: every case ends well before the call's own timeout
        async with trio.open_nursery() as nursery:
            await nursery.start(conn.run)

            async def call() -> None:
                try:
                    outcome.append(await conn.call("tools/call", {"name": Raw(b'"t"')}, timeout=math.inf))
                except CallError as exc:
                    outcome.append(exc)

            nursery.start_soon(call)
            sent = await _next_call(ch)
            rid = str(sent["id"]).encode()
            replies = {
                "plain": b'{"jsonrpc":"2.0","id":' + rid + b',"result":{"ok":true}}',
                "deep": b'{"jsonrpc":"2.0","id":' + rid + b',"result":' + b"[" * 200_000 + b"]" * 200_000 + b"}",
                "surrogate": b'{"result":{"t":"\\udcff"},"jsonrpc":"2.0","id":' + rid + b"}",
                "bad_utf8": b'{"jsonrpc":"2.0","id":' + rid + b',"result":{"t":"\xff"}}',
                "truncated": b'{"jsonrpc":"2.0","id":' + rid + b',"result":{"t":"',
                "nul": b'{"jsonrpc":"2.0","id":' + rid + b',"result":{"t":"\x00"}}',
            }
            data = b"".join(j.replace(b"\n", b" ") + b"\n" for j in junk) + replies[answer] + b"\n"
            cut = max(cut, len(data) // 200)  # arbitrary chunks (lines split anywhere), not too many
            for i in range(0, len(data), cut):
                await ch.server_out.send_all(data[i:i + cut])
            with trio.fail_after(5):
                while not outcome:
                    await trio.sleep(0.001)
            [result] = outcome
            if answer in ("plain", "surrogate", "bad_utf8"):
                assert isinstance(result, Raw), result  # delivered (repaired where only the text was bad)
                text = json.loads(bytes(result))
                assert text.get("t", "\ufffd") == "\ufffd" or text == {"ok": True}
            else:
                assert isinstance(result, CallError) and result.code == jsonrpc.UPSTREAM_INVALID, result
                assert "sent an invalid answer" in result.message
            assert not conn.closed.is_set()  # junk is dropped, the connection stays up
            # ... and still works
            nursery.start_soon(call)
            again = await _next_call(ch)
            await ch.server_out.send_all(b'{"jsonrpc":"2.0","id":%d,"result":{"n":2}}\n' % again["id"])
            with trio.fail_after(5):
                while len(outcome) < 2:
                    await trio.sleep(0.001)
            assert outcome[1] == Raw(b'{"n":2}')
            nursery.cancel_scope.cancel()


async def test_a_bug_while_handling_output_ends_that_connection_only() -> None:
    ch = MemoryChannel()

    def broken(msg: jsonrpc.Message) -> None:
        raise RuntimeError("boom")

    conn = UpstreamConnection("buggy", ch, handlers=PeerHandlers(notification=lambda m, _: broken(m)))
    # A notification handler that raises is contained per message ...
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run)
        await ch.server_out.send_all(b'{"jsonrpc":"2.0","method":"notifications/x"}\n')
        await trio.testing.wait_all_tasks_blocked()
        assert not conn.closed.is_set()
        # ... and anything else that escapes the reader closes this connection, with a reason,
        # failing its calls, instead of leaving run() (and the gateway's nursery).
        conn._dispatch = lambda line, ascii_only=False: 1 / 0  # type: ignore[method-assign]
        failure: list[CallError] = []

        async def call() -> None:
            try:
                await conn.call("tools/call")
            except CallError as exc:
                failure.append(exc)

        nursery.start_soon(call)
        await _read_messages(ch.server_in, 1)
        await ch.server_out.send_all(b'{"jsonrpc":"2.0","id":1,"result":{}}\n')
        with trio.fail_after(5):
            await conn.closed.wait()
    assert isinstance(failure[0], UpstreamGone) and "failed to handle its output" in failure[0].message


# -- liveness on a virtual clock ------------------------------------------------------------------------

class Peer:
    """The far end of a MemoryChannel: answers pings unless told to be silent."""

    def __init__(self, ch: MemoryChannel) -> None:
        self.ch = ch
        self.answering = True
        self.pings = 0

    async def run(self) -> None:
        buf = b""
        while True:
            data = await self.ch.server_in.receive_some(65536)
            if not data:
                return
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                msg = json.loads(line)
                if msg.get("method") == "ping":
                    self.pings += 1
                    if self.answering:
                        await self.ch.server_out.send_all(b'{"jsonrpc":"2.0","id":%d,"result":{}}\n' % msg["id"])


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_idle_server_is_pinged_every_interval_and_kept(autojump_clock: trio.testing.MockClock) -> None:
    ch = MemoryChannel()
    conn = UpstreamConnection("idle", ch)
    peer = Peer(ch)
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run)
        nursery.start_soon(peer.run)
        nursery.start_soon(watch, conn, LivenessPolicy(interval=30, timeout=10, after_timeouts=3))
        await trio.sleep(95)
        assert peer.pings == 3  # at 30, 60 and 90 s of silence
        assert not conn.closed.is_set()
        nursery.cancel_scope.cancel()


async def test_silent_server_is_aborted_with_the_reason(autojump_clock: trio.testing.MockClock) -> None:
    ch = MemoryChannel()
    conn = UpstreamConnection("wedged", ch)
    peer = Peer(ch)
    peer.answering = False
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run)
        nursery.start_soon(peer.run)
        nursery.start_soon(watch, conn, LivenessPolicy(interval=30, timeout=10, after_timeouts=3))
        start = trio.current_time()
        await conn.closed.wait()
        assert trio.current_time() - start == pytest.approx(40)  # 30 s silence + 10 s ping timeout
        assert conn.close_reason is not None and "did not answer a ping within 10s" in conn.close_reason
        assert "silent for 30s" in conn.close_reason
        nursery.cancel_scope.cancel()


async def test_busy_server_is_not_pinged_for_being_slow(autojump_clock: trio.testing.MockClock) -> None:
    ch = MemoryChannel()
    conn = UpstreamConnection("slow", ch)
    peer = Peer(ch)
    peer.answering = False  # it would fail a ping: so none may be sent while a call is running
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run)
        nursery.start_soon(peer.run)
        nursery.start_soon(watch, conn, LivenessPolicy(interval=30, timeout=10, after_timeouts=3))

        async def long_call() -> None:
            await conn.call("tools/call", timeout=math.inf)

        nursery.start_soon(long_call)
        await trio.sleep(600)
        assert peer.pings == 0 and not conn.closed.is_set()
        nursery.cancel_scope.cancel()


async def test_consecutive_call_timeouts_trigger_a_ping_at_once(autojump_clock: trio.testing.MockClock) -> None:
    ch = MemoryChannel()
    conn = UpstreamConnection("stuck", ch)
    peer = Peer(ch)
    peer.answering = False
    failures: list[CallError] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run)
        nursery.start_soon(peer.run)
        nursery.start_soon(watch, conn, LivenessPolicy(interval=0, timeout=5, after_timeouts=2))

        async def call() -> None:
            try:
                await conn.call("tools/call", timeout=1)
            except CallError as exc:
                failures.append(exc)

        for _ in range(2):
            await call()
        assert [f.code for f in failures] == [jsonrpc.REQUEST_TIMEOUT] * 2
        start = trio.current_time()
        await conn.closed.wait()
        assert trio.current_time() - start == pytest.approx(5)  # the ping's timeout, no interval wait
        assert peer.pings == 1 and "after 2 call timeouts in a row" in (conn.close_reason or "")
        nursery.cancel_scope.cancel()


async def test_an_answer_resets_the_timeout_count(autojump_clock: trio.testing.MockClock) -> None:
    ch = MemoryChannel()
    conn = UpstreamConnection("flaky", ch)
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run)
        nursery.start_soon(watch, conn, LivenessPolicy(interval=0, timeout=5, after_timeouts=2))
        with pytest.raises(CallError):
            await conn.call("tools/call", timeout=1)
        nursery.start_soon(conn.call, "tools/call")
        sent = await _read_messages(ch.server_in, 3)  # the call, its notifications/cancelled, the next call
        latest = [m for m in sent if "id" in m][-1]
        await ch.server_out.send_all(b'{"jsonrpc":"2.0","id":%d,"result":{}}\n' % latest["id"])
        await trio.testing.wait_all_tasks_blocked()
        assert conn.consecutive_timeouts == 0
        with pytest.raises(CallError):
            await conn.call("tools/call", timeout=1)  # one timeout: below the threshold again
        await trio.sleep(60)
        assert not conn.closed.is_set()
        nursery.cancel_scope.cancel()
