"""MCP constants and pure helpers: versions, headers, method tables, server-side answers."""

from __future__ import annotations

from typing import Final

HANDSHAKE_VERSIONS: Final = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
MODERN_VERSIONS: Final = ("2026-07-28",)
LATEST_HANDSHAKE: Final = HANDSHAKE_VERSIONS[-1]
# Streamable HTTP arrived in 2025-03-26; a request without MCP-Protocol-Version
# on a session is assumed to speak the negotiated version (spec: "assume 2025-03-26"
# only when the server cannot otherwise tell).
BATCH_VERSIONS: Final = ("2025-03-26",)  # the one revision that allowed JSON-RPC batches

SESSION_HEADER: Final = b"mcp-session-id"
VERSION_HEADER: Final = b"mcp-protocol-version"


def negotiate_version(requested: object) -> str:
    """The handshake answer: the client's version if we speak it, else our latest."""
    if isinstance(requested, str) and requested in HANDSHAKE_VERSIONS:
        return requested
    return LATEST_HANDSHAKE


def supports_batches(version: str) -> bool:
    return version in BATCH_VERSIONS


def is_known_version(version: str) -> bool:
    return version in HANDSHAKE_VERSIONS
