"""bench/locustfile.py: locust runs headless as a real subprocess against real gateways (mcp-server-time
on config/example.yaml, the SDK test server), read from its CSV output; and the argument generator on
schemas that real MCP servers emit, checked by calling those servers' tools."""

from __future__ import annotations

import datetime
import enum
import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import jsonschema
import pytest
from mcp.server.mcpserver import MCPServer
from mcp_server_time.server import create_server
from pydantic import BaseModel, Field

from tests.helpers import ROOT, SDK_SERVER, cli_gateway, free_port

LOCUST = str(Path(sys.executable).with_name("locust"))
LOCUSTFILE = str(ROOT / "bench" / "locustfile.py")


Rows = dict[tuple[str, str], dict[str, Any]]


def _import_locustfile() -> Any:
    """bench/locustfile.py in this process, without the gevent monkey patching that importing locust
    does (it would break trio and the rest of the suite): locust reads this variable once, at import."""
    saved = os.environ.get("LOCUST_SKIP_MONKEY_PATCH")
    os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"
    try:
        return importlib.import_module("bench.locustfile")
    finally:
        if saved is None:
            del os.environ["LOCUST_SKIP_MONKEY_PATCH"]


lf = _import_locustfile()


def _start_gateway(config: Path, log: Path) -> Iterator[str]:
    yield from cli_gateway(config, log)


@pytest.fixture(scope="module")
def time_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``make run``'s gateway: config/example.yaml as it is (mcp-server-time), on a free port."""
    yield from _start_gateway(ROOT / "config" / "example.yaml", tmp_path_factory.mktemp("time") / "gateway.log")


@pytest.fixture(scope="module")
def sdk_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway in front of the SDK test server, whose tools include crash, fail, sleep and redefine."""
    work = tmp_path_factory.mktemp("sdk")
    cfg = work / "gateway.yaml"
    cfg.write_text(f"servers:\n  sdk: {{command: {sys.executable}, args: [{SDK_SERVER}, sdk]}}\n")
    yield from _start_gateway(cfg, work / "gateway.log")


def run_locust(tmp_path: Path, host: str, *extra: str, seconds: int = 3, users: int = 4,
               env: dict[str, str] | None = None, exit_code: int = 0) -> tuple[Rows, str]:
    """A headless locust run: its final stats by (request type, name) from --json-file, and its log.

    (Not --csv: locust 2.47 writes that file once a second and not at the end, so a short run's
    CSV can be empty.)
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MCP_BENCH_")}
    environ.update(env or {})
    proc = subprocess.run(
        [LOCUST, "-f", LOCUSTFILE, "--headless", "--host", host, "-u", str(users), "-r", str(users),
         "-t", f"{seconds}s", "--only-summary", "--json-file", str(tmp_path / "stats"), *extra],
        cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=60)
    assert proc.returncode == exit_code, proc.stderr[-3000:]  # locust exits 1 after failures
    entries = json.loads((tmp_path / "stats.json").read_text())
    return {(e["method"], e["name"]): e for e in entries}, proc.stderr


def assert_clean(rows: Rows, at_least: int = 20) -> None:
    assert sum(e["num_failures"] for e in rows.values()) == 0, rows
    assert sum(e["num_requests"] for e in rows.values()) >= at_least, rows


# -- runs -------------------------------------------------------------------------------------------------


def test_default_users_pick_a_tool_of_make_runs_config_and_never_fail(time_gateway: str, tmp_path: Path) -> None:
    rows, log = run_locust(tmp_path, time_gateway, users=8)  # 8: each class by its weight (4:1:1:2)
    assert_clean(rows, at_least=100)
    assert "calling time__get_current_time with {\"timezone\": \"UTC\"}" in log
    assert log.count("MCP_BENCH_TOOL unset") == 1  # one discovery per process, whatever the users
    calls = {name for kind, name in rows if name.startswith("tools/call ")}
    assert calls == {"tools/call time__get_current_time", "tools/call time__convert_time"}  # the mix
    # by default only the handshake-era Streamable HTTP users run
    assert {kind for kind, _ in rows} == {"POST", "DELETE"}
    assert not any(name.startswith(lf.MODERN_VERSION) for _, name in rows)


@pytest.mark.parametrize(("user", "kind"), [("SSEUser", "SSE"), ("WebSocketUser", "WS"), ("StatelessUser", "POST")])
def test_each_transport_user_runs_clean(time_gateway: str, tmp_path: Path, user: str, kind: str) -> None:
    rows, _log = run_locust(tmp_path, time_gateway, user, seconds=2, users=3)
    assert_clean(rows)
    calls = {name: e["num_requests"] for (_k, name), e in rows.items() if "tools/call time__" in name}
    assert calls and all(n >= 5 for n in calls.values()), calls
    assert {k for k, _ in rows} == {kind}  # only the named user ran
    if user == "StatelessUser":
        assert all(name.startswith(lf.MODERN_VERSION) for _k, name in rows)
        assert (kind, f"{lf.MODERN_VERSION} server/discover") in rows
        assert not any("initialize" in name for _, name in rows)  # no handshake in this era
    else:
        assert rows[(kind, "initialize")]["num_requests"] == 3  # one session per user, kept


def test_stream_users_against_the_sdk_server_avoid_its_hostile_tools(sdk_gateway: str, tmp_path: Path) -> None:
    rows, log = run_locust(tmp_path, sdk_gateway, "SSEUser", "WebSocketUser", "StatelessUser", "ToolMixUser",
                           users=4, seconds=3)
    assert_clean(rows)
    line = next(x for x in log.splitlines() if "MCP_BENCH_TOOL unset" in x)
    for hostile in ("crash", "fail", "sleep", "slow", "grow", "redefine"):
        assert f"sdk__{hostile}" not in line
    assert {k for k, _ in rows} == {"SSE", "WS", "POST"}


def test_fixed_tool_keeps_working(sdk_gateway: str, tmp_path: Path) -> None:
    rows, log = run_locust(tmp_path, sdk_gateway, "SessionReuseUser", "ToolMixUser", seconds=2,
                           env={"MCP_BENCH_TOOL": "sdk__add", "MCP_BENCH_ARGS": '{"a": 2, "b": 3}',
                                "MCP_BENCH_MIX": "sdk__add,sdk__whoami"})
    assert_clean(rows)
    assert "MCP_BENCH_TOOL unset" not in log
    assert {name for _, name in rows if name.startswith("tools/call")} == {"tools/call sdk__add",
                                                                           "tools/call sdk__whoami"}


def test_a_wrong_fixed_tool_fails_visibly(sdk_gateway: str, tmp_path: Path) -> None:
    """The runs above pass only when nothing failed: here the failures must show in the CSV."""
    rows, _log = run_locust(tmp_path, sdk_gateway, "SessionReuseUser", "SSEUser", seconds=2, users=5,
                            env={"MCP_BENCH_TOOL": "sdk__nope"}, exit_code=1)
    for kind in ("POST", "SSE"):
        row = rows.get((kind, "tools/call sdk__nope"), {})
        assert row and row["num_failures"] == row["num_requests"] > 0, rows


def test_distributed_master_and_worker(time_gateway: str, tmp_path: Path) -> None:
    port = str(free_port())
    worker = subprocess.Popen([LOCUST, "-f", LOCUSTFILE, "--worker", "--master-port", port], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # an opt-in user named on the master only: the worker must still know it
        rows, log = run_locust(tmp_path, time_gateway, "--master", "--master-bind-port", port, "--expect-workers",
                               "1", "SessionReuseUser", "WebSocketUser", seconds=3)
        assert_clean(rows, at_least=50)
        assert {k for k, _ in rows} == {"POST", "WS"}
        _out, worker_log = worker.communicate(timeout=20)
        assert worker.returncode == 0, worker_log[-3000:]
        assert worker_log.count("calling time__get_current_time") == 1  # the worker discovered, once
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


# -- the argument generator on real schemas ---------------------------------------------------------------


async def test_arguments_for_mcp_server_time_are_accepted_by_it() -> None:
    server = create_server("UTC")
    tools = {t.name: t.model_dump(by_alias=True, exclude_none=True) for t in await server.list_tools()}
    ranked = lf.rank_tools(list(tools.values()))
    assert [name for name, _ in ranked] == ["get_current_time", "convert_time"]  # fewer arguments first
    args = dict(ranked)
    assert args["get_current_time"] == {"timezone": "UTC"}
    assert args["convert_time"] == {"source_timezone": "UTC", "time": "12:00", "target_timezone": "UTC"}
    for name, arguments in ranked:
        jsonschema.validate(arguments, tools[name]["inputSchema"])
        result = await server.call_tool(name, arguments)
        assert not result.is_error, result


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Point(BaseModel):
    x: Annotated[int, Field(ge=5, le=9, multiple_of=3)]
    y: Annotated[float, Field(gt=0.5, lt=0.75)]
    label: str | None = None


class Shape(BaseModel):
    name: Annotated[str, Field(min_length=8, pattern=r"^[a-z]+$")]
    colour: Colour
    kind: Literal["polygon", "circle"]
    points: Annotated[list[Point], Field(min_length=2)]
    origin: Point
    created: datetime.datetime
    closed: bool
    tags: list[str] = []


def nested(shape: Shape, scale: Annotated[int, Field(gt=10)], zone: str, when: datetime.date) -> str:
    """A tool with a nested model ($defs, $ref), enums, Literal, bounds, patterns and formats."""
    assert shape.origin.x == 6 and scale > 10
    return f"{shape.name} {len(shape.points)} {zone} {when}"


async def test_arguments_for_a_nested_sdk_schema_validate_and_call() -> None:
    server = MCPServer("nested")
    server.tool()(nested)
    (tool,) = await server.list_tools()
    schema = tool.model_dump(by_alias=True)["inputSchema"]
    assert "$defs" in schema  # the generator had to follow $ref
    args = lf.tool_arguments(schema)
    jsonschema.validate(args, schema)
    shape = args["shape"]
    assert shape["colour"] == "red" and shape["kind"] == "polygon" and len(shape["points"]) == 2
    assert args["zone"] == "UTC" and args["scale"] == 11 and "tags" not in shape  # only what is required
    result = await server.call_tool("nested", args)
    assert not result.is_error, result


def test_generator_corners_and_refusals() -> None:
    assert lf.example_value({"type": "string", "enum": ["b", "a"]}) == "b"
    assert lf.example_value({"type": "string", "default": "d", "examples": ["e"]}) == "d"
    assert lf.example_value({"type": "string", "examples": ["e"]}) == "e"
    assert lf.example_value({"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 3}]}) == 3
    assert lf.example_value({"type": ["null", "boolean"]}) is False
    assert lf.example_value({"type": "number", "exclusiveMinimum": 1, "maximum": 1.5}) == 1.5
    assert lf.example_value({"type": "integer", "minimum": 10, "exclusiveMinimum": True}) == 11  # draft 4
    assert lf.example_value({"type": "string", "format": "date-time"}).endswith("Z")
    assert lf.example_value({"type": "array", "items": {"type": "string"}, "maxItems": 0}) == []
    assert lf.tool_arguments({"type": "object"}) == {}
    for bad in ({"type": "integer", "minimum": 3, "maximum": 2}, {"type": "string", "pattern": "^\\d{9}$"},
                {"$ref": "https://example.com/schema.json"}, {"$ref": "#/$defs/Loop"}, {"type": "foo"}):
        with pytest.raises(lf.Unsatisfiable):
            lf.tool_arguments({"type": "object", "properties": {"v": bad}, "required": ["v"],
                               "$defs": {"Loop": {"$ref": "#/$defs/Loop"}}})


def test_ranking_prefers_read_only_and_never_picks_destructive_tools() -> None:
    def tool(name: str, **notes: Any) -> dict[str, Any]:
        return {"name": name, "inputSchema": {"type": "object"}, **({"annotations": notes} if notes else {})}

    tools = [tool("s__delete_file"), tool("s__dropTable"), tool("s__kill"), tool("s__exit"), tool("s__wipe", readOnlyHint=False),
             tool("s__purge_cache", readOnlyHint=True), tool("s__format", destructiveHint=True),
             tool("s__sleep", readOnlyHint=True), tool("s__create_user"), tool("s__whatever"),
             tool("s__list_skills"), tool("s__exists"), tool("s__lookup", readOnlyHint=True),
             tool("s__noted", destructiveHint=True, readOnlyHint=True),
             {"name": "s__unsatisfiable", "inputSchema": {"type": "object", "required": ["v"],
                                                          "properties": {"v": {"not": {}, "type": "foo"}}}}]
    assert [name for name, _ in lf.rank_tools(tools)] == [
        "s__lookup", "s__noted", "s__list_skills", "s__whatever", "s__exists", "s__create_user", "s__sleep"]
