"""Liveness: notice an upstream that stopped answering, and end its connection.

A server can wedge without exiting: a stopped process, a container whose PID 1 was
ptrace-stopped, a deadlock. Its pipes stay open, so nothing fails; every call just waits
out its timeout, forever. The watchdog pings it

- when it has been silent for ``interval`` with no call in flight (an idle server costs one
  small message per interval), and
- at once after ``after_timeouts`` calls in a row ran out of time, whatever else is in flight.

A busy server is never pinged just for being slow: a long tool call is not a dead server.
A ping that is not answered within ``timeout`` aborts the connection with the reason: its
calls fail at once, and the owner (supervisor or pool) restarts the server, which is how
``/healthz`` learns why. Any answer, even an error (a server without ``ping``), is life.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from ..protocol import jsonrpc
from ..protocol.errors import CallError, UpstreamGone
from .peer import UpstreamPeer

log = logging.getLogger("mcp_gateway.upstream")


@dataclass(frozen=True, slots=True)
class LivenessPolicy:
    interval: float = 30.0  # 0 disables the idle ping (the timeout-triggered one stays)
    timeout: float = 10.0
    after_timeouts: int = 3


async def watch(conn: UpstreamPeer, policy: LivenessPolicy) -> None:
    """Run beside ``conn`` (in the same nursery) until it closes or is aborted."""
    while not conn.closed.is_set():
        conn.suspect = trio.Event()
        # A server already suspect when we (re)start waiting must not wait a whole interval.
        if conn.consecutive_timeouts < policy.after_timeouts:
            if policy.interval > 0:
                due = conn.last_received + policy.interval
                with trio.move_on_at(due):
                    await conn.suspect.wait()
            else:
                await conn.suspect.wait()
        if conn.consecutive_timeouts >= policy.after_timeouts:
            why = f"after {conn.consecutive_timeouts} call timeouts in a row"
        elif policy.interval > 0 and trio.current_time() >= conn.last_received + policy.interval:
            if conn.in_flight:
                # Calls are running and none has timed out: slow, not dead. Look again later.
                with trio.move_on_after(policy.interval):
                    await conn.suspect.wait()
                continue
            why = f"silent for {policy.interval:g}s"
        else:
            continue  # it spoke meanwhile, or a timeout below the threshold woke us
        if not await _ping(conn, policy, why):
            return


async def _ping(conn: UpstreamPeer, policy: LivenessPolicy, why: str) -> bool:
    """True if the server answered (anything) in time; otherwise abort the connection."""
    try:
        await conn.call("ping", timeout=policy.timeout)
    except UpstreamGone:
        return False
    except CallError as exc:
        if exc.code != jsonrpc.REQUEST_TIMEOUT:
            conn.consecutive_timeouts = 0  # an error answer is an answer
            return True
        reason = (f"server {conn.name!r} is unresponsive: it did not answer a ping within "
                  f"{policy.timeout:g}s ({why}); restarting it")
        log.error("%s", reason)
        conn.abort(reason)
        return False
    conn.consecutive_timeouts = 0
    return True
