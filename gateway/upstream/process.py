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
        await self._stdin.send_all(data)

    async def receive_some(self) -> bytes | bytearray:
        return await self._stdout.receive_some(65536)

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
                await self._stop(process)

    async def _stop(self, process: trio.Process) -> None:
        if process.returncode is None:
            if process.stdin is not None:
                await process.stdin.aclose()  # a well-behaved stdio server exits on EOF
            with trio.move_on_after(self._stop_timeout / 2):
                await process.wait()
            if process.returncode is None:
                process.terminate()
                with trio.move_on_after(self._stop_timeout / 2):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                await stream.aclose()


async def _log_stderr(name: str, stream: trio.abc.ReceiveStream | None) -> None:
    """Forward a server's stderr to the gateway log, one line per record, bounded per line."""
    if stream is None:
        return
    buf = b""
    try:
        while chunk := await stream.receive_some(65536):
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.strip():
                    log.info("[%s] %s", name, line[:4000].decode("utf-8", "replace").rstrip())
            if len(buf) > 65536:
                log.info("[%s] %s", name, buf[:4000].decode("utf-8", "replace"))
                buf = b""
    except (trio.ClosedResourceError, trio.BrokenResourceError, OSError):
        return
    if buf.strip():
        log.info("[%s] %s", name, buf[:4000].decode("utf-8", "replace").rstrip())
