"""``mcp-gateway check``: start each server once and print what every route exposes."""

from __future__ import annotations

import trio

from ..config import GatewayConfig
from ..protocol.catalog import entry_str
from .compose import build_gateway


async def collect_tool_table(config: GatewayConfig) -> tuple[bool, str]:
    """(all servers started, printable table of routes, tools, prompts and resources)."""
    gateway = build_gateway(config)
    lines: list[str] = []
    async with trio.open_nursery() as nursery:
        async with trio.open_nursery() as starting:
            for supervisor in gateway.supervisors.values():
                starting.start_soon(nursery.start, supervisor.run)
        ok = True
        lines.append("servers:")
        for name, sup in gateway.supervisors.items():
            if sup.state == "ready" and sup.catalog is not None:
                info = sup.catalog.server_info
                lines.append(f"  {name}: ready ({info.get('name', '?')} {info.get('version', '')})".rstrip())
            else:
                ok = False
                lines.append(f"  {name}: FAILED: {sup.last_error}")
        for prefix, route in gateway.routes.items():
            route.rebuild()
            cat = route.catalog
            endpoint = "/mcp" if prefix == "/" else f"{prefix}/mcp"
            lines.append(f"route {prefix} (endpoint {endpoint}):")
            for kind, index in (("tool", cat.tool_index), ("prompt", cat.prompt_index)):
                for public, (server, original) in index.items():
                    note = "  (renamed: name did not fit ^[a-zA-Z0-9_-]{1,64}$)" if public in cat.renamed else ""
                    lines.append(f"  {kind:8} {public:48} -> {server}: {original}{note}")
            for entry in cat.resources:
                uri = entry_str(entry, "uri")
                lines.append(f"  resource {uri:48} -> {cat.resource_index.get(uri or '', '?')}")
            for entry in cat.resource_templates:
                lines.append(f"  template {entry_str(entry, 'uriTemplate')}")
            for collision in cat.collisions:
                ok = False
                lines.append(f"  COLLISION: {collision}")
        nursery.cancel_scope.cancel()
    return ok, "\n".join(lines)
