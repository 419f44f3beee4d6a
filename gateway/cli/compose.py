"""The composition root: the one place that puts the gateway core, the container sandbox and the
control plane together.

``gateway/`` knows neither ``sandbox/`` nor ``admin/``: it takes a container runtime factory and a
control plane factory, and only this module (with the CLI commands beside it) imports those
packages; both depend on the core, never the other way round. Each is imported only when the
config needs it, so a gateway without container servers never loads the Docker SDK.
"""

from __future__ import annotations

from typing import Any

from ..app import Gateway
from ..config import GatewayConfig


def container_runtime(host: str, port: int) -> Any:
    """Docker, through the hardened sandbox (sandbox.gateway_bridge.SandboxRuntime)."""
    from sandbox.gateway_bridge import SandboxRuntime

    return SandboxRuntime(host, port)


def control_plane(gateway: Gateway) -> Any:
    """The admin API, the config store and the audit log (admin.control.ControlPlane)."""
    from admin.control import ControlPlane

    return ControlPlane(gateway)


def build_gateway(config: GatewayConfig, **kwargs: Any) -> Gateway:
    """A gateway with everything its config asks for: container servers run in the sandbox, and
    the control plane runs when ``admin``, ``store`` or ``audit`` is configured."""
    return Gateway(config, containers=container_runtime, control_plane=control_plane, **kwargs)
