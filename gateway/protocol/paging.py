"""Gateway-owned pagination cursors over an aggregated list.

A cursor is opaque to clients: ``base64url("<catalog version>:<offset>")``. A cursor
from an older catalog (the list changed between pages) or one we never issued is
rejected with -32602 so the client restarts the listing instead of skipping or
repeating items silently.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import TypeVar

from .jsonrpc import INVALID_PARAMS, ProtocolError

T = TypeVar("T")


def make_cursor(version: int, offset: int) -> str:
    return base64.urlsafe_b64encode(f"{version}:{offset}".encode()).decode().rstrip("=")


def parse_cursor(cursor: str, version: int) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        cursor_version, offset = base64.urlsafe_b64decode(padded).decode().split(":")
        ver, off = int(cursor_version), int(offset)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError(INVALID_PARAMS, f"Invalid cursor {cursor[:100]!r}") from None
    if ver != version:
        raise ProtocolError(INVALID_PARAMS, "Cursor is stale: the list changed; list again from the start")
    if off < 0:
        raise ProtocolError(INVALID_PARAMS, f"Invalid cursor {cursor[:100]!r}")
    return off


def page(items: Sequence[T], cursor: str | None, version: int, size: int) -> tuple[Sequence[T], str | None]:
    """One page of ``items`` and the cursor of the next page (None on the last)."""
    start = 0 if cursor is None else parse_cursor(cursor, version)
    if start > len(items):
        raise ProtocolError(INVALID_PARAMS, "Invalid cursor: past the end of the list")
    end = start + size
    next_cursor = make_cursor(version, end) if end < len(items) else None
    return items[start:end], next_cursor
