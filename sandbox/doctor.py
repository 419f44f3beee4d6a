"""``mcp-gateway doctor``: can this machine run the configured container servers? How to fix it if not."""

from __future__ import annotations

import sys
from typing import TextIO

import docker
import docker.errors

from gateway.config import GatewayConfig
from sandbox.docker_io import DOCKER_ERRORS
from sandbox.engine import check_engine, connect, image_exists


def run_doctor(config: GatewayConfig, out: TextIO = sys.stdout) -> int:
    """Print one line per check; return 0 when everything needed is there, 1 otherwise."""
    containers = {name: s for name, s in config.servers.items() if s.kind == "container"}
    problems = 0

    def report(ok: bool, what: str, fix: str = "") -> None:
        nonlocal problems
        problems += not ok
        print(f"[{'ok' if ok else 'FAIL'}] {what}" + (f"\n       fix: {fix}" if fix and not ok else ""), file=out)

    status = check_engine()
    if not status.reachable:
        report(False, f"Docker engine: {status.error}")  # the error text carries the fix
        if containers:
            print(f"       needed by: {', '.join(containers)}", file=out)
        return 1 if containers else 0
    report(True, f"Docker engine reachable: version {status.server_version}, API {status.api_version}")
    if not containers:
        print("no container servers configured (servers with `image:`); nothing else to check", file=out)
        return 0
    client = connect()
    try:
        for name, server in containers.items():
            image = server.image or ""
            try:
                found = image_exists(client, image)
            except DOCKER_ERRORS as exc:
                report(False, f"servers.{name}: cannot look up image {image!r}: {exc}")
                continue
            report(found, f"servers.{name}: image {image!r} {'present' if found else 'is not on this engine'}",
                   f"the gateway never pulls: `docker pull {image}` or `docker load -i FILE` on this host")
            if server.network not in ("none", "host"):
                try:
                    client.networks.get(server.network)
                    report(True, f"servers.{name}: network {server.network!r} exists")
                except docker.errors.NotFound:
                    report(False, f"servers.{name}: network {server.network!r} does not exist",
                           f"create it (`docker network create {server.network}`) or use network: none")
        if problems == 0:
            print("everything the container servers need is here", file=out)
    finally:
        client.close()
    return 1 if problems else 0
