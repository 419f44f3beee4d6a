"""The mount table's guard: authenticates each request to an MCP endpoint, or answers the refusal.

A refusal is 401 (no valid credential) or 403 (valid but not enough), with the RFC 6750
``WWW-Authenticate`` challenge that names the protected-resource metadata (RFC 9728) when the
gateway has a resource URI, so an OAuth-capable client can find the authorization server; 503
when the keys to check a token with cannot be had. The body is a JSON-RPC error, as every other
refusal of the data plane is.
"""

from __future__ import annotations

from typing import Any

from ..config import Auth
from ..protocol import jsonrpc
from ..protocol.errors import INVALID_REQUEST
from . import AuthFailure, Identity
from .authenticator import Authenticator
from .oauth import metadata_url, www_authenticate

_JSON = (b"content-type", b"application/json")


class HttpGuard:
    def __init__(self, authenticator: Authenticator, auth: Auth) -> None:
        self.authenticator = authenticator
        self.auth = auth

    async def identify(self, request: Any, route: str) -> Identity | tuple[int, list[tuple[bytes, bytes]], bytes]:
        try:
            return await self.authenticator.authenticate(request.header(b"authorization"), route)
        except AuthFailure as failure:
            return self.refusal(failure, request.path)

    def remembered(self, request: Any, route: str) -> Identity | tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        """:meth:`identify` without awaiting, for a credential verified before; None: call identify()."""
        try:
            return self.authenticator.remembered(request.header(b"authorization"), route)
        except AuthFailure as failure:
            return self.refusal(failure, request.path)

    def refusal(self, failure: AuthFailure, path: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        status = 503 if failure.reason == "unavailable" else failure.status
        headers = [_JSON]
        if status in (401, 403):
            challenge = www_authenticate(None if failure.reason == "missing" else failure,
                                         metadata_url=metadata_url(self.auth, path))
            headers.append((b"www-authenticate", challenge))
        if status == 503:
            headers.append((b"retry-after", b"5"))
        return status, headers, jsonrpc.encode_error(None, INVALID_REQUEST, failure.message)
