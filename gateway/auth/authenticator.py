"""One entry point for every HTTP wire: an ``Authorization`` header and a route -> an Identity.

The method follows from the token's shape, so one header serves both: ``mcpg_...`` is an API
key (:mod:`.keys`), three dot-separated parts a JWT (:mod:`.jwt`). Anything else, or a method
that is not configured, is refused the same way as a wrong credential. The verifiers are
given (the composition of the gateway builds them), so this module has no I/O of its own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Protocol

from . import AuthFailure, Identity
from .keys import KEY_PREFIX

_MAX_TOKEN = 16 * 1024  # a JWT with many claims is a few KB; anything longer is not ours


class Verifier(Protocol):
    async def verify(self, token: str) -> Identity: ...


def _bearer(authorization: bytes) -> str:
    """The credential of ``Authorization: Bearer <credential>``, or AuthFailure (malformed)."""
    scheme, _, value = authorization.partition(b" ")
    token = value.strip()
    if scheme.lower() != b"bearer" or not token or len(token) > _MAX_TOKEN:
        raise AuthFailure("malformed", "the Authorization header must be 'Bearer <credential>'",
                          error="invalid_request")
    try:
        return token.decode("ascii")
    except UnicodeDecodeError:
        raise AuthFailure("malformed", "the credential is not ASCII", error="invalid_request") from None


class Authenticator:
    """Checks bearer credentials; counts refusals by reason (for metrics)."""

    def __init__(self, *, keys: Verifier | None = None, jwt: Verifier | None = None) -> None:
        self.keys = keys
        self.jwt = jwt
        # An API key verified before is answered without awaiting (KeyRing.remembered).
        self._remembered: Callable[[str], Identity | None] | None = getattr(keys, "remembered", None)
        self.refused: Counter[str] = Counter()  # reason -> requests
        self.accepted: Counter[str] = Counter()  # identity kind (key, jwt) -> requests

    @property
    def methods(self) -> str:
        return " or ".join(m for m, v in (("an API key", self.keys), ("a token", self.jwt)) if v is not None)

    async def authenticate(self, authorization: bytes | None, route: str) -> Identity:
        """The caller, or :class:`AuthFailure` (401: no valid credential; 403: valid, not for this route)."""
        try:
            identity = self._admitted(await self._identity(authorization), route)
        except AuthFailure as failure:
            self.refused[failure.reason] += 1
            raise
        self.accepted[identity.kind] += 1
        return identity

    def remembered(self, authorization: bytes | None, route: str) -> Identity | None:
        """:meth:`authenticate` without awaiting anything, when the credential is an API key that
        matched before (every call of a client after its first): None when it is not, and
        authenticate() decides. Raises and counts as authenticate() does."""
        remembered = self._remembered
        if authorization is None or remembered is None:
            return None
        try:
            text = _bearer(authorization)
            identity = remembered(text) if text.startswith(KEY_PREFIX) else None
            if identity is None:
                return None
            self._admitted(identity, route)
        except AuthFailure as failure:
            self.refused[failure.reason] += 1
            raise
        self.accepted[identity.kind] += 1
        return identity

    @staticmethod
    def _admitted(identity: Identity, route: str) -> Identity:
        if not identity.may_use_route(route):
            raise AuthFailure("route", f"this credential is not valid for route {route}", status=403,
                              error="insufficient_scope")
        return identity

    async def _identity(self, authorization: bytes | None) -> Identity:
        if authorization is None:
            raise AuthFailure("missing", f"authentication required: send Authorization: Bearer <{self.methods}>",
                              error="")
        text = _bearer(authorization)
        if text.startswith(KEY_PREFIX):
            if self.keys is not None:
                return await self.keys.verify(text)
        elif text.count(".") == 2 and self.jwt is not None:
            return await self.jwt.verify(text)
        raise AuthFailure("malformed", f"not a credential this gateway accepts (it takes {self.methods})")
