"""Server-to-client requests and log messages, relayed to the client whose call they belong to.

The upstream is the conformance fixture (tests/servers/conformance_server.py, the official SDK) over
stdio: its tools ask the client for sampling and elicitation, and log while they run. The clients are
the official SDK client with callbacks, over each wire, plus a raw WebSocket client that answers the
server's request by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
import trio
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client

from gateway.relay import most_verbose
from tests.helpers import PY, ROOT, HTTPClient, Running, config, running_gateway

FIXTURE = {"command": PY, "args": [str(ROOT / "tests" / "servers" / "conformance_server.py"), "--stdio"]}
ROUTES = {"/": {"servers": ["c"], "prefix": False}}


@pytest.fixture
async def gw() -> Any:
    async with running_gateway(config({"c": FIXTURE}, routes=ROUTES)) as running:
        yield running


async def sampling(context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
    asked = params.messages[0].content.text  # type: ignore[union-attr]
    return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text=f"echo: {asked}"),
                                     model="test-model", stop_reason="endTurn")


async def elicitation(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
    return types.ElicitResult(action="accept", content={"username": "ada", "email": "ada@example.com"})


def _stdio(tmp_path: Path) -> StdioServerParameters:
    cfg = tmp_path / "gateway.json"
    cfg.write_text(json.dumps({"servers": {"c": FIXTURE}, "routes": ROUTES}))
    return StdioServerParameters(command=str(Path(PY).with_name("mcp-gateway")),
                                 args=["stdio", "--config", str(cfg)], cwd=str(ROOT))


def _clients(gw: Running, tmp_path: Path) -> dict[str, Any]:
    return {
        "streamable-http": lambda **kw: Client(gw.url, mode="legacy", **kw),
        "legacy sse": lambda **kw: Client(sse_client(f"http://127.0.0.1:{gw.port}/sse"), mode="legacy", **kw),
        "stdio": lambda **kw: Client(_stdio(tmp_path), mode="legacy", **kw),
    }


@pytest.mark.parametrize("wire", ["streamable-http", "legacy sse", "stdio"])
async def test_sampling_and_elicitation_reach_the_calling_client(gw: Running, tmp_path: Path, wire: str) -> None:
    open_client = _clients(gw, tmp_path)[wire]
    with trio.fail_after(30):
        async with open_client(sampling_callback=sampling, elicitation_callback=elicitation) as client:
            sampled = await client.call_tool("test_sampling", {"prompt": "hello"})
            assert not sampled.is_error and "echo: hello" in sampled.content[0].text  # type: ignore[union-attr]
            elicited = await client.call_tool("test_elicitation", {"message": "who are you?"})
            text = elicited.content[0].text  # type: ignore[union-attr]
            assert not elicited.is_error and "ada" in text and "accept" in text


@pytest.mark.parametrize("wire", ["streamable-http", "stdio"])
async def test_log_messages_arrive_on_the_calls_stream_before_its_result(gw: Running, tmp_path: Path,
                                                                         wire: str) -> None:
    got: list[str] = []

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        got.append(str(params.data))

    with trio.fail_after(30):
        async with _clients(gw, tmp_path)[wire](logging_callback=on_log) as client:
            result = await client.call_tool("test_tool_with_logging", {})
            assert not result.is_error and len(got) == 3  # all three before the result
            await client.set_logging_level("error")  # now this client wants errors only
            await client.call_tool("test_tool_with_logging", {})
            assert len(got) == 3


async def test_a_client_without_the_capability_gets_a_clear_error_not_a_hang(gw: Running) -> None:
    from mcp.shared.exceptions import MCPError

    with trio.fail_after(30):
        async with Client(gw.url, mode="legacy") as client:  # no sampling callback: no sampling capability
            with pytest.raises(MCPError) as info:  # the upstream's create_message failed with our reason
                await client.call_tool("test_sampling", {"prompt": "hello"})
    assert "did not offer the sampling capability" in info.value.error.message


async def test_a_raw_websocket_client_answers_the_servers_request_by_hand(gw: Running) -> None:
    from trio_websocket import open_websocket_url

    with trio.fail_after(30):
        async with open_websocket_url(f"ws://127.0.0.1:{gw.port}/ws", subprotocols=["mcp"]) as ws:
            await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {"sampling": {}},
                "clientInfo": {"name": "raw", "version": "1"}}}))
            assert json.loads(await ws.get_message())["id"] == 1
            await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                              "params": {"name": "test_sampling", "arguments": {"prompt": "hi"}}}))
            request = json.loads(await ws.get_message())
            assert request["method"] == "sampling/createMessage" and "id" in request  # the gateway's own id
            await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": {
                "role": "assistant", "content": {"type": "text", "text": "by hand"}, "model": "m"}}))
            answer = json.loads(await ws.get_message())
            assert answer["id"] == 2 and "by hand" in answer["result"]["content"][0]["text"]


async def test_a_request_with_no_call_to_belong_to_is_refused_with_the_reason() -> None:
    from gateway.protocol.errors import CallError
    from gateway.relay import Relay
    from gateway.upstream.peer import ServerRequest

    relay = Relay()
    with pytest.raises(CallError) as info:
        await relay.request("c", ServerRequest("sampling/createMessage", jsonrpc_params(), []))
    assert "arrived outside any call" in info.value.message
    with pytest.raises(CallError) as info:
        await relay.request("c", ServerRequest("tools/list", jsonrpc_params(), []))
    assert "does not relay" in info.value.message


def jsonrpc_params() -> Any:
    from msgspec import Raw

    return Raw(b"{}")


def test_the_upstream_level_is_the_most_verbose_any_client_asked_for() -> None:
    assert most_verbose([]) is None and most_verbose([None, None]) is None
    assert most_verbose(["error", "warning"]) == "warning"
    assert most_verbose(["error", None]) == "debug"  # one client asked for nothing: it takes everything


async def test_set_level_is_kept_per_session_and_checked(gw: Running) -> None:
    async with HTTPClient.connect(gw.port) as http:
        session = await http.initialize()
        bad = await http.post("/mcp", {"jsonrpc": "2.0", "id": 1, "method": "logging/setLevel",
                                       "params": {"level": "loud"}}, session)
        assert bad.json()["error"]["code"] == -32602
        ok = await http.post("/mcp", {"jsonrpc": "2.0", "id": 2, "method": "logging/setLevel",
                                      "params": {"level": "warning"}}, session)
        assert ok.json()["result"] == {}
        assert gw.gateway.sessions.get(session).log_level == "warning"  # type: ignore[union-attr]


@pytest.mark.parametrize("mode", ["2026-07-28", "auto"])
async def test_a_stateless_client_answers_the_upstreams_questions_in_rounds(gw: Running, mode: str) -> None:
    # MRTR: the gateway answers input_required with the upstream's question; the SDK client retries
    # with the answer, and the parked upstream call goes on.
    with trio.fail_after(30):
        async with Client(gw.url, mode=mode, sampling_callback=sampling, elicitation_callback=elicitation) as client:
            assert client.protocol_version == "2026-07-28"
            sampled = await client.call_tool("test_sampling", {"prompt": "rounds"})
            assert not sampled.is_error and "echo: rounds" in sampled.content[0].text  # type: ignore[union-attr]
            elicited = await client.call_tool("test_elicitation", {"message": "who?"})
            assert not elicited.is_error and "ada" in elicited.content[0].text  # type: ignore[union-attr]
    assert len(gw.gateway.dispatcher.exchanges) == 0  # nothing left parked
    # Counted under the tool that was called (its context lived across the rounds), not "unknown".
    calls = gw.gateway.dispatcher.stats.tool_calls
    assert calls[("/", "c", "test_sampling", "ok")] >= 1, dict(calls)
    assert not any(tool == "unknown" for _, _, tool, _ in calls), dict(calls)


async def test_a_stateless_client_that_did_not_declare_the_capability_is_told(gw: Running) -> None:
    from mcp.shared.exceptions import MCPError

    with trio.fail_after(30):
        async with Client(gw.url, mode="2026-07-28") as client:
            with pytest.raises(MCPError) as info:
                await client.call_tool("test_sampling", {"prompt": "x"})
    assert "did not declare the sampling capability" in info.value.error.message


async def test_a_request_state_that_names_nothing_is_invalid_params(gw: Running) -> None:
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {"sampling": {}}}
    async with HTTPClient.connect(gw.port) as http:
        reply = await http.post("/mcp", {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "test_sampling", "arguments": {"prompt": "x"}, "requestState": "forged",
            "inputResponses": {"q": {}}, "_meta": meta}},
            headers={"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "test_sampling"})
    assert reply.status == 400 and reply.json()["error"]["code"] == -32602
    assert "requestState names no pending request" in reply.json()["error"]["message"]


@pytest.mark.parametrize("key", ["requestState", "request\\u0053tate"])
async def test_a_retry_is_a_retry_without_the_capability_and_behind_an_escaped_key(gw: Running, key: str) -> None:
    """A requestState makes a request a retry, checked as one, even from a client that declared no
    capability to be asked anything, and however the key is spelled (a JSON escape is the same key)."""
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "test_sampling", "arguments": {"prompt": "x"}, "requestState": "forged",
        "inputResponses": {"q": {}}, "_meta": meta}}).replace('"requestState"', f'"{key}"').encode()
    async with HTTPClient.connect(gw.port) as http:
        reply = await http.post("/mcp", body, headers={"mcp-protocol-version": "2026-07-28",
                                                       "mcp-method": "tools/call", "mcp-name": "test_sampling"})
    assert reply.status == 400 and reply.json()["error"]["code"] == -32602
    assert "requestState names no pending request" in reply.json()["error"]["message"]


@pytest.mark.parametrize("lifecycle", ["session", "call"])
async def test_an_instance_of_one_client_is_offered_only_what_that_client_offered(lifecycle: str) -> None:
    from tests.helpers import sdk_server

    async def roots(context: Any) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[])

    # With a pool, instances start before their client: they are offered the configured list.
    cfg = config({"s": sdk_server("s", lifecycle=lifecycle),
                  "narrow": sdk_server("narrow", lifecycle=lifecycle, client_capabilities=["roots"]),
                  "pooled": sdk_server("pooled", lifecycle=lifecycle, pool=1)},
                 routes={"/": {"servers": ["s", "narrow", "pooled"], "prefix": True}})
    seen = {}
    async with running_gateway(cfg) as running:
        with trio.fail_after(60):
            for label, kw in (("nothing", {}), ("sampling", {"sampling_callback": sampling}),
                              ("all", {"sampling_callback": sampling, "elicitation_callback": elicitation,
                                       "list_roots_callback": roots})):
                async with Client(running.url, mode="legacy", **kw) as client:
                    for server in ("s", "narrow", "pooled"):
                        answer = await client.call_tool(f"{server}__offered", {})
                        seen[label, server] = answer.content[0].text  # type: ignore[union-attr]
    every = "elicitation,roots,sampling"
    assert seen == {("nothing", "s"): "", ("nothing", "narrow"): "", ("nothing", "pooled"): every,
                    ("sampling", "s"): "sampling", ("sampling", "narrow"): "", ("sampling", "pooled"): every,
                    ("all", "s"): every, ("all", "narrow"): "roots", ("all", "pooled"): every}


async def test_a_shared_server_is_offered_what_its_config_says() -> None:
    from tests.helpers import sdk_server

    cfg = config({"s": sdk_server("s"), "none": sdk_server("none", client_capabilities=[])})
    async with running_gateway(cfg) as running, Client(running.url, mode="legacy") as client:
        # It started before any client: the configured set; a request the caller cannot answer is refused.
        assert (await client.call_tool("s__offered", {})).content[0].text == "elicitation,roots,sampling"  # type: ignore[union-attr]
        assert (await client.call_tool("none__offered", {})).content[0].text == ""  # type: ignore[union-attr]
