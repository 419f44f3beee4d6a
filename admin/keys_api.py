"""The admin API's API keys: ``GET /keys``, ``POST /keys``, ``DELETE /keys/{name}``.

Keys live in their own table (see :mod:`gateway.auth.keys`), not in the config document, so a
key is not a config version; each change is an audit row like every other admin change. The
store is used in its thread (:meth:`KeyRing.call`) and the ring reads it again at once after a
change, so the data plane accepts a new key, and refuses a revoked one, on the next request.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from quart import Response, g, request

from gateway.auth.keys import (
    InvalidKeyRequest,
    KeyExists,
    KeyNotFound,
    KeyRing,
    KeyStoreError,
    check_lifetime,
    check_name,
)
from gateway.config import parse_duration

from .auth import WHO
from .control import Caller, ChangeError

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from .control import ControlPlane

_FIELDS = ("name", "routes", "groups", "expires")
KEYS_OFF = "API keys are off: set auth: {api_keys: true} in the config"


def register_keys(app: QuartTrio, control: ControlPlane) -> None:
    """Add the /keys routes to the admin app of ``control``."""
    from .api import _body, _json, _raw  # (admin.api imports this module)

    def keyring() -> KeyRing:
        found: KeyRing | None = getattr(control.gateway, "keyring", None)
        if found is None:
            raise ChangeError(409, "keys_off", KEYS_OFF)
        return found

    def caller(body: bytes | None = None) -> Caller:
        return Caller(who=WHO, method=f"{request.method} {request.path}"[:300], peer=request.remote_addr, body=body)

    @app.get("/keys")
    async def list_keys() -> Response:
        everything = request.args.get("all", "false")
        if everything not in ("true", "false", "1", "0"):
            raise ChangeError(400, "invalid_request", "all: true or false", "all")
        ring = keyring()
        records = await _stored(ring, lambda s: s.list(include_revoked=everything in ("true", "1")))
        now = time.time()
        return _json({"keys": [r.as_json(now) for r in records]})

    @app.post("/keys")
    async def create_key() -> Response:
        body = await _body()
        ring = keyring()
        name, routes, groups, lifetime = _new_key_request(body)
        expires = time.time() + lifetime if lifetime is not None else None
        made = await _stored(ring, lambda s: s.create(name, routes=routes, groups=groups, expires=expires))
        await ring.refresh_now()
        record = made.record
        g.audited = True
        await control.audit_action(caller(await _raw()), f"created API key {record.name} (id {record.id}, routes "
                                   f"{','.join(record.routes) if record.routes else '*'})")
        return _json({"key": made.key, "record": record.as_json()}, 201, {"Cache-Control": "no-store"})

    @app.delete("/keys/<name>")
    async def revoke_key(name: str) -> Response:
        ring = keyring()
        try:
            check_name(name)
        except InvalidKeyRequest:  # a name no key can have
            raise ChangeError(404, "not_found", "no API key of that name") from None
        record = await _stored(ring, lambda s: s.revoke(name))
        await ring.refresh_now()
        g.audited = True
        await control.audit_action(caller(), f"revoked API key {record.name} (id {record.id})")
        return _json({"record": record.as_json()})


async def _stored(ring: KeyRing, fn: Any) -> Any:
    """``fn(store)`` in the store's thread, its errors as API errors."""
    try:
        return await ring.call(fn)
    except KeyExists as exc:
        raise ChangeError(409, "conflict", str(exc), "name") from None
    except KeyNotFound as exc:
        raise ChangeError(404, "not_found", str(exc)) from None
    except InvalidKeyRequest as exc:
        raise ChangeError(422, "invalid_key", exc.message, exc.field) from None
    except KeyStoreError as exc:
        raise ChangeError(503, "keys_unavailable", f"the API keys' database refused: {exc}") from None


def _new_key_request(body: Any) -> tuple[str, list[str] | None, list[str], float | None]:
    """(name, routes, groups, lifetime in seconds) of a POST /keys body; 400 for the wrong shape,
    422 for values that are not allowed."""
    if not isinstance(body, dict):
        raise ChangeError(400, "invalid_request", "expected an object {name, routes?, groups?, expires?}")
    unknown = [k for k in body if k not in _FIELDS]
    if unknown:
        raise ChangeError(400, "invalid_request", f"unknown key {unknown[0][:64]!r} (known: {', '.join(_FIELDS)})",
                          unknown[0][:64])
    name, routes, groups, expires = (body.get(k) for k in _FIELDS)
    if not isinstance(name, str):
        raise ChangeError(400, "invalid_request", "name: expected a string", "name")
    for key, value in (("routes", routes), ("groups", groups)):
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            raise ChangeError(400, "invalid_request", f"{key}: expected a list of strings", key)
    if expires is not None and (isinstance(expires, bool) or not isinstance(expires, str | int | float)):
        raise ChangeError(400, "invalid_request", "expires: expected a duration (30d, 12h) or a number of seconds",
                          "expires")
    try:
        check_name(name)
        lifetime = check_lifetime(parse_duration(expires)) if expires is not None else None
    except InvalidKeyRequest as exc:
        raise ChangeError(422, "invalid_key", exc.message, exc.field) from None
    except ValueError as exc:  # parse_duration's, which says what a duration looks like
        raise ChangeError(422, "invalid_key", str(exc), "expires") from None
    except OverflowError:  # an integer too large for a float
        raise ChangeError(422, "invalid_key", "at most 100 years (leave expires out for a key that never "
                                              "expires)", "expires") from None
    return name, routes, groups or [], lifetime
