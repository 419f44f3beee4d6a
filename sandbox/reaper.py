"""The reaper: removes a gateway run's containers once that gateway has died, however it died.

A gateway that is SIGKILLed (or OOM-killed, or crashes) cannot clean up after itself. Its attach
connections close with it, so each server's stdin reaches EOF and a well-behaved MCP server exits
(and the engine auto-removes its container); the reaper deals with the rest: servers that ignore
EOF, and containers created but never started. The gateway starts one at startup
(:mod:`sandbox.reaper_link`), in one of two modes:

``python -m sandbox.reaper --label K=V ...``
    A process of its own session, whose stdin is the read end of a pipe whose write end only the
    gateway holds. It blocks reading that pipe: no Docker connection, no polling. EOF means the
    gateway is gone. If the gateway wrote ``clean`` first (it removed its containers itself), the
    reaper exits at once; otherwise it gives the servers ``--grace`` seconds to exit on their own,
    then force-removes every container carrying all the ``--label`` labels, and exits.

``python -m sandbox.reaper --wait-container ID --label K=V ...``
    The same, as a sibling container of a gateway that runs in a container (a process inside the
    gateway's container would die with it): it waits for container ``ID`` to stop through the
    Docker API (one idle connection), then does the same.

It ignores SIGINT, SIGTERM and SIGHUP (a Ctrl-C or a ``systemctl stop`` meant for the gateway must not
remove the containers of a gateway that is still draining its calls); it ends when the gateway
does. Only the standard library is imported until there is work to do, so an idle reaper costs a
bare interpreter (about 13 MB resident).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

#: What the gateway writes before closing the pipe when it has removed its containers itself.
CLEAN = b"clean\n"
#: Seconds a server gets to exit on its own once the gateway is gone.
DEFAULT_GRACE = 5.0
_POLL = 0.25
_RUNNING_STATES = frozenset({"running", "restarting", "paused"})


def say(message: str) -> None:
    print(f"mcp-gateway reaper[{os.getpid()}]: {message}", file=sys.stderr, flush=True)


def wait_for_eof(fd: int = 0) -> bool:
    """Block until the pipe on ``fd`` ends; True if the gateway said it left nothing behind."""
    seen = b""
    while True:
        try:
            data = os.read(fd, 64)
        except InterruptedError:  # pragma: no cover - PEP 475 retries reads, kept for clarity
            continue
        except OSError:
            return False
        if not data:
            return seen.endswith(CLEAN)
        seen = (seen + data)[-len(CLEAN):]


def wait_for_container(client: Any, container_id: str) -> None:
    """Block until container ``container_id`` is no longer running (or gone). Survives engine hiccups:
    a failed wait is followed by a look at the container, never by a sweep of a live gateway's work."""
    import docker.errors
    import requests

    while True:
        try:
            client.api.wait(container_id, timeout=None)
            return
        except docker.errors.NotFound:
            return
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            say(f"waiting for the gateway's container failed ({exc}); looking again in 1 s")
        time.sleep(1)
        try:
            if not client.api.inspect_container(container_id)["State"]["Running"]:
                return
        except docker.errors.NotFound:
            return
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            pass


def sweep(client: Any, labels: Sequence[str], grace: float) -> list[str]:
    """Give running containers with all ``labels`` up to ``grace`` seconds to exit, then force-remove
    what is left (running, exited or never started). Returns the names removed."""
    import docker.errors

    filters = {"label": list(labels)}
    deadline = time.monotonic() + grace
    while True:
        left = client.api.containers(all=True, filters=filters)
        running = [c for c in left if c.get("State") in _RUNNING_STATES]
        if not running or time.monotonic() >= deadline:
            break
        time.sleep(min(_POLL, max(0.0, deadline - time.monotonic())))
    removed = []
    for c in left:
        try:
            client.api.remove_container(c["Id"], force=True)
        except docker.errors.NotFound:
            continue
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: its (auto-)removal is already under way
                say(f"could not remove {c['Id'][:12]}: {exc}")
                continue
        removed.append((c.get("Names") or [c["Id"][:12]])[0].lstrip("/"))
    return removed


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sandbox.reaper", description=__doc__.split("\n")[0])
    parser.add_argument("--label", action="append", required=True, metavar="K=V",
                        help="remove containers carrying this label (repeat: all must match)")
    parser.add_argument("--grace", type=float, default=DEFAULT_GRACE,
                        help="seconds servers get to exit on their own (default %(default)s)")
    parser.add_argument("--wait-container", metavar="ID",
                        help="wait for this container to stop instead of for EOF on stdin")
    parser.add_argument("--gateway", default="the gateway", help="how to name the gateway in messages")
    args = parser.parse_args(argv)
    if any("=" not in label or label.startswith("=") for label in args.label):
        parser.error("--label must be K=V")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    if args.wait_container:
        import docker

        client = docker.from_env(timeout=30)
        wait_for_container(client, args.wait_container)
    else:
        clean = wait_for_eof(0)
        if clean:
            return 0
        import docker

        client = docker.from_env(timeout=30)
    try:
        removed = sweep(client, args.label, args.grace)
    except Exception as exc:  # the engine is unreachable: the next gateway start sweeps instead
        say(f"{args.gateway} is gone but its containers could not be listed: {exc}")
        return 1
    if removed:
        say(f"{args.gateway} is gone; removed {len(removed)} container(s): {', '.join(removed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
