"""Tool-search mode (``tool_mode: search``): the BM25 index as sans-IO units, then end to end through
the official SDK client and real upstreams: two tools listed, every tool still found and called,
the policy deciding what a caller can find, metrics and the audit log naming the inner tool."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import msgspec
import pytest
import trio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from prometheus_client.parser import text_string_to_metric_families

from gateway.auth.keys import KeyStore
from gateway.protocol.catalog import Entry
from gateway.protocol.search import (
    CALL_TOOL,
    MAX_LIMIT,
    SEARCH_TOOL,
    ToolIndex,
    meta_tools,
    parse_search_arguments,
    search_result,
    tokens,
)
from tests.helpers import PY, HTTPClient, Running, config, running_gateway, sdk_server, time_server


def tool(name: str, description: str = "", schema: Any = None, **extra: Any) -> Entry:
    entry = {"name": name, "description": description, "inputSchema": schema or {"type": "object"}, **extra}
    return {k: msgspec.Raw(msgspec.json.encode(v)) for k, v in entry.items()}


def names(hits: list[tuple[Entry, float]]) -> list[str]:
    return [msgspec.json.decode(e["name"]) for e, _ in hits]


CATALOG = [
    tool("time__get_current_time", "Get current time in a specific timezones",
         {"type": "object", "properties": {"timezone": {"type": "string", "description": "IANA timezone name"}}}),
    tool("time__convert_time", "Convert time between timezones",
         {"type": "object", "properties": {"source_timezone": {"type": "string"}, "time": {"type": "string"},
                                           "target_timezone": {"type": "string"}}}),
    tool("sdk__add", "Add two integers.", {"type": "object", "properties": {"a": {}, "b": {}}}),
    tool("sdk__echo", "Return the text unchanged."),
    tool("files__readFile", "Read a file from disk and return its contents."),
    tool("files__list-directory", "List the entries of a directory."),
    tool("github__createPullRequest", "Open a pull request on GitHub."),
    tool("calc.calculateSum", "Sum numbers."),
]


# -- the index: sans-IO units ---------------------------------------------------------------------
def test_names_split_at_separators_and_camel_case_and_words_are_folded() -> None:
    assert tokens("time__get_current_time") == ["time", "get", "current", "time"]
    assert tokens("github__createPullRequest") == ["github", "create", "pull", "request"]
    assert tokens("files__list-directory") == ["file", "list", "directory"]
    assert tokens("calc.calculateSum HTTPServer v2") == ["calc", "calculate", "sum", "http", "server", "2"]
    assert tokens("What is the time in the timezones of Tokyo?") == ["time", "timezone", "tokyo"]
    assert tokens("Größe messen") == tokens("GRÖSSE MESSEN") == ["grösse", "messen"]  # whole words, casefolded
    assert tokens("") == [] and tokens("  \t ") == [] and tokens("the of a") == []


def test_an_exact_name_comes_first_with_or_without_its_server_prefix() -> None:
    index = ToolIndex(CATALOG)
    assert names(index.search("time__convert_time"))[0] == "time__convert_time"
    assert names(index.search("convert_time"))[0] == "time__convert_time"
    assert names(index.search("getCurrentTime"))[0] == "time__get_current_time"  # the same words
    assert names(index.search("createPullRequest"))[0] == "github__createPullRequest"


def test_words_of_descriptions_and_parameters_find_tools_and_a_name_hit_counts_more() -> None:
    index = ToolIndex(CATALOG)
    assert names(index.search("current time"))[0] == "time__get_current_time"
    assert names(index.search("read the contents of a file"))[0] == "files__readFile"
    assert names(index.search("pull request"))[0] == "github__createPullRequest"
    assert names(index.search("IANA"))[0] == "time__get_current_time"  # a parameter's description
    assert set(names(index.search("timezone"))) == {"time__get_current_time", "time__convert_time"}
    # "directory" is in one tool's name and another's description: the name wins
    both = ToolIndex([tool("fs__stat", "Tell whether a path is a directory."), tool("fs__directory", "Open.")])
    assert names(both.search("directory")) == ["fs__directory", "fs__stat"]
    assert names(index.search("calc"))[0] == "calc.calculateSum"
    assert names(index.search("calcul")) == ["calc.calculateSum"]  # the start of a word finds it (at half weight)
    assert index.search("spaceship") == []


def test_limit_and_the_empty_query() -> None:
    index = ToolIndex(CATALOG)
    assert len(index.search("time", limit=1)) == 1
    assert index.search("time", limit=0) == []
    assert not index.searchable("") and not index.searchable("   ") and not index.searchable("the")
    assert names(index.browse(3)) == sorted(n for n in (msgspec.json.decode(e["name"]) for e in CATALOG))[:3]
    found = json.loads(search_result("  ", index, 3))["structuredContent"]
    assert [t["name"] for t in found["tools"]] == names(index.browse(3))
    assert found["total"] == len(CATALOG) and "first 3 of 8 tools by name" in found["note"]
    none = json.loads(search_result("spaceship", index, 3))["structuredContent"]
    assert none["tools"] == [] and none["matched"] == 0 and "No tool matched" in none["note"]


def test_ranking_is_deterministic_and_ties_go_by_name() -> None:
    twins = [tool(f"s__twin_{c}", "Identical description of a widget.") for c in "dbca"]
    index = ToolIndex(twins)
    assert names(index.search("widget")) == ["s__twin_a", "s__twin_b", "s__twin_c", "s__twin_d"]
    shuffled = list(CATALOG)
    random.Random(7).shuffle(shuffled)
    for query in ("time", "file directory", "sum numbers", "get"):
        assert names(ToolIndex(shuffled).search(query)) == names(ToolIndex(CATALOG).search(query))


def test_hostile_entries_and_queries_are_handled() -> None:
    weird = [
        {"description": msgspec.Raw(b'"no name"')},  # skipped
        {"name": msgspec.Raw(b"42")},  # not a string: skipped
        tool("x__props_not_an_object", "Fine.", {"type": "object", "properties": [1, 2]}),
        tool("x__schema_not_an_object", "Fine.", [1]),
        tool("x__long", "word " * 100_000),
        {"name": msgspec.Raw(b'"x__bare"')},  # no description, no schema
    ]
    index = ToolIndex(weird)
    assert len(index) == 4
    assert names(index.search("fine")) == ["x__props_not_an_object", "x__schema_not_an_object"]
    assert names(index.search("bare")) == ["x__bare"]
    assert names(index.search("word " * 10_000 + "fine"))[0] != ""  # a huge query is cut, not refused
    assert ToolIndex([]).search("anything") == [] and ToolIndex([]).browse() == []


def test_search_arguments_are_checked() -> None:
    assert parse_search_arguments({"query": "x"}) == ("x", 10)
    assert parse_search_arguments(None) == ("", 10)
    assert parse_search_arguments({"query": "x", "limit": 500}) == ("x", MAX_LIMIT)
    assert parse_search_arguments({"query": "x", "limit": 3.0}) == ("x", 3)
    for bad, message in [([], "takes an object"), ({"query": 1}, "query must be a string"),
                         ({"limit": 0}, "limit must be an integer"), ({"limit": "5"}, "limit must be an integer"),
                         ({"limit": True}, "limit must be an integer"), ({"limit": 2.5}, "limit must be an integer")]:
        with pytest.raises(ValueError, match=message):
            parse_search_arguments(bad)


def test_a_search_result_carries_the_listed_fields_byte_for_byte_as_text_and_structured() -> None:
    entry = tool("t__x", "Does x.", {"type": "object", "properties": {"é": {"type": "string"}}},
                 title="X", annotations={"readOnlyHint": True}, _meta={"secret": "not shown"})
    result = json.loads(search_result("x", ToolIndex([entry]), 5))
    assert json.loads(result["content"][0]["text"]) == result["structuredContent"]
    hit = result["structuredContent"]["tools"][0]
    assert hit == {"name": "t__x", "title": "X", "description": "Does x.",
                   "inputSchema": {"type": "object", "properties": {"é": {"type": "string"}}},
                   "annotations": {"readOnlyHint": True}}
    assert [t["name"] for t in meta_tools(["a"])] == [SEARCH_TOOL, CALL_TOOL]


# -- end to end -------------------------------------------------------------------------------------
ROUTES = {"/": {"servers": ["sdk", "time"], "tool_mode": "search"}, "/all": ["sdk", "time"]}


def servers() -> dict[str, Any]:
    return {"sdk": sdk_server(), "time": time_server()}


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Running]:
    cfg = config(servers(), routes=ROUTES, audit={"path": str(tmp_path / "audit.db")}, metrics={"data_plane": True})
    async with running_gateway(cfg) as running:
        yield running


def found(result: Any) -> list[str]:
    return [t["name"] for t in result.structured_content["tools"]]


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_a_search_route_lists_two_tools_and_still_reaches_every_tool(gw: Running, mode: str) -> None:
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    with trio.fail_after(60):
        async with Client(gw.url, mode=mode) as client:  # type: ignore[arg-type]
            listed = (await client.list_tools()).tools
            assert [t.name for t in listed] == [SEARCH_TOOL, CALL_TOOL]
            hits = await client.call_tool(SEARCH_TOOL, {"query": "current time"})
            assert found(hits)[0] == "time__get_current_time" and not hits.is_error
            assert json.loads(hits.content[0].text)["tools"][0]["inputSchema"]["required"] == ["timezone"]
            now = await client.call_tool(CALL_TOOL, {"name": "time__get_current_time",
                                                     "arguments": {"timezone": "Asia/Tokyo"}})
            assert json.loads(now.content[0].text)["timezone"] == "Asia/Tokyo"
            added = await client.call_tool(CALL_TOOL, {"name": "sdk__add", "arguments": {"a": 2, "b": 40}})
            assert added.structured_content == {"result": 42}
            slow = await client.call_tool(CALL_TOOL, {"name": "sdk__slow", "arguments": {"steps": 3, "delay": 0.01}},
                                          progress_callback=on_progress)
            assert "3" in slow.content[0].text and progress == [1, 2, 3]  # progress tokens pass through
            direct = await client.call_tool("sdk__add", {"a": 1, "b": 1})  # a name kept from before still works
            assert direct.structured_content == {"result": 2}
            every = await client.call_tool(SEARCH_TOOL, {"query": "", "limit": 50})
            listed_all = {t.name for t in (await client.list_tools()).tools}
            assert set(found(every)) == set(gw.gateway.routes["/"].catalog.tool_index) and len(found(every)) > 10
            assert listed_all == {SEARCH_TOOL, CALL_TOOL}
            for args, message in [({"name": "nope__nothing"}, "Unknown tool: 'nope__nothing'"),
                                  ({}, "needs the name of the tool"), ({"name": 3}, "needs the name of the tool"),
                                  ({"name": "sdk__add", "arguments": [1]}, "must be an object")]:
                with pytest.raises(MCPError) as info:
                    await client.call_tool(CALL_TOOL, args)
                assert info.value.error.code == -32602 and message in info.value.error.message
            with pytest.raises(MCPError) as info:
                await client.call_tool(SEARCH_TOOL, {"query": "x", "limit": -1})
            assert info.value.error.code == -32602 and "limit must be an integer" in info.value.error.message
            if mode == "legacy":  # (the 2026-07-28 client does not ask for server/discover, where they are)
                assert SEARCH_TOOL in (client.instructions or "")
            # prompts and resources are as on any route
            prompt = await client.get_prompt("sdk__greet", {"name": "Ada"})
            assert "Hello, Ada!" in prompt.messages[0].content.text  # type: ignore[union-attr]
        async with Client(gw.route_url("/all"), mode=mode) as client:  # type: ignore[arg-type]
            everything = {t.name for t in (await client.list_tools()).tools}
            assert "time__get_current_time" in everything and SEARCH_TOOL not in everything
            with pytest.raises(MCPError) as info:  # not a search route: call_tool is no tool here
                await client.call_tool(CALL_TOOL, {"name": "sdk__add", "arguments": {"a": 1, "b": 1}})
            assert info.value.error.message == f"Unknown tool: {CALL_TOOL!r}"
    assert gw.gateway.supervisors["sdk"].restarts == 0


async def test_metrics_and_the_audit_log_name_the_inner_tool(gw: Running) -> None:
    async with HTTPClient.connect(gw.port) as http, Client(gw.url, mode="legacy") as client, \
            Client(gw.route_url("/all"), mode="legacy") as direct_client:
        await client.call_tool(SEARCH_TOOL, {"query": "time"})
        await client.call_tool(CALL_TOOL, {"name": "time__get_current_time", "arguments": {"timezone": "UTC"}})
        await client.call_tool(CALL_TOOL, {"name": "time__get_current_time", "arguments": {"timezone": "UTC"}})
        await direct_client.call_tool("time__get_current_time", {"timezone": "UTC"})
        with pytest.raises(MCPError):
            await client.call_tool(CALL_TOOL, {"name": "nope__nothing", "arguments": {"x": 1}})
        scrape = (await http.request("GET", "/metrics")).body.decode()
        rows: list[Any] = []
        with trio.fail_after(10):
            while len(rows) < 5:
                await trio.sleep(0.05)
                rows = await gw.gateway.control.audit.query({}, limit=10, before=None)
    samples = {(s.name, frozenset(s.labels.items())): s.value
               for family in text_string_to_metric_families(scrape) for s in family.samples}

    def calls(route: str, server: str, name: str, status: str = "ok") -> float:
        return samples.get(("mcp_tool_calls_total", frozenset({"route": route, "server": server, "tool": name,
                                                              "status": status}.items())), 0.0)

    assert calls("/", "time", "time__get_current_time") == 2
    assert calls("/", "(gateway)", SEARCH_TOOL) == 1
    assert not any(labels and dict(labels).get("tool") == CALL_TOOL for _, labels in samples)
    by_route = [(r["route"], r["server"], r["name"], r["outcome"], r["args_digest"]) for r in reversed(rows)]
    search, inner, again, direct, unknown = by_route
    assert search[:4] == ("/", "(gateway)", SEARCH_TOOL, "ok")
    assert inner[:4] == again[:4] == ("/", "time", "time__get_current_time", "ok")
    assert direct[:4] == ("/all", "time", "time__get_current_time", "ok")
    assert inner[4] == direct[4] is not None  # the inner call's arguments, as a direct call's
    assert unknown[:4] == ("/", None, "nope__nothing", "error")  # the tool asked for, not call_tool


def keys_config(tmp_path: Path, **extra: Any) -> Any:
    return config(servers(), routes=ROUTES, auth={"api_keys": {"path": str(tmp_path / "keys.db")}}, **extra)


def keyed_client(url: str, key: str) -> Client:
    http = httpx2.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(30, read=300))
    return Client(streamable_http_client(url, http_client=http), mode="legacy")  # type: ignore[arg-type]


async def test_what_the_policy_hides_cannot_be_found_or_called_through_call_tool(tmp_path: Path) -> None:
    with KeyStore(str(tmp_path / "keys.db")) as store:
        ops = store.create("ops").key
        dev = store.create("dev").key
    policy = [{"allow": {"who": ["ops"], "tools": ["time__*"]}}, {"allow": {"who": ["dev"]}}]
    async with running_gateway(keys_config(tmp_path, policy=policy)) as gw:
        async with keyed_client(gw.url, ops) as client:
            assert [t.name for t in (await client.list_tools()).tools] == [SEARCH_TOOL, CALL_TOOL]
            for query in ("add two integers", "add", "sdk__add"):
                assert not any(n.startswith("sdk__") for n in found(await client.call_tool(SEARCH_TOOL,
                                                                                           {"query": query})))
            browse = await client.call_tool(SEARCH_TOOL, {"query": ""})
            assert set(found(browse)) == {"time__get_current_time", "time__convert_time"}
            assert browse.structured_content["total"] == 2  # type: ignore[index]
            assert found(await client.call_tool(SEARCH_TOOL, {"query": "current time"}))[0] == "time__get_current_time"
            for how in ("through call_tool", "directly"):
                with pytest.raises(MCPError) as info:
                    if how == "directly":
                        await client.call_tool("sdk__add", {"a": 1, "b": 2})
                    else:
                        await client.call_tool(CALL_TOOL, {"name": "sdk__add", "arguments": {"a": 1, "b": 2}})
                assert (info.value.error.code, info.value.error.message) == (-32602, "Unknown tool: 'sdk__add'")
        async with keyed_client(gw.url, dev) as client:  # another caller, another view (another index)
            assert "sdk__add" in found(await client.call_tool(SEARCH_TOOL, {"query": "add"}))
            added = await client.call_tool(CALL_TOOL, {"name": "sdk__add", "arguments": {"a": 1, "b": 2}})
            assert added.structured_content == {"result": 3}


async def test_rate_limits_apply_to_the_inner_tool_as_to_a_direct_call(tmp_path: Path) -> None:
    limits = [{"tools": ["sdk__echo"], "rate": 0.01, "burst": 1}]
    async with running_gateway(config(servers(), routes=ROUTES, rate_limits=limits)) as gw, \
            Client(gw.url, mode="legacy") as client:
        await client.call_tool(CALL_TOOL, {"name": "sdk__echo", "arguments": {"text": "one"}})
        with pytest.raises(MCPError) as info:
            await client.call_tool(CALL_TOOL, {"name": "sdk__echo", "arguments": {"text": "two"}})
        assert info.value.error.code == -32005
        with pytest.raises(MCPError):
            await client.call_tool("sdk__echo", {"text": "three"})  # the same bucket
        await client.call_tool(CALL_TOOL, {"name": "sdk__add", "arguments": {"a": 1, "b": 2}})  # another tool passes


async def test_switching_the_tool_mode_by_reload_tells_clients_the_tools_changed() -> None:
    first = config(servers(), routes={"/": ["sdk", "time"]})
    async with running_gateway(first) as gw, HTTPClient.connect(gw.port) as http:
        session = await http.initialize()

        async def listed() -> list[str]:
            reply = await http.post("/mcp", {"jsonrpc": "2.0", "id": 9, "method": "tools/list"}, session,
                                    headers={"accept": "application/json"})
            return [t["name"] for t in reply.json()["result"]["tools"]]

        assert len(await listed()) > 2
        stream = await trio.open_tcp_stream("127.0.0.1", gw.port)  # the session's GET stream
        await stream.send_all(b"GET /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n"
                              b"mcp-session-id: " + session.encode() + b"\r\n\r\n")
        summary = await gw.gateway.apply(config(servers(), routes={"/": {"servers": ["sdk", "time"],
                                                                          "tool_mode": "search"}}))
        assert summary["routes"] is True
        buf = b""
        with trio.fail_after(5):
            while b"tools/list_changed" not in buf:
                buf += await stream.receive_some(65536)
        assert await listed() == [SEARCH_TOOL, CALL_TOOL]
        await gw.gateway.apply(first)
        assert len(await listed()) > 2
        await stream.aclose()


async def test_cancelling_a_call_made_through_call_tool_cancels_the_inner_call(gw: Running) -> None:
    call = {"jsonrpc": "2.0", "id": 8, "method": "tools/call",
            "params": {"name": CALL_TOOL, "arguments": {"name": "sdk__sleep", "arguments": {"seconds": 30}}}}
    async with HTTPClient.connect(gw.port) as http:
        session = await http.initialize()

        async def slow() -> None:
            async with HTTPClient.connect(gw.port) as other:
                await other.post("/mcp", call, session, headers={"accept": "application/json"})

        with trio.fail_after(10):  # far less than the 30 s the tool would sleep
            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow)
                while not (s := gw.gateway.sessions.get(session)) or 8 not in s.inflight:
                    await trio.sleep(0.02)
                note = await http.post("/mcp", {"jsonrpc": "2.0", "method": "notifications/cancelled",
                                                "params": {"requestId": 8}}, session)
                assert note.status == 202
            rows: list[Any] = []
            while not rows:
                await trio.sleep(0.05)
                rows = await gw.gateway.control.audit.query({}, limit=10, before=None)
    assert (rows[0]["server"], rows[0]["name"], rows[0]["outcome"]) == ("sdk", "sdk__sleep", "cancelled")


async def test_results_through_call_tool_are_redacted_as_direct_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_UPSTREAM_TOKEN", "s3cr3t-value-that-must-not-leak")
    leaky = sdk_server("leaky", secrets={"UPSTREAM_TOKEN": "env:TEST_UPSTREAM_TOKEN"}, redact_results=True)
    cfg = config({"leaky": leaky}, routes={"/": {"servers": ["leaky"], "tool_mode": "search"}})
    async with running_gateway(cfg) as gw, Client(gw.url, mode="legacy") as client:
        redacted = await client.call_tool(CALL_TOOL, {"name": "leaky__env", "arguments": {"name": "UPSTREAM_TOKEN"}})
    assert redacted.content[0].text == "[REDACTED]"  # type: ignore[union-attr]
    assert "s3cr3t" not in redacted.model_dump_json()


CLASH = """
from mcp.server.mcpserver import MCPServer
server = MCPServer("clash")

@server.tool(name="call_tool")
def own_call(x: str) -> str:
    \"\"\"The upstream's own tool that happens to be called call_tool.\"\"\"
    return "upstream " + x

@server.tool(name="search_tools")
def own_search(q: str) -> str:
    \"\"\"The upstream's own tool that happens to be called search_tools.\"\"\"
    return "own search " + q

server.run("stdio")
"""


async def test_an_upstream_tool_named_like_the_route_tools_is_reached_through_call_tool() -> None:
    cfg = config({"clash": {"command": PY, "args": ["-c", CLASH]}},
                 routes={"/": {"servers": ["clash"], "prefix": False, "tool_mode": "search"}})
    async with running_gateway(cfg) as gw, Client(gw.url, mode="legacy") as client:
        assert set(gw.gateway.routes["/"].catalog.tool_index) == {CALL_TOOL, SEARCH_TOOL}
        assert [t.description for t in (await client.list_tools()).tools][0].startswith("Find the tools")
        hits = await client.call_tool(SEARCH_TOOL, {"query": "happens"})  # the route's search, not the upstream's
        assert sorted(found(hits)) == [CALL_TOOL, SEARCH_TOOL]
        own = await client.call_tool(CALL_TOOL, {"name": CALL_TOOL, "arguments": {"x": "1"}})
        assert own.content[0].text == "upstream 1"  # type: ignore[union-attr]
        own = await client.call_tool(CALL_TOOL, {"name": SEARCH_TOOL, "arguments": {"q": "2"}})
        assert own.content[0].text == "own search 2"  # type: ignore[union-attr]
