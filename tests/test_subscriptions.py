"""Resource subscriptions through the gateway: updates reach exactly the subscribed sessions."""

from __future__ import annotations

from typing import Any

import mcp_types as types
import pytest
import trio
from mcp import Client

from tests.helpers import PY, ROOT, config, running_gateway

SUB_SERVER = str(ROOT / "tests" / "servers" / "subscribe_server.py")


def _collector(seen: list[str], event: trio.Event) -> Any:
    async def on_message(message: Any) -> None:
        if isinstance(message, types.ServerNotification) and \
                getattr(message, "method", None) == "notifications/resources/updated":
            seen.append(str(message.params.uri))
            event.set()
    return on_message


async def _upstream_subscriptions(client: Client) -> str:
    return (await client.call_tool("notes__subscriptions", {})).content[0].text


@pytest.mark.filterwarnings("ignore:resources/(un)?subscribe is removed")
async def test_updates_reach_subscribers_only_and_unsubscribe_is_refcounted() -> None:
    async with running_gateway(config({"notes": {"command": PY, "args": [SUB_SERVER]}})) as gw:
        seen_a: list[str] = []
        seen_b: list[str] = []
        seen_c: list[str] = []
        got_a, got_b, got_c = trio.Event(), trio.Event(), trio.Event()
        async with Client(gw.url, mode="legacy", message_handler=_collector(seen_a, got_a)) as a, \
                Client(gw.url, mode="legacy", message_handler=_collector(seen_b, got_b)) as b, \
                Client(gw.url, mode="legacy", message_handler=_collector(seen_c, got_c)) as c:
            await c.list_resources()  # c is connected (with its GET stream) but never subscribes
            assert a.server_capabilities.resources is not None and a.server_capabilities.resources.subscribe
            await a.subscribe_resource("note://a")
            await b.subscribe_resource("note://a")
            assert await _upstream_subscriptions(a) == "note://a"
            await a.call_tool("notes__edit", {"uri": "note://b", "text": "nobody listens"})
            await a.call_tool("notes__edit", {"uri": "note://a", "text": "changed"})
            with trio.fail_after(5):
                await got_a.wait()
                await got_b.wait()
            with trio.move_on_after(0.5):
                await got_c.wait()
            assert seen_a == ["note://a"] and seen_b == ["note://a"] and seen_c == []
            assert (await a.read_resource("note://a")).contents[0].text == "changed"
            await a.unsubscribe_resource("note://a")
            assert await _upstream_subscriptions(a) == "note://a"  # b still wants it
            await b.unsubscribe_resource("note://a")
            assert await _upstream_subscriptions(a) == ""  # the last one gone: unsubscribed upstream
