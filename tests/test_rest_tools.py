"""REST APIs as tools (``http:`` servers): a real petstore over real sockets, through the gateway
and the official SDK client, from an OpenAPI 3.0 (YAML) and a 3.1 (JSON) document and by hand.

The API is :class:`PetStore`, a trio + h11 server on 127.0.0.1 written here; it records every
request as it arrived (the raw target, the headers, the body), so the tests see what the
gateway really sent. The documents are tests/data/petstore-3.0.yaml and petstore-3.1.json.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import h11
import mcp_types as types
import pytest
import trio
from mcp import Client
from mcp.shared.exceptions import MCPError

from gateway.cli.describe import describe
from gateway.config import ConfigError, parse_config
from gateway.config.rest import RestApi, RestTool, resolve_header, template_problem
from gateway.upstream import openapi
from gateway.upstream.openapi import SpecError, from_document, manual_tool
from gateway.upstream.rest import RestBackend, build_request, tool_result
from tests.helpers import ROOT, config, free_port, running_gateway

DATA = ROOT / "tests" / "data"
DOCUMENTS = ["petstore-3.0.yaml", "petstore-3.1.json"]
SECRET = "pet-key-7c1e55d0a9"


# -- the API ---------------------------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    target: str  # as it arrived: escaped path and query
    headers: dict[str, str]
    body: bytes


@dataclass
class PetStore:
    """The petstore of the documents (under /v1), plus /forecast/{city} for hand-written tools."""

    seen: list[Seen] = field(default_factory=list)
    pets: dict[int, dict[str, Any]] = field(default_factory=lambda: {
        1: {"id": 1, "name": "Rex", "tag": "dog"}, 2: {"id": 2, "name": "Tom", "tag": "cat"},
        3: {"id": 3, "name": "Kit", "tag": None}})
    base: str = ""

    def answer(self, r: Seen) -> tuple[int, list[tuple[str, str]], bytes, bool]:
        """(status, headers, body, chunked) for one request."""
        path, _, raw_query = r.target.partition("?")
        query = parse_qs(raw_query)
        as_json = [("content-type", "application/json")]
        if path == "/v1/pets" and r.method == "GET":
            pets = [p for p in self.pets.values() if "tag" not in query or p["tag"] == query["tag"][0]]
            return 200, as_json, json.dumps(pets[:int(query.get("limit", ["100"])[0])]).encode(), False
        if path == "/v1/pets" and r.method == "POST":
            new = json.loads(r.body)
            pet = {"id": max(self.pets) + 1, "name": new["name"], "tag": new.get("tag")}
            self.pets[pet["id"]] = pet
            return 201, as_json, json.dumps(pet).encode(), False
        if m := re.fullmatch(r"/v1/pets/([^/]*)", path):
            pet_id = unquote(m[1])
            if r.method == "DELETE":
                return 204, [], b"", False
            if pet_id.isdigit() and int(pet_id) in self.pets:
                return 200, as_json, json.dumps(self.pets[int(pet_id)]).encode(), False
            return 404, as_json, json.dumps({"code": 404, "message": f"no pet {pet_id}"}).encode(), False
        if m := re.fullmatch(r"/v1/status/([0-9]+)", path):
            return int(m[1]), as_json, json.dumps({"message": f"status {m[1]}"}).encode(), False
        if path == "/v1/moved":
            return 302, [("location", "http://169.254.169.254/latest/meta-data/")], b"", False
        if path == "/v1/big":
            return 200, as_json, json.dumps(["x" * 1000] * 100).encode(), query.get("chunked") == ["true"]
        if path == "/v1/tree":
            tree = {"name": "root", "children": [{"name": "a", "children": [{"name": "a1"}]}, {"name": "b"}]}
            return 200, as_json, json.dumps(tree).encode(), False
        if m := re.fullmatch(r"/forecast/([^/]*)", path):
            days = query.get("days", [None])[0]
            return 200, as_json, json.dumps({"city": unquote(m[1]), "days": days and int(days),
                                             "units": query.get("units", [None])[0]}).encode(), False
        return 404, [("content-type", "text/plain")], b"no such thing", False

    async def serve(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request: h11.Request | None = None
                body = b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        if not data:
                            return
                        conn.receive_data(data)
                    elif isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                assert request is not None
                seen = Seen(request.method.decode(), request.target.decode(),
                            {k.decode().lower(): v.decode() for k, v in request.headers}, body)
                self.seen.append(seen)
                if seen.target.startswith("/v1/slow"):
                    await trio.sleep(30)
                status, headers, out, chunked = self.answer(seen)
                head = [(k.encode(), v.encode()) for k, v in headers]
                if not chunked:
                    head.append((b"content-length", str(len(out)).encode()))
                data = conn.send(h11.Response(status_code=status, headers=head)) or b""
                if chunked:
                    for i in range(0, len(out), 8192):
                        data += conn.send(h11.Data(data=out[i:i + 8192])) or b""
                elif out:
                    data += conn.send(h11.Data(data=out)) or b""
                await stream.send_all(data + (conn.send(h11.EndOfMessage()) or b""))
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, h11.RemoteProtocolError):
            return  # the gateway gave up on a slow answer


@asynccontextmanager
async def pet_store() -> AsyncIterator[PetStore]:
    store = PetStore()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, store.serve, 0, host="127.0.0.1"))
        store.base = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        yield store
        nursery.cancel_scope.cancel()


def pets(base: str, document: str = DOCUMENTS[0], **http: Any) -> dict[str, Any]:
    return {"pets": {"http": {"base_url": base, "openapi": str(DATA / document), "timeout": "2s",
                              "max_response": "64k", **http}}}


FORECAST: dict[str, Any] = {
    "name": "forecast", "method": "GET", "path": "/forecast/{city}", "description": "Forecast for a city",
    "input": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
              "required": ["city"]},
    "query": {"days": "{days}"},
}


def text(result: types.CallToolResult) -> str:
    content = result.content[0]
    assert isinstance(content, types.TextContent)
    return content.text


# -- end to end ------------------------------------------------------------------------------------


@pytest.mark.parametrize("document", DOCUMENTS)
async def test_tools_list_shows_each_operation_with_its_schema(document: str) -> None:
    with trio.fail_after(20):
        async with pet_store() as api, running_gateway(config(pets(api.base, document))) as gw, \
                Client(gw.url, mode="legacy") as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == {"pets__listPets", "pets__createPet", "pets__showPetById", "pets__delete_pets_petId",
                          "pets__status", "pets__moved", "pets__big", "pets__slow", "pets__tree"}  # not uploadPhoto
    listing = tools["pets__listPets"]
    assert listing.title == "List all pets"
    assert listing.description == "List all pets\n\nAt most `limit` pets, optionally with one tag."
    assert listing.input_schema == {"type": "object", "properties": {
        "limit": {"type": "integer", "minimum": 1, "maximum": 100, "description": "how many pets at most"},
        "tag": {"type": ["string", "null"], "description": "only pets with this tag"},
        "X-Request-Id": {"type": "string"}}}  # (and no Accept: OpenAPI says it is no parameter)
    pet = {"type": "object", "required": ["id", "name"], "properties": {
        "id": {"type": "integer", "format": "int64"}, "name": {"type": "string"},
        "tag": {"type": ["string", "null"]}}}
    assert listing.output_schema == {"type": "object", "required": ["result"], "properties": {
        "result": {"type": "array", "maxItems": 100, "items": pet}}}  # an array: wrapped
    assert listing.annotations is not None and listing.annotations.read_only_hint is True
    one = tools["pets__showPetById"]
    assert one.input_schema == {"type": "object", "required": ["petId"], "properties": {
        "petId": {"type": "string", "description": "the pet's id"}}}
    assert one.output_schema == pet  # an object: as it is
    create = tools["pets__createPet"]
    assert create.input_schema == {"type": "object", "required": ["body"], "properties": {"body": {
        "type": "object", "required": ["name"], "description": "the new pet",
        "properties": {"name": {"type": "string"}, "tag": {"type": "string"}}}}}
    assert tools["pets__status"].input_schema["properties"]["code"] == {
        "type": "integer", "exclusiveMinimum": 100, "maximum": 599}  # 3.0's boolean form made 2020-12's
    assert tools["pets__delete_pets_petId"].output_schema is None  # a 204 has no body to structure
    assert tools["pets__delete_pets_petId"].annotations.idempotent_hint is True  # type: ignore[union-attr]
    tree = tools["pets__tree"].output_schema
    assert tree is not None and "Node" in tree["$defs"]  # recursive: kept as a reference, defined once


async def test_both_documents_make_the_same_tools() -> None:
    async with pet_store() as api:
        lists = []
        for document in DOCUMENTS:
            with trio.fail_after(20):
                async with running_gateway(config(pets(api.base, document))) as gw, \
                        Client(gw.url, mode="legacy") as client:
                    lists.append({t.name: t.model_dump() for t in (await client.list_tools()).tools})
    del lists[0]["pets__tree"], lists[1]["pets__tree"]  # (3.1's child reference has a description)
    assert lists[0] == lists[1]


@pytest.mark.parametrize("document", DOCUMENTS)
async def test_calls_reach_the_api_and_answer_with_structured_content(document: str) -> None:
    with trio.fail_after(20):
        async with pet_store() as api, running_gateway(config(pets(api.base, document))) as gw, \
                Client(gw.url, mode="legacy") as client:
            listed = await client.call_tool("pets__listPets", {"limit": 2, "X-Request-Id": "req-1"})
            assert not listed.is_error
            assert listed.structured_content == {"result": [api.pets[1], api.pets[2]]}
            assert json.loads(text(listed)) == [api.pets[1], api.pets[2]]
            assert (api.seen[-1].method, api.seen[-1].target) == ("GET", "/v1/pets?limit=2")
            assert api.seen[-1].headers["x-request-id"] == "req-1"
            tagged = await client.call_tool("pets__listPets", {"tag": "cat"})
            assert tagged.structured_content == {"result": [api.pets[2]]}
            one = await client.call_tool("pets__showPetById", {"petId": "3"})
            assert one.structured_content == {"id": 3, "name": "Kit", "tag": None}
            created = await client.call_tool("pets__createPet", {"body": {"name": "Ada", "tag": "owl"}})
            assert created.structured_content == {"id": 4, "name": "Ada", "tag": "owl"}
            sent = api.seen[-1]
            assert (sent.method, sent.target, sent.headers["content-type"]) == ("POST", "/v1/pets", "application/json")
            assert json.loads(sent.body) == {"name": "Ada", "tag": "owl"}
            deleted = await client.call_tool("pets__delete_pets_petId", {"petId": "4"})
            assert not deleted.is_error and text(deleted) == "HTTP 204 No Content"
            tree = await client.call_tool("pets__tree", {})
            assert tree.structured_content is not None and tree.structured_content["name"] == "root"
            missing = await client.call_tool("pets__showPetById", {})
            assert missing.is_error and text(missing) == "missing required argument: petId"
            assert all(s.headers["user-agent"].startswith("mcp-gateway/") for s in api.seen)
            stats = gw.gateway.supervisors["pets"].statistics()
            assert (stats.kind, stats.state, stats.healthy, stats.inflight) == ("http", "ready", True, 0)


async def test_a_path_argument_is_escaped_whole() -> None:
    with trio.fail_after(20):
        async with pet_store() as api, running_gateway(config(pets(api.base))) as gw, \
                Client(gw.url, mode="legacy") as client:
            for value, target in [("../admin", "/v1/pets/..%2Fadmin"), ("..", "/v1/pets/%2E%2E"),
                                  (".", "/v1/pets/%2E"), ("a b?c#d", "/v1/pets/a%20b%3Fc%23d"),
                                  ("é/%2e", "/v1/pets/%C3%A9%2F%252e")]:
                result = await client.call_tool("pets__showPetById", {"petId": value})
                assert api.seen[-1].target == target
                assert result.is_error and text(result).startswith("HTTP 404 Not Found\n")
            empty = await client.call_tool("pets__showPetById", {"petId": ""})
            assert empty.is_error and "must not be empty" in text(empty)
            assert api.seen[-1].target == "/v1/pets/%C3%A9%2F%252e"  # (never sent)


async def test_non_2xx_redirects_and_large_answers_are_error_results() -> None:
    with trio.fail_after(20):
        async with pet_store() as api, running_gateway(config(pets(api.base))) as gw, \
                Client(gw.url, mode="legacy") as client:
            failed = await client.call_tool("pets__status", {"code": 500})
            assert failed.is_error and text(failed) == 'HTTP 500 Internal Server Error\n{"message": "status 500"}'
            assert failed.structured_content is None
            gone = await client.call_tool("pets__showPetById", {"petId": "99"})
            assert gone.is_error and text(gone) == 'HTTP 404 Not Found\n{"code": 404, "message": "no pet 99"}'
            moved = await client.call_tool("pets__moved", {})
            assert moved.is_error and text(moved) == ("HTTP 302 Found: redirects are not followed (to host "
                                                      "169.254.169.254); configure the final URL")
            assert [s.target for s in api.seen].count("/v1/moved") == 1  # and never to the metadata address
            for arguments in ({}, {"chunked": True}):  # a Content-Length over the cap, and a stream over it
                big = await client.call_tool("pets__big", arguments)
                assert big.is_error and "the response is larger than max_response (64k)" in text(big)
            ok = await client.call_tool("pets__status", {"code": 200})
            assert ok.structured_content == {"message": "status 200"}


async def test_a_slow_api_times_out_and_an_unreachable_one_is_a_clear_error() -> None:
    with trio.fail_after(20):
        async with pet_store() as api, running_gateway(config({
                **pets(api.base, timeout="0.5s"),
                "gone": {"http": {"base_url": f"http://127.0.0.1:{free_port()}", "tools": [FORECAST]}}})) as gw, \
                Client(gw.url, mode="legacy") as client:
            started = trio.current_time()
            with pytest.raises(MCPError) as info:
                await client.call_tool("pets__slow", {})
            assert info.value.error.code == -32001
            assert info.value.error.message == "server 'pets': GET /slow did not answer within 0.5s"
            assert trio.current_time() - started < 3
            with pytest.raises(MCPError) as info:
                await client.call_tool("gone__forecast", {"city": "Oslo"})
            assert info.value.error.code == -32000
            assert info.value.error.message.startswith("server 'gone' is unreachable at http://127.0.0.1:")
            fine = await client.call_tool("pets__showPetById", {"petId": "1"})  # the same client serves on
            assert fine.structured_content == api.pets[1]


async def test_hand_written_tools_with_templates_and_a_secret_header(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("WEATHER_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    weather = {"weather": {"http": {
        "base_url": "BASE", "headers": {"Authorization": "Bearer ${secret:WEATHER_KEY}", "X-Team": "a$${b}"},
        "tools": [FORECAST,
                  {"name": "celsius", "path": "/forecast/{city}", "query": {"units": "metric-{scale}"},
                   "headers": {"X-Trace": "{trace}", "x-team": "{team}"}},
                  {"name": "report", "method": "post", "path": "/report/{city}",
                   "input": {"type": "object", "properties": {"city": {"type": "string"}, "note": {"type": "string"},
                                                              "level": {"type": "integer"}}},
                   "body": {"where": "{city}", "text": "note: {note}", "level": "{level}", "fixed": [1, True]},
                   "output": {"type": "object"}},
                  {"name": "rest", "method": "PUT", "path": "/report/{city}", "input": {
                      "type": "object", "properties": {"city": {}, "a": {}, "b": {}}}},
                  {"name": "search", "path": "/forecast/{city}", "input": {
                      "type": "object", "properties": {"city": {}, "units": {}}}}]}}}
    with trio.fail_after(20):
        async with pet_store() as api:
            weather["weather"]["http"]["base_url"] = api.base
            cfg = config(weather)
            async with running_gateway(cfg) as gw, Client(gw.url, mode="legacy") as client:
                tools = {t.name: t for t in (await client.list_tools()).tools}
                assert tools["weather__forecast"].input_schema == FORECAST["input"]
                assert tools["weather__forecast"].description == "Forecast for a city"
                # Without input, the placeholders are the arguments (a path one required).
                assert tools["weather__celsius"].input_schema == {"type": "object", "required": ["city"], "properties": {
                    "city": {"type": "string"}, "scale": {"type": "string"}, "trace": {"type": "string"},
                    "team": {"type": "string"}}}
                result = await client.call_tool("weather__forecast", {"city": "São Paulo", "days": 3})
                assert json.loads(text(result)) == {"city": "São Paulo", "days": 3, "units": None}
                assert result.structured_content is None  # no output schema given
                assert api.seen[-1].target == "/forecast/S%C3%A3o%20Paulo?days=3"
                assert api.seen[-1].headers["authorization"] == f"Bearer {SECRET}"
                assert api.seen[-1].headers["x-team"] == "a${b}"
                await client.call_tool("weather__forecast", {"city": "Oslo"})
                assert api.seen[-1].target == "/forecast/Oslo"  # an absent argument: no query parameter
                await client.call_tool("weather__celsius", {"city": "Oslo", "scale": "c", "trace": "t-1",
                                                            "team": "evil", "Authorization": "Bearer stolen"})
                assert api.seen[-1].target == "/forecast/Oslo?units=metric-c"
                assert api.seen[-1].headers["x-trace"] == "t-1"
                assert api.seen[-1].headers["authorization"] == f"Bearer {SECRET}"
                assert api.seen[-1].headers["x-team"] == "a${b}"  # an argument cannot replace the server's
                bad = await client.call_tool("weather__celsius", {"city": "Oslo", "trace": "a\r\nX-Evil: 1"})
                assert bad.is_error and "cannot be sent (printable ASCII only)" in text(bad)
                await client.call_tool("weather__report", {"city": "Oslo", "note": "windy", "level": 2})
                assert (api.seen[-1].method, api.seen[-1].target) == ("POST", "/report/Oslo")
                assert json.loads(api.seen[-1].body) == {"where": "Oslo", "text": "note: windy", "level": 2,
                                                         "fixed": [1, True]}
                await client.call_tool("weather__report", {"city": "Oslo"})
                assert json.loads(api.seen[-1].body) == {"where": "Oslo", "fixed": [1, True]}
                # What no template uses: the body of a PUT, the query of a GET; what is not declared: nothing.
                await client.call_tool("weather__rest", {"city": "Oslo", "a": 1, "b": [2], "c": 3})
                assert (api.seen[-1].method, json.loads(api.seen[-1].body)) == ("PUT", {"a": 1, "b": [2]})
                searched = await client.call_tool("weather__search", {"city": "Oslo", "units": ["c", "f"], "x": 1})
                assert api.seen[-1].target == "/forecast/Oslo?units=c&units=f"
                assert json.loads(text(searched))["units"] == "c"
                await client.call_tool("weather__forecast", {"city": "Oslo", "extra": [1, 2]})
                assert api.seen[-1].target == "/forecast/Oslo"
                report = await client.call_tool("weather__report", {"city": "x"})
                assert report.is_error and "not the JSON object" not in text(report)  # 404 text/plain
                assert text(report) == "HTTP 404 Not Found\nno such thing"
    assert SECRET not in caplog.text
    shown = describe(cfg)
    assert SECRET not in shown and "${" not in shown
    assert "    base url: http://127.0.0.1:" in shown
    assert "    sends: Authorization (secret from env), X-Team (header names only)" in shown
    assert "    tools: 5 by hand (forecast, celsius, report, rest, search)" in shown
    assert "timeout 30s per call, response 4m; TLS verified, redirects refused, the SSRF guard of remote:" in shown


async def test_a_base_url_path_and_query_come_first() -> None:
    tools = [{"name": "city", "path": "/{city}", "query": {"days": "{days}"}},
             {"name": "odd", "path": "/a;b/é/{city}"}]
    with trio.fail_after(20):
        async with pet_store() as api, running_gateway(config({"w": {"http": {
                "base_url": f"{api.base}/forecast/?units=metric", "tools": tools}}})) as gw, \
                Client(gw.url, mode="legacy") as client:
            result = await client.call_tool("w__city", {"city": "Oslo", "days": 2})
            assert api.seen[-1].target == "/forecast/Oslo?units=metric&days=2"
            assert json.loads(text(result)) == {"city": "Oslo", "days": 2, "units": "metric"}
            await client.call_tool("w__odd", {"city": "x"})
            assert api.seen[-1].target == "/forecast/a;b/%C3%A9/x?units=metric"
    # The base_url's path wins over the document's servers[0] (/v1).
    async with pet_store() as api, running_gateway(config(pets(f"{api.base}/api"))) as gw, \
            Client(gw.url, mode="legacy") as client:
        await client.call_tool("pets__showPetById", {"petId": "1"})
        assert api.seen[-1].target == "/api/pets/1"


async def test_the_ssrf_guard_checks_every_connection() -> None:
    # The config allows the name (networks are listed); its address is judged when connecting.
    with trio.fail_after(20):
        async with pet_store() as api:
            port = api.base.rsplit(":", 1)[1]
            cfg = config(pets(f"http://localhost:{port}"), remote={"allow_hosts": ["10.0.0.0/8"]})
            async with running_gateway(cfg) as gw, Client(gw.url, mode="legacy") as client:
                with pytest.raises(MCPError) as info:
                    await client.call_tool("pets__showPetById", {"petId": "1"})
            assert info.value.error.code == -32000
            assert "refused by the SSRF guard: localhost resolves to" in info.value.error.message
            assert api.seen == []


async def test_policy_tool_filters_rate_limits_and_the_audit_apply_to_rest_tools() -> None:
    records: list[Any] = []
    with trio.fail_after(20):
        async with pet_store() as api:
            cfg = config({"pets": {**pets(api.base)["pets"], "tools": {"deny": ["delete_pets_petId"]}}},
                         policy=[{"allow": {"who": ["*"]}}, {"deny": {"tools": ["pets__createPet"]}}],
                         rate_limits=[{"tools": ["pets__listPets"], "rate": 0.01, "burst": 1}])
            async with running_gateway(cfg) as gw, Client(gw.url, mode="legacy") as client:
                gw.gateway.dispatcher.observers.append(records.append)  # what the audit log observes
                names = {t.name for t in (await client.list_tools()).tools}
                assert "pets__listPets" in names and not names & {"pets__createPet", "pets__delete_pets_petId"}
                for hidden in ("pets__createPet", "pets__delete_pets_petId"):
                    with pytest.raises(MCPError) as info:
                        await client.call_tool(hidden, {"body": {"name": "x"}, "petId": "1"})
                    assert (info.value.error.code, info.value.error.message) == (-32602, f"Unknown tool: {hidden!r}")
                assert (await client.call_tool("pets__listPets", {})).structured_content is not None
                with pytest.raises(MCPError) as info:
                    await client.call_tool("pets__listPets", {})
                assert info.value.error.code == -32005
                assert (await client.call_tool("pets__showPetById", {"petId": "9"})).is_error
    assert [s.method for s in api.seen] == ["GET", "GET"]  # nothing hidden or limited reached the API
    outcomes = [(r.server, r.name, r.outcome) for r in records if r.server == "pets"]
    assert outcomes == [("pets", "pets__listPets", "ok"), ("pets", "pets__listPets", "error -32005"),
                        ("pets", "pets__showPetById", "tool_error")]


async def test_a_reload_adds_changes_and_removes_rest_apis() -> None:
    with trio.fail_after(20):
        async with pet_store() as api:
            hand = {"hand": {"http": {"base_url": api.base, "tools": [FORECAST]}}}
            async with running_gateway(config(hand)) as gw, Client(gw.url, mode="legacy") as client:
                assert [t.name for t in (await client.list_tools()).tools] == ["hand__forecast"]
                old = gw.gateway.supervisors["hand"]
                summary = await gw.gateway.apply(config({**pets(api.base, operations=["showPetById"]), "hand": {
                    "http": {"base_url": api.base, "tools": [{**FORECAST, "name": "weather"}]}}}))
                assert (summary["added"], summary["changed"]) == (["pets"], ["hand"])
                assert sorted(t.name for t in (await client.list_tools()).tools) == ["hand__weather",
                                                                                     "pets__showPetById"]
                assert (await client.call_tool("hand__weather", {"city": "Rome"})).is_error is False
                await gw.gateway.apply(config(pets(api.base, operations=["showPetById"])))
                assert [t.name for t in (await client.list_tools()).tools] == ["pets__showPetById"]
                await wait_until(lambda: old.state == "stopped")


async def wait_until(predicate: Any) -> None:
    while not predicate():
        await trio.sleep(0.02)


async def test_check_describes_and_starts_an_http_server() -> None:
    from gateway.cli.tools_table import collect_tool_table

    async with pet_store() as api:
        cfg = config(pets(api.base, operations=["listPets", "showPetById"]))
        shown = describe(cfg)
        ok, table = await collect_tool_table(cfg)
    assert f"  pets (http)\n    base url: {api.base}\n    tools: OpenAPI {DATA / DOCUMENTS[0]} (operations " \
           "listPets, showPetById)" in shown
    assert "start " not in shown.split("  pets (http)")[1].split("routes:")[0]  # no process timeouts
    assert ok and "  pets: ready (Petstore 1.0.0)" in table
    assert re.findall(r"tool +(\S+)", table) == ["pets__listPets", "pets__showPetById"]


async def test_a_document_that_breaks_after_validation_fails_the_server_only(tmp_path: Path) -> None:
    document = tmp_path / "api.yaml"
    document.write_text((DATA / DOCUMENTS[0]).read_text())
    with trio.fail_after(20):
        async with pet_store() as api:
            cfg = config({**pets(api.base, openapi=str(document)), "hand": {"http": {"base_url": api.base,
                                                                                    "tools": [FORECAST]}}})
            document.write_text("openapi: [")
            async with running_gateway(cfg) as gw, Client(gw.url, mode="legacy") as client:
                backend = gw.gateway.supervisors["pets"]
                assert backend.state == "failed" and "http.openapi" in (backend.last_error or "")
                assert [t.name for t in (await client.list_tools()).tools] == ["hand__forecast"]


# -- config errors ---------------------------------------------------------------------------------

BASE = "http://127.0.0.1:9"
TOOL = {"name": "a", "path": "/a"}


def _documents(tmp: Path) -> None:
    (tmp / "bad.yaml").write_text("openapi: 3.0.0\npaths: [\n")
    (tmp / "swagger.json").write_text('{"swagger": "2.0", "paths": {}}')
    (tmp / "dangling.yaml").write_text("openapi: 3.1.0\npaths:\n  /a:\n    get:\n      parameters:\n"
                                       "        - $ref: '#/components/parameters/nope'\n")
    (tmp / "outside.yaml").write_text("openapi: 3.1.0\npaths:\n  /a:\n    get:\n      responses:\n        '200':\n"
                                      "          $ref: 'other.yaml#/responses/ok'\n")
    (tmp / "loop.yaml").write_text("openapi: 3.0.0\npaths:\n  /a:\n    get:\n      parameters:\n"
                                   "        - $ref: '#/components/parameters/a'\ncomponents:\n  parameters:\n"
                                   "    a: {$ref: '#/components/parameters/b'}\n    b: {$ref: '#/components/parameters/a'}\n")
    (tmp / "empty.json").write_text('{"openapi": "3.1.0", "info": {"title": "t", "version": "1"}}')
    (tmp / "list.yaml").write_text("- 1\n")
    (tmp / "header.yaml").write_text("openapi: 3.1.0\npaths:\n  /a:\n    get:\n      parameters:\n"
                                     "        - {name: X Bad, in: header}\n")


@pytest.mark.parametrize(("server", "expected"), [
    ({"http": {"base_url": BASE, "tools": [TOOL]}, "url": "http://x"},
     "servers.s: set only one of http (a REST API) and url (a remote MCP server)"),
    ({"http": {"base_url": BASE, "tools": [TOOL]}, "command": "x"},
     "servers.s: set only one of http (a REST API) and command (a local process)"),
    ({"http": {"base_url": BASE, "tools": [TOOL]}, "image": "i"},
     "servers.s: set only one of http (a REST API) and image (a container)"),
    ({"http": {"base_url": BASE, "tools": [TOOL]}, "call_timeout": "5s"},
     "servers.s.call_timeout: does not apply to http servers (a REST API) (use http.timeout)"),
    ({"http": {"base_url": BASE, "tools": [TOOL]}, "headers": {"A": "b"}},
     "servers.s.headers: does not apply to http servers (a REST API) (put them under http.headers)"),
    ({"http": {"base_url": BASE, "tools": [TOOL]}, "lifecycle": "session"},
     "servers.s.lifecycle: does not apply to http servers"),
    ({"http": {"base_url": BASE}}, "servers.s.http: no tools: set openapi"),
    ({"http": {"tools": [TOOL]}}, "servers.s.http.base_url: required key is missing"),
    ({"http": {"base_url": BASE, "tools": [TOOL], "base": 1}},
     "servers.s.http.base: unknown key (did you mean 'base_url'?)"),
    ({"http": {"base_url": "ftp://x.example", "tools": [TOOL]}},
     "servers.s.http.base_url: expected an http:// or https:// URL"),
    ({"http": {"base_url": f"https://u:{SECRET}@x.example", "tools": [TOOL]}},
     "servers.s.http.base_url: must not hold credentials"),
    ({"http": {"base_url": "http://169.254.169.254/latest", "tools": [TOOL]}},
     "servers.s.http.base_url: refused by the SSRF guard: 169.254.169.254 is a cloud metadata address"),
    ({"http": {"base_url": "http://[fe80::1]:8080", "tools": [TOOL]}},
     "servers.s.http.base_url: refused by the SSRF guard: fe80::1 is link-local"),
    ({"http": {"base_url": BASE, "tools": [TOOL], "timeout": "0s"}},
     "servers.s.http.timeout: must be greater than 0"),
    ({"http": {"base_url": BASE, "tools": [TOOL], "headers": {"Authorization": f"Bearer ${{{SECRET}}}"}}},
     "servers.s.http.headers.Authorization: an unclosed or unknown ${...}"),
    ({"http": {"base_url": BASE, "tools": [TOOL], "headers": {"Authorization": "Bearer ${vault:X}"}}},
     "servers.s.http.headers.Authorization: a secret reference is ${env:NAME}, ${file:/absolute/path} or "
     "${secret:NAME} (value not shown)"),
    ({"http": {"base_url": BASE, "tools": [TOOL], "headers": {"X-Key": "${file:relative}"}}},
     "servers.s.http.headers.X-Key: ${file:...} needs an absolute path"),
    ({"http": {"base_url": BASE, "tools": [TOOL], "headers": {"X-Key": f"{SECRET}\n"}}},
     "servers.s.http.headers.X-Key: invalid header value (printable ASCII only; value not shown)"),
    ({"http": {"base_url": BASE, "tools": [TOOL], "headers": {"Host": "x"}}},
     "servers.s.http.headers.Host: not allowed here: the gateway sets it"),
    ({"http": {"base_url": BASE, "tools": [{**FORECAST, "query": {"days": "{dayz}"}}]}},
     "servers.s.http.tools[0].query.days: {dayz} names no input property (known: city, days)"),
    ({"http": {"base_url": BASE, "tools": [{**FORECAST, "path": "/forecast/{town}"}]}},
     "servers.s.http.tools[0].path: {town} names no input property (known: city, days)"),
    ({"http": {"base_url": BASE, "tools": [{**FORECAST, "method": "POST", "body": {"x": ["{when}"]}}]}},
     "servers.s.http.tools[0].body: {when} names no input property"),
    ({"http": {"base_url": BASE, "tools": [TOOL, {"name": "b", "path": "/b"}, {"name": "a", "path": "/c"}]}},
     "servers.s.http.tools[2].name: tool 'a' is defined twice"),
    ({"http": {"base_url": BASE, "tools": [{"name": "a b", "path": "/a"}]}},
     "servers.s.http.tools[0].name: invalid tool name 'a b'"),
    ({"http": {"base_url": BASE, "tools": [{**TOOL, "method": "FETCH"}]}},
     "servers.s.http.tools[0].method: expected one of DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT, got 'FETCH'"),
    ({"http": {"base_url": BASE, "tools": [{**TOOL, "path": "a?b=1"}]}},
     "servers.s.http.tools[0].path: a path starts with '/' and has no query"),
    ({"http": {"base_url": BASE, "tools": [{**TOOL, "path": "/a/../b"}]}},
     "servers.s.http.tools[0].path: '.' and '..' segments are not allowed"),
    ({"http": {"base_url": BASE, "tools": [{**TOOL, "input": {"type": "array"}}]}},
     "servers.s.http.tools[0].input: must be an object schema"),
    ({"http": {"base_url": BASE, "tools": [{**TOOL, "input": [1]}]}},
     "servers.s.http.tools[0].input: expected a mapping (a JSON Schema), got a list"),
    ({"http": {"base_url": BASE, "tools": [{**TOOL, "headers": {"Content-Length": "1"}}]}},
     "servers.s.http.tools[0].headers.Content-Length: not allowed here: the gateway sets it"),
    ({"http": {"base_url": BASE, "openapi": "/nonexistent/api.yaml"}},
     "servers.s.http.openapi: cannot read /nonexistent/api.yaml: No such file or directory"),
    ({"http": {"base_url": BASE, "openapi": "{tmp}/bad.yaml"}},
     "servers.s.http.openapi: {tmp}/bad.yaml: invalid YAML at line 3, column 1"),
    ({"http": {"base_url": BASE, "openapi": "{tmp}/list.yaml"}},
     "servers.s.http.openapi: {tmp}/list.yaml: not an OpenAPI document (expected a mapping at the top)"),
    ({"http": {"base_url": BASE, "openapi": "{tmp}/swagger.json"}},
     "servers.s.http.openapi: Swagger 2.0 is not supported: convert it to OpenAPI 3"),
    ({"http": {"base_url": BASE, "openapi": "{tmp}/dangling.yaml"}},
     "servers.s.http.openapi: paths./a.get.parameters[0]: $ref '#/components/parameters/nope' does not "
     "resolve (no 'components')"),
    ({"http": {"base_url": BASE, "openapi": "{tmp}/outside.yaml"}},
     "servers.s.http.openapi: paths./a.get.responses.200: $ref 'other.yaml#/responses/ok' points outside the "
     "document"),
    ({"http": {"base_url": BASE, "openapi": "{tmp}/loop.yaml"}},
     "servers.s.http.openapi: paths./a.get.parameters[0]: $ref '#/components/parameters/a' refers to itself"),
    ({"http": {"base_url": BASE, "openapi": "{tmp}/empty.json"}},
     "servers.s.http.openapi: the document has no operations to serve"),
    ({"http": {"base_url": BASE, "openapi": str(DATA / DOCUMENTS[0]), "operations": ["listPets", "nope"]}},
     "servers.s.http.operations[1]: no operation 'nope' in the document (known: big, createPet"),
    ({"http": {"base_url": BASE, "tools": [TOOL], "operations": ["a"]}},
     "servers.s.http.operations: chooses operations of an OpenAPI document: set http.openapi"),
    ({"http": {"base_url": BASE, "openapi": "{tmp}/header.yaml"}},
     "servers.s.http.openapi: paths./a.get.parameters[0].name: 'X Bad' is not a valid header name"),
    ({"http": {"base_url": BASE, "tools": [TOOL], "ca_file": "ca.pem"}},
     "servers.s.http.ca_file: must be an absolute path"),
])
def test_http_config_errors(tmp_path: Path, server: dict[str, Any], expected: str) -> None:
    _documents(tmp_path)
    raw = json.loads(json.dumps(server).replace("{tmp}", str(tmp_path)))
    with pytest.raises(ConfigError) as info:
        parse_config({"servers": {"s": raw}})
    assert str(info.value).startswith(expected.replace("{tmp}", str(tmp_path))), str(info.value)
    assert SECRET not in str(info.value)


def test_a_missing_secret_is_a_start_error_naming_the_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    cfg = config({"s": {"http": {"base_url": BASE, "tools": [TOOL],
                                 "headers": {"X-Key": "${env:NO_SUCH_KEY}"}}}})
    from gateway.cli.compose import build_gateway

    with pytest.raises(ConfigError) as info:
        build_gateway(cfg, port=0)
    assert str(info.value) == "servers.s.http.headers.X-Key: env:NO_SUCH_KEY: environment variable NO_SUCH_KEY " \
                              "is not set"


def test_header_templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K", "v1")
    (tmp_path / "key").write_text("v2\n")
    value = f"a ${{env:K}} ${{secret:K}} ${{file:{tmp_path}/key}} $${{env:K}}"
    assert template_problem(value) is None
    assert resolve_header(value, where="x") == "a v1 v1 v2 ${env:K}"
    assert template_problem("${env:1X}") == "${env:...} needs an environment variable name"


# -- sans-IO ---------------------------------------------------------------------------------------


def _doc(paths: dict[str, Any], components: dict[str, Any] | None = None, version: str = "3.1.0") -> dict[str, Any]:
    return {"openapi": version, "info": {"title": "t", "version": "1"}, "paths": paths,
            "components": components or {}}


def test_names_from_operations() -> None:
    ok = {"responses": {"200": {"description": "ok"}}}
    long = "x" * 80
    tools = from_document(_doc({
        "/a/{id}/b.c": {"get": ok, "post": {**ok, "operationId": "make thing/now"}},
        "/dup": {"get": {**ok, "operationId": "make_thing_now"}, "put": {**ok, "operationId": long}},
    })).tools
    names = [t.name for t in tools]
    assert names[:3] == ["get_a_id_b_c", "make_thing_now", "make_thing_now_2"]
    assert len(names[3]) == 64 and names[3].startswith("x" * 57 + "_")
    assert all(re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", n) for n in names)


def test_parameter_styles_and_renamed_properties() -> None:
    params = [
        {"name": "ids", "in": "query", "schema": {"type": "array"}},
        {"name": "csv", "in": "query", "explode": False, "schema": {"type": "array"}},
        {"name": "pipes", "in": "query", "style": "pipeDelimited", "schema": {"type": "array"}},
        {"name": "filter", "in": "query", "style": "deepObject", "schema": {"type": "object"}},
        {"name": "flat", "in": "query", "schema": {"type": "object"}},
        {"name": "id", "in": "query", "schema": {"type": "string"}},  # also a path parameter
        {"name": "id", "in": "path", "required": True, "schema": {"type": "array"}},
        {"name": "page[size]", "in": "query", "schema": {"type": "integer"}},
        {"name": "q", "in": "query", "content": {"application/json": {"schema": {"type": "object"}}}},
        {"name": "session", "in": "cookie", "schema": {"type": "string"}},
        {"name": "X-Flags", "in": "header", "schema": {"type": "array"}},
    ]
    spec = from_document(_doc({"/things/{id}": {"get": {"operationId": "things", "parameters": params,
                                                        "responses": {"200": {"description": "ok"}}}}})).tools[0]
    properties = spec.definition["inputSchema"]["properties"]
    assert list(properties) == ["ids", "csv", "pipes", "filter", "flat", "id", "path_id", "page_size_", "q",
                                "session", "X-Flags"]
    assert spec.required == ("path_id",)
    out = build_request(spec, {"ids": [1, 2], "csv": ["a", "b"], "pipes": ["x", "y"], "filter": {"s": "on"},
                               "flat": {"k": True}, "id": "q", "path_id": ["a/b", "c"], "page_size_": 5,
                               "q": {"a": 1}, "session": "s 1", "X-Flags": ["f1", "f2"], "unknown": 1})
    path, _, query = out.target.partition("?")
    assert path == "/things/a%2Fb,c"
    assert query.split("&") == ["ids=1", "ids=2", "csv=a%2Cb", "pipes=x%7Cy", "filter%5Bs%5D=on", "k=true",
                                "id=q", "page%5Bsize%5D=5", "q=%7B%22a%22%3A1%7D"]
    assert dict(out.headers) == {"X-Flags": "f1,f2", "cookie": "session=s%201"}
    assert out.body is None


def test_schemas_are_resolved_and_made_2020_12() -> None:
    components = {"schemas": {
        "Name": {"type": "string", "nullable": True, "enum": ["a", "b"]},
        "Any": {"nullable": True, "description": "x"},
        "Age": {"type": "integer", "minimum": 0, "exclusiveMinimum": True, "maximum": 9, "exclusiveMaximum": False},
        "A": {"type": "object", "properties": {"b": {"$ref": "#/components/schemas/B"}}},
        "B": {"type": "object", "properties": {"a": {"$ref": "#/components/schemas/A"}, "when": {"default": None}}},
    }}
    body = {"required": True, "content": {"application/json": {"schema": {"type": "object", "properties": {
        "name": {"$ref": "#/components/schemas/Name"}, "any": {"$ref": "#/components/schemas/Any"},
        "age": {"$ref": "#/components/schemas/Age"}, "a": {"$ref": "#/components/schemas/A"}}}}}}
    doc = _doc({"/x": {"post": {"operationId": "x", "requestBody": body, "responses": {
        "200": {"description": "ok", "content": {"application/json": {"schema": {"type": "string"}}}}}}}},
        components, version="3.0.3")
    spec = from_document(doc).tools[0]
    schema = spec.definition["inputSchema"]
    props = schema["properties"]["body"]["properties"]
    assert props["name"] == {"type": ["string", "null"], "enum": ["a", "b", None]}
    assert props["any"] == {"anyOf": [{"description": "x"}, {"type": "null"}]}
    assert props["age"] == {"type": "integer", "exclusiveMinimum": 0, "maximum": 9}
    # A -> B -> A: A inlined once, its recursion a reference into the tool's own $defs.
    assert props["a"]["properties"]["b"]["properties"]["a"] == {"$ref": "#/$defs/A"}
    assert schema["$defs"]["A"]["properties"]["b"]["properties"]["a"] == {"$ref": "#/$defs/A"}
    assert spec.definition["outputSchema"]["properties"]["result"] == {"type": "string"}
    assert spec.structured == "wrapped"
    json.dumps(spec.definition)  # a tree, never a cycle


def test_documents_that_cannot_be_expanded_are_refused() -> None:
    # Ten levels of ten references each: 10**10 nodes once inlined.
    schemas = {f"L{i}": {"type": "object", "properties": {f"p{j}": {"$ref": f"#/components/schemas/L{i + 1}"}
                                                          for j in range(10)}} for i in range(10)}
    schemas["L10"] = {"type": "string"}
    doc = _doc({"/x": {"get": {"operationId": "x", "responses": {"200": {"description": "ok", "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/L0"}}}}}}}}, {"schemas": schemas})
    with pytest.raises(SpecError, match="larger than 50000 nodes"):
        from_document(doc)
    recursive: list[Any] = []
    recursive.append(recursive)  # what YAML's aliases can build
    doc = _doc({"/x": {"get": {"operationId": "x", "parameters": [
        {"name": "a", "in": "query", "schema": {"enum": recursive}}]}}})
    with pytest.raises(SpecError, match="nested more than 128 levels"):
        from_document(doc)
    with pytest.raises(SpecError, match="not an OpenAPI 3 document"):
        from_document({"openapi": "2.0"})


def test_results_of_responses() -> None:
    plain = manual_tool(RestTool(name="t", path="/t"), "tools[0]")
    shaped = manual_tool(RestTool(name="t", path="/t", output={"type": "object"}), "tools[0]")
    listed = manual_tool(RestTool(name="t", path="/t", output={"type": "array"}), "tools[0]")
    limit = 100
    assert tool_result(plain, 200, "image/png", b"\x89PNG", over=False, max_response=limit) == {
        "content": [{"type": "image", "data": "iVBORw==", "mimeType": "image/png"}]}
    assert tool_result(plain, 200, "application/octet-stream", b"\xff\xfe", over=False, max_response=limit) == {
        "content": [{"type": "text", "text": "HTTP 200 OK: 2 bytes of application/octet-stream (not text)"}]}
    assert tool_result(shaped, 200, "application/json", b"[1]", over=False, max_response=limit)["isError"]
    assert tool_result(shaped, 200, "text/html", b"<p>", over=False, max_response=limit)["isError"]
    assert tool_result(shaped, 200, "application/json", b"{", over=False, max_response=limit)["content"][0][
        "text"] == "HTTP 200 OK: the response is not valid JSON"
    assert tool_result(listed, 200, "application/problem+json", b"[1]", over=False, max_response=limit)[
        "structuredContent"] == {"result": [1]}
    cut = tool_result(plain, 502, "text/plain", b"x" * 20000, over=True, max_response=limit)
    assert cut["isError"] and cut["content"][0]["text"].endswith(" ... (cut)")
    assert len(cut["content"][0]["text"]) < 17000


async def test_other_methods_and_unknown_tools_are_json_rpc_errors() -> None:
    from gateway.protocol.errors import CallError

    backend = RestBackend("r", RestApi(base_url=BASE, tools=[RestTool(name="t", path="/t")]))
    async with trio.open_nursery() as nursery:
        await nursery.start(backend.run)
        with pytest.raises(CallError) as info:
            await backend.call("resources/list")
        assert info.value.code == -32601
        with pytest.raises(CallError) as info:
            await backend.call("tools/call", {"name": openapi_raw("nope")})
        assert (info.value.code, info.value.message) == (-32602, "Unknown tool: 'nope'")
        result = json.loads(bytes(await backend.call("tools/call", {"name": openapi_raw("t"),
                                                                    "arguments": openapi_raw([1])})))
        assert result == {"content": [{"type": "text", "text": "arguments must be an object"}], "isError": True}
        nursery.cancel_scope.cancel()
    assert backend.state == "stopped"


def openapi_raw(value: Any) -> Any:
    from msgspec import Raw

    return Raw(json.dumps(value).encode())


def test_an_operation_list_keeps_hand_tools_and_they_replace_operations() -> None:
    api = RestApi(base_url=BASE, openapi=str(DATA / DOCUMENTS[1]), operations=["showPetById"],
                  tools=[RestTool(name="showPetById", path="/mine/{petId}")])
    found = openapi.load(api)
    assert [(t.name, t.path) for t in found.tools] == [("showPetById", "/mine/{petId}")]
    assert found.base_path == "/v1"
    assert found.notes == ["POST /upload skipped: its request body is not JSON (multipart/form-data)"]
