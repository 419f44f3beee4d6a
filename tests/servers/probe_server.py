"""A stdio MCP server that reports what its sandbox allows, for the sandbox tests.

Written with the official SDK (``mcp.server.mcpserver.MCPServer``). Runs the same inside the test
image (``python3 -m probe_server``) and on the host as a plain process
(``python tests/servers/probe_server.py``). Tools:

- ``echo(text)``: returns ``text``.
- ``probe()``: JSON with uid/gid, which writes succeed, network interfaces, CapEff, NoNewPrivs.
- ``alloc(mb)``: allocates and touches ``mb`` MiB (to trip a memory limit).
- ``fork_bomb(n)``: tries to start ``n`` child processes, reports how many started, then reaps them.
- ``sleep(seconds)``: sleeps, then says so (for calls that are in flight when something happens).
"""

from __future__ import annotations

import errno
import json
import os
import sys

import anyio
from mcp.server.mcpserver import MCPServer

server = MCPServer("probe")


def _try_write(path: str) -> tuple[bool, str | None]:
    """Create, write and remove ``path``; return (ok, errno name on failure)."""
    try:
        with open(path, "w") as f:
            f.write("probe")
        os.unlink(path)
        return True, None
    except OSError as e:
        return False, errno.errorcode.get(e.errno or 0, str(e))


def _interfaces() -> list[str]:
    try:
        return sorted(os.listdir("/sys/class/net"))
    except OSError:
        # /sys may be absent or masked; /proc/net/dev lists the same interfaces after 2 header lines.
        with open("/proc/net/dev") as f:
            return sorted(line.split(":", 1)[0].strip() for line in f.readlines()[2:])


def _status_fields() -> dict[str, str]:
    with open("/proc/self/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def probe() -> str:
    """Report what the sandbox allows, as JSON."""
    status = _status_fields()
    root_ok, root_err = _try_write("/probe-file")
    # /var/tmp is world-writable in the image, so only a read-only root stops an unprivileged user there.
    var_tmp_ok, var_tmp_err = _try_write(f"/var/tmp/probe-{os.getpid()}")
    tmp_ok, tmp_err = _try_write(f"/tmp/probe-{os.getpid()}")
    return json.dumps(
        {
            "uid": os.getuid(),
            "gid": os.getgid(),
            "write_root_ok": root_ok,
            "write_root_error": root_err,
            "write_var_tmp_ok": var_tmp_ok,
            "write_var_tmp_error": var_tmp_err,
            "write_tmp_ok": tmp_ok,
            "write_tmp_error": tmp_err,
            "interfaces": _interfaces(),
            "CapEff": int(status.get("CapEff", "0"), 16),
            "NoNewPrivs": int(status.get("NoNewPrivs", "0")),
            "pid": os.getpid(),
        }
    )


@server.tool()
def alloc(mb: int) -> str:
    """Allocate and touch ``mb`` MiB, then free it."""
    chunks = []
    for _ in range(mb):
        # bytes * n writes every page, so the memory is really resident (not just reserved).
        chunks.append(b"\x01" * (1024 * 1024))
    del chunks
    return f"allocated {mb} MiB"


@server.tool()
def fork_bomb(n: int) -> str:
    """Try to start ``n`` processes (at most 10000); report how many started; reap them all."""
    n = max(0, min(n, 10_000))
    # Children block reading this pipe and exit at EOF: when we close the write end, or when we die.
    r, w = os.pipe()
    children: list[int] = []
    error = None
    try:
        for _ in range(n):
            try:
                pid = os.fork()
            except OSError as e:  # EAGAIN once the pids limit is reached
                error = errno.errorcode.get(e.errno or 0, str(e))
                break
            if pid == 0:  # child: touch nothing of the parent's, wait for the release, leave
                try:
                    os.close(w)
                    os.read(r, 1)
                finally:
                    os._exit(0)
            children.append(pid)
    finally:
        os.close(w)
        os.close(r)
        for pid in children:
            os.waitpid(pid, 0)
    return json.dumps({"requested": n, "started": len(children), "error": error})


@server.tool()
async def sleep(seconds: float) -> str:
    """Sleep for ``seconds``, then say so."""
    await anyio.sleep(seconds)
    return f"slept {seconds}"


if __name__ == "__main__":
    # Protocol bytes own stdout; anything else this process prints goes to stderr.
    print("probe_server: ready", file=sys.stderr, flush=True)
    server.run()
