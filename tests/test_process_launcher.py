"""ProcessLauncher with real child processes: stderr logging, a clean stop on stdin EOF, and a stop
that reaches the whole process group (servers started through sh -c, npx, uvx or a shim)."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from gateway.upstream.channel import LaunchError
from gateway.upstream.process import ProcessChannel, ProcessLauncher

SLEEPER = "python3 -c 'import time; time.sleep(120)'"
# Ignores SIGTERM, then says its pid: only the group's SIGKILL can stop it.
STUBBORN = (
    "python3 -c 'import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print(os.getpid(), flush=True); time.sleep(120)'"
)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie awaiting its reaper does not: it is dead, just not reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(b")") + 2 :][:1] not in (b"Z", b"X")


async def _read_line(channel: ProcessChannel) -> bytes:
    buf = b""
    with trio.fail_after(10):
        while b"\n" not in buf:
            chunk = await channel.receive_some()
            assert chunk, f"stdout ended early: {buf!r}"
            buf += chunk
    return buf.split(b"\n", 1)[0]


@asynccontextmanager
async def _grandchildren() -> AsyncIterator[list[int]]:
    """Collects grandchild pids; whatever a failed test leaves running is killed."""
    pids: list[int] = []
    try:
        yield pids
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


async def _assert_gone(pid: int) -> None:
    with trio.fail_after(5):
        while _alive(pid):
            await trio.sleep(0.05)


async def test_stop_reaches_the_server_behind_a_wrapper() -> None:
    # The wrapper (sh) waits on the real server; stop must not leave the server running.
    launcher = ProcessLauncher("wrapped", ["sh", "-c", f"{SLEEPER} & echo $!; wait"], {}, stop_timeout=1.0)
    async with _grandchildren() as pids:
        async with launcher.open() as channel:
            pids.append(int(await _read_line(channel)))
            assert _alive(pids[0])
        await _assert_gone(pids[0])
        assert (await channel.wait()).startswith("was killed by signal")


async def test_stop_reaches_the_group_after_the_leader_exited() -> None:
    # The wrapper exits at once, leaving its child behind in the process group.
    argv = ["sh", "-c", f"{SLEEPER} </dev/null >/dev/null 2>&1 & echo $!"]
    async with _grandchildren() as pids:
        async with ProcessLauncher("orphaning", argv, {}, stop_timeout=1.0).open() as channel:
            pids.append(int(await _read_line(channel)))
            with trio.fail_after(10):
                assert await channel.wait() == "exited with status 0"
            assert _alive(pids[0])
        await _assert_gone(pids[0])


async def test_group_members_ignoring_sigterm_are_killed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "mcp_gateway.upstream")
    launcher = ProcessLauncher("stubborn", ["sh", "-c", f"{STUBBORN} & wait"], {}, stop_timeout=1.0)
    async with _grandchildren() as pids:
        async with launcher.open() as channel:
            pids.append(int(await _read_line(channel)))
        await _assert_gone(pids[0])
    assert "still running after SIGTERM; killing it" in caplog.text


async def test_server_exits_on_stdin_eof_and_stderr_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "mcp_gateway.upstream")
    script = (
        "import sys\n"
        "sys.stderr.write('first line\\n\\nsecond line\\n'); sys.stderr.flush()\n"
        "for line in sys.stdin:\n"
        "    print(line.strip()[::-1], flush=True)\n"
    )
    # A long stop_timeout: a server that did not exit on EOF would be terminated (status -15).
    async with ProcessLauncher("polite", ["python3", "-c", script], {}, stop_timeout=20.0).open() as channel:
        await channel.send_all(b"ping\n")
        assert await _read_line(channel) == b"gnip"

        def logged() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.name == "mcp_gateway.upstream"]

        with trio.fail_after(10):
            while "[polite] second line" not in logged():
                await trio.sleep(0.02)
    assert await channel.wait() == "exited with status 0"
    messages = logged()
    assert messages.index("[polite] first line") < messages.index("[polite] second line")
    assert "[polite] " not in messages  # blank lines are skipped
    assert "killing it" not in caplog.text


async def test_missing_command_is_a_launch_error() -> None:
    with pytest.raises(LaunchError, match="cannot start"):
        async with ProcessLauncher("missing", ["/nonexistent/server"], {}).open():
            pass  # pragma: no cover
