"""Progress tokens across the gateway: each call's own, and the client's it stands for.

Pure: no trio. ``Emit`` is the request's back-channel (``BackChannel.send``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Final

import msgspec
from msgspec import Raw

from . import jsonrpc

Emit = Callable[[bytes], None]  # sends an encoded message on the request's own response stream
_str_decoder: Final = msgspec.json.Decoder(str)


class ProgressTable:
    """Gateway-wide progress-token translation.

    A client's token is only unique within its session, so each call that carries
    one gets a fresh gateway token upstream; progress coming back is re-labelled
    with the client's token and sent on that call's own stream.
    """

    def __init__(self) -> None:
        self._routes: dict[str, tuple[str, Raw, Emit]] = {}

    def register(self, server: str, client_token: Raw, emit: Emit) -> str:
        # Unguessable, and bound to the server the call went to: one upstream cannot
        # inject progress into another server's calls (other users' streams).
        token = f"gw-{secrets.token_urlsafe(12)}"
        self._routes[token] = (server, client_token, emit)
        return token

    def release(self, token: str) -> None:
        self._routes.pop(token, None)

    def deliver(self, server: str, params: dict[str, Raw]) -> bool:
        token_raw = params.get("progressToken")
        if token_raw is None:
            return False
        try:
            token = _str_decoder.decode(token_raw)
        except jsonrpc.DECODE_FAILURES:
            return False
        target = self._routes.get(token)
        if target is None or target[0] != server:
            return False
        _, client_token, emit = target
        params = dict(params)
        params["progressToken"] = client_token
        emit(jsonrpc.encode(jsonrpc.notification("notifications/progress", params)))
        return True
