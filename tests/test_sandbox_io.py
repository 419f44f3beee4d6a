"""Docker's attach-stream framing (sans-IO), exit descriptions, and DockerChannel's handling of a
framed stream over a socket pair: no Docker engine needed."""

from __future__ import annotations

import logging
import socket
import struct

import pytest
import trio

from sandbox.docker_io import STDERR, STDOUT, DockerChannel, FrameDemuxer, FrameError, describe_exit


def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


FRAMES = [
    (STDOUT, b'{"jsonrpc":"2.0"}\n'),
    (STDERR, b"log line\n"),
    (STDOUT, b""),
    (STDOUT, b"x" * 300),
    (STDERR, b"e"),
]
WIRE = b"".join(frame(s, p) for s, p in FRAMES)


def collect(pieces: list[tuple[int, bytes]]) -> dict[int, bytes]:
    out = {STDOUT: b"", STDERR: b""}
    for stream, payload in pieces:
        out[stream] += payload
    return out


EXPECTED = {STDOUT: b'{"jsonrpc":"2.0"}\n' + b"x" * 300, STDERR: b"log line\ne"}


def test_whole_stream_at_once() -> None:
    d = FrameDemuxer()
    pieces = d.feed(WIRE)
    assert collect(pieces) == EXPECTED
    assert d.at_boundary
    # Order is kept and same-stream neighbours are merged.
    assert [s for s, _ in pieces] == [STDOUT, STDERR, STDOUT, STDERR]


@pytest.mark.parametrize("cut", range(1, len(WIRE)))
def test_split_at_every_byte_boundary(cut: int) -> None:
    d = FrameDemuxer()
    pieces = d.feed(WIRE[:cut]) + d.feed(WIRE[cut:])
    assert collect(pieces) == EXPECTED
    assert d.at_boundary


def test_one_byte_at_a_time() -> None:
    d = FrameDemuxer()
    pieces = [p for i in range(len(WIRE)) for p in d.feed(WIRE[i : i + 1])]
    assert collect(pieces) == EXPECTED


def test_payload_is_passed_on_before_the_frame_is_complete() -> None:
    # A frame claiming 1 GiB must not be buffered: bytes flow as they come.
    d = FrameDemuxer()
    assert d.feed(struct.pack(">BxxxL", STDOUT, 1 << 30) + b"abc") == [(STDOUT, b"abc")]
    assert not d.at_boundary
    assert d.feed(b"def") == [(STDOUT, b"def")]


def test_many_one_byte_frames() -> None:
    # Same-stream runs used to be merged by bytes concatenation, quadratic in the run's frame count
    # (200k one-byte frames in one feed took ~0.5 s, 400k ~1.4 s); now a run is joined once.
    n = 200_000
    payload = bytes(i % 251 for i in range(n))
    wire = b"".join(frame(STDOUT, payload[i : i + 1]) for i in range(n))
    d = FrameDemuxer()
    assert d.feed(wire) == [(STDOUT, payload)]
    assert d.at_boundary

    # In receive-sized pieces (headers split across them), with stderr frames interleaved.
    wire = b"".join(frame(STDOUT, payload[i : i + 1]) + frame(STDERR, b"e") * (i % 1000 == 999) for i in range(n))
    d = FrameDemuxer()
    pieces = [p for i in range(0, len(wire), 65_531) for p in d.feed(bytearray(wire[i : i + 65_531]))]
    assert collect(pieces) == {STDOUT: payload, STDERR: b"e" * (n // 1000)}
    # Runs are merged within a feed: a piece per stream change, plus one per feed at most.
    assert len(pieces) <= 2 * (n // 1000) + len(wire) // 65_531 + 1
    assert all(type(p) is bytes for _, p in pieces)
    assert d.at_boundary


def test_mid_frame_is_not_a_boundary() -> None:
    d = FrameDemuxer()
    d.feed(WIRE[:5])
    assert not d.at_boundary


@pytest.mark.parametrize("header", [b"\x03\0\0\0\0\0\0\x01", b"\x01\0\x01\0\0\0\0\x01", b'{"jsonrp'])
def test_bad_header_raises(header: bytes) -> None:
    with pytest.raises(FrameError):
        FrameDemuxer().feed(header + b"x")


@pytest.mark.parametrize(
    ("code", "oom", "text"),
    [
        (0, False, "exited with status 0"),
        (1, False, "exited with status 1"),
        (137, True, "was OOM-killed (exit 137)"),
        (137, False, "was killed by signal 9"),
        (143, False, "was killed by signal 15"),
        (128, False, "exited with status 128"),
        (255, False, "exited with status 255"),
        (None, False, "exited (status unknown)"),
    ],
)
def test_describe_exit(code: int | None, oom: bool, text: str) -> None:
    assert describe_exit(code, oom) == text


# DockerChannel's stream handling over a real socket pair (the Docker side is played by hand).


async def _channel_pair() -> tuple[DockerChannel, trio.SocketStream]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    return DockerChannel("srv", ours, container=None), trio.SocketStream(
        trio.socket.from_stdlib_socket(theirs)
    )


async def test_channel_returns_stdout_and_logs_stderr(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "mcp_gateway.upstream")
    channel, docker_side = await _channel_pair()
    long_line = b"y" * 10_000
    await docker_side.send_all(
        frame(STDERR, b"starting\r\nhalf ")
        + frame(STDOUT, b'{"a":1}\n')
        + frame(STDERR, b"a line\n" + long_line + b"\n")
        + frame(STDOUT, b'{"b":2}\n')
    )
    got = b""
    while len(got) < 16:
        got += await channel.receive_some()
    assert got == b'{"a":1}\n{"b":2}\n'
    await docker_side.send_all(frame(STDERR, b"no newline at the end"))
    await docker_side.aclose()
    assert await channel.receive_some() == b""
    assert await channel.receive_some() == b""  # and stays ended
    lines = [r.getMessage() for r in caplog.records if r.name == "mcp_gateway.upstream"]
    assert lines[:2] == ["[srv] starting", "[srv] half a line"]
    # A line longer than the limit is logged capped, saying how much was cut (logsafe.PeerLog).
    long_records = lines[2:-1]
    assert long_records and all(m.startswith("[srv] " + "y" * 1000) for m in long_records)
    assert all(len(m) < 2200 and "characters]" in m for m in long_records)
    assert lines[-1] == "[srv] no newline at the end"
    await channel.aclose()


async def test_channel_max_bytes_and_send() -> None:
    channel, docker_side = await _channel_pair()
    await docker_side.send_all(frame(STDOUT, b"abcdef"))
    assert await channel.receive_some(4) == b"abcd"
    assert await channel.receive_some(4) == b"ef"
    await channel.send_all(b"to stdin\n")  # stdin is not framed
    assert await docker_side.receive_some(100) == b"to stdin\n"
    await channel.aclose()
    await docker_side.aclose()


async def test_channel_ends_on_garbage_and_midframe(caplog: pytest.LogCaptureFixture) -> None:
    channel, docker_side = await _channel_pair()
    await docker_side.send_all(b"not a frame header at all\n")
    assert await channel.receive_some() == b""
    assert "bad frame header" in caplog.text
    await channel.aclose()
    await docker_side.aclose()

    channel, docker_side = await _channel_pair()
    await docker_side.send_all(frame(STDOUT, b"whole") + frame(STDOUT, b"cut short")[:-3])
    await docker_side.aclose()
    assert await channel.receive_some() == b"wholecut sh"
    assert await channel.receive_some() == b""
    assert "middle of a frame" in caplog.text
    await channel.aclose()
