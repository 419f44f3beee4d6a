"""Pytest plugin for tests that need a real Docker engine (``@pytest.mark.docker``).

Load it with ``pytest_plugins = ["tests.conftest_docker"]`` in tests/conftest.py (or ``-p
tests.conftest_docker``). Every test marked ``docker`` first gets ``docker_env``: one run per session
of ``scripts/test-env``, which installs and starts the engine and builds the test images if needed.
Set ``MCP_GATEWAY_DOCKER_TESTS=skip`` to skip those tests on a machine without root or Docker; by
default a broken environment fails them loudly (so CI can never pass by skipping).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ECHO_IMAGE = "mcp-gateway-test/echo:1"
TIME_IMAGE = "mcp-gateway-test/time:1"
#: Node 22 + npm MCP servers (server-everything, tests/servers/node_probe.mjs); see scripts/test-env.
NODE_IMAGE = "mcp-gateway-test/node:1"


@pytest.fixture(scope="session")
def docker_env() -> None:
    """Make sure the engine runs and the test images are current (scripts/test-env, once)."""
    if os.environ.get("MCP_GATEWAY_DOCKER_TESTS") == "skip":
        pytest.skip("MCP_GATEWAY_DOCKER_TESTS=skip")
    proc = subprocess.run(
        [str(ROOT / "scripts" / "test-env")],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    # Show what it did (built images, started dockerd) in the test log.
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        pytest.fail(
            f"scripts/test-env failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}", pytrace=False
        )


@pytest.fixture(autouse=True)
def _docker_marker_needs_env(request: pytest.FixtureRequest) -> None:
    # Autouse, so any test marked `docker` (in any file) gets the environment without asking.
    if request.node.get_closest_marker("docker") is not None:
        request.getfixturevalue("docker_env")


@pytest.fixture(scope="session")
def docker_client(docker_env: None) -> Iterator[object]:
    """A ``docker.DockerClient`` for the local engine."""
    import docker

    client = docker.from_env(timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="session")
def gateway_instance_id(docker_client: object) -> Iterator[str]:
    """An instance id for this test session; its leftover containers are removed at the end."""
    from sandbox.engine import remove_own

    instance_id = f"pytest-{uuid.uuid4().hex[:12]}"
    yield instance_id
    leftovers = remove_own(docker_client, instance_id)
    if leftovers:
        sys.stderr.write(f"conftest_docker: removed leftover test containers {leftovers}\n")
