"""The gateway running its servers in hardened containers, end to end, on a real Docker engine."""

from __future__ import annotations

import json

import docker
import pytest
import trio
from mcp import Client
from mcp.shared.exceptions import MCPError

from gateway.upstream.lifecycle import CallBackend, SessionBackend
from tests.conftest_docker import ECHO_IMAGE, TIME_IMAGE
from tests.helpers import config, running_gateway

pytestmark = pytest.mark.docker

BOX = {"image": ECHO_IMAGE, "command": ["python3", "-m", "probe_server"]}


def _containers(client: docker.DockerClient, gateway: object) -> list[docker.models.containers.Container]:
    instance = gateway.sandbox.instance_id  # type: ignore[attr-defined]
    return client.containers.list(all=True, ignore_removed=True,
                                  filters={"label": f"io.mcp-gateway.instance={instance}"})


async def _probe(client: Client, tool: str = "box__probe") -> dict:
    return json.loads((await client.call_tool(tool, {})).content[0].text)


async def test_sdk_client_calls_mcp_server_time_in_a_container(docker_client: docker.DockerClient) -> None:
    async with running_gateway(config({"clock": {"image": TIME_IMAGE}})) as gw:
        (container,) = _containers(docker_client, gw.gateway)
        host = container.attrs["HostConfig"]
        assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"] and host["NetworkMode"] == "none"
        for mode in ("auto", "legacy"):
            async with Client(gw.url, mode=mode) as client:
                result = await client.call_tool("clock__get_current_time", {"timezone": "Asia/Tokyo"})
                assert json.loads(result.content[0].text)["timezone"] == "Asia/Tokyo"
        sandbox = gw.gateway.sandbox
    # shutdown removed the container
    assert (
        docker_client.containers.list(
            all=True, filters={"label": f"io.mcp-gateway.instance={sandbox.instance_id}"}
        )
        == []
    )


async def test_probes_inside_the_gateways_container() -> None:
    async with running_gateway(config({"box": BOX})) as gw:
        async with Client(gw.url, mode="legacy") as client:
            probe = await _probe(client)
    assert probe["uid"] != 0 and not probe["write_root_ok"] and probe["write_tmp_ok"]
    assert probe["interfaces"] == ["lo"]
    assert probe["CapEff"] == 0 and probe["NoNewPrivs"] == 1 and not probe["write_var_tmp_ok"]


async def test_oom_kill_is_reported_and_the_server_restarts(docker_client: docker.DockerClient) -> None:
    box = {**BOX, "limits": {"memory": "64m"}, "restart_backoff": "100ms"}
    async with running_gateway(config({"box": box})) as gw:
        async with Client(gw.url, mode="legacy") as client:
            with trio.fail_after(30), pytest.raises(MCPError) as info:
                await client.call_tool("box__alloc", {"mb": 400})
            assert info.value.error.code == -32000
            assert "'box'" in info.value.error.message and "OOM" in info.value.error.message
            result = await client.call_tool("box__echo", {"text": "after oom"})
            assert result.content[0].text == "after oom"
        assert gw.gateway.supervisors["box"].restarts >= 1


async def test_fork_bomb_stops_at_the_pids_limit() -> None:
    box = {**BOX, "limits": {"pids": 32}}
    async with running_gateway(config({"box": box})) as gw:
        async with Client(gw.url, mode="legacy") as client:
            result = json.loads((await client.call_tool("box__fork_bomb", {"n": 200})).content[0].text)
            assert result["started"] < 32
            assert (await client.call_tool("box__echo", {"text": "alive"})).content[0].text == "alive"


async def test_container_killed_mid_call_fails_fast_then_recovers(docker_client: docker.DockerClient) -> None:
    async with running_gateway(config({"box": {**BOX, "restart_backoff": "100ms"}})) as gw:
        async with Client(gw.url, mode="legacy") as client:
            await client.call_tool("box__echo", {"text": "warm"})
            (container,) = _containers(docker_client, gw.gateway)
            errors: list[MCPError] = []

            async def call() -> None:
                try:
                    await client.call_tool("box__sleep", {"seconds": 30})
                except MCPError as exc:
                    errors.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                await trio.sleep(0.5)
                await trio.to_thread.run_sync(container.kill)
                killed = trio.current_time()
                with trio.fail_after(1):
                    while not errors:
                        await trio.sleep(0.01)
            assert trio.current_time() - killed < 1
            assert "'box'" in errors[0].error.message
            assert (await client.call_tool("box__echo", {"text": "again"})).content[0].text == "again"


async def test_session_lifecycle_one_container_per_session(docker_client: docker.DockerClient) -> None:
    async with running_gateway(config({"box": {**BOX, "lifecycle": "session"}})) as gw:
        backend = gw.gateway.supervisors["box"]
        assert isinstance(backend, SessionBackend)
        async with Client(gw.url, mode="legacy") as a, Client(gw.url, mode="legacy") as b:
            await a.call_tool("box__echo", {"text": "a"})
            await b.call_tool("box__echo", {"text": "b"})
            assert len(backend.by_session) == 2
            assert len({i.conn.name for i in backend.by_session.values()}) == 1  # same server...
            assert len(_containers(docker_client, gw.gateway)) == 2  # ...two containers
        with trio.fail_after(15):  # both sessions ended (DELETE): their containers are removed
            while _containers(docker_client, gw.gateway):
                await trio.sleep(0.1)


async def test_call_lifecycle_with_warm_pool(docker_client: docker.DockerClient) -> None:
    async with running_gateway(config({"box": {**BOX, "lifecycle": "call", "pool": 2}})) as gw:
        backend = gw.gateway.supervisors["box"]
        assert isinstance(backend, CallBackend)
        with trio.fail_after(30):
            while len(backend.warm) < 2:
                await trio.sleep(0.05)
        started = backend.started_total
        async with Client(gw.url, mode="legacy") as client:
            for i in range(3):
                assert (await client.call_tool("box__echo", {"text": str(i)})).content[0].text == str(i)
                assert backend.started_total - started <= i + 1  # each call took a warm one...
            with trio.fail_after(30):  # ...and the pool refilled behind it
                while len(backend.warm) < 2:
                    await trio.sleep(0.05)
        assert backend.started_total == started + 3


async def test_container_that_never_answers_is_reported_after_start_timeout() -> None:
    mute = {"image": ECHO_IMAGE, "command": ["python3", "-c", "import time; time.sleep(3600)"],
            "start_timeout": "1500ms", "restart_backoff": "10s"}
    async with running_gateway(config({"mute": mute, "box": BOX})) as gw:
        backend = gw.gateway.supervisors["mute"]
        assert backend.state == "failed"
        assert backend.last_error == "server 'mute' did not finish starting and initialize within 1.5s"
        async with Client(gw.url, mode="legacy") as client:  # the other server is unaffected
            assert (await client.call_tool("box__echo", {"text": "ok"})).content[0].text == "ok"
