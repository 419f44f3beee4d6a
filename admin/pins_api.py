"""The admin API's tool-definition pins (issue 11): changed tool definitions waiting for an admin,
their approval, and the pins.

- ``GET /tools/changes[?server=NAME]``: the waiting changes, each with the pinned and the new
  definition and a unified diff of the two (keys sorted);
- ``POST /tools/changes/{server}/{tool}/approve`` with ``{"digest": "<the new digest>"}``: the
  new definition becomes the pin (a withheld tool appears). Only the exact digest shown is
  approved: a definition that changed again since is 409 ``stale_digest``, a tool with nothing
  waiting 404. Every approval, and every refused one, is an admin row of the audit log;
- ``GET /tools/pins[?server=NAME]``: every pinned tool (digest, first seen, approved at/by).

The pins are ``gateway.pins`` (:class:`gateway.auth.pinning.Pins`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from quart import Response, g, request
from quart_trio import QuartTrio

from gateway.auth.pinning import PinError
from gateway.logsafe import clean

from .api import ApiError, _body, _json, _raw
from .control import Caller

if TYPE_CHECKING:
    from gateway.auth.pinning import Pins

    from .control import ControlPlane

_DIGEST = re.compile(r"[0-9a-f]{64}")


def register(app: QuartTrio, control: ControlPlane, caller: Callable[..., Caller]) -> None:
    """Add the pin routes to the admin app (``caller(server, body)`` names who asks, as api.py's)."""

    def pins() -> Pins:
        found: Pins = control.gateway.pins
        return found

    def server_filter() -> str | None:
        return request.args.get("server") or None

    @app.get("/tools/changes")
    async def list_tool_changes() -> Response:
        server = server_filter()
        changes = [c.as_json() for c in pins().pending() if server is None or c.server == server]
        return _json({"changes": changes})

    @app.post("/tools/changes/<server>/<path:tool>/approve")
    async def approve_tool_change(server: str, tool: str) -> Response:
        body = await _body()
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_request", "expected an object {digest}")
        unknown = [k for k in body if k != "digest"]
        if unknown:
            raise ApiError(400, "invalid_request", f"unknown key {clean(unknown[0], 100)!r} (known: digest)",
                           unknown[0][:100])
        digest = body.get("digest")
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise ApiError(400, "invalid_request", "digest: expected the new digest of the change (64 hex digits, "
                                                   "from GET /tools/changes)", "digest")
        who = caller(server, await _raw())
        try:
            change = pins().approve(server, tool, digest, who.who)
        except PinError as exc:
            raise ApiError(exc.status, exc.code, str(exc)) from None
        g.audited = True  # (written here: the refusals above are written by audit_refusals)
        saved = await pins().flush()  # a 200 means the approval lasts (unless the database refused it)
        await control.audit_action(who, f"approved tool {clean(tool, 200)!r} of server {clean(server, 100)}: "
                                        f"{change.old_digest[:12]} -> {change.new_digest}"
                                        + ("" if saved else " (not saved yet: the database refused it)"))
        return _json({"change": change.as_json(), "saved": saved})

    @app.get("/tools/pins")
    async def list_tool_pins() -> Response:
        server = server_filter()
        found = pins()
        listed: list[dict[str, Any]] = [p.as_json() for p in found.pinned() if server is None or p.server == server]
        return _json({"pins": listed, "persistent": found.persistent})
