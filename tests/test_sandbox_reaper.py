"""Nothing outlives a dead gateway: the reaper (process and sibling container), auto-removed
containers, and a real ``mcp-gateway run`` SIGKILLed with shared, session, pooled and EOF-ignoring
container servers running."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import pytest
import trio

from sandbox import reaper
from sandbox.gateway_bridge import IDENTITY_LABEL, default_identity
from sandbox.profile import MANAGED_LABEL
from sandbox.reaper_link import REAPER_LABEL, own_container_id, sibling_kwargs
from tests.conftest_docker import ECHO_IMAGE
from tests.helpers import ROOT, HTTPClient, free_port

PY = sys.executable
BOX = {"image": ECHO_IMAGE, "command": ["python3", "-m", "probe_server"]}
STUBBORN = {"image": ECHO_IMAGE, "command": ["python3", "-m", "stubborn_server"]}

# ------------------------------------------------------------------ without an engine

GATEWAY_ID = "a" * 64
MOUNTINFO = f"""\
721 700 0:52 / / ro,relatime master:1 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/X
731 721 254:0 /var/lib/docker/containers/{GATEWAY_ID}/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/vda rw
732 721 254:0 /var/lib/docker/containers/{GATEWAY_ID}/hostname /etc/hostname rw,relatime - ext4 /dev/vda rw
"""


def test_own_container_id_from_mountinfo() -> None:
    assert own_container_id(MOUNTINFO) == GATEWAY_ID
    assert own_container_id("25 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n") is None  # a host
    with open("/proc/self/mountinfo") as f:  # these tests do not run in a container
        assert own_container_id(f.read()) is None


def _gateway_attrs(**host_config: Any) -> dict[str, Any]:
    return {
        "Id": GATEWAY_ID, "Name": "/gw", "Image": "sha256:" + "b" * 64,
        "Config": {"User": ""}, "HostConfig": {"NetworkMode": "host", **host_config},
        "Mounts": [{"Type": "bind", "Source": "/run/docker.sock", "Destination": "/var/run/docker.sock"},
                   {"Type": "bind", "Source": "/srv/cfg", "Destination": "/etc/mcp-gateway"}],
    }


def test_sibling_reaper_container_settings() -> None:
    labels = {MANAGED_LABEL: "1", "io.mcp-gateway.instance": "inst"}
    kw = sibling_kwargs(_gateway_attrs(GroupAdd=["999"]), labels=labels, instance_id="inst",
                        extra_labels={IDENTITY_LABEL: "idy"})
    assert kw is not None
    assert kw["image"] == "sha256:" + "b" * 64  # the gateway's own image, by id
    assert kw["entrypoint"] == [sys.executable, "-m", "sandbox.reaper"]
    assert kw["command"][:2] == ["--wait-container", GATEWAY_ID]
    assert "--label" in kw["command"] and f"{MANAGED_LABEL}=1" in kw["command"]
    # Never labelled as one of the run's servers: its own sweep must not remove it midway.
    assert kw["labels"] == {IDENTITY_LABEL: "idy", REAPER_LABEL: "inst"}
    (mount,) = kw["mounts"]
    assert mount["Source"] == "/run/docker.sock" and mount["Target"] == "/var/run/docker.sock"
    assert kw["network_mode"] == "none" and kw["auto_remove"] and kw["read_only"]
    assert kw["cap_drop"] == ["ALL"] and kw["group_add"] == ["999"] and kw["user"] == ""
    assert kw["security_opt"][0] == "no-new-privileges:true" and kw["security_opt"][1].startswith("seccomp=")
    # Over tcp the sibling reaches the engine as the gateway does.
    tcp = sibling_kwargs(_gateway_attrs(), labels=labels, instance_id="inst", docker_host="tcp://10.9.8.7:2375")
    assert tcp is not None and tcp["network_mode"] == "host" and tcp["mounts"] == []
    assert tcp["environment"]["DOCKER_HOST"] == "tcp://10.9.8.7:2375"
    # No socket mounted: a sibling could not reach the engine, so there is none.
    bare = {**_gateway_attrs(), "Mounts": []}
    assert sibling_kwargs(bare, labels=labels, instance_id="inst") is None


def test_reaper_reads_clean_or_bare_eof() -> None:
    for payload, clean in ((reaper.CLEAN, True), (b"", False), (b"cle", False), (b"x" * 100 + reaper.CLEAN, True)):
        r, w = os.pipe()
        os.write(w, payload)
        os.close(w)
        try:
            assert reaper.wait_for_eof(r) is clean, payload
        finally:
            os.close(r)


def test_reaper_arguments() -> None:
    args = reaper.parse_args(["--label", "a=1", "--label", "b=2", "--grace", "0.5"])
    assert args.label == ["a=1", "b=2"] and args.grace == 0.5 and args.wait_container is None
    for bad in (["--label", "novalue"], ["--label", "=x"], []):
        with pytest.raises(SystemExit):
            reaper.parse_args(bad)


def test_idle_reaper_is_a_bare_interpreter() -> None:
    # Until the gateway dies it holds a pipe and nothing else: no Docker SDK, no trio imported.
    probe = "import sys, sandbox.reaper; print(sorted(m for m in ('docker', 'trio', 'requests') if m in sys.modules))"
    out = subprocess.run([PY, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ with a real engine


def _make(client: docker.DockerClient, labels: dict[str, str], command: list[str] | None, start: bool) -> str:
    container = client.containers.create(ECHO_IMAGE, command, labels=labels, network_mode="none",
                                         stdin_open=True, auto_remove=start)
    if start:
        container.start()
    return str(container.id)


def _ids(client: docker.DockerClient, label: str) -> set[str]:
    return {c["Id"] for c in client.api.containers(all=True, filters={"label": label})}


def _reaper(label: str, grace: float) -> tuple[subprocess.Popen[bytes], int]:
    r, w = os.pipe()
    proc = subprocess.Popen([PY, "-m", "sandbox.reaper", "--label", label, "--grace", str(grace)],
                            stdin=r, stderr=subprocess.PIPE, cwd=ROOT, start_new_session=True)
    os.close(r)
    return proc, w


@pytest.mark.docker
def test_reaper_removes_what_is_left_once_its_pipe_closes(docker_client: docker.DockerClient) -> None:
    label = f"reaper-test={uuid.uuid4().hex[:8]}"
    key, value = label.split("=")
    stubborn = _make(docker_client, {key: value}, ["python3", "-m", "stubborn_server"], start=True)
    never_started = _make(docker_client, {key: value}, None, start=False)
    exits_on_eof = _make(docker_client, {key: value}, ["python3", "-m", "probe_server"], start=True)
    proc, pipe = _reaper(label, grace=2)
    try:
        time.sleep(0.5)
        assert proc.poll() is None  # waiting, and without touching the engine
        assert _ids(docker_client, label) == {stubborn, never_started, exits_on_eof}
        os.close(pipe)  # what the kernel does when the gateway dies
        start = time.monotonic()
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert _ids(docker_client, label) == set()
    assert 1.5 < took < 10, took  # it gave the running ones the grace, then removed them
    assert b"removed" in err


@pytest.mark.docker
def test_reaper_told_clean_leaves_at_once_and_touches_nothing(docker_client: docker.DockerClient) -> None:
    label = f"reaper-test={uuid.uuid4().hex[:8]}"
    key, value = label.split("=")
    kept = _make(docker_client, {key: value}, None, start=False)
    try:
        proc, pipe = _reaper(label, grace=30)
        os.write(pipe, reaper.CLEAN)
        os.close(pipe)
        assert proc.wait(timeout=10) == 0
        assert _ids(docker_client, label) == {kept}
    finally:
        docker_client.api.remove_container(kept, force=True)


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, cmdline) of the processes whose parent is ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            out.append((int(entry), cmdline))
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _text(path: Path) -> str:
    return path.read_text()


async def start_gateway(cfg: Path, port: int, log: Path) -> trio.Process:
    """``mcp-gateway run`` as a real process; returns once every server is ready."""
    proc = await trio.lowlevel.open_process(
        [PY, "-m", "gateway.cli", "run", "--config", str(cfg)], stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=log.open("ab"), cwd=ROOT)
    with trio.fail_after(90):
        while True:
            assert proc.returncode is None, _text(log)
            try:
                async with HTTPClient.connect(port) as http:
                    health = (await http.request("GET", "/healthz")).json()
                    if all(s["state"] == "ready" for s in health["servers"].values()):
                        return proc
            except (OSError, ValueError):
                pass
            await trio.sleep(0.2)


def reaper_of(gateway: trio.Process) -> int:
    (pid,) = [pid for pid, cmd in _children(gateway.pid) if "sandbox.reaper" in cmd]
    return pid


@pytest.mark.docker
async def test_sigkilled_gateway_leaves_no_container_behind(
    docker_client: docker.DockerClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    servers = {
        "shared": BOX,
        "sess": {**BOX, "lifecycle": "session"},
        "pooled": {**BOX, "lifecycle": "call", "pool": 2},
        "stubborn": STUBBORN,  # ignores stdin's EOF and SIGTERM: only the reaper's force-remove ends it
    }
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(json.dumps({"listen": {"port": port}, "servers": servers}))
    log = tmp_path / "gateway.log"
    identity = default_identity("127.0.0.1", port)
    label = f"{IDENTITY_LABEL}={identity}"

    def containers() -> list[dict[str, Any]]:
        return list(docker_client.api.containers(all=True, filters={"label": label}))

    gateway = await start_gateway(cfg, port, log)
    try:
        async with HTTPClient.connect(port) as http:
            session = await http.initialize()
            for i, tool in enumerate(("shared__echo", "sess__echo", "pooled__echo", "stubborn__echo")):
                reply = await http.post("/mcp", {"jsonrpc": "2.0", "id": i + 1, "method": "tools/call",
                                                 "params": {"name": tool, "arguments": {"text": tool}}}, session)
                assert reply.json()["result"]["content"][0]["text"] == tool, reply
            with trio.fail_after(30):  # the pool refilled behind the call
                while sum(1 for c in containers() if c["Labels"].get("io.mcp-gateway.server") == "pooled") < 2:
                    await trio.sleep(0.1)
            before = [c for c in containers() if c["State"] == "running"]
            by_server = {c["Labels"]["io.mcp-gateway.server"] for c in before}
            assert by_server == {"shared", "sess", "pooled", "stubborn"}, before
            reaper_pid = reaper_of(gateway)
            # The session is still open, a pool is warm and one server ignores EOF: kill -9 now.
            gateway.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            await gateway.wait()
    finally:
        if gateway.returncode is None:
            gateway.kill()
    none_running = gone = polite_gone = None
    with trio.fail_after(30):
        while gone is None:
            left = await trio.to_thread.run_sync(containers)
            now = time.monotonic() - killed
            running = [c["Labels"]["io.mcp-gateway.server"] for c in left if c["State"] == "running"]
            if polite_gone is None and set(running) <= {"stubborn"}:
                polite_gone = now  # the servers that exit at stdin's EOF did, and were auto-removed
            if none_running is None and not running:
                none_running = now
            if not left:
                gone = now
            await trio.sleep(0.1)
    with trio.fail_after(10):  # the reaper is done and gone: nothing leaks
        while _alive(reaper_pid):
            await trio.sleep(0.1)
    await trio.sleep(2)
    assert containers() == []  # and nothing comes back
    with capsys.disabled():
        print(f"\n{len(before)} running containers of a SIGKILLed gateway: those exiting at EOF gone after "
              f"{polite_gone:.1f} s, none running after {none_running:.1f} s, none left after {gone:.1f} s")
    # The stubborn one it had to remove (others, such as a pool refill caught mid-start, may join it).
    assert re.search(r"reaper\[\d+\]: gateway pid \d+ is gone; removed \d+ container\(s\): .*mcp-gw-stubborn-",
                     log.read_text()), log.read_text()[-2000:]


@pytest.mark.docker
async def test_clean_shutdown_releases_the_reaper_and_events_stream(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(json.dumps({"listen": {"port": port}, "servers": {"box": BOX}}))
    log = tmp_path / "gateway.log"
    gateway = await start_gateway(cfg, port, log)
    reaper_pid = reaper_of(gateway)
    gateway.send_signal(signal.SIGTERM)
    with trio.fail_after(30):
        assert await gateway.wait() == 0
    assert not _alive(reaper_pid)  # told "clean", it left before the gateway did
    assert "removed" not in log.read_text().split("reaper", 1)[-1]  # and it removed nothing


@pytest.mark.docker
async def test_leftovers_of_a_gateway_killed_with_its_reaper_go_at_the_next_start(
    docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    # The case no reaper covers (gateway and reaper killed together): the next start with the same
    # identity sweeps what was left.
    port = free_port()
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(json.dumps({"listen": {"port": port}, "servers": {"box": STUBBORN}}))
    log = tmp_path / "gateway.log"
    labels = [f"{MANAGED_LABEL}=1", f"{IDENTITY_LABEL}={default_identity('127.0.0.1', port)}"]

    def managed() -> set[str]:
        return {c.name for c in docker_client.containers.list(all=True, filters={"label": labels})}

    first = await start_gateway(cfg, port, log)
    before = managed()
    assert before
    os.kill(reaper_of(first), signal.SIGKILL)
    first.send_signal(signal.SIGKILL)
    await first.wait()
    await trio.sleep(1)
    assert before <= managed()  # the stubborn server outlived its stdin, and nobody removed it
    second = await start_gateway(cfg, port, log)
    try:
        assert not before & managed()  # swept at start
        assert "removed 1 container(s) left by an earlier run" in log.read_text()
    finally:
        second.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            await second.wait()
    assert managed() == set()  # and its own removed at shutdown
