"""Upstream servers run as local processes over stdin/stdout pipes."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

import trio

from .. import logsafe
from ..fdio import receive_some, write_now
from .channel import LaunchError

log = logging.getLogger("mcp_gateway.upstream")

# Passed through from the gateway's environment; everything else (tokens, cloud
# credentials) stays out of upstream processes unless configured in `env`/`secrets`.
_INHERITED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TZ",
                  "TMPDIR", "TERM", "SYSTEMROOT", "VIRTUAL_ENV", "PYTHONPATH")


def process_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a process server: a small inherited base plus its config.

    The gateway's own interpreter directory comes first on PATH so that
    ``command: python3`` means the Python the gateway is installed in.
    """
    base = {k: v for k, v in os.environ.items() if k in _INHERITED_ENV}
    bindir = os.path.dirname(sys.executable)
    base["PATH"] = os.pathsep.join(p for p in (bindir, base.get("PATH", os.defpath)) if p)
    base.update(env)
    return base


def describe_returncode(code: int | None) -> str:
    if code is None:
        return "is still running"
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class ProcessChannel:
    """A :class:`~gateway.upstream.channel.Channel` over a child's pipes."""

    def __init__(self, process: trio.Process) -> None:
        self._process = process
        assert process.stdin is not None and process.stdout is not None
        self._stdin = process.stdin
        self._stdout = process.stdout

    async def send_all(self, data: bytes) -> None:
        # The pipe is non-blocking under trio: what it takes at once is written without the
        # scheduler round trio's send_all begins with (one writer task per channel, so no race).
        sent = write_now(self._stdin, data)
        if sent < len(data):
            await self._stdin.send_all(memoryview(data)[sent:])

    async def receive_some(self) -> bytes | bytearray:
        return await receive_some(self._stdout, 65536)  # wait, then read once (gateway/fdio.py)

    async def wait(self) -> str:
        return describe_returncode(await self._process.wait())


class ProcessLauncher:
    """Starts ``argv`` as a child process; its stderr goes to the log line by line."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], cwd: str | None = None,
                 *, stop_timeout: float = 2.0) -> None:
        self.name = name
        self._argv = list(argv)
        self._env = dict(env)
        self._cwd = cwd
        self._stop_timeout = stop_timeout

    @asynccontextmanager
    async def open(self) -> AsyncIterator[ProcessChannel]:
        try:
            process = await trio.lowlevel.open_process(
                self._argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=process_env(self._env), cwd=self._cwd, start_new_session=True,
            )
        except OSError as exc:
            raise LaunchError(f"server {self.name!r}: cannot start {self._argv[0]!r}: {exc.strerror or exc}") \
                from exc
        # start_new_session makes the child a session (and process group) leader: its pgid is its
        # pid, and it cannot move to another group. Wrappers (sh -c, npx, uvx, shims) start the real
        # server as a grandchild in this group, so stopping signals the group, not just the child.
        pgid = process.pid
        log.info("%s: started pid %d: %s", self.name, process.pid, self._argv[0])
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_log_stderr, self.name, process.stderr)
                try:
                    yield ProcessChannel(process)
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self._stop(process, pgid)

    async def _stop(self, process: trio.Process, pgid: int) -> None:
        """Stop the child and whatever is left in its process group, escalating step by step:
        close stdin (a well-behaved stdio server exits on EOF), then SIGTERM the group, then SIGKILL
        it. Each of the first two steps waits ``stop_timeout / 2`` for the child and its group."""
        half = self._stop_timeout / 2
        if process.stdin is not None:
            await process.stdin.aclose()
        if not await _wait_stopped(process, pgid, half):
            _signal_group(pgid, signal.SIGTERM)
            if not await _wait_stopped(process, pgid, half):
                log.info("%s: process group %d still running after SIGTERM; killing it", self.name, pgid)
                _signal_group(pgid, signal.SIGKILL)
                await process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                await stream.aclose()


async def _wait_stopped(process: trio.Process, pgid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` for the child to exit and its process group to empty; say if it did."""
    with trio.move_on_after(timeout):
        await process.wait()
        # Grandchildren are not ours to wait() on, and nothing signals that a group emptied: poll
        # (in a thread: the zombie check reads all of /proc, which must not stall the event loop).
        while await trio.to_thread.run_sync(_group_alive, pgid):  # noqa: ASYNC110
            await trio.sleep(0.05)
    return process.returncode is not None and not await trio.to_thread.run_sync(_group_alive, pgid)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # all gone already, or only members we may not signal (nothing we can do)


def _group_alive(pgid: int) -> bool:
    """Whether process group ``pgid`` still has a live member (zombies do not count).

    The group outlives its leader while a grandchild remains. Zombies are excluded because an
    orphan is reaped by whatever became its parent, which may never happen (say, the gateway
    runs as PID 1 in a container without an init): waiting on one would only burn the timeout.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # members we may not signal: waiting for them is pointless
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True  # no procfs: trust kill(), zombies included
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # exited meanwhile, or not ours to read
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) >= 3 and fields[2] == str(pgid).encode() and fields[0] not in (b"Z", b"X"):
            return True
    return False


async def _log_stderr(name: str, stream: trio.abc.ReceiveStream | None) -> None:
    """Forward a server's stderr to the gateway log, one record per line, through its
    :class:`~gateway.logsafe.PeerLog` (escaped, capped, rate-limited)."""
    if stream is None:
        return
    plog = logsafe.peer_log(name)
    buf = b""
    try:
        while chunk := await stream.receive_some(65536):
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.strip():
                    plog.log(logging.INFO, line.rstrip(b"\r"))
            if len(buf) > 65536:
                plog.log(logging.INFO, buf)
                buf = b""
    except (trio.ClosedResourceError, trio.BrokenResourceError, OSError):
        return
    if buf.strip():
        plog.log(logging.INFO, buf.rstrip(b"\r"))
