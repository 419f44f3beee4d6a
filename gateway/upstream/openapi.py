"""REST operations as MCP tool definitions: from an OpenAPI 3.0 or 3.1 document, or written by hand.

Pure: no trio, and no I/O apart from :func:`read_document` (the config's validator and the
backend read the file with it, the backend in a thread).

From a document, one tool per operation:

- **name**: the ``operationId`` with every character outside ``a-z A-Z 0-9 _ -`` made ``_``; an
  operation without one is named from its method and path (``GET /pets/{petId}`` ->
  ``get_pets_petId``). Longer than 64: cut to 57, plus ``_`` and 6 hex digits of a hash of the
  whole name. A name taken by an earlier operation gets ``_2``, ``_3``...
- **title and description**: the ``summary``, and the summary followed by the ``description``.
- **inputSchema**: an object with one property per path, query, header and cookie parameter
  (path-level parameters included; the operation's win) with its schema, description and
  ``required``; a JSON request body is the property ``body`` (the body's schema, required when the
  body is). Property names that do not fit ``^[a-zA-Z0-9_.-]{1,64}$`` (some clients refuse them)
  are made to fit; a name taken by another parameter becomes ``<in>_<name>``.
- **outputSchema**: the JSON schema of the lowest 2xx response, when every 2xx response the
  operation declares is JSON. MCP needs an object schema there: any other schema (an array of
  pets) is wrapped, ``{"result": <schema>}``, and results are wrapped the same way.
- **annotations**: GET, HEAD and OPTIONS are ``readOnlyHint``; PUT and DELETE ``idempotentHint``.

``$ref`` is resolved within the document (JSON pointers; ``#/components/...`` and any other): a
reference out of the document is an error. Schemas are inlined; a schema that refers to itself
(a tree) keeps the recursion as ``#/$defs/<name>`` in the tool's own ``$defs``, so every tool's
schema stands alone. OpenAPI 3.0's schema dialect becomes JSON Schema 2020-12 (what clients
validate with): ``nullable`` becomes a ``"null"`` type, boolean ``exclusiveMinimum``/
``exclusiveMaximum`` the numeric form. Operations whose required body is not JSON are skipped
(listed in ``notes``). Bounded: a document is at most 16 MiB, a tool's schemas at most 50,000 nodes
after inlining, nesting 128 levels, 1000 tools.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import unquote, urlsplit

import yaml

if TYPE_CHECKING:
    from ..config.rest import RestApi, RestTool

MAX_DOCUMENT: Final = 16 * 1024 * 1024
MAX_NODES: Final = 50_000  # one tool's schemas, after inlining
MAX_DEPTH: Final = 128
MAX_TOOLS: Final = 1000
METHODS: Final = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
HAND_METHODS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
_TOOL_NAME: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_PROPERTY: Final = re.compile(r"[a-zA-Z0-9_.-]{1,64}")
PLACEHOLDER: Final = re.compile(r"\{([^{}]*)\}")
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header (or cookie) name
# Headers an OpenAPI parameter may not define (the spec says they are ignored), or that the
# gateway sets itself.
_IGNORED_HEADERS: Final = frozenset({"accept", "content-type", "authorization", "content-length", "host",
                                     "transfer-encoding", "connection"})
# Keywords whose value is a schema, a list of schemas, or a mapping of name -> schema.
_ONE: Final = ("items", "additionalProperties", "not", "contains", "if", "then", "else", "propertyNames",
               "unevaluatedItems", "unevaluatedProperties", "additionalItems", "contentSchema")
_MANY: Final = ("allOf", "anyOf", "oneOf", "prefixItems")
_NAMED: Final = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


class SpecError(ValueError):
    """A document or a tool that cannot be served: ``key`` is where under ``http`` (``openapi``,
    ``tools[0].query.days``), the message says what is wrong (and where in the document)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key, self.message = key, message


@dataclass(frozen=True, slots=True)
class Param:
    """One value of a request taken from the arguments: ``template`` is ``{arg}`` (the value, of
    any type, serialized by ``style``) or text with placeholders (each value as text)."""

    where: Literal["path", "query", "header", "cookie"]
    name: str  # on the wire
    template: str
    style: str = "simple"  # simple, form, deepObject, spaceDelimited, pipeDelimited
    explode: bool = False
    as_json: bool = False  # a parameter described by ``content``: its value is sent as JSON text


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One tool: its MCP definition and how a call becomes an HTTP request."""

    name: str
    method: str  # upper case
    path: str  # with {placeholders}: the wire names of path params
    definition: dict[str, Any]  # the MCP Tool (name, description, inputSchema, outputSchema, ...)
    params: tuple[Param, ...]
    required: tuple[str, ...]  # arguments that must be present
    body: Literal["none", "arg", "template", "rest"] = "none"
    body_arg: str | None = None  # body == "arg": the argument that is the body
    body_template: Any = None  # body == "template"
    rest_to_query: bool = False  # arguments no template uses go to the query string
    structured: Literal["none", "direct", "wrapped"] = "none"  # structuredContent of a 2xx JSON response
    operation_id: str | None = None

    @property
    def declared(self) -> frozenset[str]:
        """The arguments the inputSchema declares (only those are ever sent)."""
        properties = self.definition.get("inputSchema", {}).get("properties", {})
        return frozenset(properties) if isinstance(properties, dict) else frozenset()

    @property
    def used(self) -> frozenset[str]:
        """The arguments some template names."""
        names = {m for p in self.params for m in PLACEHOLDER.findall(p.template)}
        if self.body_arg is not None:
            names.add(self.body_arg)
        names.update(template_names(self.body_template))
        return frozenset(names)


@dataclass(frozen=True, slots=True)
class ApiTools:
    """What an ``http:`` server serves: its tools, the base path its document names, and what was skipped."""

    tools: list[ToolSpec]
    base_path: str = ""
    title: str | None = None
    version: str | None = None
    notes: list[str] = field(default_factory=list)


# -- reading ---------------------------------------------------------------------------------------


def read_document(path: str) -> dict[str, Any]:
    """An OpenAPI document from a file: JSON when it ends in ``.json``, else YAML (JSON is YAML)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_DOCUMENT + 1)
    except OSError as e:
        raise SpecError("openapi", f"cannot read {path}: {e.strerror or e}") from None
    if len(data) > MAX_DOCUMENT:
        raise SpecError("openapi", f"{path} is larger than {MAX_DOCUMENT // (1024 * 1024)} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError("openapi", f"{path} is not UTF-8 text (byte {e.start})") from None
    try:
        if path.lower().endswith(".json"):
            doc = json.loads(text)
        else:
            doc = yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise SpecError("openapi", f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError("openapi", f"{path}: invalid YAML{where}: {e.problem or e.context}") from None
    except (yaml.YAMLError, RecursionError) as e:
        raise SpecError("openapi", f"{path}: invalid YAML: {' '.join(str(e).split())[:200]}") from None
    if not isinstance(doc, dict):
        raise SpecError("openapi", f"{path}: not an OpenAPI document (expected a mapping at the top)")
    return doc


def load(api: RestApi) -> ApiTools:
    """The tools of an ``http:`` server: its document's (read now) and its hand-written ones."""
    document = read_document(api.openapi) if api.openapi is not None else None
    return api_tools(api, document)


def api_tools(api: RestApi, document: dict[str, Any] | None) -> ApiTools:
    """The tools of an ``http:`` server, given its document: those of the document (only
    ``operations`` when listed), then the hand-written ones (replacing one of the same name)."""
    found = from_document(document) if document is not None else ApiTools(tools=[])
    tools = found.tools
    if api.operations is not None:
        known = {t.operation_id for t in tools} | {t.name for t in tools}
        for i, wanted in enumerate(api.operations):
            if wanted not in known:
                raise SpecError(f"operations[{i}]", f"no operation {wanted!r} in the document"
                                + (f" (known: {_some(sorted(t.operation_id or t.name for t in tools))})"
                                   if tools else ""))
        chosen = set(api.operations)
        tools = [t for t in tools if t.operation_id in chosen or t.name in chosen]
    by_name = {t.name: t for t in tools}
    seen: set[str] = set()
    for i, tool in enumerate(api.tools):
        if tool.name in seen:
            raise SpecError(f"tools[{i}].name", f"tool {tool.name!r} is defined twice")
        seen.add(tool.name)
        by_name[tool.name] = manual_tool(tool, f"tools[{i}]")
    if len(by_name) > MAX_TOOLS:
        raise SpecError("openapi" if api.openapi else "tools", f"more than {MAX_TOOLS} tools "
                        "(list the ones to serve under operations)")
    return ApiTools(tools=list(by_name.values()), base_path=found.base_path, title=found.title,
                    version=found.version, notes=found.notes)


def _some(names: list[str], limit: int = 10) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


# -- the document ----------------------------------------------------------------------------------


def from_document(doc: dict[str, Any]) -> ApiTools:
    """One tool per operation of an OpenAPI 3.0/3.1 document (SpecError naming where it is wrong)."""
    version = doc.get("openapi")
    if version is None and "swagger" in doc:
        raise SpecError("openapi", "Swagger 2.0 is not supported: convert it to OpenAPI 3 "
                                   "(e.g. with swagger2openapi)")
    if not isinstance(version, str) or not re.match(r"3\.[0-9]+(\.|$)", version):
        raise SpecError("openapi", f"not an OpenAPI 3 document (openapi: {_show(version)}; 3.0 and 3.1 are read)")
    dialect = "3.0" if version.startswith("3.0") else "3.1"
    info = _mapping(doc.get("info"))
    paths = doc.get("paths", {})
    if paths is None:
        paths = {}
    if not isinstance(paths, dict):
        raise SpecError("openapi", "paths: expected a mapping")
    tools: list[ToolSpec] = []
    notes: list[str] = []
    taken: set[str] = set()
    for path, item in paths.items():
        where = f"paths.{path}"
        if not isinstance(path, str) or not path.startswith("/"):
            raise SpecError("openapi", f"{where}: a path must start with '/'")
        item = _deref(doc, item, where)
        if not isinstance(item, dict):
            raise SpecError("openapi", f"{where}: expected a mapping")
        shared = _list(item.get("parameters"), f"{where}.parameters")
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            if not isinstance(op, dict):
                raise SpecError("openapi", f"{where}.{method}: expected a mapping")
            spec = _operation(doc, dialect, path, method, op, shared, f"{where}.{method}", taken, notes)
            if spec is not None:
                taken.add(spec.name)
                tools.append(spec)
                if len(tools) > MAX_TOOLS:
                    raise SpecError("openapi", f"more than {MAX_TOOLS} operations (list the ones to serve "
                                               "under operations)")
    return ApiTools(tools=tools, base_path=_base_path(doc), title=_text(info.get("title")),
                    version=_text(info.get("version")), notes=notes)


def _operation(doc: dict[str, Any], dialect: str, path: str, method: str, op: dict[str, Any],
               shared: list[Any], where: str, taken: set[str], notes: list[str]) -> ToolSpec | None:
    op_id = op.get("operationId")
    if op_id is not None and not isinstance(op_id, str):
        raise SpecError("openapi", f"{where}.operationId: expected a string")
    name = _unique(tool_name(op_id) if op_id else generated_name(method, path), taken)
    resolver = _Resolver(doc, dialect, where)
    params: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}
    for i, raw in enumerate(shared):
        p = _parameter(doc, raw, f"{where.rsplit('.', 1)[0]}.parameters[{i}]")
        params[(p["in"], p["name"])] = (p, f"{where.rsplit('.', 1)[0]}.parameters[{i}]")
    for i, raw in enumerate(_list(op.get("parameters"), f"{where}.parameters")):
        p = _parameter(doc, raw, f"{where}.parameters[{i}]")
        params[(p["in"], p["name"])] = (p, f"{where}.parameters[{i}]")
    properties: dict[str, Any] = {}
    required: list[str] = []
    out: list[Param] = []
    body_schema: Any = None
    body_required = False
    body = op.get("requestBody")
    if body is not None:
        body = _deref(doc, body, f"{where}.requestBody")
        if not isinstance(body, dict):
            raise SpecError("openapi", f"{where}.requestBody: expected a mapping")
        content = _mapping(body.get("content"))
        media = _json_media(content)
        if media is None:
            if body.get("required"):
                kinds = ", ".join(str(k) for k in content) or "no content"
                notes.append(f"{method.upper()} {path} skipped: its request body is not JSON ({kinds})")
                return None
        else:
            entry = _deref(doc, content[media], f"{where}.requestBody.content.{media}")
            schema = entry.get("schema", {}) if isinstance(entry, dict) else {}
            body_schema = resolver.schema(schema, f"{where}.requestBody.content.{media}.schema")
            if isinstance(body.get("description"), str) and isinstance(body_schema, dict):
                body_schema.setdefault("description", body["description"])
            body_required = bool(body.get("required"))
    names: set[str] = {"body"} if body_schema is not None else set()
    placeholders = PLACEHOLDER.findall(path)
    for (kind, wire), (p, at) in params.items():
        if kind == "header" and wire.lower() in _IGNORED_HEADERS:
            continue
        prop = _property_name(wire, kind, names)
        names.add(prop)
        schema, as_json = _parameter_schema(resolver, p, at)
        if isinstance(p.get("description"), str) and isinstance(schema, dict):
            schema.setdefault("description", p["description"])
        properties[prop] = schema
        if kind == "path" or p.get("required"):
            required.append(prop)
        default_style = {"query": "form", "cookie": "form"}.get(kind, "simple")
        style = p.get("style") if isinstance(p.get("style"), str) else default_style
        explode = p.get("explode") if isinstance(p.get("explode"), bool) else style == "form"
        out.append(Param(kind, wire, "{" + prop + "}", style, explode, as_json))  # type: ignore[arg-type]
    for placeholder in placeholders:  # a path template the parameters forgot: a required string
        if ("path", placeholder) not in params:
            prop = _property_name(placeholder, "path", names)
            names.add(prop)
            properties[prop] = {"type": "string"}
            required.append(prop)
            out.append(Param("path", placeholder, "{" + prop + "}"))
    if body_schema is not None:
        properties["body"] = body_schema
        if body_required:
            required.append("body")
    input_schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        input_schema["required"] = required
    output, structured = _output(resolver, op, where)
    if resolver.defs:
        input_schema["$defs"] = dict(resolver.defs)
        if output is not None:
            output["$defs"] = dict(resolver.defs)
    summary, description = _text(op.get("summary")), _text(op.get("description"))
    definition: dict[str, Any] = {"name": name}
    if summary:
        definition["title"] = summary[:200]
    text = "\n\n".join(t for t in (summary, description) if t and t.strip())
    if text:
        definition["description"] = text[:8000]
    definition["inputSchema"] = input_schema
    if output is not None:
        definition["outputSchema"] = output
    hints = _hints(method.upper())
    if hints:
        definition["annotations"] = hints
    return ToolSpec(name=name, method=method.upper(), path=path, definition=definition, params=tuple(out),
                    required=tuple(required), body="arg" if body_schema is not None else "none",
                    body_arg="body" if body_schema is not None else None, structured=structured,
                    operation_id=op_id)


def _hints(method: str) -> dict[str, Any]:
    if method in ("GET", "HEAD", "OPTIONS"):
        return {"readOnlyHint": True}
    if method in ("PUT", "DELETE"):
        return {"idempotentHint": True}
    return {}


def _parameter(doc: dict[str, Any], raw: Any, where: str) -> dict[str, Any]:
    p = _deref(doc, raw, where)
    if not isinstance(p, dict):
        raise SpecError("openapi", f"{where}: expected a mapping")
    if not isinstance(p.get("name"), str) or not p["name"]:
        raise SpecError("openapi", f"{where}.name: expected a string")
    if p.get("in") not in ("path", "query", "header", "cookie"):
        raise SpecError("openapi", f"{where}.in: expected path, query, header or cookie, got {_show(p.get('in'))}")
    if p["in"] in ("header", "cookie") and not _TOKEN.fullmatch(p["name"]):
        raise SpecError("openapi", f"{where}.name: {_show(p['name'])} is not a valid {p['in']} name")
    return p


def _parameter_schema(resolver: _Resolver, p: dict[str, Any], where: str) -> tuple[Any, bool]:
    """A parameter's schema, and whether it is described by ``content`` (sent as JSON text)."""
    if "schema" in p:
        return resolver.schema(p["schema"], f"{where}.schema"), False
    content = p.get("content")
    if isinstance(content, dict) and content:
        media = next(iter(content))
        entry = content[media] if isinstance(content[media], dict) else {}
        return resolver.schema(entry.get("schema", {}), f"{where}.content.{media}.schema"), True
    return {"type": "string"}, False


def _output(resolver: _Resolver, op: dict[str, Any], where: str) -> tuple[dict[str, Any] | None, Literal[
        "none", "direct", "wrapped"]]:
    responses = op.get("responses")
    if not isinstance(responses, dict):
        return None, "none"
    success: list[tuple[str, Any]] = []
    for code, response in responses.items():
        key = str(code)
        if re.fullmatch(r"2[0-9][0-9]|2XX", key):
            success.append((key, response))
    if not success:
        return None, "none"
    schemas = []
    for code, response in sorted(success, key=lambda kv: kv[0]):
        response = _deref(resolver.doc, response, f"{where}.responses.{code}")
        content = response.get("content") if isinstance(response, dict) else None
        media = _json_media(content) if isinstance(content, dict) else None
        if media is None or not isinstance(content, dict) or not isinstance(content[media], dict) \
                or "schema" not in content[media]:
            return None, "none"  # a 2xx without a JSON schema: results cannot all be structured
        schemas.append((code, media, content[media]["schema"]))
    code, media, raw = schemas[0]
    schema = resolver.schema(raw, f"{where}.responses.{code}.content.{media}.schema")
    return structured_schema(schema)


def structured_schema(schema: Any) -> tuple[dict[str, Any], Literal["direct", "wrapped"]]:
    """An outputSchema for a response schema: itself when it is an object schema, else wrapped."""
    if isinstance(schema, dict) and (schema.get("type") == "object" or schema.get("type") == ["object"]) \
            and not any(k in schema for k in ("anyOf", "oneOf", "$ref")):
        return schema, "direct"
    return {"type": "object", "properties": {"result": schema}, "required": ["result"]}, "wrapped"


def _json_media(content: dict[str, Any]) -> str | None:
    """The JSON media type of a content map (application/json first, then any +json)."""
    for media in content:
        if isinstance(media, str) and media.split(";", 1)[0].strip().lower() == "application/json":
            return media
    for media in content:
        if isinstance(media, str) and media.split(";", 1)[0].strip().lower().endswith("+json"):
            return media
    return None


def _base_path(doc: dict[str, Any]) -> str:
    """The path of ``servers[0].url`` (its variables at their defaults), or ''."""
    servers = doc.get("servers")
    if not isinstance(servers, list) or not servers or not isinstance(servers[0], dict):
        return ""
    url = servers[0].get("url")
    if not isinstance(url, str):
        return ""
    variables = _mapping(servers[0].get("variables"))

    def default(m: re.Match[str]) -> str:
        var = variables.get(m[1])
        return str(var.get("default", "")) if isinstance(var, dict) else ""

    url = PLACEHOLDER.sub(default, url)
    try:
        path = urlsplit(url).path
    except ValueError:
        return ""
    return path.rstrip("/")


# -- $ref and schemas ------------------------------------------------------------------------------


def _pointer(doc: dict[str, Any], ref: str, where: str) -> Any:
    if not ref.startswith("#"):
        raise SpecError("openapi", f"{where}: $ref {_show(ref)} points outside the document (only references "
                                   "within it, such as #/components/schemas/Pet, are read)")
    node: Any = doc
    pointer = unquote(ref[1:])
    if pointer and not pointer.startswith("/"):
        raise SpecError("openapi", f"{where}: $ref {_show(ref)} is not a JSON pointer (#/...)")
    for part in pointer.split("/")[1:] if pointer else []:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict):
            key: Any = part
            if key not in node and part.isdigit() and int(part) in node:
                key = int(part)  # YAML reads response codes (200:) as integers
            if key not in node:
                raise SpecError("openapi", f"{where}: $ref {_show(ref)} does not resolve (no {part!r})")
            node = node[key]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise SpecError("openapi", f"{where}: $ref {_show(ref)} does not resolve")
    return node


def _deref(doc: dict[str, Any], node: Any, where: str) -> Any:
    """A parameter, body, response or path item behind its ``$ref`` chain (a loop is an error)."""
    seen: list[str] = []
    while isinstance(node, dict) and isinstance(node.get("$ref"), str):
        ref = node["$ref"]
        if ref in seen:
            raise SpecError("openapi", f"{where}: $ref {_show(ref)} refers to itself (a cycle: {' -> '.join(seen)})")
        seen.append(ref)
        node = _pointer(doc, ref, where)
    return node


class _Resolver:
    """Copies schemas with their references inlined (recursive ones kept as ``#/$defs/..``),
    in JSON Schema 2020-12 form; bounded in nodes and depth. One per tool."""

    def __init__(self, doc: dict[str, Any], dialect: str, where: str) -> None:
        self.doc, self.dialect, self.where = doc, dialect, where
        self.defs: dict[str, Any] = {}
        self._def_names: dict[str, str] = {}  # ref -> its name in $defs
        self._nodes = 0

    def schema(self, node: Any, where: str) -> Any:
        return self._schema(node, where, (), 0)

    def _count(self, where: str, depth: int) -> None:
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise SpecError("openapi", f"{self.where}: its schemas are larger than {MAX_NODES} nodes once "
                                       "their $refs are inlined")
        if depth > MAX_DEPTH:
            raise SpecError("openapi", f"{where}: nested more than {MAX_DEPTH} levels deep")

    def _schema(self, node: Any, where: str, stack: tuple[str, ...], depth: int) -> Any:
        self._count(where, depth)
        if isinstance(node, bool):
            return node
        if not isinstance(node, dict):
            raise SpecError("openapi", f"{where}: a schema must be a mapping, got {_what(node)}")
        ref = node.get("$ref")
        if isinstance(ref, str):
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            if ref in stack:  # recursion: keep it a reference into the tool's own $defs
                target = {"$ref": f"#/$defs/{self._define(ref, where, depth)}"}
            else:
                target = self._schema(_pointer(self.doc, ref, where), where, (*stack, ref), depth + 1)
                name = self._def_names.get(ref)
                if name is not None and self.defs.get(name) is None:
                    # It turned out recursive while being inlined: its definition is a copy (not the
                    # same object, which may become a schema that holds the $defs).
                    self.defs[name] = copy.deepcopy(target)
            if not siblings or self.dialect == "3.0":  # (3.0 ignores the siblings of a $ref)
                return target
            extra = self._schema(siblings, where, stack, depth + 1)
            if isinstance(target, dict) and "$ref" not in target:
                return {**target, **extra}
            return {"allOf": [target], **extra}
        out: dict[str, Any] = {}
        for key, value in node.items():
            key = str(key)
            if key in _ONE and isinstance(value, dict | bool):
                out[key] = self._schema(value, f"{where}.{key}", stack, depth + 1)
            elif key == "items" and isinstance(value, list):  # draft-04 tuple form
                out["prefixItems"] = [self._schema(v, f"{where}.items[{i}]", stack, depth + 1)
                                      for i, v in enumerate(value)]
            elif key in _MANY and isinstance(value, list):
                out[key] = [self._schema(v, f"{where}.{key}[{i}]", stack, depth + 1) for i, v in enumerate(value)]
            elif key in _NAMED and isinstance(value, dict):
                out[key] = {str(k): self._schema(v, f"{where}.{key}.{k}", stack, depth + 1) for k, v in value.items()}
            else:
                out[key] = self._data(value, f"{where}.{key}", depth + 1)
        return self._dialect(out) if self.dialect == "3.0" else out

    def _define(self, ref: str, where: str, depth: int) -> str:
        """The $defs name of a recursive reference, its definition made once."""
        name = self._def_names.get(ref)
        if name is None:
            base = re.sub(r"[^A-Za-z0-9_.-]", "_", ref.rsplit("/", 1)[-1]) or "schema"
            name, n = base, 2
            while name in self.defs:
                name, n = f"{base}_{n}", n + 1
            self._def_names[ref] = name
            self.defs[name] = None  # being made (the copy in progress fills it)
        return name

    def _data(self, value: Any, where: str, depth: int) -> Any:
        """A plain JSON copy of data (enum, default, examples): bounded, YAML's types made JSON."""
        self._count(where, depth)
        if isinstance(value, dict):
            return {str(k): self._data(v, where, depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [self._data(v, where, depth + 1) for v in value]
        if isinstance(value, datetime.date | datetime.datetime):
            return value.isoformat()
        if value is None or isinstance(value, bool | int | float | str):
            return value
        return str(value)

    @staticmethod
    def _dialect(schema: dict[str, Any]) -> dict[str, Any]:
        """OpenAPI 3.0's schema keywords in their JSON Schema 2020-12 form."""
        for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
            flag = schema.get(exclusive)
            if isinstance(flag, bool):
                del schema[exclusive]
                if flag and bound in schema:
                    schema[exclusive] = schema.pop(bound)
        if schema.pop("nullable", False) is True:
            kind = schema.get("type")
            if isinstance(kind, str):
                schema["type"] = [kind, "null"]
                if isinstance(schema.get("enum"), list) and None not in schema["enum"]:
                    schema["enum"] = [*schema["enum"], None]
            elif kind is None:
                return {"anyOf": [schema, {"type": "null"}]}
        return schema


# -- names -----------------------------------------------------------------------------------------


def tool_name(raw: str) -> str:
    """A name within ``^[a-zA-Z0-9_-]{1,64}$``: other characters become ``_``, a longer one is cut
    to 57 plus ``_`` and 6 hex digits of a hash of the whole."""
    name = re.sub(r"[^a-zA-Z0-9_-]", "_", raw) or "tool"
    if len(name) > 64:
        name = f"{name[:57]}_{hashlib.sha256(raw.encode()).hexdigest()[:6]}"
    return name


def generated_name(method: str, path: str) -> str:
    """``GET /pets/{petId}`` -> ``get_pets_petId``."""
    words = re.sub(r"[^a-zA-Z0-9]+", "_", path.replace("{", "").replace("}", "")).strip("_")
    return tool_name(f"{method.lower()}_{words}" if words else method.lower())


def _unique(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    n = 2
    while True:
        suffix = f"_{n}"
        candidate = name[:64 - len(suffix)] + suffix
        if candidate not in taken:
            return candidate
        n += 1


def _property_name(wire: str, kind: str, taken: Iterable[str]) -> str:
    used = set(taken)
    name = wire if _PROPERTY.fullmatch(wire) else (re.sub(r"[^a-zA-Z0-9_.-]", "_", wire)[:64] or kind)
    if name in used:
        name = f"{kind}_{name}"[:64]
    base, n = name, 2
    while name in used:
        name, n = f"{base[:60]}_{n}", n + 1
    return name


# -- hand-written tools ----------------------------------------------------------------------------


def template_names(value: Any) -> list[str]:
    """The placeholders of a body template (strings anywhere in a JSON value)."""
    if isinstance(value, str):
        return PLACEHOLDER.findall(value)
    if isinstance(value, list):
        return [n for v in value for n in template_names(v)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in template_names(v)]
    return []


def manual_tool(tool: RestTool, key: str) -> ToolSpec:
    """A hand-written tool (SpecError naming ``key``.<its key> when it cannot be served)."""
    if not _TOOL_NAME.fullmatch(tool.name):
        raise SpecError(f"{key}.name", f"invalid tool name {_show(tool.name)} (1-64 of a-z A-Z 0-9 _ -)")
    method = tool.method.upper()
    if method not in HAND_METHODS:
        raise SpecError(f"{key}.method", f"expected one of {', '.join(sorted(HAND_METHODS))}, got {_show(tool.method)}")
    if not tool.path.startswith("/") or any(c in tool.path for c in "?#") or re.search(r"\s", tool.path):
        raise SpecError(f"{key}.path", "a path starts with '/' and has no query (use query:), fragment or space")
    if any(seg in (".", "..") for seg in tool.path.split("/")):
        raise SpecError(f"{key}.path", "'.' and '..' segments are not allowed")
    schema: dict[str, Any]
    if tool.input is None:
        schema = {"type": "object", "properties": {}}
    else:
        schema = dict(tool.input)
        if schema.get("type") != "object" or not isinstance(schema.get("properties", {}), dict):
            raise SpecError(f"{key}.input", "must be an object schema (type: object, with properties)")
    properties: dict[str, Any] = dict(schema.get("properties", {}))
    required_raw = schema.get("required", [])
    if not isinstance(required_raw, list) or not all(isinstance(r, str) for r in required_raw):
        raise SpecError(f"{key}.input.required", "expected a list of property names")
    required = list(required_raw)
    params: list[Param] = []
    templates: list[tuple[str, str, str]] = [(f"{key}.path", "path", tool.path)]
    for name, template in tool.query.items():
        templates.append((f"{key}.query.{name}", "query", template))
    for name, template in tool.headers.items():
        if not _TOKEN.fullmatch(name):
            raise SpecError(f"{key}.headers.{name}", "invalid header name")
        if name.lower() in _IGNORED_HEADERS - {"accept", "content-type", "authorization"}:
            raise SpecError(f"{key}.headers.{name}", "not allowed here: the gateway sets it")
        if re.search(r"[^\x20-\x7e\t]", PLACEHOLDER.sub("", template)):
            raise SpecError(f"{key}.headers.{name}", "invalid header value (printable ASCII only)")
        templates.append((f"{key}.headers.{name}", "header", template))
    body_names = template_names(tool.body)
    for at, where, template in [*templates, *((f"{key}.body", "body", "{" + n + "}") for n in body_names)]:
        for placeholder in PLACEHOLDER.findall(template):
            if tool.input is None:
                if placeholder not in properties:
                    if not re.fullmatch(r"[a-zA-Z0-9_.-]{1,64}", placeholder):
                        raise SpecError(at, f"placeholder {{{placeholder}}}: an argument name is 1-64 of "
                                            "a-z A-Z 0-9 _ . -")
                    properties[placeholder] = {"type": "string"}
                    if where == "path":
                        required.append(placeholder)
            elif placeholder not in properties:
                known = ", ".join(properties) or "none"
                raise SpecError(at, f"{{{placeholder}}} names no input property (known: {known})")
    for placeholder in PLACEHOLDER.findall(tool.path):
        if placeholder not in required:
            required.append(placeholder)  # a path cannot be built without it
        params.append(Param("path", placeholder, "{" + placeholder + "}"))
    for name, template in tool.query.items():
        params.append(Param("query", name, template, "form", True))
    for name, template in tool.headers.items():
        params.append(Param("header", name, template))
    schema["properties"] = properties
    if required:
        schema["required"] = required
    definition: dict[str, Any] = {"name": tool.name}
    if tool.description:
        definition["description"] = tool.description
    definition["inputSchema"] = schema
    structured: Literal["none", "direct", "wrapped"] = "none"
    if tool.output is not None:
        definition["outputSchema"], structured = structured_schema(dict(tool.output))
    hints = _hints(method)
    if hints:
        definition["annotations"] = hints
    if tool.body is not None:
        body: Literal["none", "arg", "template", "rest"] = "template"
    else:
        body = "rest" if method in BODY_METHODS else "none"
    return ToolSpec(name=tool.name, method=method, path=tool.path, definition=definition, params=tuple(params),
                    required=tuple(required), body=body, body_template=tool.body,
                    rest_to_query=tool.body is None and method not in BODY_METHODS, structured=structured)


# -- small things ----------------------------------------------------------------------------------


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpecError("openapi", f"{where}: expected a list")
    return value


def _mapping(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _what(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str | int | float) and len(repr(value)) <= 80 else _what(value)

