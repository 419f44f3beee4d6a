"""gateway/transports/ws_frames.py: the client's frames as a real client (wsproto) writes them, split
the way the server's reader needs them, fed whole and byte by byte."""

from __future__ import annotations

import pytest
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import Message, Ping, TextMessage

from gateway.transports.ws_frames import ClientFrames, Raw, Refused, Text, text_frame


def client_bytes(*events: object) -> bytes:
    client = Connection(ConnectionType.CLIENT)
    return b"".join(client.send(e) for e in events)  # type: ignore[arg-type]


def items(data: bytes, *, max_message: int = 1 << 20, byte_by_byte: bool = False) -> list[object]:
    frames = ClientFrames(max_message)
    if not byte_by_byte:
        return list(frames.feed(data))
    out: list[object] = []
    for i in range(len(data)):
        out += frames.feed(data[i:i + 1])
    return out


@pytest.mark.parametrize("byte_by_byte", [False, True])
def test_whole_text_messages_are_unmasked_here_of_every_length(byte_by_byte: bool) -> None:
    texts = ["", '{"jsonrpc":"2.0","id":1,"method":"ping"}', "é€😀" * 50, "x" * 125, "x" * 126, "y" * 70000]
    got = items(client_bytes(*(TextMessage(data=t) for t in texts)), byte_by_byte=byte_by_byte)
    assert got == [Text(t.encode()) for t in texts]


def test_control_frames_and_fragments_go_to_wsproto_whole_and_it_reads_them() -> None:
    data = client_bytes(TextMessage(data="a"), Ping(payload=b"p"), TextMessage(data="part1", message_finished=False),
                        TextMessage(data="part2", message_finished=True), TextMessage(data="b"))
    frames = ClientFrames(1 << 20)
    got = frames.feed(data)
    assert got[0] == Text(b"a") and isinstance(got[1], Raw)
    assert all(isinstance(i, Raw) for i in got[1:])  # once a fragment opened, all of it goes to wsproto
    server = Connection(ConnectionType.SERVER)
    for item in got[1:]:
        assert isinstance(item, Raw)
        server.receive_data(item.data)
    events = list(server.events())
    assert isinstance(events[0], Ping)
    texts = [e for e in events if isinstance(e, Message)]
    assert "".join(str(e.data) for e in texts) == "part1part2b"
    frames.fragmented = False  # the reader clears it when wsproto says the message finished
    assert frames.feed(client_bytes(TextMessage(data="c"))) == [Text(b"c")]


def test_a_frame_over_the_limit_is_refused_from_its_header_and_bad_utf8_is_1007() -> None:
    head_only = client_bytes(TextMessage(data="z" * 5000))[:8]  # the payload never needs to arrive
    assert items(head_only, max_message=4096) == [Refused(1009, "message too big: the limit is 4096 bytes")]
    # a masked text frame whose payload is not UTF-8, built by hand
    mask = b"\x01\x02\x03\x04"
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"\xff\xfe"))
    got = items(bytes((0x81, 0x80 | 2)) + mask + payload)
    assert got == [Refused(1007, "a text message must be UTF-8")]


def test_unmasked_or_reserved_bit_frames_are_wsproto_s_to_refuse() -> None:
    unmasked = bytes((0x81, 2)) + b"hi"  # clients must mask: wsproto closes with 1002
    rsv = bytes((0x81 | 0x40, 0x80 | 2)) + b"\0\0\0\0hi"
    for frame in (unmasked, rsv):
        (item,) = items(frame)
        assert isinstance(item, Raw) and item.data == frame


def test_our_answers_read_back_as_one_text_message() -> None:
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(text_frame(b'{"ok":true}'))
    (event,) = list(client.events())
    assert isinstance(event, TextMessage) and event.data == '{"ok":true}'
