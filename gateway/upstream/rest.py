"""A REST API as an MCP server: the :class:`~gateway.upstream.backend.Backend` of ``http:`` servers.

No process and no MCP peer: the tools come from the server's OpenAPI document and hand-written
tools (:mod:`.openapi`), and each ``tools/call`` is one HTTP request. A sans-IO core builds the
request from the arguments (:func:`build_request`) and the tool result from the response
(:func:`tool_result`); :class:`RestBackend` is the trio shell around one httpx2 client.

The request: path values percent-escaped whole (``/`` too, and a value of ``.`` or ``..`` as
``%2E``, so no argument can reach another path; an empty one is refused), query parameters,
headers (the server's own ``headers`` last: an argument never replaces them), a JSON body.
Arguments are checked only for presence (``required``) and for what HTTP can carry; the API
validates the rest. TLS is verified, redirects are never followed, no proxy or CA settings are
taken from the environment, every connection goes through the SSRF guard of ``remote:``
(:class:`~gateway.upstream.http_peer.GuardedBackend`), and a response is read incrementally up to
``max_response``.

What a call answers:

- **2xx**: the body as text (the JSON as the API wrote it), and ``structuredContent`` when the tool
  has an outputSchema (wrapped as ``{"result": ...}`` when that schema had to be wrapped); an
  image as image content.
- **isError results** (the model can read them and try again): a non-2xx status (``HTTP 404 Not
  Found`` and the body, cut at 16 KiB), a redirect (refused, naming the ``Location`` host), a 2xx
  larger than ``max_response``, a compressed body that was not asked for, a 2xx that is not the JSON
  its schema declares, a missing required argument, an argument HTTP cannot carry.
- **JSON-RPC errors** (the gateway's error tree, as for every other kind of server): no answer
  within ``timeout`` (-32001), the API unreachable, refused by the SSRF guard, a TLS failure or the
  connection lost (-32000), a method other than ``tools/call`` (-32601), an unknown tool (-32602).

Secrets (the resolved ``headers``) live in memory only; neither they nor URLs are logged.
"""

from __future__ import annotations

import base64
import logging
import re
import ssl
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, urljoin, urlsplit

import httpx2
import msgspec
import trio
from msgspec import UNSET, Raw, UnsetType

from .. import logsafe
from ..config.units import format_size
from ..protocol import jsonrpc
from ..protocol.catalog import ServerCatalog
from ..protocol.errors import UPSTREAM_UNAVAILABLE, CallError, UpstreamGone, UpstreamTimeout
from ..protocol.jsonrpc import INVALID_PARAMS, METHOD_NOT_FOUND
from . import openapi
from .backend import BackendStatistics
from .http_peer import USER_AGENT, GuardedTransport, HostRefused, describe_failure, ssl_context, tls_failure
from .openapi import PLACEHOLDER, ApiTools, Param, SpecError, ToolSpec
from .ssrf import HostGuard

if TYPE_CHECKING:
    from ..config import GatewayConfig, ServerConfig
    from ..config.rest import RestApi

log = logging.getLogger("mcp_gateway.upstream")

ERROR_BODY: Final = 16 * 1024  # characters of an error response's body put in its result
_EXACT: Final = re.compile(r"\{([^{}]*)\}")
_HEADER_VALUE: Final = re.compile(r"[\x20-\x7e\t]*")
_PLACEHOLDER_SPLIT: Final = re.compile(r"(\{[^{}]*\})")
_PATH_SAFE: Final = "/%:@!$&'()*+,;=~-._"  # RFC 3986's pchar and "/": kept as they are
_encoder: Final = msgspec.json.Encoder()
_members_decoder: Final = msgspec.json.Decoder(dict[str, Raw])


class ArgumentError(ValueError):
    """Arguments that cannot make a request (the message is the tool result's text)."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One request, ready to send: ``target`` is the escaped path and query."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes | None


# -- arguments -> request (sans-IO) ----------------------------------------------------------------


def _text(value: Any) -> str:
    """One value as text: strings as they are, everything else as JSON (true, 3, [1,2])."""
    return value if isinstance(value, str) else _encoder.encode(value).decode()


def _segment(value: Any, arg: str) -> str:
    text = _text(value)
    if text == "":
        raise ArgumentError(f"argument {arg!r} must not be empty (it is part of the path)")
    escaped = quote(text, safe="")
    # quote leaves dots alone; a segment of only dots would climb the path once normalized.
    return "%2E" * len(escaped) if escaped in (".", "..") else escaped


def _exact(template: str) -> str | None:
    m = _EXACT.fullmatch(template)
    return m[1] if m else None


def _render(template: str, arguments: dict[str, Any]) -> str | None:
    """Text with each placeholder's value as text; None when an argument is absent."""
    names = PLACEHOLDER.findall(template)
    if any(arguments.get(n) is None for n in names):
        return None
    return PLACEHOLDER.sub(lambda m: _text(arguments[m[1]]), template)


def _pairs(p: Param, value: Any) -> list[tuple[str, str]]:
    """A query parameter's name=value pairs, by its style (OpenAPI's form, deepObject, delimited)."""
    if p.as_json:
        return [(p.name, _text(value) if isinstance(value, str) else _encoder.encode(value).decode())]
    if isinstance(value, list):
        if p.style == "form" and p.explode:
            return [(p.name, _text(v)) for v in value]
        sep = {"spaceDelimited": " ", "pipeDelimited": "|"}.get(p.style, ",")
        return [(p.name, sep.join(_text(v) for v in value))]
    if isinstance(value, dict):
        if p.style == "deepObject":
            return [(f"{p.name}[{k}]", _text(v)) for k, v in value.items()]
        if p.style == "form" and p.explode:
            return [(str(k), _text(v)) for k, v in value.items()]
        return [(p.name, ",".join(f"{k},{_text(v)}" for k, v in value.items()))]
    return [(p.name, _text(value))]


def _simple(value: Any, explode: bool, each: Any = _text) -> str:
    """OpenAPI's simple style (paths and headers): lists and objects joined by commas."""
    if isinstance(value, list):
        return ",".join(each(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={each(v)}" if explode else f"{k},{each(v)}" for k, v in value.items())
    return str(each(value))


def _body_template(template: Any, arguments: dict[str, Any]) -> tuple[bool, Any]:
    """(present, value) of a body template: ``"{x}"`` is x's value, text gets values as text;
    members and items whose argument is absent are left out."""
    if isinstance(template, str):
        exact = _exact(template)
        if exact is not None:
            value = arguments.get(exact)
            return value is not None, value
        text = _render(template, arguments)
        return text is not None, text
    if isinstance(template, list):
        items = [_body_template(v, arguments) for v in template]
        return True, [v for present, v in items if present]
    if isinstance(template, dict):
        members = {k: _body_template(v, arguments) for k, v in template.items()}
        return True, {k: v for k, (present, v) in members.items() if present}
    return True, template


def build_request(spec: ToolSpec, arguments: dict[str, Any], *, base_path: str = "",
                  base_query: str = "") -> Outgoing:
    """The request a call makes (ArgumentError when the arguments cannot make one)."""
    path_values: dict[str, str] = {}
    query: list[tuple[str, str]] = []
    headers: list[tuple[str, str]] = []
    cookies: list[str] = []
    for p in spec.params:
        exact = _exact(p.template)
        if p.where == "path":
            if exact is not None:
                if arguments.get(exact) is None:
                    raise ArgumentError(f"missing required argument: {exact}")
                value = arguments[exact]
                path_values[p.name] = _simple(value, p.explode, lambda v, a=exact: _segment(v, a))
            else:
                text = _render(p.template, arguments)
                if text is None:
                    raise ArgumentError(f"missing an argument of path value {p.name!r}")
                path_values[p.name] = _segment(text, p.name)
            continue
        if exact is not None:
            value = arguments.get(exact)
            if value is None:
                continue
        else:
            value = _render(p.template, arguments)
            if value is None:
                continue
        if p.where == "query":
            query += _pairs(p, value)
            continue
        text = _text(value) if p.as_json or exact is None else _simple(value, p.explode)
        if not _HEADER_VALUE.fullmatch(text):
            raise ArgumentError(f"the value of {p.where} {p.name!r} cannot be sent (printable ASCII only)")
        if p.where == "header":
            headers.append((p.name, text))
        else:
            cookies.append(f"{p.name}={quote(text, safe='')}")
    if cookies:
        headers.append(("cookie", "; ".join(cookies)))
    # The template's own text escaped too (a document's path is not always a valid URL path).
    path = "".join(path_values.get(part[1:-1], "") if i % 2 else quote(part, safe=_PATH_SAFE)
                   for i, part in enumerate(_PLACEHOLDER_SPLIT.split(spec.path)))
    body: bytes | None = None
    used = spec.used
    declared = spec.declared
    rest = {k: v for k, v in arguments.items() if k in declared and k not in used and v is not None}
    if spec.body == "arg" and spec.body_arg is not None and arguments.get(spec.body_arg) is not None:
        body = _encoder.encode(arguments[spec.body_arg])
    elif spec.body == "template":
        present, value = _body_template(spec.body_template, arguments)
        body = _encoder.encode(value) if present else None
    elif spec.body == "rest" and rest:
        body = _encoder.encode(rest)
    if spec.rest_to_query:
        for k, v in rest.items():
            query += _pairs(Param("query", k, "{" + k + "}", "form", True), v)
    if body is not None:
        headers.append(("content-type", "application/json"))
    encoded = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query)
    full_query = "&".join(q for q in (base_query, encoded) if q)
    target = f"{base_path}{path}" + (f"?{full_query}" if full_query else "")
    return Outgoing(spec.method, target, headers, body)


# -- response -> tool result (sans-IO) -------------------------------------------------------------


def error_result(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": True}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _media(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def is_json(content_type: str) -> bool:
    media = _media(content_type)
    return media == "application/json" or media.endswith("+json")


def tool_result(spec: ToolSpec, status: int, content_type: str, body: bytes, *, over: bool,
                max_response: int) -> dict[str, Any]:
    """The CallToolResult of a response (``over``: it was larger than ``max_response``, cut)."""
    head = f"HTTP {status} {_phrase(status)}".rstrip()
    if not 200 <= status < 300:
        text = body.decode("utf-8", "replace")
        if len(text) > ERROR_BODY or over:
            text = text[:ERROR_BODY] + " ... (cut)"
        return error_result(f"{head}\n{text}" if text else head)
    if over:
        return error_result(f"{head}, but the response is larger than max_response "
                            f"({format_size(max_response)}): refused")
    media = _media(content_type)
    if spec.structured != "none":
        if not is_json(content_type):
            return error_result(f"{head}: the response is {logsafe.clean(media or 'untyped', 100)}, not the "
                                "JSON the tool's output schema declares")
        try:
            value = msgspec.json.decode(body)
        except msgspec.DecodeError:
            return error_result(f"{head}: the response is not valid JSON")
        if spec.structured == "direct" and not isinstance(value, dict):
            return error_result(f"{head}: the response is not the JSON object the tool's output schema declares")
        structured = value if spec.structured == "direct" else {"result": value}
        return {"content": [{"type": "text", "text": body.decode("utf-8", "replace")}],
                "structuredContent": structured}
    if media.startswith("image/") and body:
        return {"content": [{"type": "image", "data": base64.b64encode(body).decode(), "mimeType": media}]}
    if not body:
        return {"content": [{"type": "text", "text": head}]}
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = f"{head}: {len(body)} bytes of {logsafe.clean(media or 'binary data', 100)} (not text)"
    return {"content": [{"type": "text", "text": text}]}


# -- the backend -----------------------------------------------------------------------------------


class RestBackend:
    """One ``http:`` server: its tools and one HTTP client (a connection pool), ready once both are.

    Shared lifecycle only (there is no process to have one of per session); never restarted
    (nothing can exit); a document that cannot be read at start leaves it ``failed``.
    """

    lifecycle = "shared"

    def __init__(self, name: str, api: RestApi, *, headers: dict[str, str] | None = None,
                 guard: HostGuard | None = None, on_change: Any = None) -> None:
        self.name = name
        self.api = api
        self.catalog: ServerCatalog | None = None
        self.state = "starting"
        self.last_error: str | None = None
        self.restarts = 0
        self.guard = guard or HostGuard()
        self._on_change = on_change
        self._defaults = {"user-agent": USER_AGENT, "accept": "application/json, */*;q=0.5"}
        # The server's own headers win over any an argument fills, and nobody changes the encoding.
        self._headers = {**{k.lower(): v for k, v in (headers or {}).items()}, "accept-encoding": "identity"}
        base = urlsplit(api.base_url)
        self._origin = f"{base.scheme}://{base.netloc.rpartition('@')[2]}"
        self._base_path, self._base_query = base.path.rstrip("/"), base.query
        self._tools: dict[str, ToolSpec] = {}
        self._client: httpx2.AsyncClient | None = None
        self._inflight = 0
        self.calls = 0

    @property
    def header_names(self) -> list[str]:
        """The names of the headers every request carries (never their values)."""
        return sorted({**self._defaults, **self._headers})

    def where(self) -> str:
        """The API's origin, for messages (no path or query: they may carry keys)."""
        return self._origin

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read the tools and serve until cancelled; ``started`` once ready (or failed)."""
        try:
            tools: ApiTools = await trio.to_thread.run_sync(openapi.load, self.api)
        except SpecError as exc:
            self._fail(f"server {self.name!r}: http.{exc.key}: {exc.message}", task_status)
            return
        try:
            context = await trio.to_thread.run_sync(ssl_context, self.api.ca_file)  # reads CA files
        except (OSError, ssl.SSLError) as exc:
            self._fail(f"server {self.name!r}: cannot load http.ca_file {self.api.ca_file}: "
                       f"{getattr(exc, 'strerror', None) or exc}", task_status)
            return
        if not self._base_path and tools.base_path:
            self._base_path = tools.base_path
        limits = httpx2.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30.0)
        timeout = self.api.timeout
        async with httpx2.AsyncClient(
                transport=GuardedTransport(context, self.guard, limits), trust_env=False, follow_redirects=False,
                timeout=httpx2.Timeout(timeout, read=timeout, write=timeout, pool=timeout)) as client:
            self._tools = {t.name: t for t in tools.tools}
            info: dict[str, Any] = {"name": tools.title or self.name, "version": tools.version or "0"}
            self.catalog = ServerCatalog(capabilities={"tools": {}}, server_info=info, tools=[
                {k: Raw(_encoder.encode(v)) for k, v in t.definition.items()} for t in tools.tools])
            self._client = client
            self.state, self.last_error = "ready", None
            for note in tools.notes:
                log.warning("%s: %s", self.name, note, extra={"server": self.name})
            log.info("%s: ready (%d tools, REST API at %s)", self.name, len(self._tools), self.where(),
                     extra={"server": self.name})
            self._changed()
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._client = None
                self.state = "stopped"

    def _fail(self, reason: str, task_status: trio.TaskStatus[None]) -> None:
        self.state, self.last_error = "failed", reason
        log.error("%s", reason, extra={"server": self.name})
        task_status.started()

    def _changed(self) -> None:
        if self._on_change is not None:
            try:
                self._on_change(self.name)
            except Exception:
                log.exception("%s: applying its catalog change failed", self.name)

    async def call(self, method: str, params: Raw | dict[str, Raw] | UnsetType = UNSET, *, session: Any = None,
                   timeout: float | None = None, origin: Any = None) -> Raw:
        """A ``tools/call``: one HTTP request; the CallToolResult (see the module docstring)."""
        if method != "tools/call":
            raise CallError(METHOD_NOT_FOUND, f"Method not found: {method} (server {self.name!r} is a REST API: "
                                              "it has tools only)")
        client = self._client
        if client is None:
            raise UpstreamGone(self.last_error or f"server {self.name!r} is not running")
        members = _members(params)
        name = jsonrpc.decode_any(members.get("name"))
        spec = self._tools.get(name) if isinstance(name, str) else None
        if spec is None:
            raise CallError(INVALID_PARAMS, f"Unknown tool: {logsafe.clean(str(name), 100)!r}")
        arguments = jsonrpc.decode_any(members.get("arguments"))
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            return _raw(error_result("arguments must be an object"))
        missing = [r for r in spec.required if arguments.get(r) is None]
        if missing:
            return _raw(error_result(f"missing required argument{'s' if len(missing) > 1 else ''}: "
                                     f"{', '.join(missing)}"))
        try:
            out = build_request(spec, arguments, base_path=self._base_path, base_query=self._base_query)
        except ArgumentError as exc:
            return _raw(error_result(str(exc)))
        limit = self.api.timeout if timeout is None else timeout
        self._inflight += 1
        self.calls += 1
        started = trio.current_time()
        try:
            with trio.move_on_after(limit):
                result = await self._send(client, spec, out)
                log.debug("%s: %s %s -> %s in %.1f ms", self.name, spec.method, logsafe.clean(spec.path, 200),
                          "error" if result.get("isError") else "ok", (trio.current_time() - started) * 1000,
                          extra={"server": self.name, "tool": spec.name})
                return _raw(result)
            raise UpstreamTimeout(f"server {self.name!r}: {spec.method} {logsafe.clean(spec.path, 200)} did not "
                                  f"answer within {limit:g}s")
        finally:
            self._inflight -= 1

    async def _send(self, client: httpx2.AsyncClient, spec: ToolSpec, out: Outgoing) -> dict[str, Any]:
        what = f"{spec.method} {logsafe.clean(spec.path, 200)}"
        headers = {**self._defaults, **{k.lower(): v for k, v in out.headers}, **self._headers}
        request = client.build_request(out.method, self._origin + out.target, headers=list(headers.items()),
                                       content=out.body)
        try:
            response = await client.send(request, stream=True, follow_redirects=False)
        except httpx2.TimeoutException:
            raise UpstreamTimeout(f"server {self.name!r}: {what} did not answer within {self.api.timeout:g}s") \
                from None
        except httpx2.HTTPError as exc:
            raise CallError(UPSTREAM_UNAVAILABLE, self._failure(exc, what)) from None
        try:
            status = response.status_code
            if 300 <= status < 400:
                location = response.headers.get("location", "")
                host = urlsplit(urljoin(str(request.url), location)).hostname or "(no location)"
                return error_result(f"HTTP {status} {_phrase(status)}: redirects are not followed (to host "
                                    f"{logsafe.clean(host, 100)}); configure the final URL")
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            if encoding not in ("", "identity"):
                return error_result(f"HTTP {status}: the API sent a {logsafe.clean(encoding, 20)}-encoded body, "
                                    "which was not asked for")
            body, over = await _read(response, self.api.max_response, cut=not 200 <= status < 300)
        except httpx2.TimeoutException:
            raise UpstreamTimeout(f"server {self.name!r}: {what} did not answer within {self.api.timeout:g}s") \
                from None
        except httpx2.HTTPError as exc:
            raise CallError(UPSTREAM_UNAVAILABLE, f"server {self.name!r}: connection lost while reading the "
                                                  f"answer to {what}: {describe_failure(exc)}") from None
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):  # minimal cleanup
                await response.aclose()
        return tool_result(spec, status, response.headers.get("content-type", ""), body, over=over,
                           max_response=self.api.max_response)

    def _failure(self, exc: BaseException, what: str) -> str:
        cursor: BaseException | None = exc
        for _ in range(10):
            if cursor is None:
                break
            if isinstance(cursor, HostRefused):
                return f"server {self.name!r}: {self.where()} {cursor}"
            cursor = cursor.__cause__ or cursor.__context__
        tls = tls_failure(exc)
        if tls:
            return f"server {self.name!r}: TLS with {self.where()} failed: {tls}"
        if isinstance(exc, httpx2.ConnectError):
            return f"server {self.name!r} is unreachable at {self.where()}: {describe_failure(exc)}"
        return f"server {self.name!r}: {what} failed: {describe_failure(exc)}"

    def session_ended(self, session: Any) -> None:
        """Nothing is kept per session."""

    def statistics(self) -> BackendStatistics:
        ready = self.state == "ready"
        return BackendStatistics(name=self.name, kind="http", lifecycle=self.lifecycle, state=self.state,
                                 healthy=ready, restarts=self.restarts, last_error=self.last_error,
                                 instances={"ready": 1} if ready else {}, pool_available=0,
                                 inflight=self._inflight)


async def _read(response: httpx2.Response, limit: int, *, cut: bool) -> tuple[bytes, bool]:
    """The body, read incrementally up to ``limit`` bytes: (body, whether there was more)."""
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit and not cut:
        return b"", True  # refused before reading any of it
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks)[:limit], True
    return b"".join(chunks), False


def _members(params: Raw | dict[str, Raw] | UnsetType) -> dict[str, Raw]:
    if isinstance(params, dict):
        return params
    if isinstance(params, UnsetType):
        return {}
    try:
        return _members_decoder.decode(params)
    except jsonrpc.DECODE_FAILURES:
        return {}


def _raw(result: dict[str, Any]) -> Raw:
    return Raw(_encoder.encode(result))


def rest_backend(name: str, server: ServerConfig, config: GatewayConfig, *, on_change: Any = None) -> RestBackend:
    """The backend of a configured ``http:`` server (its header secrets resolved now, held in memory)."""
    from ..config.rest import resolve_header

    api = server.http
    assert api is not None
    headers = {k: resolve_header(v, where=f"servers.{name}.http.headers.{k}") for k, v in api.headers.items()}
    for key, value in headers.items():
        if not _HEADER_VALUE.fullmatch(value):  # a secret with a newline would split the request
            from ..config import ConfigError

            raise ConfigError("a secret it names holds characters a header cannot carry (value not shown)",
                              path=f"servers.{name}.http.headers.{key}")
    remote = config.remote
    return RestBackend(name, api, headers=headers, guard=HostGuard.build(remote.allow_hosts, remote.allow_link_local),
                       on_change=on_change)

