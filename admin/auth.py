"""The admin token: ``Authorization: Bearer <token>`` on every admin request.

Where the token comes from, in order:

1. ``admin.token`` (``env:NAME`` or ``file:/path``), read with :func:`gateway.config.resolve_secret`;
2. else, with a store: a token generated at the first start (``secrets.token_urlsafe(32)``),
   printed once to stderr, and kept only as a salted PBKDF2-SHA256 hash in the store;
3. else (no store to keep it in): a token generated at each start and printed.

Beyond loopback only the first is accepted (a token printed to a log is not a secret); config
validation says so (``admin.token``), and :func:`check_listen` refuses again at start.

Comparisons are constant-time. A stored hash costs one PBKDF2 per presented token until the right
one is seen; then only a SHA-256 of that token is kept in memory and compared, so requests cost
microseconds and a wrong token never reaches PBKDF2 again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sys
from typing import Any, TextIO

import trio

from gateway.config import Admin, ConfigError, is_loopback, resolve_secret

from .store import AsyncStore

TOKEN_KEY = "admin_token"
ITERATIONS = 200_000
WHO = "admin"  # the identity behind the one admin token (names per token come with more tokens)


class AuthError(Exception):
    """The admin API cannot start as configured (the message says how to fix it)."""


def check_listen(admin: Admin) -> None:
    """Refuse to listen beyond loopback without an explicit token source."""
    if admin.token is None and not is_loopback(admin.host):
        raise AuthError(f"admin.token: the admin API would listen on {admin.host} (beyond loopback) without a "
                        "token: set admin.token to env:NAME or file:/absolute/path")


def _hash(token: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", token.encode(), salt, iterations)


class TokenCheck:
    """Decides whether a presented bearer token is the admin token."""

    def __init__(self, *, plain: str | None = None, stored: dict[str, Any] | None = None) -> None:
        self._known = hashlib.sha256(plain.encode()).digest() if plain is not None else None
        self._stored = stored
        self._limiter = trio.CapacityLimiter(1)  # PBKDF2 in one thread at a time
        self.generated: str | None = None  # set when this start made the token (shown once)

    async def check(self, presented: str | None) -> bool:
        if not presented:
            return False
        quick = hashlib.sha256(presented.encode()).digest()
        if self._known is not None:
            return hmac.compare_digest(quick, self._known)
        stored = self._stored
        if stored is None:
            return False
        salt, want = bytes.fromhex(stored["salt"]), bytes.fromhex(stored["hash"])
        iterations = int(stored["iterations"])
        got = await trio.to_thread.run_sync(_hash, presented, salt, iterations, limiter=self._limiter)
        if hmac.compare_digest(got, want):
            self._known = quick
            return True
        return False


async def token_check(admin: Admin, store: AsyncStore | None, *, err: TextIO | None = None) -> TokenCheck:
    """The token check for this start; generates (and prints once) a token when none exists."""
    check_listen(admin)
    out = err if err is not None else sys.stderr
    if admin.token is not None:
        try:
            return TokenCheck(plain=resolve_secret(admin.token, where="admin.token"))
        except ConfigError as exc:
            raise AuthError(str(exc)) from None
    if store is None:
        token = secrets.token_urlsafe(32)
        check = TokenCheck(plain=token)
        check.generated = token
        out.write(f"mcp-gateway: admin API token (generated for this run; set admin.token or store.path to "
                  f"keep one): {token}\n")
        out.flush()
        return check
    found = await store.meta(TOKEN_KEY)
    if found is None:
        token = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        record = {"salt": salt.hex(), "iterations": ITERATIONS,
                  "hash": (await trio.to_thread.run_sync(_hash, token, salt, ITERATIONS)).hex()}
        if await store.set_meta(TOKEN_KEY, json.dumps(record), only_if_absent=True):
            check = TokenCheck(stored=record)
            check.generated = token
            out.write(f"mcp-gateway: admin API token (shown once, kept hashed in {store.path}): {token}\n")
            out.flush()
            return check
        found = await store.meta(TOKEN_KEY)  # another start made one meanwhile: that one stands
        assert found is not None
    return TokenCheck(stored=json.loads(found))


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (None otherwise)."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
