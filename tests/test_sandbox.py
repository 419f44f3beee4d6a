"""The sandbox against a real Docker engine: hardening seen from inside and from `docker inspect`,
limits (memory, pids), outside kills, orphan cleanup, and mcp-server-time in a container.

MCP is spoken as raw newline-delimited JSON-RPC over the channel, so these tests need nothing but
the sandbox package (the gateway's upstream connection is tested on its own).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import docker
import pytest
import trio

from gateway.upstream.channel import Launcher, LaunchError
from sandbox.docker_io import DockerChannel
from sandbox.engine import Engine, check_engine, image_exists, remove_orphans, remove_own
from sandbox.exits import ContainerExits
from sandbox.launcher import ContainerLauncher
from sandbox.profile import INSTANCE_LABEL, MANAGED_LABEL, MIB, SERVER_LABEL, SandboxSpec
from sandbox.seccomp import strict_profile_json
from tests.conftest_docker import ECHO_IMAGE, TIME_IMAGE

pytestmark = pytest.mark.docker


class RawMcp:
    """Just enough of an MCP client: newline-delimited JSON-RPC requests over a channel."""

    def __init__(self, channel: DockerChannel) -> None:
        self.channel = channel
        self.buf = bytearray()
        self.next_id = 1

    async def send(self, msg: dict[str, Any]) -> None:
        await self.channel.send_all(json.dumps(msg).encode() + b"\n")

    async def read(self) -> dict[str, Any] | None:
        """The next message, or None at end of stream."""
        while b"\n" not in self.buf:
            data = await self.channel.receive_some()
            if not data:
                return None
            self.buf += data
        line, _, rest = bytes(self.buf).partition(b"\n")
        self.buf[:] = rest
        msg: dict[str, Any] = json.loads(line)
        return msg

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        rid, self.next_id = self.next_id, self.next_id + 1
        await self.send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        while True:
            msg = await self.read()
            assert msg is not None, f"server closed the stream during {method}"
            if msg.get("id") == rid:
                assert "error" not in msg, msg
                result: dict[str, Any] = msg["result"]
                return result

    async def initialize(self) -> dict[str, Any]:
        result = await self.request(
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "test", "version": "1"},
            },
        )
        await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return result

    async def call(self, tool: str, **arguments: Any) -> str:
        result = await self.request("tools/call", {"name": tool, "arguments": arguments})
        assert not result.get("isError"), result
        return str(result["content"][0]["text"])


LauncherFactory = Callable[..., ContainerLauncher]


@pytest.fixture
async def exits(docker_client: docker.DockerClient, gateway_instance_id: str) -> AsyncIterator[ContainerExits]:
    """The run's events stream, as the gateway keeps one (how containers exit, OOM included)."""
    watcher = ContainerExits(lambda: docker_client, {INSTANCE_LABEL: gateway_instance_id}, trio.CapacityLimiter(1))
    await watcher.start()
    yield watcher
    await watcher.aclose()


@pytest.fixture
def make_launcher(
    docker_client: docker.DockerClient, gateway_instance_id: str, exits: ContainerExits
) -> LauncherFactory:
    limiter = trio.CapacityLimiter(4)

    def make(name: str = "probe", **spec: Any) -> ContainerLauncher:
        spec.setdefault("image", ECHO_IMAGE)
        return ContainerLauncher(
            name, SandboxSpec(**spec), lambda: docker_client, limiter, instance_id=gateway_instance_id,
            exits=exits,
        )

    return make


def _exists(client: docker.DockerClient, container_id: str) -> bool:
    try:
        client.api.inspect_container(container_id)
    except docker.errors.NotFound:
        return False
    return True


async def test_hardening_inside_and_inspect(
    make_launcher: LauncherFactory, docker_client: docker.DockerClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "mcp_gateway.upstream")
    launcher = make_launcher(memory=128 * MIB, cpus=0.5, pids=64, labels={"team": "x", MANAGED_LABEL: "0"})
    async with launcher.open() as channel:
        mcp = RawMcp(channel)
        init = await mcp.initialize()
        assert init["serverInfo"]["name"] == "probe"
        probe = json.loads(await mcp.call("probe"))
        assert await mcp.call("echo", text="héllo") == "héllo"
        attrs = await trio.to_thread.run_sync(docker_client.api.inspect_container, channel.container.id)
    # Seen from inside.
    assert probe["write_root_ok"] is False
    assert probe["write_var_tmp_error"] == "EROFS"  # world-writable dir, read-only filesystem
    assert probe["write_tmp_ok"] is True
    assert probe["interfaces"] == ["lo"]
    assert probe["CapEff"] == 0
    assert probe["NoNewPrivs"] == 1
    assert probe["uid"] == 65534 and probe["gid"] == 65534
    # Seen by the engine.
    host = attrs["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert not host["CapAdd"]
    assert host["SecurityOpt"] == ["no-new-privileges:true", f"seccomp={strict_profile_json()}"]
    assert host["PidsLimit"] == 64
    assert host["Memory"] == 128 * MIB
    assert host["MemorySwap"] == 128 * MIB
    assert host["NanoCpus"] == 500_000_000
    assert host["NetworkMode"] == "none"
    assert host["Init"] is True
    assert host["Privileged"] is False
    assert host["AutoRemove"] is True
    assert host["LogConfig"]["Type"] == "none"
    assert host["Tmpfs"] == {"/tmp": f"rw,noexec,nosuid,nodev,size={64 * MIB}"}
    assert not host["Binds"] and attrs["Mounts"] == []  # no host paths (the tmpfs is not a mount here)
    config = attrs["Config"]
    assert config["User"] == "65534:65534"
    assert config["OpenStdin"] is True and config["StdinOnce"] is True and config["Tty"] is False
    labels = config["Labels"]
    assert labels[MANAGED_LABEL] == "1"  # the spec could not override it
    assert labels[SERVER_LABEL] == "probe" and labels[INSTANCE_LABEL] == launcher.instance_id
    assert labels["team"] == "x"
    # The container is gone once the context exits, and its stderr reached our log.
    assert not _exists(docker_client, attrs["Id"])
    assert "[probe] probe_server: ready" in caplog.text


async def test_secrets_reach_env_only(
    make_launcher: LauncherFactory, docker_client: docker.DockerClient
) -> None:
    launcher = make_launcher(
        command=[
            "python3",
            "-c",
            # Waits for stdin's EOF: the container is auto-removed once it exits, so inspect it first.
            "import os,sys; print(os.environ['API_KEY'], os.environ['MODE'], sys.argv, flush=True); "
            "sys.stdin.read()",
        ],
        env={"MODE": "plain"},
        secrets_env={"API_KEY": "s3cret-value"},
    )
    assert "s3cret-value" not in repr(launcher.spec)
    async with launcher.open() as channel:
        attrs = await trio.to_thread.run_sync(docker_client.api.inspect_container, channel.container.id)
        await channel.send_eof()
        out = b""
        while data := await channel.receive_some():
            out += data
        assert await channel.wait() == "exited with status 0"
    assert out.decode().split()[:2] == ["s3cret-value", "plain"]
    assert "s3cret-value" not in json.dumps(attrs["Args"]) + json.dumps(attrs["Config"]["Cmd"])


async def test_oom_kill_ends_stream_and_is_reported(make_launcher: LauncherFactory) -> None:
    async with make_launcher(memory=64 * MIB).open() as channel:
        mcp = RawMcp(channel)
        await mcp.initialize()
        await mcp.send(
            {
                "jsonrpc": "2.0",
                "id": 99,
                "method": "tools/call",
                "params": {"name": "alloc", "arguments": {"mb": 200}},
            }
        )
        with trio.fail_after(10):
            assert await mcp.read() is None  # killed before it could answer: the stream just ends
            assert await channel.wait() == "was OOM-killed (exit 137)"


async def test_fork_bomb_stops_at_pids_limit(make_launcher: LauncherFactory) -> None:
    async with make_launcher(pids=32).open() as channel:
        mcp = RawMcp(channel)
        await mcp.initialize()
        with trio.fail_after(20):
            report = json.loads(await mcp.call("fork_bomb", n=500))
        # The server's own threads count against the limit too, so fewer than 32 children start.
        assert 0 < report["started"] < 32, report
        assert report["error"] == "EAGAIN"
        # It survived and still serves calls.
        assert await mcp.call("echo", text="still here") == "still here"


async def test_kill_from_outside_ends_stream_quickly(
    make_launcher: LauncherFactory, docker_client: docker.DockerClient
) -> None:
    async with make_launcher().open() as channel:
        mcp = RawMcp(channel)
        await mcp.initialize()
        await mcp.send(
            {
                "jsonrpc": "2.0",
                "id": 7,
                "method": "tools/call",
                "params": {"name": "sleep", "arguments": {"seconds": 30}},
            }
        )
        await trio.sleep(0.2)  # the call is in flight
        await trio.to_thread.run_sync(docker_client.api.kill, channel.container.id)
        start = time.monotonic()
        with trio.fail_after(1):
            assert await mcp.read() is None
        assert time.monotonic() - start < 1
        assert await channel.wait() == "was killed by signal 9"


async def test_closing_stdin_lets_the_server_exit_cleanly(make_launcher: LauncherFactory) -> None:
    # Created with StdinOnce: our half-close reaches the server as EOF, and MCP stdio servers exit on it.
    async with make_launcher().open() as channel:
        await RawMcp(channel).initialize()
        await channel.send_eof()
        with trio.fail_after(5):
            assert await channel.receive_some() == b""
            assert await channel.wait() == "exited with status 0"


async def test_exit_status_reported(make_launcher: LauncherFactory) -> None:
    async with make_launcher(command=["python3", "-c", "import sys; sys.exit(3)"]).open() as channel:
        assert await channel.receive_some() == b""
        assert await channel.wait() == "exited with status 3"
        assert await channel.wait() == "exited with status 3"  # cached


async def test_cancelled_caller_still_removes_container(
    make_launcher: LauncherFactory, docker_client: docker.DockerClient
) -> None:
    container_id = None
    with trio.move_on_after(0.5):
        async with make_launcher().open() as channel:
            container_id = channel.container.id
            await trio.sleep_forever()
    assert container_id is not None
    assert not _exists(docker_client, container_id)


async def test_missing_image_is_a_launch_error(make_launcher: LauncherFactory) -> None:
    with pytest.raises(LaunchError, match="never pulls"):
        async with make_launcher(image="mcp-gateway-test/does-not-exist:0").open():
            pass  # pragma: no cover


async def test_root_user_is_refused(make_launcher: LauncherFactory) -> None:
    with pytest.raises(LaunchError, match="allow_root"):
        async with make_launcher(user="0:0").open():
            pass  # pragma: no cover


async def test_mcp_server_time_in_container(make_launcher: LauncherFactory) -> None:
    async with make_launcher("time", image=TIME_IMAGE).open() as channel:
        mcp = RawMcp(channel)
        init = await mcp.initialize()
        assert init["serverInfo"]["name"] == "mcp-time"
        tools = await mcp.request("tools/list", {})
        assert "get_current_time" in {t["name"] for t in tools["tools"]}
        answer = json.loads(await mcp.call("get_current_time", timezone="UTC"))
        assert answer["timezone"] == "UTC" and answer["datetime"].startswith(
            time.strftime("%Y-", time.gmtime())
        )


def test_orphans_removed_by_instance(docker_client: docker.DockerClient, gateway_instance_id: str) -> None:
    tag = f"orphan-test-{time.monotonic_ns()}"  # keeps this sweep away from anyone else's containers

    def make(instance: str) -> str:
        labels = {MANAGED_LABEL: "1", INSTANCE_LABEL: instance, SERVER_LABEL: tag}
        host_config = docker_client.api.create_host_config(network_mode="none")
        return str(
            docker_client.api.create_container(ECHO_IMAGE, labels=labels, host_config=host_config)["Id"]
        )

    stale, ours = make("crashed-run"), make(gateway_instance_id)
    removed = remove_orphans(docker_client, gateway_instance_id, labels={SERVER_LABEL: tag})
    assert len(removed) == 1
    assert not _exists(docker_client, stale) and _exists(docker_client, ours)
    assert len(remove_own(docker_client, gateway_instance_id)) >= 1
    assert not _exists(docker_client, ours)


def test_engine_checks(docker_client: docker.DockerClient) -> None:
    status = check_engine(lambda: docker_client)
    assert status.reachable and status.api_version and status.error is None
    assert image_exists(docker_client, ECHO_IMAGE)
    assert not image_exists(docker_client, "mcp-gateway-test/does-not-exist:0")

    def unreachable() -> docker.DockerClient:
        return docker.DockerClient(base_url="unix:///nonexistent/docker.sock", version="1.41")

    down = check_engine(unreachable)
    assert not down.reachable
    assert down.error is not None and "apt-get install docker.io" in down.error


async def test_engine_async_wrapper(docker_client: docker.DockerClient, gateway_instance_id: str) -> None:
    engine = Engine(lambda: docker_client, trio.CapacityLimiter(2))
    status = await engine.check()
    assert status.reachable
    assert await engine.image_exists(TIME_IMAGE)
    # Nothing of ours is left over after the tests above, and no one else's is touched.
    tag = f"nobody-{time.monotonic_ns()}"
    assert await engine.remove_orphans(gateway_instance_id, labels={SERVER_LABEL: tag}) == []


async def test_launcher_satisfies_the_channel_seam(make_launcher: LauncherFactory) -> None:
    launcher: Launcher = make_launcher()  # checked by mypy: ContainerLauncher is a Launcher
    assert launcher.name == "probe"


async def test_exit_is_still_reported_when_the_events_stream_is_lost(
    docker_client: docker.DockerClient, gateway_instance_id: str
) -> None:
    # The stream ends (engine restart; here: closed under the waiter): the waiter falls back to
    # waiting on the container itself, and later containers get no watch at all.
    exits = ContainerExits(lambda: docker_client, {INSTANCE_LABEL: gateway_instance_id}, trio.CapacityLimiter(1))
    await exits.start()
    launcher = ContainerLauncher("probe", SandboxSpec(image=ECHO_IMAGE), lambda: docker_client,
                                 trio.CapacityLimiter(2), instance_id=gateway_instance_id, exits=exits)
    async with launcher.open() as channel:
        await RawMcp(channel).initialize()
        waited: list[str] = []

        async def wait() -> None:
            waited.append(await channel.wait())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            await trio.sleep(0.2)
            await exits.aclose()  # the waiter's watch is marked lost
            assert not exits.running and exits.watch("another") is None
            await channel.send_eof()  # the server exits at EOF...
        assert waited == ["exited with status 0"]  # ...and its status still arrives
