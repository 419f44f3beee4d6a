"""Public names for upstream tools and prompts: ``<server><sep><name>``, or the name itself on
routes (or servers) configured with ``prefix: false``, or ``<prefix><sep><name>`` with a custom prefix.

Clients enforce ``^[a-zA-Z0-9_-]{1,64}$`` on tool names. A combined name that
fits is used as is. One that does not (too long, or characters outside that
set) is made to fit deterministically: invalid characters become ``_`` and the
name is cut to leave room for ``_`` plus 6 hex digits of a hash of the full
original, so it stays unique and stable across restarts. The gateway logs every
such rename and ``mcp-gateway check`` prints the table.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

MAX_NAME: Final = 64
_VALID: Final = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_INVALID_CHARS: Final = re.compile(r"[^a-zA-Z0-9_-]")


def public_name(prefix: str | None, sep: str, name: str) -> str:
    """The name a client sees for upstream tool/prompt ``name`` under ``prefix`` (None: unprefixed)."""
    combined = name if prefix is None else f"{prefix}{sep}{name}"
    if _VALID.match(combined):
        return combined
    digest = hashlib.sha256(combined.encode()).hexdigest()[:6]
    cleaned = _INVALID_CHARS.sub("_", combined)
    return f"{cleaned[: MAX_NAME - 7]}_{digest}"


def fits(name: str) -> bool:
    return _VALID.match(name) is not None
