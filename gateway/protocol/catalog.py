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
    except msgspec.DecodeError:
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

    def server_for_uri(self, uri: str) -> str | None:
        server = self.resource_index.get(uri)
        if server is not None:
            return server
        for pattern, name in self.template_matchers:
            if pattern.fullmatch(uri):
                return name
        return None


def _namespaced(server: str, sep: str, entries: list[Entry], index: dict[str, tuple[str, str]],
                renamed: dict[str, str], kind: str) -> list[Entry]:
    out: list[Entry] = []
    for entry in entries:
        original = entry_str(entry, "name")
        if original is None:
            log.warning("server %s: skipping a %s without a string name", server, kind)
            continue
        public = public_name(server, sep, original)
        if public in index:
            log.warning("server %s: %s %r collides with %r; skipped", server, kind, public, index[public])
            continue
        if public != f"{server}{sep}{original}":
            renamed[public] = f"{server}{sep}{original}"
            log.warning("server %s: %s name %r does not fit ^[a-zA-Z0-9_-]{{1,64}}$; exposed as %r",
                        server, kind, f"{server}{sep}{original}", public)
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


def aggregate(servers: list[tuple[str, ServerCatalog]], sep: str, version: int) -> RouteCatalog:
    """The union of ``servers`` (in route order) as one catalog."""
    tools: list[Entry] = []
    prompts: list[Entry] = []
    resources: list[Entry] = []
    templates: list[Entry] = []
    tool_index: dict[str, tuple[str, str]] = {}
    prompt_index: dict[str, tuple[str, str]] = {}
    resource_index: dict[str, str] = {}
    matchers: list[tuple[re.Pattern[str], str]] = []
    renamed: dict[str, str] = {}
    caps: dict[str, Any] = {}
    for name, cat in servers:
        tools += _namespaced(name, sep, cat.tools, tool_index, renamed, "tool")
        prompts += _namespaced(name, sep, cat.prompts, prompt_index, renamed, "prompt")
        for entry in cat.resources:
            uri = entry_str(entry, "uri")
            if uri is None:
                continue
            if uri in resource_index:
                log.warning("resource %s is offered by %s and %s; routing to %s",
                            uri, resource_index[uri], name, resource_index[uri])
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
        template_matchers=matchers, capabilities=caps, renamed=renamed,
    )
