"""Newline-delimited messages from a byte stream, each bounded in size (stdio framing)."""

from __future__ import annotations

import trio


class MessageTooLarge(Exception):
    """A line grew past the limit without ending: the stream cannot be trusted any further."""


class LineReader:
    """Yields lines (without the newline) from ``stream``; None at end of stream."""

    def __init__(self, stream: trio.abc.ReceiveStream, max_line: int) -> None:
        self._stream = stream
        self._max = max_line
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf known to hold no newline
        self._eof = False

    async def next_line(self) -> bytes | None:
        while True:
            newline = self._buf.find(b"\n", self._scanned)
            if newline != -1:
                line = bytes(self._buf[:newline])
                del self._buf[:newline + 1]
                self._scanned = 0
                return line.rstrip(b"\r")
            self._scanned = len(self._buf)
            if self._eof:
                if self._buf:
                    line, self._buf = bytes(self._buf), bytearray()
                    return line
                return None
            if len(self._buf) > self._max:
                raise MessageTooLarge(f"a message larger than {self._max} bytes")
            try:
                data = await self._stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self._eof = True
            self._buf += data
