"""Who may talk to the data plane over HTTP: the Origin and Host checks, and CORS.

Applied by the mount table to every HTTP endpoint alike (Streamable HTTP, legacy SSE,
WebSocket upgrades, health), before any handler runs.
"""

from __future__ import annotations

import ipaddress
from typing import Final
from urllib.parse import urlsplit

from ..memo import Memo
from .server import Headers

_LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})
_HOST_CACHE: Final = 1024  # distinct Host values remembered
PREFLIGHT_HEADERS: Final[Headers] = [
    (b"access-control-allow-methods", b"GET, POST, DELETE, OPTIONS"),
    (b"access-control-allow-headers",
     b"content-type, accept, authorization, mcp-session-id, mcp-protocol-version, last-event-id, "
     b"mcp-method, mcp-name"),
    (b"access-control-max-age", b"600"),
]


class OriginPolicy:
    """Origin and Host checks against DNS rebinding and cross-site browsers."""

    def __init__(self, allowed_origins: list[str], bind_host: str) -> None:
        self.any_origin = "*" in allowed_origins
        self.origins = {o.rstrip("/") for o in allowed_origins}
        # Bound to loopback, only loopback Host headers make sense; a rebinding page
        # sends its own host name.
        self.check_host = bind_host in _LOOPBACK_HOSTS or is_loopback_ip(bind_host)
        self.hosts = set(_LOOPBACK_HOSTS) | {urlsplit(o).hostname or "" for o in self.origins}
        self._host_verdicts: Memo[bytes, bool] = Memo(_HOST_CACHE)  # Host header -> host_ok

    def origin_ok(self, origin: bytes | None) -> bool:
        if origin is None or self.any_origin:
            return True
        text = origin.decode("latin-1").rstrip("/")
        if text in self.origins:
            return True
        try:
            host = urlsplit(text).hostname
        except ValueError:
            return False
        return host in _LOOPBACK_HOSTS

    def may_read(self, origin: bytes) -> bool:
        """Whether a browser page from ``origin`` may read our answers (CORS): only origins
        configured in allowed_origins. Localhost pages may send, but any local web page
        (a dev server, another app) is not trusted to read session ids by default."""
        return self.any_origin or origin.decode("latin-1").rstrip("/") in self.origins

    def host_ok(self, host: bytes | None) -> bool:
        if not self.check_host or host is None:
            return True
        known = self._host_verdicts.get(host)
        if known is not None:
            return known  # clients send the same few Host values: urlsplit once each, not per request
        try:
            name = urlsplit("//" + host.decode("latin-1")).hostname
        except ValueError:
            return self._host_verdicts.keep(host, False)
        return self._host_verdicts.keep(host, name in self.hosts or is_loopback_ip(name))

    def cors_headers(self, origin: bytes | None) -> Headers | None:
        """Headers that let a configured browser origin read our answers and the session id."""
        if origin is None or not self.may_read(origin):
            return None
        return [(b"access-control-allow-origin", origin),
                (b"access-control-expose-headers", b"mcp-session-id"), (b"vary", b"origin")]


def is_loopback_ip(name: str | None) -> bool:
    try:
        return name is not None and ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a name such as 127.attacker.example is not an address
