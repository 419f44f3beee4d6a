"""The gateway in a container (its own image, the host's Docker socket mounted): a sibling reaper
container removes its servers' containers when the gateway's container is killed, and nothing is
left after a clean stop either."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import trio
from mcp import Client

from sandbox.gateway_bridge import IDENTITY_LABEL, default_identity
from sandbox.reaper_link import REAPER_LABEL
from tests.conftest_docker import ECHO_IMAGE
from tests.helpers import ROOT, HTTPClient, free_port

pytestmark = pytest.mark.docker
TAG = "mcp-gateway:sandbox-test"  # not test_gateway_image's tag: each test removes its own image
SERVERS = {
    "box": {"image": ECHO_IMAGE, "command": ["python3", "-m", "probe_server"]},
    "stubborn": {"image": ECHO_IMAGE, "command": ["python3", "-m", "stubborn_server"]},  # ignores EOF
}


@pytest.fixture(scope="module")
def gateway_image(docker_env: None) -> Iterator[str]:
    import subprocess

    build = subprocess.run([str(ROOT / "scripts" / "build-image"), TAG], capture_output=True, text=True,
                           check=False)
    assert build.returncode == 0, build.stderr
    yield TAG
    docker.from_env().images.remove(TAG, force=True)


def _run_gateway(client: docker.DockerClient, image: str, config_dir: Path) -> Any:
    return client.containers.run(
        image, ["run", "--config", "/etc/mcp-gateway/c.yaml"], detach=True, network_mode="host", init=True,
        volumes={"/var/run/docker.sock": {"bind": "/var/run/docker.sock"},
                 str(config_dir): {"bind": "/etc/mcp-gateway", "mode": "ro"}})


async def _ready(port: int) -> None:
    with trio.fail_after(60):
        while True:
            try:
                async with HTTPClient.connect(port) as http:
                    health = (await http.request("GET", "/healthz")).json()
                    if all(s["state"] == "ready" for s in health["servers"].values()):
                        return
            except (OSError, ValueError):
                pass
            await trio.sleep(0.3)


async def test_killed_gateway_container_leaves_nothing_behind(
    docker_client: docker.DockerClient, gateway_image: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    (tmp_path / "c.yaml").write_text(json.dumps({"listen": {"port": port}, "servers": SERVERS}))
    # With --network host the gateway sees the host's name, so its identity is computable here.
    label = f"{IDENTITY_LABEL}={default_identity('127.0.0.1', port)}"

    def ours() -> list[dict[str, Any]]:
        return list(docker_client.api.containers(all=True, filters={"label": label}))

    gateway = _run_gateway(docker_client, gateway_image, tmp_path)
    try:
        await _ready(port)
        async with Client(f"http://127.0.0.1:{port}/mcp", mode="legacy") as client:
            for tool in ("box__echo", "stubborn__echo"):
                assert (await client.call_tool(tool, {"text": tool})).content[0].text == tool
        (sibling,) = [c for c in ours() if REAPER_LABEL in c["Labels"]]
        assert sibling["State"] == "running" and sibling["ImageID"] == gateway.attrs["Image"]
        assert {c["Labels"].get("io.mcp-gateway.server") for c in ours()} == {"box", "stubborn", None}
        # kill -9 of the whole gateway container: its own reaper process dies with it.
        await trio.to_thread.run_sync(gateway.kill)
        killed = time.monotonic()
        with trio.fail_after(30):
            while await trio.to_thread.run_sync(ours):
                await trio.sleep(0.1)
        took = time.monotonic() - killed
    finally:
        gateway.remove(force=True)
    with capsys.disabled():
        print(f"\ngateway container SIGKILLed: its servers' containers and the sibling reaper gone after {took:.1f} s")
    assert ours() == []


async def test_stopped_gateway_container_removes_its_sibling_reaper(
    docker_client: docker.DockerClient, gateway_image: str, tmp_path: Path
) -> None:
    port = free_port()
    (tmp_path / "c.yaml").write_text(json.dumps({"listen": {"port": port}, "servers": {"box": SERVERS["box"]}}))
    label = f"{IDENTITY_LABEL}={default_identity('127.0.0.1', port)}"
    gateway = _run_gateway(docker_client, gateway_image, tmp_path)
    try:
        await _ready(port)
        assert len(docker_client.api.containers(filters={"label": [label, REAPER_LABEL]})) == 1
        await trio.to_thread.run_sync(lambda: gateway.stop(timeout=20))
        assert gateway.wait()["StatusCode"] == 0
    finally:
        gateway.remove(force=True)
    # The gateway removed its server and its sibling itself before it exited: nothing was left to reap.
    assert docker_client.api.containers(all=True, filters={"label": label}) == []
