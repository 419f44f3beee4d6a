"""The strict seccomp profile: as data (no engine needed), then from inside real containers, through
the real gateway and the official SDK client: what it refuses, what docker-default allows instead,
and that Python and Node MCP servers work under it."""

from __future__ import annotations

import json
from typing import Any

import docker
import pytest
from mcp import Client

from sandbox import seccomp
from sandbox.seccomp import (
    CLONE_NAMESPACE_FLAGS,
    DENIED,
    ENOSYS,
    ENOSYS_CALLS,
    EPERM,
    allowed_names,
    security_opt,
    strict_profile,
    strict_profile_json,
)
from tests.conftest_docker import ECHO_IMAGE, NODE_IMAGE
from tests.helpers import config, running_gateway

# ------------------------------------------------------------------ the profile as data


def permits(profile: dict[str, Any], name: str, *args: int) -> int | None:
    """Evaluate our own profile the way libseccomp would: None if allowed, else the errno returned.
    Understands the operators the profile uses (EQ, MASKED_EQ); rules on a name are alternatives."""
    for rule in profile["syscalls"]:
        if name not in rule["names"]:
            continue
        conditions = rule.get("args") or []
        ok = True
        for c in conditions:
            value = args[c["index"]] if c["index"] < len(args) else 0
            if c["op"] == "SCMP_CMP_EQ":
                ok &= value == c["value"]
            elif c["op"] == "SCMP_CMP_MASKED_EQ":
                ok &= (value & c["value"]) == c["valueTwo"]
            else:  # pragma: no cover - the profile uses no other operator
                raise AssertionError(f"operator {c['op']} not understood")
        if ok:
            return None if rule["action"] == "SCMP_ACT_ALLOW" else int(rule.get("errnoRet", EPERM))
    return int(profile.get("defaultErrnoRet", EPERM))


# What Python 3.11 (tests/servers/probe_server.py, initialize + tools/list + probe) and Node 22
# (server-everything and tests/servers/node_probe.mjs) were seen calling under `strace -f` on the
# host. All of them but clone3 and io_uring_* (which answer ENOSYS, so their callers fall back)
# must stay allowed.
SEEN_PYTHON = """access arch_prctl brk clone clone3 close dup epoll_create1 epoll_ctl epoll_wait execve exit
exit_group fcntl fstat futex getcwd getdents64 getegid geteuid getgid getpid getrandom gettid getuid
ioctl lseek lstat mmap mprotect munmap newfstatat openat pipe2 poll pread64 prlimit64 read readlink
rseq rt_sigaction rt_sigprocmask rt_sigreturn sched_getaffinity set_robust_list set_tid_address
socketpair stat sysinfo uname wait4 write""".split()
SEEN_NODE = """access arch_prctl brk capget clone clone3 close dup2 dup3 epoll_create1 epoll_ctl epoll_pwait
eventfd2 execve exit exit_group fcntl fstat futex getcwd getdents64 getegid geteuid getgid getpid
getppid getrandom getuid inotify_add_watch inotify_init1 inotify_rm_watch io_uring_enter
io_uring_setup ioctl madvise mmap mprotect munmap newfstatat openat pipe2 prctl pread64 prlimit64
read readlink rseq rt_sigaction rt_sigprocmask rt_sigreturn sched_getaffinity sched_yield
set_robust_list set_tid_address setsockopt socket statx sysinfo uname unlink wait4 write writev
bind listen connect accept4 getsockname getpeername sendto recvfrom shutdown""".split()


def test_profile_shape() -> None:
    profile = strict_profile()
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO" and profile["defaultErrnoRet"] == EPERM
    assert {a["architecture"]: a["subArchitectures"] for a in profile["archMap"]} == {
        "SCMP_ARCH_X86_64": ["SCMP_ARCH_X86"],
        "SCMP_ARCH_AARCH64": ["SCMP_ARCH_ARM"],
    }
    assert json.loads(strict_profile_json()) == profile
    assert " " not in strict_profile_json()  # compact: it travels in every create request
    for rule in profile["syscalls"]:
        assert rule["action"] in ("SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO") and rule["names"]
    profile["syscalls"].clear()  # a copy: callers cannot change the next container's profile
    assert strict_profile()["syscalls"]


def test_denied_calls_are_never_allowed_and_each_is_explained() -> None:
    allowed = allowed_names()
    profile = strict_profile()
    assert not allowed & DENIED.keys()
    assert not allowed & set(ENOSYS_CALLS)
    doc = seccomp.__doc__ or ""
    for name in DENIED:
        assert f"``{name}``" in doc, f"{name} is denied but the module docstring's table does not say why"
        assert permits(profile, name) == EPERM
    for name in ENOSYS_CALLS:
        assert permits(profile, name) == ENOSYS
    assert permits(profile, "a_syscall_nobody_listed") == EPERM


def test_no_call_has_conflicting_rules() -> None:
    # libseccomp refuses a filter where one call is both allowed and refused.
    actions: dict[str, set[str]] = {}
    for rule in strict_profile()["syscalls"]:
        for name in rule["names"]:
            actions.setdefault(name, set()).add(rule["action"])
    assert {n: a for n, a in actions.items() if len(a) > 1} == {}
    names = [n for group in seccomp.ALLOWED.values() for n in group]
    assert len(names) == len(set(names)), "a call is listed in two groups"


def test_clone_threads_and_fork_but_no_namespaces() -> None:
    p = strict_profile()
    sigchld = 17
    thread = 0x00000100 | 0x00000200 | 0x00000400 | 0x00000800 | 0x00010000 | 0x00040000 | 0x00080000 \
        | 0x00100000 | 0x00200000  # VM FS FILES SIGHAND THREAD SYSVSEM SETTLS PARENT_SETTID CHILD_CLEARTID
    assert permits(p, "clone", thread) is None
    assert permits(p, "clone", sigchld) is None  # fork
    assert permits(p, "clone", 0x00004000 | 0x00000100 | sigchld) is None  # vfork-style posix_spawn
    for flag in (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000):
        assert flag & CLONE_NAMESPACE_FLAGS
        assert permits(p, "clone", sigchld | flag) == EPERM, hex(flag)
    assert permits(p, "clone3") == ENOSYS  # glibc then uses clone, whose flags the filter can read


def test_personality_and_socket_families() -> None:
    p = strict_profile()
    assert permits(p, "personality", 0xFFFFFFFF) is None and permits(p, "personality", 0) is None
    assert permits(p, "personality", 0x0040000) == EPERM  # ADDR_NO_RANDOMIZE
    assert permits(p, "personality", 0x0400000) == EPERM  # READ_IMPLIES_EXEC
    for family in (1, 2, 10, 16):
        assert permits(p, "socket", family) is None
    for family in (17, 38, 40, 21, 30, 29, 44):  # packet, alg, vsock, rds, tipc, can, xdp
        assert permits(p, "socket", family) == EPERM


def test_what_python_and_node_servers_call_stays_allowed() -> None:
    p = strict_profile()
    for name in sorted(set(SEEN_PYTHON + SEEN_NODE) - set(ENOSYS_CALLS)):
        args = (2,) if name == "socket" else ()
        assert permits(p, name, *args) is None, name


def test_security_opt_per_mode() -> None:
    assert security_opt("strict") == [f"seccomp={strict_profile_json()}"]
    assert security_opt("docker-default") == []  # the engine's own default, never "unconfined"
    with pytest.raises(ValueError, match="seccomp"):
        security_opt("unconfined")


# ------------------------------------------------------------------ inside real containers

BOX = {"image": ECHO_IMAGE, "command": ["python3", "-m", "probe_server"]}
#: What strict refuses from inside a container (EPERM unless said otherwise).
STRICT_DENIES = {
    "memfd_create": "EPERM", "memfd_exec": "EPERM", "execveat": "EPERM", "ptrace_traceme": "EPERM",
    "ptrace_attach": "EPERM", "userfaultfd": "EPERM", "keyctl": "EPERM", "unshare_user": "EPERM",
    "clone_newuser": "EPERM", "clone3": "ENOSYS", "io_uring_setup": "ENOSYS", "personality_no_aslr": "EPERM",
    "mount": "EPERM", "socket_alg": "EPERM", "socket_vsock": "EPERM",
}
#: What every server needs, under either profile.
EVERYONE_NEEDS = ["thread", "fork", "subprocess", "socket_inet", "socket_inet6", "socket_unix", "socket_netlink",
                  "personality_query"]


def _containers(client: docker.DockerClient, gateway: object, server: str) -> list[Any]:
    instance = gateway.sandbox.instance_id  # type: ignore[attr-defined]
    return client.containers.list(filters={"label": [f"io.mcp-gateway.instance={instance}",
                                                     f"io.mcp-gateway.server={server}"]})


@pytest.mark.docker
async def test_strict_denies_what_docker_default_allows(docker_client: docker.DockerClient) -> None:
    servers = {"strict": BOX, "loose": {**BOX, "seccomp": "docker-default"}}
    async with running_gateway(config(servers)) as gw:
        (strict_box,) = _containers(docker_client, gw.gateway, "strict")
        (loose_box,) = _containers(docker_client, gw.gateway, "loose")
        async with Client(gw.url, mode="legacy") as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            assert {"strict__syscalls", "strict__echo", "loose__syscalls"} <= tools
            strict = json.loads((await client.call_tool("strict__syscalls", {})).content[0].text)
            loose = json.loads((await client.call_tool("loose__syscalls", {})).content[0].text)
            assert (await client.call_tool("strict__echo", {"text": "still serving"})).content[0].text \
                == "still serving"
    print(f"\n{'probe':20} {'strict':11} docker-default")
    for name in strict:
        print(f"{name:20} {strict[name]:11} {loose[name]}")
    assert {name: strict[name] for name in STRICT_DENIES} == STRICT_DENIES
    assert all(strict[n] == "ok" and loose[n] == "ok" for n in EVERYONE_NEEDS), (strict, loose)
    # The escape: a binary run from memory despite the noexec /tmp. Docker's default allows
    # it (and ptrace); strict does not.
    assert loose["memfd_create"] == loose["memfd_exec"] == "ok"
    assert loose["ptrace_traceme"] == "ok"
    # Whatever else differs, strict is the stricter one: it never allows what docker-default refuses.
    assert [n for n in strict if strict[n] == "ok" and loose[n] != "ok"] == []
    strict_opts = strict_box.attrs["HostConfig"]["SecurityOpt"]
    assert strict_opts == ["no-new-privileges:true", f"seccomp={strict_profile_json()}"]
    assert loose_box.attrs["HostConfig"]["SecurityOpt"] == ["no-new-privileges:true"]


def _node_image(client: docker.DockerClient) -> None:
    try:
        client.images.get(NODE_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{NODE_IMAGE} is missing: scripts/test-env could not build it (see its output)", pytrace=False)


@pytest.mark.docker
async def test_node_mcp_servers_work_under_strict(docker_client: docker.DockerClient) -> None:
    _node_image(docker_client)
    servers = {
        "everything": {"image": NODE_IMAGE},  # the reference server from npm, over stdio
        "nprobe": {"image": NODE_IMAGE, "command": ["node", "/app/node_probe.mjs"]},
    }
    async with running_gateway(config(servers)) as gw:
        for name in servers:
            (box,) = _containers(docker_client, gw.gateway, name)
            assert box.attrs["HostConfig"]["SecurityOpt"][-1] == f"seccomp={strict_profile_json()}"
        async with Client(gw.url, mode="legacy") as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            assert {"everything__echo", "everything__get-sum", "nprobe__echo", "nprobe__features"} <= tools
            echoed = await client.call_tool("everything__echo", {"message": "hello from node"})
            assert echoed.content[0].text == "Echo: hello from node"
            total = await client.call_tool("everything__get-sum", {"a": 40, "b": 2})
            assert "42" in total.content[0].text
            assert (await client.call_tool("nprobe__echo", {"text": "ok"})).content[0].text == "ok"
            features = json.loads((await client.call_tool("nprobe__features", {})).content[0].text)
    assert features == {
        "worker": 42, "child_process": "spawned", "shell": "42", "fs": "written", "fs_watch": "ok",
        "crypto": features["crypto"], "random": 16, "zlib": "squeezed", "wasm": 42, "timer": "ok",
        "interfaces": ["lo"], "tcp_loopback": "pong", "dns_localhost": features["dns_localhost"],
    }, features
    assert len(features["crypto"]) == 12 and features["dns_localhost"] in ("127.0.0.1", "::1")


@pytest.mark.docker
async def test_mcp_server_time_works_under_strict(docker_client: docker.DockerClient) -> None:
    # A third-party Python server from PyPI (zoneinfo, pydantic, anyio threads) under the default.
    from tests.conftest_docker import TIME_IMAGE

    async with running_gateway(config({"clock": {"image": TIME_IMAGE}})) as gw:
        (box,) = _containers(docker_client, gw.gateway, "clock")
        assert box.attrs["HostConfig"]["SecurityOpt"][-1].startswith("seccomp=")
        async with Client(gw.url, mode="legacy") as client:
            result = await client.call_tool("clock__convert_time", {
                "source_timezone": "Europe/Paris", "time": "12:00", "target_timezone": "Asia/Tokyo"})
            assert json.loads(result.content[0].text)["target"]["timezone"] == "Asia/Tokyo"
