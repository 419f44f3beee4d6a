"""Server-sent events from an upstream, decoded incrementally and bounded (the HTML standard's rules).

Bytes in, events out: lines end in CRLF, LF or CR (a CR at the end of a chunk is remembered, so a
CRLF split across two chunks is one line end); ``:`` starts a comment; ``data`` lines are joined
with LF; an empty line dispatches the event. Each chunk is scanned once, so a 16 MB event arriving
in small chunks costs linear time, and an event (or a line) larger than ``max_event`` raises
:class:`EventTooLarge` before more of it is kept.

Pure: no trio, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass


class EventTooLarge(Exception):
    """An event (or one line of it) is larger than the limit."""


@dataclass(frozen=True, slots=True)
class Event:
    event: str  # "message" when the stream names none
    data: bytes
    id: str | None  # the last event id seen on the stream so far (None: none yet)
    retry: int | None  # the reconnection time the stream asked for, in ms (None: none yet)


class SSEDecoder:
    """Feed it chunks; it returns the events they complete."""

    def __init__(self, max_event: int) -> None:
        self.max_event = max_event
        self.comments = 0  # keep-alive comments seen (a live server)
        self._buffer = bytearray()
        self._skip_lf = False  # the last chunk ended with CR: a LF starting the next one belongs to it
        self._data: list[bytes] = []
        self._size = 0
        self._event = ""
        self._has_data = False
        self.last_id: str | None = None
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        events: list[Event] = []
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = False
        buf = self._buffer
        scan = len(buf)  # what is buffered has no line end: scan only the new bytes
        buf += chunk
        pos = 0
        while True:
            lf, cr = buf.find(b"\n", scan), buf.find(b"\r", scan)
            end = lf if cr == -1 else cr if lf == -1 else min(lf, cr)
            if end == -1:
                break
            line = bytes(buf[pos:end])
            if buf[end] == 13:  # CR: a LF right after it is part of the same line end
                if end + 1 < len(buf):
                    nxt = end + 2 if buf[end + 1] == 10 else end + 1
                else:
                    self._skip_lf, nxt = True, end + 1
            else:
                nxt = end + 1
            self._line(line, events)
            pos = scan = nxt
        del buf[:pos]
        if len(buf) + self._size > self.max_event:
            raise EventTooLarge(f"an event larger than {self.max_event} bytes")
        return events

    def _line(self, line: bytes, events: list[Event]) -> None:
        if not line:
            if self._has_data:
                events.append(Event(self._event or "message", b"\n".join(self._data), self.last_id, self.retry))
            self._data, self._size, self._event, self._has_data = [], 0, "", False
            return
        if line[:1] == b":":
            self.comments += 1
            return
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._size += len(value) + 1
            if self._size > self.max_event:
                raise EventTooLarge(f"an event larger than {self.max_event} bytes")
            self._data.append(value)
            self._has_data = True
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\0" not in value:
                self.last_id = value.decode("utf-8", "replace")
        elif name == b"retry":
            if value.isdigit():
                self.retry = int(value)
