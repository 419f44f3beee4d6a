"""One entry point for every HTTP wire: an ``Authorization`` header and a route -> an Identity.

The method follows from the token's shape, so one header serves both: ``mcpg_...`` is an API
key (:mod:`.keys`), three dot-separated parts a JWT (:mod:`.jwt`). Anything else, or a method
that is not configured, is refused the same way as a wrong credential. The verifiers are
given (the composition of the gateway builds them), so this module has no I/O of its own.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol

from . import AuthFailure, Identity
from .keys import KEY_PREFIX

_MAX_TOKEN = 16 * 1024  # a JWT with many claims is a few KB; anything longer is not ours


class Verifier(Protocol):
    async def verify(self, token: str) -> Identity: ...


class Authenticator:
    """Checks bearer credentials; counts refusals by reason (for metrics)."""

    def __init__(self, *, keys: Verifier | None = None, jwt: Verifier | None = None) -> None:
        self.keys = keys
        self.jwt = jwt
        self.refused: Counter[str] = Counter()  # reason -> requests
        self.accepted: Counter[str] = Counter()  # identity kind (key, jwt) -> requests

    @property
    def methods(self) -> str:
        return " or ".join(m for m, v in (("an API key", self.keys), ("a token", self.jwt)) if v is not None)

    async def authenticate(self, authorization: bytes | None, route: str) -> Identity:
        """The caller, or :class:`AuthFailure` (401: no valid credential; 403: valid, not for this route)."""
        try:
            identity = await self._identity(authorization)
            if not identity.may_use_route(route):
                raise AuthFailure("route", f"this credential is not valid for route {route}", status=403,
                                  error="insufficient_scope")
        except AuthFailure as failure:
            self.refused[failure.reason] += 1
            raise
        self.accepted[identity.kind] += 1
        return identity

    async def _identity(self, authorization: bytes | None) -> Identity:
        if authorization is None:
            raise AuthFailure("missing", f"authentication required: send Authorization: Bearer <{self.methods}>",
                              error="")
        scheme, _, value = authorization.partition(b" ")
        token = value.strip()
        if scheme.lower() != b"bearer" or not token or len(token) > _MAX_TOKEN:
            raise AuthFailure("malformed", "the Authorization header must be 'Bearer <credential>'",
                              error="invalid_request")
        try:
            text = token.decode("ascii")
        except UnicodeDecodeError:
            raise AuthFailure("malformed", "the credential is not ASCII", error="invalid_request") from None
        if text.startswith(KEY_PREFIX):
            if self.keys is not None:
                return await self.keys.verify(text)
        elif text.count(".") == 2 and self.jwt is not None:
            return await self.jwt.verify(text)
        raise AuthFailure("malformed", f"not a credential this gateway accepts (it takes {self.methods})")
