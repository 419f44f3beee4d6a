"""The settings of an ``http:`` server: a REST API whose operations are served as MCP tools.

Types only (frozen Structs, read by the walker like the rest of the config), plus the one rule
that belongs to their values: how a header value's secret references are written and resolved.
The rules across keys live in :mod:`.validate`; turning these settings into tool definitions in
:mod:`gateway.upstream.openapi`.

Secret references in ``http.headers`` values: ``${env:NAME}`` (an environment variable),
``${file:/abs/path}`` (a file's content, its trailing newline dropped) and ``${secret:NAME}``
(the same as ``${env:NAME}``: the gateway's secrets come from its environment). ``$${`` writes a
literal ``${``. They are resolved when the server starts (a reload resolves them again), held in
memory, and never logged, printed by ``check`` or echoed in an error.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Final

import msgspec

from .errors import what
from .secrets import resolve_secret
from .units import MiB, PositiveDuration, Size, Unit


def _json_value(v: object, depth: int = 0) -> Any:
    """Any JSON value as YAML or JSON wrote it (the walker's types refuse booleans where a
    schema needs them: ``additionalProperties: false``)."""
    if depth > 64:
        raise ValueError("nested more than 64 levels deep")
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError("a number must be finite")
        return v
    if isinstance(v, list):
        return [_json_value(item, depth + 1) for item in v]
    if isinstance(v, dict):
        out = {}
        for key, item in v.items():
            if not isinstance(key, str):
                raise ValueError(f"keys must be strings, got {what(key)}")
            out[key] = _json_value(item, depth + 1)
        return out
    raise ValueError(f"expected a JSON value, got {what(v)}")  # e.g. a YAML date


def _json_object(v: object) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ValueError(f"expected a mapping (a JSON Schema), got {what(v)}")
    out: dict[str, Any] = _json_value(v)
    return out


JSON_VALUE: Final = Unit(_json_value, str, "a JSON value")
JSON_OBJECT: Final = Unit(_json_object, str, "a mapping")
JsonValue = Annotated[Any, JSON_VALUE]
JsonSchema = Annotated[dict[str, Any], JSON_OBJECT]


class RestTool(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """One tool written by hand (or overriding an OpenAPI operation of the same name).

    Templates: ``{arg}`` is the value of argument ``arg``; a query or header value that is just
    ``{arg}`` is left out when the argument is. Path values are percent-escaped whole (``/`` and
    ``..`` included), so an argument cannot reach another path.
    """

    name: str
    method: str = "GET"
    path: str  # /forecast/{city}
    description: str = ""
    # The tool's inputSchema (an object schema); None: one required string per path placeholder
    # and one optional string per other placeholder.
    input: JsonSchema | None = None
    query: dict[str, str] = {}  # name -> template
    headers: dict[str, str] = {}  # name -> template
    # The JSON body: a JSON value whose strings are templates (a string that is just "{arg}" becomes
    # the argument's value, of any type). None: POST, PUT and PATCH send the arguments that no
    # template uses as a JSON object; other methods send them as query parameters.
    body: JsonValue = None
    # The response's JSON Schema: results then carry structuredContent (a schema that is not an
    # object schema is wrapped: {"result": <the response>}).
    output: JsonSchema | None = None


class RestApi(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """A REST API served as tools: from its OpenAPI document, by hand, or both."""

    base_url: str  # where requests go (http or https); the document's servers[0] path is added when it has none
    headers: dict[str, str] = {}  # sent with every request; values may hold ${env:NAME}, ${file:/path}, ${secret:NAME}
    openapi: str | None = None  # an OpenAPI 3.0 or 3.1 document (YAML or JSON), relative to the working directory
    operations: list[str] | None = None  # the operations to serve (operationIds or tool names); None: every one
    tools: list[RestTool] = []
    timeout: PositiveDuration = 30.0  # one call: connect, send, the whole response
    max_response: Size = 4 * MiB  # a larger response is refused (error responses are cut instead)
    ca_file: str | None = None  # a PEM CA bundle trusted besides the system's (TLS is always verified)


#: ``${scheme:target}`` in a header value; ``$${`` is a literal ``${``.
SECRET_TEMPLATE: Final = re.compile(r"\$\$\{|\$\{([a-z]+):([^}]*)\}")
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def template_problem(value: str) -> str | None:
    """What is wrong with the secret references of a header value (None: nothing). Never the value."""
    for m in SECRET_TEMPLATE.finditer(value):
        if m[0] == "$${":
            continue
        scheme, target = m[1], m[2]
        if scheme in ("env", "secret") and not _ENV_NAME.fullmatch(target):
            return f"${{{scheme}:...}} needs an environment variable name"
        if scheme == "file" and not target.startswith("/"):
            return "${file:...} needs an absolute path"
        if scheme not in ("env", "secret", "file"):
            return "a secret reference is ${env:NAME}, ${file:/absolute/path} or ${secret:NAME}"
    rest = SECRET_TEMPLATE.sub("", value)
    if "${" in rest:
        return "an unclosed or unknown ${...} (write ${env:NAME}, ${file:/absolute/path} or ${secret:NAME}, " \
               "or $${ for a literal ${)"
    return None


def secret_refs(value: str) -> list[str]:
    """The secret references (``env:NAME``, ``file:/path``) a header value holds."""
    return [f"{'env' if m[1] == 'secret' else m[1]}:{m[2]}"
            for m in SECRET_TEMPLATE.finditer(value) if m[0] != "$${"]


def resolve_header(value: str, *, where: str) -> str:
    """A header value with its secret references replaced by the secrets (SecretError naming
    ``where`` when one cannot be read; the message never holds a value)."""

    def one(m: re.Match[str]) -> str:
        if m[0] == "$${":
            return "${"
        ref = f"{'env' if m[1] == 'secret' else m[1]}:{m[2]}"
        return resolve_secret(ref, where=where)

    return SECRET_TEMPLATE.sub(one, value)
