"""The gateway's own image: built offline, run with the host's Docker socket, it runs sandboxed servers."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest
import trio
from mcp import Client

from sandbox.gateway_bridge import IDENTITY_LABEL, default_identity
from tests.conftest_docker import TIME_IMAGE
from tests.helpers import ROOT, HTTPClient, free_port

pytestmark = pytest.mark.docker
TAG = "mcp-gateway:test"



async def test_gateway_image_serves_a_sandboxed_server(docker_client: docker.DockerClient, tmp_path: Path) -> None:
    build = await trio.run_process([str(ROOT / "scripts" / "build-image"), TAG], capture_stdout=True,
                                   capture_stderr=True, check=False)
    assert build.returncode == 0, build.stderr.decode()
    port = free_port()
    (tmp_path / "c.yaml").write_text(f"listen: {{port: {port}}}\nservers:\n  clock: {{image: {TIME_IMAGE!r}}}\n")
    container = docker_client.containers.run(
        TAG, ["run", "--config", "/etc/mcp-gateway/c.yaml"], detach=True, network_mode="host", init=True,
        volumes={"/var/run/docker.sock": {"bind": "/var/run/docker.sock"}, str(tmp_path): {
            "bind": "/etc/mcp-gateway", "mode": "ro"}})
    try:
        with trio.fail_after(60):
            while True:
                try:
                    async with HTTPClient.connect(port) as http:
                        health = (await http.request("GET", "/healthz")).json()
                        if health["servers"]["clock"]["state"] == "ready":
                            break
                except OSError:
                    pass
                await trio.sleep(0.3)
        async with Client(f"http://127.0.0.1:{port}/mcp", mode="legacy") as client:
            result = await client.call_tool("clock__get_current_time", {"timezone": "UTC"})
            assert '"timezone": "UTC"' in result.content[0].text
        # with --network host the gateway sees the host's name, so its identity is computable here
        identity = default_identity("127.0.0.1", port)
        assert docker_client.containers.list(filters={"label": f"{IDENTITY_LABEL}={identity}"})  # the sibling
        await trio.to_thread.run_sync(lambda: container.stop(timeout=20))
        assert container.wait()["StatusCode"] == 0
        assert b"stopped" in container.logs()
    finally:
        container.remove(force=True)
        docker_client.images.remove(TAG, force=True)
    assert docker_client.containers.list(all=True, filters={"label": f"{IDENTITY_LABEL}={identity}"}) == []
