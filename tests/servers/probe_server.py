"""A stdio MCP server that reports what its sandbox allows, for the sandbox tests.

Written with the official SDK (``mcp.server.mcpserver.MCPServer``). Runs the same inside the test
image (``python3 -m probe_server``) and on the host as a plain process
(``python tests/servers/probe_server.py``). Tools:

- ``echo(text)``: returns ``text``.
- ``probe()``: JSON with uid/gid, which writes succeed, network interfaces, CapEff, NoNewPrivs.
- ``alloc(mb)``: allocates and touches ``mb`` MiB (to trip a memory limit).
- ``fork_bomb(n)``: tries to start ``n`` child processes, reports how many started, then reaps them.
- ``sleep(seconds)``: sleeps, then says so (for calls that are in flight when something happens).
- ``syscalls()``: JSON ``{probe: "ok" | errno name}`` for system calls a seccomp profile may refuse
  (memfd_create and running a binary from it, execveat, ptrace, userfaultfd, keyctl, namespaces,
  io_uring, ...) and for ones every server needs (threads, fork, subprocesses, sockets). Each risky
  call runs in a forked child, so a call that succeeds changes nothing in the server (and none
  changes anything outside it, even run as root on a host).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable

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


# System call numbers the C library has no wrapper for (or whose wrapper hides the raw call).
_NR = {
    "x86_64": {"execveat": 322, "userfaultfd": 323, "keyctl": 250, "io_uring_setup": 425, "clone": 56,
               "clone3": 435, "bpf": 321, "perf_event_open": 298},
    "aarch64": {"execveat": 281, "userfaultfd": 282, "keyctl": 219, "io_uring_setup": 425, "clone": 220,
                "clone3": 435, "bpf": 280, "perf_event_open": 241},
}[platform.machine()]
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall(name: str, *args: int | bytes | ctypes.Array[ctypes.c_char_p] | None) -> int:
    """The raw system call; its result, or -errno."""
    result = _libc.syscall(ctypes.c_long(_NR[name]), *args)
    return -ctypes.get_errno() if result == -1 else int(result)


def _check(result: int) -> int:
    """0 for a successful libc/syscall result, else the errno (ctypes' result is -1 then)."""
    if result >= 0:
        return 0
    return ctypes.get_errno() if result == -1 else -result


def _in_child(fn: Callable[[], int]) -> str:
    """Run ``fn`` in a forked child; "ok" if it returned 0 (or exec'd /bin/true), else the errno name."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = fn()
        except OSError as e:
            code = e.errno or 98
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    code = os.WEXITSTATUS(status)
    return "ok" if code == 0 else errno.errorcode.get(code, f"exit {code}")


def _memfd_create() -> int:
    os.close(os.memfd_create("probe"))
    return 0


def _memfd_exec() -> int:
    """Copy /bin/true into a memfd and execute it: the way to run a binary despite a noexec /tmp."""
    fd = os.memfd_create("probe", 0)  # no MFD_CLOEXEC: the exec needs the fd
    with open("/bin/true", "rb") as src:
        os.write(fd, src.read())
    os.execv(f"/proc/self/fd/{fd}", ["true"])  # /bin/true exits 0: "ok"


def _execveat() -> int:
    argv = (ctypes.c_char_p * 2)(b"true", None)
    envp = (ctypes.c_char_p * 1)(None)
    return -_syscall("execveat", -100, b"/bin/true", argv, envp, 0)  # AT_FDCWD; returns only on failure


def _ptrace_traceme() -> int:
    return _check(_libc.ptrace(0, 0, None, None))  # PTRACE_TRACEME


def _ptrace_attach() -> int:
    r, w = os.pipe()
    target = os.fork()
    if target == 0:  # a child to attach to: waits for its release
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    os.close(r)
    try:
        err = _check(_libc.ptrace(16, target, None, None))  # PTRACE_ATTACH
        if err == 0:
            os.waitpid(target, 0)  # it stopped
            _libc.ptrace(17, target, None, None)  # PTRACE_DETACH
        return err
    finally:
        os.close(w)
        os.waitpid(target, 0)


def _userfaultfd() -> int:
    fd = _syscall("userfaultfd", os.O_CLOEXEC | 1)  # UFFD_USER_MODE_ONLY: allowed unprivileged
    if fd >= 0:
        os.close(fd)
    return -min(fd, 0)


def _keyctl() -> int:
    result = _syscall("keyctl", 0, -3, 0)  # KEYCTL_GET_KEYRING_ID of the session keyring
    return -min(result, 0) if result != -errno.ENOKEY else 0


def _unshare_user() -> int:
    return _check(_libc.unshare(0x10000000))  # CLONE_NEWUSER


def _clone_newuser() -> int:
    pid = _syscall("clone", 0x10000000 | signal.SIGCHLD, 0, 0, 0, 0)  # fork-like, in a new user namespace
    if pid == 0:
        os._exit(0)
    if pid > 0:
        os.waitpid(pid, 0)
        return 0
    return -pid


def _clone3() -> int:
    args = (ctypes.c_uint64 * 11)(0, 0, 0, 0, signal.SIGCHLD)  # struct clone_args: a plain fork
    pid = _syscall("clone3", args, ctypes.sizeof(args))
    if pid == 0:
        os._exit(0)
    if pid > 0:
        os.waitpid(pid, 0)
        return 0
    return -pid


def _io_uring_setup() -> int:
    params = (ctypes.c_char * 120)()
    fd = _syscall("io_uring_setup", 4, params)
    if fd >= 0:
        os.close(fd)
    return -min(fd, 0)


def _personality(value: int) -> Callable[[], int]:
    return lambda: _check(_libc.personality(ctypes.c_ulong(value)))


def _mount() -> int:
    # A target that does not exist: a filter refuses the call before the kernel looks at it (EPERM),
    # while a process allowed to mount (root on a host) gets ENOENT and mounts nothing.
    return _check(_libc.mount(b"none", b"/nonexistent-mcp-gateway-probe", b"tmpfs", 0, None))


def _socket(family: int, kind: int = socket.SOCK_STREAM) -> Callable[[], int]:
    def make() -> int:
        socket.socket(family, kind).close()
        return 0

    return make


def _thread() -> int:
    done = []
    t = threading.Thread(target=lambda: done.append(1))
    t.start()
    t.join()
    return 0 if done else 1


def _subprocess() -> int:
    # posix_spawn/fork+exec: glibc tries clone3 first and falls back to clone when it gets ENOSYS.
    return subprocess.run([shutil.which("true") or "/bin/true"], check=False).returncode


_PROBES: dict[str, Callable[[], int]] = {
    "memfd_create": _memfd_create,
    "memfd_exec": _memfd_exec,
    "execveat": _execveat,
    "ptrace_traceme": _ptrace_traceme,
    "ptrace_attach": _ptrace_attach,
    "userfaultfd": _userfaultfd,
    "keyctl": _keyctl,
    "unshare_user": _unshare_user,
    "clone_newuser": _clone_newuser,
    "clone3": _clone3,
    "io_uring_setup": _io_uring_setup,
    "personality_no_aslr": _personality(0x0040000),  # ADDR_NO_RANDOMIZE
    "personality_query": _personality(0xFFFFFFFF),
    "mount": _mount,
    "socket_alg": _socket(38, socket.SOCK_SEQPACKET),  # AF_ALG
    "socket_vsock": _socket(40),  # AF_VSOCK
    "socket_inet": _socket(socket.AF_INET),
    "socket_inet6": _socket(socket.AF_INET6),
    "socket_unix": _socket(socket.AF_UNIX),
    "socket_netlink": _socket(socket.AF_NETLINK, socket.SOCK_RAW),
    "thread": _thread,
    "fork": lambda: 0,
    "subprocess": _subprocess,
}


@server.tool()
def syscalls() -> str:
    """Try system calls a sandbox may refuse (and ones every server needs); JSON {probe: ok | errno}."""
    return json.dumps({name: _in_child(fn) for name, fn in _PROBES.items()})


if __name__ == "__main__":
    # Protocol bytes own stdout; anything else this process prints goes to stderr.
    print("probe_server: ready", file=sys.stderr, flush=True)
    server.run()
