"""End to end: the official `mcp` SDK client against the gateway over real sockets,
fronting `mcp-server-time` (PyPI) and a server written with the SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import mcp_types as types
import pytest
import trio
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

from tests.helpers import PY, SDK_SERVER, Running, config, running_gateway, sdk_server, time_server


@pytest.fixture
async def gw() -> AsyncIterator[Running]:
    cfg = config({"time": time_server(), "sdk": sdk_server()},
                 routes={"/": ["time", "sdk"], "/team-a": ["time"]})
    async with running_gateway(cfg) as running:
        yield running


@pytest.mark.parametrize(("mode", "version"), [("auto", "2026-07-28"), ("2026-07-28", "2026-07-28"),
                                               ("legacy", "2025-11-25")])
async def test_lists_and_calls_aggregated_tools(gw: Running, mode: str, version: str) -> None:
    # auto probes with server/discover, which the gateway answers: it picks 2026-07-28 (stateless)
    async with Client(gw.url, mode=mode) as client:
        assert client.protocol_version == version
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"time__get_current_time", "time__convert_time", "sdk__add", "sdk__echo"} <= names
        result = await client.call_tool("time__get_current_time", {"timezone": "Europe/Paris"})
        assert not result.is_error
        assert json.loads(result.content[0].text)["timezone"] == "Europe/Paris"
        added = await client.call_tool("sdk__add", {"a": 2, "b": 40})
        assert added.structured_content == {"result": 42}


@pytest.mark.parametrize("mode", ["auto", "2026-07-28", "legacy"])
async def test_route_prefix_exposes_only_its_servers(gw: Running, mode: str) -> None:
    async with Client(gw.route_url("/team-a"), mode=mode) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == {"time__get_current_time", "time__convert_time"}
        result = await client.call_tool("time__convert_time", {
            "source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"})
        assert json.loads(result.content[0].text)["target"]["timezone"] == "Asia/Tokyo"
        with pytest.raises(MCPError) as info:
            await client.call_tool("sdk__add", {"a": 1, "b": 2})
        assert info.value.error.code == -32602 and "sdk__add" in info.value.error.message


async def test_capabilities_and_server_info(gw: Running) -> None:
    async with Client(gw.url, mode="legacy") as client:
        caps = client.server_capabilities
        assert caps.tools is not None and caps.tools.list_changed
        assert caps.prompts is not None and caps.resources is not None
        assert client.server_info is not None and client.server_info.name == "mcp-gateway"
    async with Client(gw.route_url("/team-a"), mode="legacy") as client:
        # mcp-server-time offers prompts and resources capabilities (with empty lists)
        assert client.server_capabilities.tools is not None


async def test_unknown_tool_is_invalid_params_naming_it(gw: Running) -> None:
    async with Client(gw.url) as client:
        with pytest.raises(MCPError) as info:
            await client.call_tool("nope__nothing", {})
        assert info.value.error.code == -32602
        assert "nope__nothing" in info.value.error.message


async def test_prompts_and_resources(gw: Running) -> None:
    async with Client(gw.url, mode="legacy") as client:
        prompts = {p.name for p in (await client.list_prompts()).prompts}
        assert "sdk__greet" in prompts
        got = await client.get_prompt("sdk__greet", {"name": "Ada"})
        assert "Hello, Ada!" in got.messages[0].content.text
        resources = {str(r.uri) for r in (await client.list_resources()).resources}
        assert "memo://readme" in resources
        read = await client.read_resource("memo://readme")
        assert read.contents[0].text == "read me"
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        assert "memo://notes/{note_id}" in templates
        note = await client.read_resource("memo://notes/42")
        assert note.contents[0].text == "note 42"
        with pytest.raises(MCPError) as info:
            await client.read_resource("nowhere://x")
        assert info.value.error.code == -32602


async def test_progress_is_translated_to_the_clients_token(gw: Running) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with Client(gw.url, mode="legacy") as client:
        result = await client.call_tool("sdk__slow", {"steps": 3, "delay": 0.01}, progress_callback=on_progress)
        assert result.content[0].text == "done after 3 steps"
    assert [s[0] for s in seen] == [1, 2, 3]
    assert seen[0][2] == "step 1"


async def test_list_changed_reaches_the_client_and_the_catalog(gw: Running) -> None:
    changed = trio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ServerNotification) and \
                getattr(message, "method", None) == "notifications/tools/list_changed":
            changed.set()

    async with Client(gw.url, mode="legacy", message_handler=on_message) as client:
        await client.call_tool("sdk__grow", {"name": "sprout"})
        with trio.fail_after(5):
            await changed.wait()
        names = {t.name for t in (await client.list_tools()).tools}
        assert "sdk__sprout" in names
        result = await client.call_tool("sdk__sprout", {})
        assert result.content[0].text == "I am sprout"


async def test_cancelling_a_call_cancels_it_upstream(gw: Running) -> None:
    supervisor = gw.gateway.supervisors["sdk"]
    async with Client(gw.url, mode="legacy") as client:
        with trio.move_on_after(0.5):
            await client.call_tool("sdk__sleep", {"seconds": 30})
        with trio.fail_after(2):
            while (await supervisor.connection()).in_flight:
                await trio.sleep(0.02)
        # the session is still usable afterwards
        assert (await client.call_tool("sdk__echo", {"text": "after"})).content[0].text == "after"


# -- parity: the same test body directly against a server and through the gateway ---------

async def _exercise(client: Client, prefix: str) -> list[Any]:
    out: list[Any] = []
    tools = sorted((t.name.removeprefix(prefix), t.description, json.dumps(t.input_schema, sort_keys=True))
                   for t in (await client.list_tools()).tools)
    out.append(tools)
    for name, args in [("add", {"a": 5, "b": 6}), ("echo", {"text": "ünïcødé ✓"}), ("fail", {"message": "boom"})]:
        r = await client.call_tool(prefix + name, args)
        out.append((r.is_error, [c.text for c in r.content], r.structured_content))
    out.append(sorted(p.name.removeprefix(prefix) for p in (await client.list_prompts()).prompts))
    out.append((await client.get_prompt(prefix + "greet", {"name": "Bob"})).messages[0].content.text)
    out.append([c.text for c in (await client.read_resource("memo://notes/7")).contents])
    return out


async def test_parity_direct_vs_through_gateway(gw: Running) -> None:
    async with Client(StdioServerParameters(command=PY, args=[SDK_SERVER, "sdk"]), mode="legacy") as direct:
        expected = await _exercise(direct, "")
    async with Client(gw.url, mode="legacy") as via:
        got = await _exercise(via, "sdk__")
    assert got[1:] == expected[1:]
    direct_tools = {t[0]: t[1:] for t in expected[0]}
    via_tools = {t[0]: t[1:] for t in got[0] if not t[0].startswith("time__")}
    assert via_tools == direct_tools
