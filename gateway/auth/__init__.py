"""Who is calling, and what they may do: the data plane's access control.

The pieces, each sans-IO where it can be (a clock or a store is passed in):

- :class:`Identity`: the caller, on every request's ``CallContext.identity``;
- :class:`AuthFailure`: a credential refused (401/403 at the HTTP edge, with ``WWW-Authenticate``);
- :mod:`.keys` API keys (``mcpg_...``, HMAC-hashed in a SQLite table), :mod:`.jwt` JWT bearer
  tokens (PyJWT, keys from JWKS/PEM/secret), :mod:`.oauth` the RFC 9728 protected-resource
  metadata and ``WWW-Authenticate`` challenges, :mod:`.authenticator` the one entry point that
  picks the method by the shape of the token;
- :mod:`.policy` who may see and call which routes, servers, tools, prompts and resources, and the
  tool filters; :mod:`.ratelimit` token buckets and concurrency caps;
- :mod:`.pinning` tool-definition digests (a changed definition is withheld, warned or allowed);
  :mod:`.redact` secrets taken out of tool results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

IdentityKind = Literal["key", "jwt", "local", "admin"]

#: Metric label values of AuthFailure.reason (bounded).
REASONS: Final = ("missing", "malformed", "unknown_key", "revoked", "expired", "bad_signature",
                  "wrong_issuer", "wrong_audience", "not_yet_valid", "insufficient_scope", "route",
                  "unavailable", "session")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request comes from: an API key's name, a token's subject, or the local user."""

    name: str
    kind: IdentityKind
    groups: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    routes: tuple[str, ...] | None = None  # an API key limited to these routes (None: every route)
    expires: float | None = None  # Unix time the credential stops being valid (None: never)
    key: str = field(default="", compare=False)  # what caches are keyed on: kind + name (set below)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.kind}:{self.name}")

    def __str__(self) -> str:
        return self.key

    def may_use_route(self, route: str) -> bool:
        return self.routes is None or route in self.routes


def same_caller(a: Identity | None, b: Identity | None) -> bool:
    """Whether two requests come from the same caller (a session is only its opener's)."""
    return a is b or (a is not None and b is not None and a.key == b.key)


#: Stdio's caller and a loopback gateway's callers without authentication: the local user.
LOCAL: Final = Identity("local", "local")


class AuthFailure(Exception):
    """A request's credential was refused.

    ``status`` is 401 (no valid credential: the client should get a token and retry) or 403
    (valid but not enough: ``insufficient_scope``, a key not for this route). ``error`` is the
    RFC 6750 error code for ``WWW-Authenticate`` (``invalid_request``, ``invalid_token``,
    ``insufficient_scope``; empty when no credential was presented at all). ``reason`` is one of
    :data:`REASONS` (a bounded metric label). The message is safe to show the client: it never
    contains the credential.
    """

    def __init__(self, reason: str, message: str, *, status: int = 401, error: str = "invalid_token",
                 scope: str | None = None) -> None:
        assert reason in REASONS, reason
        super().__init__(message)
        self.reason, self.message, self.status, self.error, self.scope = reason, message, status, error, scope
