"""The admin web page (issue 12): served under ``/ui/`` by the admin listener, behind the admin token.

A second small Quart app, mounted in front of the JSON API's app at the ASGI level (so the JSON
API, its token check and its OpenAPI document stay exactly as they are):

- ``/ui/login``: the admin pastes the admin token; on success the browser gets an opaque,
  random session cookie (HttpOnly, SameSite=Strict, Secure over https, ``Path=/ui``), valid
  for :data:`IDLE` without use and :data:`LIFETIME` at most. The session, kept in memory on the
  server, holds the token (to call the JSON API with) and a CSRF token; the cookie holds
  neither. ``POST /ui/logout`` ends it. Logins, refused logins and logouts are audit rows.
- the pages (server-rendered Jinja templates, autoescaped; a little vanilla JS that builds
  DOM nodes with ``textContent``, never HTML from strings): ``/ui/`` overview, ``/ui/tools``,
  ``/ui/playground``, ``/ui/servers``, ``/ui/audit``;
- ``/ui/api/...``: JSON the page needs that the JSON API does not give (headline numbers, the
  catalog with full schemas, a playground call, the audit log filtered by identity);
- ``/ui/admin/<path>``: the JSON API itself, for the page's fetches: the request goes to the
  JSON API's app unchanged but for ``Authorization: Bearer <the session's token>``, so its
  validation, audit rows and answers are the JSON API's. The JSON API's own paths do not accept
  the cookie: a browser reaches them only through here.

CSRF: every request of the page to ``/ui/api`` and ``/ui/admin`` (reads too) and every
state-changing one (POST, PUT, DELETE) must carry the session's CSRF token (the
``X-CSRF-Token`` header; a form field ``csrf`` for the logout form) and must not come from
another origin (``Origin``, else ``Sec-Fetch-Site``), on top of the SameSite=Strict cookie.
Every answer has a strict Content-Security-Policy (no inline script), nosniff, no framing and
no referrer.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import msgspec
from quart import Response, g, render_template, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException
from werkzeug.http import parse_cookie

from gateway.auth import Identity
from gateway.protocol.catalog import entry_str
from gateway.stats import BUCKETS, RequestStats
from gateway.transports import internal

from .api import ApiError, _body
from .audit import OUTCOMES
from .auth import WHO, TokenCheck
from .control import Caller

if TYPE_CHECKING:
    from .control import ControlPlane

log = logging.getLogger("mcp_gateway.admin.web")

PREFIX: Final = "/ui"
ADMIN_PREFIX: Final = "/ui/admin/"  # the JSON API, through the page's session
COOKIE: Final = "mcpg_ui"
CSRF_HEADER: Final = "x-csrf-token"
LIFETIME: Final = 12 * 3600.0  # seconds a browser session lasts at most
IDLE: Final = 3600.0  # ... and without a request
MAX_SESSIONS: Final = 64  # beyond, the least recently used session ends
CALL_TIMEOUT: Final = 115.0  # a playground call's deadline (the app answers within RESPONSE_TIMEOUT)
MAX_ANSWER: Final = 8 * 1024 * 1024  # bytes of a playground answer sent to the browser
ADMIN: Final = Identity("admin", "admin")  # who playground calls are from (policy, limits, audit)

CSP: Final = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
              "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer", "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin"}
_SECURITY_RAW: Final = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]


# -- browser sessions (sans-IO: the clock is given) ------------------------------------------------
@dataclass(slots=True)
class WebSession:
    token: str  # the admin token the admin logged in with (to call the JSON API; never sent back)
    csrf: str
    created: float
    used: float


class WebSessions:
    """Browser sessions by the SHA-256 of their cookie value; each expires (see the module)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, lifetime: float = LIFETIME,
                 idle: float = IDLE, limit: int = MAX_SESSIONS) -> None:
        self._clock, self.lifetime, self.idle, self.limit = clock, lifetime, idle, limit
        self._by_digest: dict[bytes, WebSession] = {}

    @staticmethod
    def _digest(value: str) -> bytes:
        return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()

    def create(self, token: str) -> tuple[str, WebSession]:
        """A new session: the cookie value (shown to the browser only) and the session."""
        self._expire()
        while len(self._by_digest) >= self.limit:
            oldest = min(self._by_digest, key=lambda d: self._by_digest[d].used)
            del self._by_digest[oldest]
        now = self._clock()
        value = secrets.token_urlsafe(32)
        session = WebSession(token=token, csrf=secrets.token_urlsafe(32), created=now, used=now)
        self._by_digest[self._digest(value)] = session
        return value, session

    def get(self, value: str | None) -> WebSession | None:
        """The live session of a cookie value (its idle time starts again), or None."""
        if not value or len(value) > 200:
            return None
        digest = self._digest(value)
        session = self._by_digest.get(digest)
        if session is None:
            return None
        now = self._clock()
        if now - session.created >= self.lifetime or now - session.used >= self.idle:
            del self._by_digest[digest]
            return None
        session.used = now
        return session

    def end(self, value: str | None) -> None:
        if value:
            self._by_digest.pop(self._digest(value), None)

    def __len__(self) -> int:
        self._expire()
        return len(self._by_digest)

    def _expire(self) -> None:
        now = self._clock()
        for digest in [d for d, s in self._by_digest.items()
                       if now - s.created >= self.lifetime or now - s.used >= self.idle]:
            del self._by_digest[digest]


def csrf_ok(session: WebSession, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(session.csrf.encode(), (presented or "").encode("utf-8", "replace"))


def same_origin(origin: str | None, fetch_site: str | None, scheme: str, host: str | None) -> bool:
    """Whether a request comes from the page's own origin (or from no page: typed, a bookmark).

    With ``Referrer-Policy: no-referrer`` browsers send ``Origin: null`` on the page's own POSTs,
    so a null origin passes only with ``Sec-Fetch-Site: same-origin`` (set by the browser, never
    by a script)."""
    if origin is not None and origin != "null":
        return host is not None and origin == f"{scheme}://{host}"
    if origin == "null":
        return fetch_site == "same-origin"
    return fetch_site in (None, "same-origin", "none")


def safe_next(target: str | None) -> str:
    """Where to go after the login: a page of ours only (never another site)."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//") and "\\" not in target \
            and not target.startswith(ADMIN_PREFIX) and not target.startswith(PREFIX + "/api/"):
        return target
    return PREFIX + "/"


# -- headline numbers -----------------------------------------------------------------------------
def quantile(counts: list[int], q: float) -> float | None:
    """The ``q`` quantile of a histogram of :data:`gateway.stats.BUCKETS` (linear within a bucket;
    the last bound for what fell beyond it); None when it is empty."""
    total = sum(counts)
    if total <= 0:
        return None
    target = q * total
    running = 0
    for i, count in enumerate(counts):
        if count and running + count >= target:
            lower = BUCKETS[i - 1] if i > 0 else 0.0
            if i >= len(BUCKETS):
                return BUCKETS[-1]
            return lower + (BUCKETS[i] - lower) * (target - running) / count
        running += count
    return BUCKETS[-1]


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    requests: tuple[int, ...]  # every request: histogram counts
    errors: int
    calls: tuple[int, ...]  # tools/call only


def sample(stats: RequestStats, at: float) -> Sample:
    requests = [0] * (len(BUCKETS) + 1)
    calls = [0] * (len(BUCKETS) + 1)
    for (_, method), hist in list(stats.requests.items()):
        for i, n in enumerate(hist.counts):
            requests[i] += n
            if method == "tools/call":
                calls[i] += n
    errors = sum(n for (_, _, status), n in list(stats.outcomes.items()) if status != "ok")
    return Sample(at, tuple(requests), errors, tuple(calls))


@dataclass(slots=True)
class Headline:
    """Request rate, error rate and p50/p99 over the last ``window`` seconds (from samples taken
    when the page asks, at most one a second), and the totals since start."""

    window: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _samples: deque[Sample] = field(default_factory=deque)

    def update(self, stats: RequestStats) -> dict[str, Any]:
        now = self.clock()
        current = sample(stats, now)
        if not self._samples or now - self._samples[-1].at >= 1.0:
            self._samples.append(current)
        while len(self._samples) > 1 and now - self._samples[1].at >= self.window:
            self._samples.popleft()  # keep one sample at least `window` old as the baseline
        base = self._samples[0]
        span = now - base.at
        out: dict[str, Any] = {
            "requests_total": sum(current.requests), "errors_total": current.errors,
            "calls_total": sum(current.calls), "window_seconds": round(span, 1),
            "rate": None, "error_rate": None, "p50": None, "p99": None, "call_p50": None, "call_p99": None}
        if span >= 1.0:
            requests = [a - b for a, b in zip(current.requests, base.requests, strict=True)]
            calls = [a - b for a, b in zip(current.calls, base.calls, strict=True)]
            out.update(rate=sum(requests) / span, error_rate=(current.errors - base.errors) / span,
                       p50=quantile(requests, 0.5), p99=quantile(requests, 0.99),
                       call_p50=quantile(calls, 0.5), call_p99=quantile(calls, 0.99))
        else:  # the first look: since start
            out.update(p50=quantile(list(current.requests), 0.5), p99=quantile(list(current.requests), 0.99),
                       call_p50=quantile(list(current.calls), 0.5), call_p99=quantile(list(current.calls), 0.99))
        return out


# -- what the templates show of a catalog (untrusted: autoescaped by Jinja) --------------------------
_any = msgspec.json.Decoder()


def _decoded(value: msgspec.Raw | None) -> Any:
    if value is None:
        return None
    try:
        return _any.decode(value)
    except (msgspec.DecodeError, RecursionError, ValueError):
        return None


def _pretty(value: msgspec.Raw | None) -> str | None:
    decoded = _decoded(value)
    if decoded is None:
        return None if value is None else bytes(memoryview(value))[:65536].decode("utf-8", "replace")
    try:
        return json.dumps(decoded, indent=2, ensure_ascii=False, sort_keys=False)
    except (ValueError, RecursionError):
        return None


def _text(entry: dict[str, msgspec.Raw], key: str, limit: int = 20000) -> str:
    value = entry_str(entry, key)
    return value[:limit] if value else ""


def catalog_view(route: Any) -> dict[str, Any]:
    """One route's tools, prompts, resources and templates, decoded for the tools page."""
    catalog = route.catalog
    tools = []
    for entry in catalog.tools:
        name = _text(entry, "name", 500)
        tools.append({"name": name, "title": _text(entry, "title", 500),
                      "server": catalog.tool_index.get(name, ("", ""))[0],
                      "description": _text(entry, "description"), "input": _pretty(entry.get("inputSchema")),
                      "output": _pretty(entry.get("outputSchema")), "annotations": _pretty(entry.get("annotations"))})
    prompts = []
    for entry in catalog.prompts:
        name = _text(entry, "name", 500)
        prompts.append({"name": name, "title": _text(entry, "title", 500),
                        "server": catalog.prompt_index.get(name, ("", ""))[0],
                        "description": _text(entry, "description"), "arguments": _pretty(entry.get("arguments"))})
    resources = [{"uri": _text(e, "uri", 2000), "name": _text(e, "name", 500), "mime": _text(e, "mimeType", 200),
                  "server": catalog.resource_index.get(entry_str(e, "uri") or "", ""),
                  "description": _text(e, "description")} for e in catalog.resources]
    templates = [{"uri": _text(e, "uriTemplate", 2000), "name": _text(e, "name", 500),
                  "mime": _text(e, "mimeType", 200), "description": _text(e, "description")}
                 for e in catalog.resource_templates]
    return {"prefix": route.prefix, "servers": list(route.servers), "tools": tools, "prompts": prompts,
            "resources": resources, "templates": templates}


# -- the app -------------------------------------------------------------------------------------
Scope = MutableMapping[str, Any]
_encoder = msgspec.json.Encoder()
_PUBLIC: Final = frozenset({"login", "login_post", "static"})
_ROOT = Path(__file__).resolve().parent


def _encode_json(data: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(data), status=status, content_type="application/json")


def redirect(location: str, status: int) -> Response:
    return Response("", status=status, headers={"Location": location})


def _error(status: int, code: str, message: str, path: str | None = None) -> Response:
    return _encode_json({"error": {"code": code, "message": message, "path": path}}, status)


def register_web(api: QuartTrio, control: ControlPlane, tokens: TokenCheck) -> QuartTrio:
    """Mount the web page in front of the admin app ``api`` (see the module docstring)."""
    sessions = WebSessions()
    headline = Headline()
    web = QuartTrio("admin.web", static_folder=str(_ROOT / "static"), static_url_path=PREFIX + "/static",
                    template_folder=str(_ROOT / "templates"))
    web.jinja_options = {**web.jinja_options, "autoescape": True}  # every template, whatever its name
    web.config.update(MAX_CONTENT_LENGTH=1024 * 1024, BODY_TIMEOUT=30, RESPONSE_TIMEOUT=CALL_TIMEOUT + 15,
                      PROVIDE_AUTOMATIC_OPTIONS=False, SEND_FILE_MAX_AGE_DEFAULT=None)

    def is_json() -> bool:
        return request.path.startswith(PREFIX + "/api/")

    def cookie_session() -> tuple[str | None, WebSession | None]:
        value = request.cookies.get(COOKIE)
        return value, sessions.get(value)

    def caller(method: str | None = None, who: str = WHO) -> Caller:
        return Caller(who=who, method=method or f"{request.method} {request.path}"[:300], peer=request.remote_addr)

    @web.before_request
    async def gate() -> Response | None:
        if request.endpoint in _PUBLIC:
            return None
        _, session = cookie_session()
        if session is None:
            if is_json() or request.method not in ("GET", "HEAD"):
                return _error(401, "unauthorized", "log in at /ui/login (the session ended or never began)")
            return redirect(f"{PREFIX}/login?next={quote(request.full_path.rstrip('?'), safe='/')}", 303)
        if request.method not in ("GET", "HEAD") or is_json():
            if not same_origin(request.headers.get("origin"), request.headers.get("sec-fetch-site"),
                               request.scheme, request.headers.get("host")):
                return _error(403, "cross_origin", "refused: the request came from another site")
            presented = request.headers.get(CSRF_HEADER)
            if presented is None and request.mimetype == "application/x-www-form-urlencoded":
                presented = (await request.form).get("csrf")
            if not csrf_ok(session, presented):
                return _error(403, "csrf", "refused: the page's CSRF token is missing or wrong (reload the page)")
        g.web = session
        return None

    @web.after_request
    async def secure(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        if request.endpoint != "static":
            response.headers["Cache-Control"] = "no-store"
        return response

    @web.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> Response:
        return _error(exc.status, exc.code, exc.message, exc.path)

    @web.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        return _error(status, f"http_{status}", exc.description or exc.name)

    @web.errorhandler(Exception)
    async def internal_error(exc: Exception) -> Response:
        log.exception("admin page: %s %s failed", request.method, request.path)
        return _error(500, "internal", "the admin page failed on this request (the gateway's log says why)")

    async def page(template: str, **context: Any) -> Response:
        body = await render_template(template, csrf=g.web.csrf, prefix=PREFIX, **context)
        return Response(body, status=200, content_type="text/html; charset=utf-8")

    # -- login -------------------------------------------------------------------------------------
    @web.get(PREFIX)
    async def bare() -> Response:
        return redirect(PREFIX + "/", 308)

    @web.get(PREFIX + "/login")
    async def login() -> Response:
        if cookie_session()[1] is not None:
            return redirect(safe_next(request.args.get("next")), 303)
        body = await render_template("login.html", prefix=PREFIX, next=safe_next(request.args.get("next")),
                                     message=None)
        return Response(body, status=200, content_type="text/html; charset=utf-8")

    @web.post(PREFIX + "/login")
    async def login_post() -> Response:
        form = await request.form
        target = safe_next(form.get("next"))
        if not same_origin(request.headers.get("origin"), request.headers.get("sec-fetch-site"),
                           request.scheme, request.headers.get("host")):
            return _error(403, "cross_origin", "refused: the login form was posted from another site")
        token = (form.get("token") or "").strip()
        if token and len(token) <= 4096 and await tokens.check(token):
            value, _ = sessions.create(token)
            await control.audit_action(caller(), "logged in to the admin page")
            response = redirect(target, 303)
            response.set_cookie(COOKIE, value, max_age=int(LIFETIME), path=PREFIX, secure=request.scheme == "https",
                                httponly=True, samesite="Strict")
            return response
        # (the presented token is not written anywhere: a near miss is nearly the token)
        await control.audit_action(caller(who="(no valid token)"), "admin page login refused", outcome="error",
                                   code=401)
        body = await render_template("login.html", prefix=PREFIX, next=target,
                                     message="That is not the admin token." if token else "Paste the admin token.")
        return Response(body, status=401, content_type="text/html; charset=utf-8")

    @web.post(PREFIX + "/logout")
    async def logout() -> Response:
        sessions.end(request.cookies.get(COOKIE))
        await control.audit_action(caller(), "logged out of the admin page")
        response = redirect(PREFIX + "/login", 303)
        response.delete_cookie(COOKIE, path=PREFIX, secure=request.scheme == "https", httponly=True,
                               samesite="Strict")
        return response

    # -- pages ------------------------------------------------------------------------------------
    @web.get(PREFIX + "/")
    async def overview() -> Response:
        return await page("overview.html", active="overview")

    @web.get(PREFIX + "/tools")
    async def tools() -> Response:
        gateway = control.gateway
        routes = [catalog_view(r) for r in gateway.routes.values()]
        return await page("tools.html", active="tools", routes=routes)

    @web.get(PREFIX + "/playground")
    async def playground() -> Response:
        return await page("playground.html", active="playground")

    @web.get(PREFIX + "/servers")
    async def servers() -> Response:
        return await page("servers.html", active="servers")

    @web.get(PREFIX + "/audit")
    async def audit_page() -> Response:
        return await page("audit.html", active="audit", outcomes=OUTCOMES)

    # -- the page's own JSON -------------------------------------------------------------------------
    @web.get(PREFIX + "/api/headline")
    async def api_headline() -> Response:
        gateway = control.gateway
        return _encode_json({**headline.update(gateway.dispatcher.stats), "sessions": len(gateway.sessions)})

    @web.get(PREFIX + "/api/catalog")
    async def api_catalog() -> Response:
        """Every route's tools, prompts and resources as the upstreams wrote them (raw, for the playground)."""
        out = []
        for route in control.gateway.routes.values():
            catalog = route.catalog
            out.append({
                "prefix": route.prefix,
                "tools": [{"server": catalog.tool_index.get(entry_str(e, "name") or "", ("", ""))[0], "entry": e}
                          for e in catalog.tools],
                "prompts": [{"server": catalog.prompt_index.get(entry_str(e, "name") or "", ("", ""))[0],
                             "entry": e} for e in catalog.prompts],
                "resources": [{"entry": e} for e in catalog.resources]})
        return _encode_json({"routes": out})

    @web.post(PREFIX + "/api/call")
    async def api_call() -> Response:
        body = await _body()
        if not isinstance(body, dict):
            raise ApiError(400, "invalid_request", "expected an object {route, method, name or uri, arguments}")
        unknown = [k for k in body if k not in ("route", "method", "name", "uri", "arguments")]
        if unknown:
            raise ApiError(400, "invalid_request", f"unknown key {str(unknown[0])[:100]!r}", str(unknown[0])[:100])
        gateway = control.gateway
        prefix = body.get("route")
        route = gateway.routes.get(prefix) if isinstance(prefix, str) else None
        if route is None:
            raise ApiError(422, "invalid_request", "route: no such route", "route")
        method = body.get("method", "tools/call")
        if method not in ("tools/call", "prompts/get", "resources/read"):
            raise ApiError(422, "invalid_request", "method: tools/call, prompts/get or resources/read", "method")
        key = "uri" if method == "resources/read" else "name"
        target = body.get(key)
        if not isinstance(target, str) or not target or len(target) > 2000:
            raise ApiError(422, "invalid_request", f"{key}: expected a non-empty string", key)
        params: dict[str, Any] = {key: target}
        arguments = body.get("arguments")
        if method != "resources/read":
            if arguments is None:
                arguments = {}
            if not isinstance(arguments, dict):
                raise ApiError(422, "invalid_request", "arguments: expected an object", "arguments")
            if method == "prompts/get" and not all(isinstance(v, str) for v in arguments.values()):
                raise ApiError(422, "invalid_request", "arguments: a prompt's arguments are strings", "arguments")
            params["arguments"] = arguments
        # (its own peer: the page's sessions never count against, or evict, a data-plane client's)
        done = await internal.call(route, gateway.dispatcher, gateway.sessions, method, params, identity=ADMIN,
                                   peer=f"admin page {request.remote_addr or ''}".strip(), timeout=CALL_TIMEOUT)
        answer, failure = done.answer, done.failure
        size = len(memoryview(answer)) if answer is not None else 0
        if size > MAX_ANSWER:
            answer, failure = None, f"the answer is {size} bytes: too large to show here"
        return _encode_json({"answer": answer, "notifications": done.notifications, "dropped": done.dropped,
                             "seconds": done.seconds, "failure": failure})

    @web.get(PREFIX + "/api/audit")
    async def api_audit() -> Response:
        """The audit log, newest first: exact-match filters (identity too), ``before`` an id to page on."""
        if control.audit is None:
            raise ApiError(404, "no_audit", "the audit log is off (set store.path or audit.path)")
        filters: dict[str, Any] = {}
        for arg, column in (("route", "route"), ("server", "server"), ("tool", "name"), ("method", "method"),
                            ("identity", "identity"), ("client", "client"), ("kind", "kind"),
                            ("outcome", "outcome")):
            value = request.args.get(arg, "").strip()
            if value:
                filters[column] = value[:500]
        if filters.get("outcome") not in (None, *OUTCOMES):
            raise ApiError(400, "invalid_request", f"outcome: one of {', '.join(OUTCOMES)}", "outcome")
        if filters.get("kind") not in (None, "call", "admin"):
            raise ApiError(400, "invalid_request", "kind: call or admin", "kind")
        limit = _int(request.args.get("limit"), "limit", 50, 500)
        before = _int(request.args.get("before"), "before", None, 2**63 - 1)
        assert limit is not None
        rows = await control.audit.query(filters, limit=limit + 1, before=before)
        page_rows = rows[:limit]
        return _encode_json({"records": page_rows,
                             "next": page_rows[-1]["id"] if len(rows) > limit and page_rows else None})

    _mount(api, web, sessions)
    return web


def _int(value: str | None, name: str, default: int | None, high: int) -> int | None:
    if value is None or value == "":
        return default
    if not value.isascii() or not value.isdigit() or len(value) > 19 or not 1 <= int(value) <= high:
        raise ApiError(400, "invalid_request", f"{name}: expected an integer from 1 to {high}", name)
    return int(value)


# -- the mount ---------------------------------------------------------------------------------------
def _headers(scope: Scope) -> dict[str, str]:
    """A request's headers by lower-case name (the first of each; cookies joined, as browsers may split them)."""
    out: dict[str, str] = {}
    for key, value in scope.get("headers", ()):
        name, text = bytes(key).decode("latin-1").lower(), bytes(value).decode("latin-1")
        if name == "cookie" and name in out:
            out[name] = f"{out[name]}; {text}"
        else:
            out.setdefault(name, text)
    return out


async def _refuse(send: Callable[[Any], Awaitable[None]], status: int, code: str, message: str) -> None:
    body = _encoder.encode({"error": {"code": code, "message": message, "path": None}})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store"), *_SECURITY_RAW]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _mount(api: QuartTrio, web: QuartTrio, sessions: WebSessions) -> None:
    """Put the page in front of the JSON API: ``/ui/admin/*`` to the API with the session's token,
    the rest of ``/ui`` to the page, everything else to the API as before."""
    inner: Any = api.asgi_app  # (Quart's own ASGI types are narrower than a mount needs)

    async def proxy(scope: Scope, receive: Callable[[], Awaitable[Any]],
                    send: Callable[[Any], Awaitable[None]]) -> None:
        headers = _headers(scope)
        session = sessions.get(parse_cookie(headers.get("cookie", "")).get(COOKIE))
        if session is None:
            await _refuse(send, 401, "unauthorized", "log in at /ui/login (the session ended or never began)")
            return
        if not same_origin(headers.get("origin"), headers.get("sec-fetch-site"), scope.get("scheme", "http"),
                           headers.get("host")):
            await _refuse(send, 403, "cross_origin", "refused: the request came from another site")
            return
        if not csrf_ok(session, headers.get(CSRF_HEADER)):
            await _refuse(send, 403, "csrf", "refused: the page's CSRF token is missing or wrong (reload the page)")
            return
        path = "/" + scope["path"][len(ADMIN_PREFIX):]
        forwarded = [(k, v) for k, v in scope.get("headers", ())
                     if bytes(k).lower() not in (b"cookie", b"authorization", CSRF_HEADER.encode())]
        forwarded.append((b"authorization", b"Bearer " + session.token.encode()))
        inner_scope = {**scope, "path": path, "raw_path": quote(path).encode(), "headers": forwarded}

        async def secured(message: Any) -> None:
            if message.get("type") == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *_SECURITY_RAW,
                                                  (b"cache-control", b"no-store")]}
            await send(message)

        await inner(inner_scope, receive, secured)

    async def asgi(scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]) -> None:
        path = scope.get("path", "") if scope.get("type") in ("http", "websocket") else ""
        if path.startswith(ADMIN_PREFIX) and scope["type"] == "http":
            await proxy(scope, receive, send)
        elif path == PREFIX or path.startswith(PREFIX + "/"):
            await web.asgi_app(scope, receive, send)  # type: ignore[arg-type]
        else:
            await inner(scope, receive, send)

    api.asgi_app = asgi  # type: ignore[method-assign,assignment]

