"""WebSocket frames on the hot path, sans I/O (RFC 6455 section 5): what every message costs.

wsproto speaks the protocol (the upgrade, control frames, fragmentation, the closing handshake).
Two things happen for every JSON-RPC message, so they are done here, in a few byte operations
instead of wsproto's event machinery:

- :func:`text_frame`: an answer as a server's final, unmasked text frame;
- :class:`ClientFrames`: the client's stream split at frame boundaries. A final, masked text frame
  with no reserved bits (what clients send for each message) is unmasked and checked for UTF-8
  here; every other frame (control frames, fragments, anything odd) is handed to wsproto whole,
  and so is everything while a fragmented message is open there. wsproto therefore only ever
  holds whole frames, and its view of the connection stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

_TEXT_FINAL: Final = 0x81  # FIN + opcode 1, no reserved bits


def text_frame(data: bytes) -> bytes:
    """A server's (unmasked) final text frame carrying ``data``. The outbox holds UTF-8 (upstream
    bytes that were not are repaired on the way in); anything else is repaired here, as a text
    frame must be UTF-8."""
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            data = data.decode("utf-8", "replace").encode()
    size = len(data)
    if size < 126:
        head = bytes((_TEXT_FINAL, size))
    elif size < 1 << 16:
        head = b"\x81\x7e" + size.to_bytes(2, "big")
    else:
        head = b"\x81\x7f" + size.to_bytes(8, "big")
    return head + data


@dataclass(frozen=True, slots=True)
class Text:
    """A whole text message, unmasked, valid UTF-8."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Raw:
    """A whole frame for wsproto to parse."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Refused:
    """The stream cannot go on: close with ``code`` and ``reason``."""

    code: int
    reason: str


Item = Text | Raw | Refused


class ClientFrames:
    """A client's bytes, split into :data:`Item` s; see the module docstring."""

    __slots__ = ("_buf", "_max_message", "fragmented")

    def __init__(self, max_message: int) -> None:
        self._buf = bytearray()
        self._max_message = max_message
        # A fragmented message is open in wsproto: every frame goes there until it ends (the
        # reader sets it from wsproto's events).
        self.fragmented = False

    def feed(self, data: bytes | bytearray) -> list[Item]:
        """The whole frames ``data`` completes, in order (a partial one waits for more bytes)."""
        buf = self._buf
        buf += data
        out: list[Item] = []
        start = 0
        end = len(buf)
        while end - start >= 2:
            b0, b1 = buf[start], buf[start + 1]
            size = b1 & 0x7F
            at = start + 2
            if size == 126:
                if end - at < 2:
                    break
                size = int.from_bytes(buf[at:at + 2], "big")
                at += 2
            elif size == 127:
                if end - at < 8:
                    break
                size = int.from_bytes(buf[at:at + 8], "big")
                at += 8
            if size > self._max_message:
                # Refused from its header: a frame this big is never buffered.
                out.append(Refused(1009, f"message too big: the limit is {self._max_message} bytes"))
                buf.clear()
                return out
            masked = b1 & 0x80
            frame_end = at + (4 if masked else 0) + size
            if frame_end > end:
                break
            if b0 == _TEXT_FINAL and masked and not self.fragmented:
                mask = bytes(buf[at:at + 4])
                payload = bytes(buf[at + 4:frame_end])
                if size:
                    key = int.from_bytes((mask * (size // 4 + 1))[:size], "little")
                    payload = (int.from_bytes(payload, "little") ^ key).to_bytes(size, "little")
                if not payload.isascii():
                    try:
                        payload.decode("utf-8")
                    except UnicodeDecodeError:
                        out.append(Refused(1007, "a text message must be UTF-8"))
                        buf.clear()
                        return out
                out.append(Text(payload))
            else:
                out.append(Raw(bytes(buf[start:frame_end])))
                if b0 & 0x0F in (0x01, 0x02) and not b0 & 0x80:
                    self.fragmented = True  # a message's first fragment: the rest goes to wsproto too
            start = frame_end
        if start:
            del buf[:start]
        return out
