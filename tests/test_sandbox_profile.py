"""The hardening profile, as pure data: no Docker engine needed."""

from __future__ import annotations

import re

import pytest
from docker.types import Mount

from sandbox.profile import (
    INSTANCE_LABEL,
    MANAGED_LABEL,
    MIB,
    SERVER_LABEL,
    BindMount,
    SandboxConfigError,
    SandboxSpec,
    container_kwargs,
    redact,
)
from sandbox.seccomp import strict_profile_json


def kwargs_for(**spec: object) -> dict[str, object]:
    spec.setdefault("image", "img:1")
    return container_kwargs("echo", SandboxSpec(**spec), "inst-1")  # type: ignore[arg-type]


def test_defaults_are_hardened() -> None:
    kw = kwargs_for()
    assert kw["image"] == "img:1"
    assert kw["command"] is None  # the image's own command
    assert kw["read_only"] is True
    assert kw["tmpfs"] == {"/tmp": f"rw,noexec,nosuid,nodev,size={64 * MIB}"}
    assert kw["security_opt"] == ["no-new-privileges:true", f"seccomp={strict_profile_json()}"]
    assert kw["cap_drop"] == ["ALL"] and kw["cap_add"] == []
    assert kw["user"] == "65534:65534"
    assert kw["mem_limit"] == kw["memswap_limit"] == 256 * MIB
    assert kw["nano_cpus"] == 500_000_000  # half a CPU, as the config's default (one place for both)
    assert kw["pids_limit"] == 128
    assert kw["network_mode"] == "none"
    assert kw["mounts"] == []
    assert kw["init"] is True
    assert kw["stdin_open"] is True and kw["tty"] is False
    assert kw["auto_remove"] is True  # nothing piles up, even once the gateway is gone
    assert kw["log_config"]["Type"] == "none"  # type: ignore[index]
    assert kw["labels"] == {MANAGED_LABEL: "1", INSTANCE_LABEL: "inst-1", SERVER_LABEL: "echo"}
    assert re.fullmatch(r"mcp-gw-echo-[0-9a-f]{10}", str(kw["name"]))
    # Nothing that would weaken the default seccomp/apparmor profile, or privileges, ever appears.
    flat = repr(kw)
    assert "unconfined" not in flat and "privileged" not in flat


def test_explicit_settings_loosen_only_what_they_name() -> None:
    kw = kwargs_for(
        command=["python3", "-m", "echo_server"],
        env={"LOG_LEVEL": "info"},
        memory=512 * MIB,
        cpus=0.5,
        pids=64,
        network="host",
        mounts=[("/srv/data", "/data", False), BindMount("/srv/out", "/out", rw=True)],
        user="1000:1000",
        read_only=False,
        tmpfs_size=8 * MIB,
        cap_add=["NET_BIND_SERVICE"],
        labels={"team": "a"},
    )
    assert kw["command"] == ["python3", "-m", "echo_server"]
    assert kw["environment"] == {"LOG_LEVEL": "info"}
    assert kw["mem_limit"] == kw["memswap_limit"] == 512 * MIB
    assert kw["nano_cpus"] == 500_000_000
    assert kw["pids_limit"] == 64
    assert kw["network_mode"] == "host"
    assert kw["mounts"] == [
        Mount("/data", "/srv/data", type="bind", read_only=True),
        Mount("/out", "/srv/out", type="bind", read_only=False),
    ]
    assert kw["user"] == "1000:1000"
    assert kw["read_only"] is False
    assert kw["tmpfs"] == {"/tmp": f"rw,noexec,nosuid,nodev,size={8 * MIB}"}
    assert kw["cap_add"] == ["NET_BIND_SERVICE"] and kw["cap_drop"] == ["ALL"]
    assert kw["labels"]["team"] == "a"  # type: ignore[index]
    # Still on whatever else was loosened.
    assert kw["security_opt"] == ["no-new-privileges:true", f"seccomp={strict_profile_json()}"]
    assert kw["init"] is True


def test_docker_default_seccomp_passes_no_profile_and_never_unconfined() -> None:
    kw = kwargs_for(seccomp="docker-default")
    assert kw["security_opt"] == ["no-new-privileges:true"]  # the engine applies its own default
    with pytest.raises(SandboxConfigError, match="seccomp"):
        kwargs_for(seccomp="unconfined")


def test_our_labels_cannot_be_overridden() -> None:
    kw = kwargs_for(
        labels={MANAGED_LABEL: "0", INSTANCE_LABEL: "evil", "io.mcp-gateway.other": "x", "ok": "1"}
    )
    assert kw["labels"] == {MANAGED_LABEL: "1", INSTANCE_LABEL: "inst-1", SERVER_LABEL: "echo", "ok": "1"}


def test_secrets_go_to_env_only_and_are_redacted() -> None:
    spec = SandboxSpec(image="img:1", command=["run"], env={"A": "1"}, secrets_env={"TOKEN": "hunter2"})
    kw = container_kwargs("echo", spec, "inst-1")
    assert kw["environment"] == {"A": "1", "TOKEN": "hunter2"}
    assert "hunter2" not in repr(spec)
    assert "hunter2" not in repr({k: v for k, v in kw.items() if k != "environment"})
    safe = redact(kw, spec)
    assert safe["environment"] == {"A": "1", "TOKEN": "***"}
    assert "hunter2" not in repr(safe)
    assert kw["environment"]["TOKEN"] == "hunter2"  # redact copies


@pytest.mark.parametrize(
    "user",
    [
        "0", "0:0", "root", "root:root",
        # Docker reads ids with Go's Atoi: all of these are uid 0.
        "00:00", "-0", "0000:65534",
        # gid 0, named or numeric.
        "65534:0", "65534:00", "65534:root",
        # Names resolve through the image's /etc/passwd and /etc/group, which may map them to 0.
        "nobody", "nobody:nogroup", "node:65534", "65534:nogroup",
        # A uid alone takes gid 0 when the image does not list the uid.
        "1000",
        # Out of range: Docker refuses them, and a 32-bit wrap could make them 0.
        "4294967296:65534", "65534:4294967296", "-1:65534",
    ],
)
def test_root_is_refused_unless_allowed(user: str) -> None:
    with pytest.raises(SandboxConfigError, match="allow_root") as err:
        kwargs_for(user=user)
    assert "'65534:65534'" in str(err.value)  # says what to use instead
    assert kwargs_for(user=user, allow_root=True)["user"] == user


@pytest.mark.parametrize("user", ["", " 0", "0 :65534", "\t0:65534", "+0", "+00:65534", "65534:+0", "65534: 0",
                                  "1000:", "65534: ", "01000:+1000", "a:b:c"])
def test_users_docker_may_read_otherwise_are_refused_even_with_allow_root(user: str) -> None:
    # The config's rule (gateway/config/container.py): uid[:gid] or name[:group] only.
    for allow_root in (False, True):
        with pytest.raises(SandboxConfigError, match="invalid user"):
            kwargs_for(user=user, allow_root=allow_root)


@pytest.mark.parametrize("user", ["65534:65534", "1000:1000", "1:1", "01000:01000", "2147483647:2147483647"])
def test_numeric_non_root_users_are_accepted(user: str) -> None:
    assert kwargs_for(user=user)["user"] == user


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"image": ""}, "image"),
        ({"memory": 1 * MIB}, "limits.memory"),
        ({"cpus": 0}, "limits.cpus"),
        ({"pids": 0}, "limits.pids"),
        ({"tmpfs_size": 1000}, "tmpfs_size"),
        ({"network": ""}, "network"),
        ({"mounts": [("relative", "/x", False)]}, r"mounts\[0\]"),
        ({"cap_add": ["NET_ADMIN; rm -rf"]}, "cap_add"),
        ({"env": {"K": "1"}, "secrets_env": {"K": "2"}}, "secrets.K: also set in env"),
    ],
)
def test_invalid_settings_name_the_key(spec: dict[str, object], message: str) -> None:
    with pytest.raises(SandboxConfigError, match=message):
        kwargs_for(**spec)


def test_container_names_are_unique_and_valid() -> None:
    a, b = kwargs_for()["name"], kwargs_for()["name"]
    assert a != b
    odd = container_kwargs("we ird/näme", SandboxSpec(image="i"), "x")["name"]
    assert re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+", str(odd))
