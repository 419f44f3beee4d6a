"""What each upstream server offers, and the union a route presents to clients.

Pure data: a :class:`ServerCatalog` is filled from the upstream's list results;
:func:`aggregate` builds a :class:`RouteCatalog`. Entries are kept as
``dict[str, Raw]`` so every field we do not rewrite (schemas, annotations,
icons, extensions we do not know yet) passes through byte for byte.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

import msgspec
from msgspec import Raw

from ..logsafe import clean
from .jsonrpc import DECODE_FAILURES
from .naming import public_name

log = logging.getLogger("mcp_gateway.catalog")

Entry = dict[str, Raw]


class _ListPage(msgspec.Struct, rename="camel"):
    tools: list[Entry] | None = None
    prompts: list[Entry] | None = None
    resources: list[Entry] | None = None
    resource_templates: list[Entry] | None = None
    next_cursor: str | None = None


_page_decoder = msgspec.json.Decoder(_ListPage)
_str_decoder = msgspec.json.Decoder(str)


def decode_list_page(result: Raw | bytes) -> tuple[list[Entry], str | None]:
    """Entries and next cursor of one upstream ``*/list`` result."""
    page = _page_decoder.decode(result)
    entries = page.tools or page.prompts or page.resources or page.resource_templates or []
    return entries, page.next_cursor


def entry_str(entry: Entry, key: str) -> str | None:
    value = entry.get(key)
    if value is None:
        return None
    try:
        return _str_decoder.decode(value)
    except DECODE_FAILURES:
        return None


@dataclass
class ServerCatalog:
    """One upstream server's initialize result and lists."""

    capabilities: dict[str, Any] = field(default_factory=dict)
    server_info: dict[str, Any] = field(default_factory=dict)
    instructions: str | None = None
    tools: list[Entry] = field(default_factory=list)
    prompts: list[Entry] = field(default_factory=list)
    resources: list[Entry] = field(default_factory=list)
    resource_templates: list[Entry] = field(default_factory=list)


@dataclass
class RouteCatalog:
    """The aggregate a route's clients see. ``version`` changes whenever the content does."""

    version: int
    tools: list[Entry]
    tool_index: dict[str, tuple[str, str]]  # public name -> (server, upstream name)
    prompts: list[Entry]
    prompt_index: dict[str, tuple[str, str]]
    resources: list[Entry]
    resource_index: dict[str, str]  # uri -> server
    resource_templates: list[Entry]
    template_matchers: list[tuple[re.Pattern[str], str]]  # uri pattern -> server
    capabilities: dict[str, Any]
    renamed: dict[str, str]  # public name -> "server<sep>original" for names that did not fit
    collisions: list[str] = field(default_factory=list)  # names refused because an earlier server has them
    # public tool name -> its x-mcp-header annotations (2026-07-28 Mcp-Param-* headers); only tools that have some
    param_headers: dict[str, Any] = field(default_factory=dict)

    def server_for_uri(self, uri: str) -> str | None:
        server = self.resource_index.get(uri)
        if server is not None:
            return server
        for pattern, name in self.template_matchers:
            if pattern.fullmatch(uri):
                return name
        return None


def _namespaced(server: str, prefix: str | None, sep: str, entries: list[Entry],
                index: dict[str, tuple[str, str]], renamed: dict[str, str], collisions: list[str],
                kind: str) -> list[Entry]:
    out: list[Entry] = []
    for entry in entries:
        original = entry_str(entry, "name")
        if original is None:
            log.warning("server %s: skipping a %s without a string name", server, kind)
            continue
        public = public_name(prefix, sep, original)
        if public in index:
            # Never a silent shadowing: the first server in route order keeps the name, the later
            # one's entry is refused, logged, and listed (check, /healthz).
            first = index[public][0]
            collisions.append(f"{kind} {public!r} of server {server!r} refused: server {first!r} has it")
            log.warning("server %s: %s %r collides with server %s's; refused", server, kind,
                        clean(public, 100), first)
            continue
        wanted = original if prefix is None else f"{prefix}{sep}{original}"
        if public != wanted:
            renamed[public] = f"{server}{sep}{original}"
            log.warning("server %s: %s name %r does not fit ^[a-zA-Z0-9_-]{{1,64}}$; exposed as %r",
                        server, kind, clean(wanted, 200), public)
        index[public] = (server, original)
        renamed_entry = dict(entry)
        renamed_entry["name"] = Raw(msgspec.json.encode(public))
        out.append(renamed_entry)
    return out


def template_regex(template: str) -> re.Pattern[str]:
    """A matcher for an RFC 6570 URI template (level 1-2 expressions match any run of chars)."""
    parts = re.split(r"(\{[^}]*\})", template)
    pattern = "".join(
        (".+" if part[1:2] in ("+", "#") else "[^/?#]+") if part.startswith("{") else re.escape(part)
        for part in parts
    )
    return re.compile(pattern)


def aggregate(servers: list[tuple[str, ServerCatalog]], sep: str, version: int,
              prefixes: dict[str, str | None] | None = None) -> RouteCatalog:
    """The union of ``servers`` (in route order) as one catalog; ``prefixes`` maps a server to its
    name prefix (None: unprefixed), the server's name when absent."""
    tools: list[Entry] = []
    prompts: list[Entry] = []
    resources: list[Entry] = []
    templates: list[Entry] = []
    tool_index: dict[str, tuple[str, str]] = {}
    prompt_index: dict[str, tuple[str, str]] = {}
    resource_index: dict[str, str] = {}
    matchers: list[tuple[re.Pattern[str], str]] = []
    renamed: dict[str, str] = {}
    collisions: list[str] = []
    caps: dict[str, Any] = {}
    for name, cat in servers:
        prefix = prefixes.get(name, name) if prefixes is not None else name
        tools += _namespaced(name, prefix, sep, cat.tools, tool_index, renamed, collisions, "tool")
        prompts += _namespaced(name, prefix, sep, cat.prompts, prompt_index, renamed, collisions, "prompt")
        for entry in cat.resources:
            uri = entry_str(entry, "uri")
            if uri is None:
                continue
            if uri in resource_index:
                collisions.append(f"resource {uri!r} of server {name!r} refused: server "
                                  f"{resource_index[uri]!r} has it")
                log.warning("resource %s is offered by %s and %s; routing to %s",
                            clean(uri, 200), resource_index[uri], name, resource_index[uri])
                continue
            resource_index[uri] = name
            resources.append(entry)
        for entry in cat.resource_templates:
            uri_template = entry_str(entry, "uriTemplate")
            if uri_template is None:
                continue
            matchers.append((template_regex(uri_template), name))
            templates.append(entry)
        up = cat.capabilities
        # The aggregate can change whenever an upstream restarts or changes, so we
        # always announce listChanged for what we offer.
        if "tools" in up:
            caps["tools"] = {"listChanged": True}
        if "prompts" in up:
            caps["prompts"] = {"listChanged": True}
        if "resources" in up:
            res = caps.setdefault("resources", {"listChanged": True})
            if isinstance(up["resources"], dict) and up["resources"].get("subscribe"):
                res["subscribe"] = True
        if "completions" in up:
            caps["completions"] = {}
    caps["logging"] = {}
    return RouteCatalog(
        version=version, tools=tools, tool_index=tool_index, prompts=prompts, prompt_index=prompt_index,
        resources=resources, resource_index=resource_index, resource_templates=templates,
        template_matchers=matchers, capabilities=caps, renamed=renamed, collisions=collisions,
        param_headers=_param_headers(tools),
    )


def _param_headers(tools: list[Entry]) -> dict[str, Any]:
    """The tools whose schema annotates arguments as headers (a substring test before any decode)."""
    from .modern import param_header_map

    out: dict[str, Any] = {}
    for entry in tools:
        schema = entry.get("inputSchema")
        if schema is None or b"x-mcp-header" not in bytes(memoryview(schema)):
            continue
        try:
            annotations = param_header_map(msgspec.json.decode(schema))
        except DECODE_FAILURES:
            continue
        name = entry_str(entry, "name")
        if annotations and name is not None:
            out[name] = annotations
    return out
