"""gateway.config: parsing, defaults, kind rules, and errors that name the key path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateway.cli.describe import describe
from gateway.config import (
    ConfigError,
    GatewayConfig,
    SecretError,
    format_duration,
    format_size,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
    resolve_secret,
)

ROOT = Path(__file__).resolve().parent.parent
SECRET = "sk-live-VERY-SECRET-1234"


def cfg(**top: Any) -> dict[str, Any]:
    """A minimal valid config dict with ``top`` merged in."""
    return {"servers": {"time": {"command": "python3", "args": ["-m", "mcp_server_time"]}}, **top}


def container(**keys: Any) -> dict[str, Any]:
    return {"servers": {"box": {"image": "mcp-echo:latest", **keys}}}


def error(data: object) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    text = str(info.value)
    assert "\n" not in text
    return text


# ---------------------------------------------------------------- durations and sizes


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("30s", 30), ("5m", 300), ("250ms", 0.25), ("1h", 3600), ("1d", 86400), ("1m30s", 90),
     ("1.5h", 5400), (" 10S ", 10), ("30", 30), ("0.5", 0.5), (7, 7), (2.5, 2.5), (0, 0)],
)  # fmt: skip
def test_parse_duration(raw: object, seconds: float) -> None:
    assert parse_duration(raw) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "raw", ["", "s", "5x", "-5s", "5 m 3", "1m30", "ms5", True, None, [], -1, float("nan")]
)
def test_parse_duration_errors(raw: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(raw)


@pytest.mark.parametrize(
    ("raw", "size"),
    [("256m", 256 << 20), ("1g", 1 << 30), ("64k", 65536), ("512", 512), ("512b", 512), ("4MiB", 4 << 20),
     ("4mb", 4 << 20), ("1.5k", 1536), ("2T", 2 << 40), (1024, 1024), (2048.0, 2048), (0, 0)],
)  # fmt: skip
def test_parse_size(raw: object, size: int) -> None:
    assert parse_size(raw) == size


@pytest.mark.parametrize("raw", ["12q", "", "k", "1.5", "1.5b", "-1k", "512ib", 1.5, -1, True, None, {}])
def test_parse_size_errors(raw: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(raw)


def test_format_round_trips() -> None:
    for seconds in (0.25, 30, 90, 300, 3600, 7200, 0):
        assert parse_duration(format_duration(seconds)) == seconds
    for n in (512, 64 << 10, 256 << 20, 3 << 30, 1000):
        assert parse_size(format_size(n)) == n
    assert (format_duration(0.5), format_duration(3600), format_size(256 << 20)) == ("500ms", "1h", "256m")


# ---------------------------------------------------------------- files that ship


def test_example_yaml_loads() -> None:
    c = load_config(ROOT / "config" / "example.yaml")
    assert (c.listen.host, c.listen.port, c.tool_separator) == ("127.0.0.1", 8080, "__")
    assert c.resolved_routes() == {"/": ["time"], "/team-a": ["time"]}
    time = c.servers["time"]
    assert time.kind == "process"
    assert time.argv() == ["python3", "-m", "mcp_server_time"]


def test_claude_desktop_json_loads() -> None:
    c = load_config(ROOT / "config" / "claude_desktop.json")
    assert c.servers["time"].argv() == ["python3", "-m", "mcp_server_time"]
    assert c.resolved_routes() == {"/": ["time"]}
    assert c.listen == GatewayConfig(servers={}).listen


def test_defaults() -> None:
    c = parse_config(cfg())
    assert (c.listen.host, c.listen.port, c.log_level, c.allowed_origins) == ("127.0.0.1", 8080, "info", [])
    assert (c.limits.max_body, c.limits.max_header, c.limits.max_message) == (4 << 20, 64 << 10, 16 << 20)
    assert (c.limits.max_sessions, c.limits.max_inflight_per_session, c.limits.max_connections) == (
        20000, 256, 20000,
    )  # fmt: skip
    t = c.timeouts
    assert (t.call, t.read, t.idle, t.session_idle, t.shutdown_grace, t.start) == (60, 30, 120, 3600, 10, 30)
    assert (c.admin.enabled, c.admin.port) == (False, 8081)
    s = c.servers["time"]
    assert (s.lifecycle, s.pool, s.idle_timeout, s.network, s.user, s.read_only) == (
        "shared", 0, 300, "none", "65534:65534", True,
    )  # fmt: skip
    assert (s.limits.memory, s.limits.cpus, s.limits.pids, s.tmpfs_size) == (256 << 20, 0.5, 128, 64 << 20)
    assert (c.start_timeout_for("time"), c.call_timeout_for("time")) == (30, 60)


def test_units_and_overrides() -> None:
    c = parse_config(
        cfg(limits={"max_body": "1m", "max_message": 1000}, timeouts={"call": "250ms", "start": 5})
        | {
            "servers": {
                "a": {"command": "x", "call_timeout": "2m", "start_timeout": "1s"},
                "b": {"command": "y"},
            }
        }
    )
    assert (c.limits.max_body, c.limits.max_message, c.timeouts.call) == (1 << 20, 1000, 0.25)
    assert (c.call_timeout_for("a"), c.start_timeout_for("a")) == (120, 1)
    assert (c.call_timeout_for("b"), c.start_timeout_for("b")) == (0.25, 5)


def test_structs_encode() -> None:
    c = parse_config(container(secrets={"T": "env:T"}))
    again = msgspec.json.decode(msgspec.json.encode(c), type=GatewayConfig)
    assert again == c


# ---------------------------------------------------------------- routes


def test_default_routes_every_server_in_order() -> None:
    c = parse_config({"servers": {"b": {"command": "x"}, "a": {"command": "y"}}, "routes": None})
    assert c.resolved_routes() == {"/": ["b", "a"]}


def test_routes_normalized() -> None:
    c = parse_config(cfg(routes={"/": ["time"], "/team-a/": ["time"], "/x/y.z_1": ["time"]}))
    assert list(c.resolved_routes()) == ["/", "/team-a", "/x/y.z_1"]


@pytest.mark.parametrize(
    ("routes", "expected"),
    [
        ({"/team-a": ["time", "foo"]}, "routes./team-a[1]: unknown server 'foo' (known: time, echo)"),
        ({"/a": ["time", "echo", "time"]}, "routes./a[2]: server 'time' is listed twice"),
        ({"team-a": ["time"]}, "routes.team-a: a route must start with '/'"),
        ({"/a b": ["time"]}, "routes./a b: "),
        ({"/a//b": ["time"]}, "routes./a//b: "),
        ({"/a/../b": ["time"]}, "routes./a/../b: "),
        ({"/a/mcp": ["time"]}, "routes./a/mcp: a route must not end with /mcp"),
        ({"/mcp/": ["time"]}, "routes./mcp/: "),
        ({"/a": ["time"], "/a/": ["echo"]}, "routes./a/: same route as '/a'"),
        ({"/a": []}, "routes./a: lists no servers"),
        ({"/a": "time"}, "routes./a: expected a list, got a string"),
        ({"/a": ["time", 3]}, "routes./a[1]: expected a string, got an integer"),
        ({}, "routes: no routes"),
        (["/"], "routes: expected a mapping"),
    ],
)
def test_route_errors(routes: object, expected: str) -> None:
    data = {"servers": {"time": {"command": "t"}, "echo": {"command": "e"}}, "routes": routes}
    assert error(data).startswith(expected)


# ---------------------------------------------------------------- kinds


def test_kinds_and_argv() -> None:
    c = parse_config(
        {
            "servers": {
                "proc": {"command": "npx", "args": ["-y", "pkg"], "env": {"A": "1"}, "cwd": "/tmp"},
                "argv": {"command": ["uv", "run"], "args": ["srv"]},
                "box": {"image": "img:1", "command": ["python3", "-m", "srv"]},
                "bare": {"image": "img:1"},
                "far": {"url": "https://mcp.example.com/mcp"},
            }
        }
    )
    s = c.servers
    assert [x.kind for x in s.values()] == ["process", "process", "container", "container", "remote"]
    assert s["proc"].argv() == ["npx", "-y", "pkg"]
    assert s["argv"].argv() == ["uv", "run", "srv"]
    assert s["box"].argv() == ["python3", "-m", "srv"]
    assert s["bare"].argv() == []


def test_container_keys_and_normalization() -> None:
    c = parse_config(
        container(
            lifecycle="call",
            pool=2,
            limits={"memory": "1g", "cpus": 2, "pids": 64},
            network="host",
            mounts=[{"source": "/src", "target": "/dst", "rw": True}],
            user="1000:1000",
            read_only=False,
            tmpfs_size="16m",
            cap_add=["net_bind_service", "CAP_CHOWN"],
            restart_backoff="1s",
            restart_backoff_max="1m",
        )
    )
    box = c.servers["box"]
    assert (box.lifecycle, box.pool, box.limits.memory, box.limits.cpus, box.user) == (
        "call",
        2,
        1 << 30,
        2.0,
        "1000:1000",
    )
    assert box.cap_add == ["NET_BIND_SERVICE", "CHOWN"]
    assert box.mounts[0].rw and box.tmpfs_size == 16 << 20


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ({"image": "i", "url": "https://x"}, "servers.s: set only one of image"),
        ({"command": "c", "url": "https://x"}, "servers.s: set only one of command"),
        ({"args": ["x"]}, "servers.s: set command"),
        ({}, "servers.s: set command"),
        ({"image": "i", "command": "python3 -m x"}, "servers.s.command: with image, command must be a list"),
        (
            {"image": "i", "args": ["x"]},
            "servers.s.args: not allowed with image; put the arguments in command",
        ),
        ({"image": "i", "cwd": "/x"}, "servers.s.cwd: only applies to process servers"),
        ({"image": ""}, "servers.s.image: must not be empty"),
        ({"command": ""}, "servers.s.command: must not be empty"),
        ({"command": []}, "servers.s.command: must not be empty"),
        ({"url": "ftp://x"}, "servers.s.url: expected an http:// or https:// URL"),
        ({"url": "https://x", "env": {}}, "servers.s.env: does not apply to remote servers"),
        ({"url": "https://x", "read_only": False}, "servers.s.read_only: does not apply to remote servers"),
    ]
    + [
        ({"command": "c", key: value}, f"servers.s.{key}: only applies to container servers (set image)")
        for key, value in [
            ("limits", {}),
            ("network", "host"),
            ("mounts", []),
            ("user", "1:1"),
            ("allow_root", True),
            ("read_only", True),
            ("tmpfs_size", "1m"),
            ("cap_add", []),
        ]
    ],  # fmt: skip
)
def test_kind_errors(server: dict[str, Any], expected: str) -> None:
    assert error({"servers": {"s": server}}).startswith(expected)


def test_process_accepts_lifecycles_and_pools() -> None:
    parse_config({"servers": {"s": {"command": "c", "pool": 0, "lifecycle": "shared"}}})
    s = parse_config({"servers": {"s": {"command": "c", "pool": 2, "lifecycle": "call"}}}).servers["s"]
    assert (s.kind, s.lifecycle, s.pool) == ("process", "call", 2)


# ---------------------------------------------------------------- type and value errors


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (None, "config is empty"),
        ([1, 2], "the top level must be a mapping, got a list"),
        ("servers", "the top level must be a mapping, got a string"),
        ({}, "servers: missing"),
        ({"servers": {}}, "servers: at least one server is required"),
        ({"servers": ["time"]}, "servers: expected a mapping"),
        (cfg(lisen={}), "lisen: unknown key (did you mean 'listen'?)"),
        (cfg(zzz=1), "zzz: unknown key (known: listen, servers, "),
        (cfg(listen={"prot": 1}), "listen.prot: unknown key (did you mean 'port'?)"),
        (cfg(listen={"port": 70000}), "listen.port: must be between 0 and 65535, got 70000"),
        (cfg(listen={"port": "80"}), "listen.port: expected an integer, got a string"),
        (cfg(listen={"port": True}), "listen.port: expected an integer, got a boolean"),
        (cfg(listen=[]), "listen: expected a mapping, got a list"),
        (cfg(limits={"max_body": "12q"}), "limits.max_body: invalid size '12q' (use e.g. 256m, 1g"),
        (cfg(limits={"max_body": 0}), "limits.max_body: must be greater than 0"),
        (cfg(limits={"max_sessions": 0}), "limits.max_sessions: must be greater than 0, got 0"),
        (cfg(timeouts={"call": "soon"}), "timeouts.call: invalid duration 'soon'"),
        (cfg(timeouts={"call": 0}), "timeouts.call: must be greater than 0s"),
        (cfg(log_level="loud"), "log_level: expected one of 'debug', 'info', 'warning', 'error', got 'loud'"),
        (cfg(tool_separator=""), "tool_separator: invalid separator ''"),
        (cfg(tool_separator="::"), "tool_separator: invalid separator '::'"),
        (cfg(allowed_origins="*"), "allowed_origins: expected a list, got a string"),
        (cfg(allowed_origins=["ok.com"]), "allowed_origins[0]: invalid origin 'ok.com'"),
        (cfg(allowed_origins=["https://a.com/path"]), "allowed_origins[0]: invalid origin"),
        (cfg(admin={"enabled": True, "port": 8080}), "admin.port: same address as listen"),
        ({"servers": {"time": {"command": "t", "args": [1]}}}, "servers.time.args[0]: expected a string, got an integer"),
        ({"servers": {"time": {"command": 5}}}, "servers.time.command: expected a string or a list, got an integer"),
        ({"servers": {"time": {"command": ["a", None]}}}, "servers.time.command[1]: expected a string, got null"),
        ({"servers": {"time": {"command": "t", "env": {"PORT": 80}}}}, "servers.time.env.PORT: expected a string"),
        ({"servers": {"time": {"command": "t", "env": {"A=B": "x"}}}}, "servers.time.env.A=B: invalid environment"),
        ({"servers": {"time": {"command": "t", "lifecyle": "x"}}}, "servers.time.lifecyle: unknown key (did you mean 'lifecycle'?)"),
        ({"servers": {"time": None}}, "servers.time: expected a mapping, got null"),
        ({"servers": {"a b": {"command": "t"}}}, "servers.a b: invalid server name"),
        ({"servers": {"x" * 33: {"command": "t"}}}, f"servers.{'x' * 33}: invalid server name"),
        ({"servers": {1: {"command": "t"}}}, "servers.1: invalid server name"),
        ({"servers": {"my__srv": {"command": "t"}}}, "servers.my__srv: server name must not contain the tool separator '__'"),
        (cfg(tool_separator="-") | {"servers": {"a-b": {"command": "t"}}}, "servers.a-b: server name must not contain"),
        (container(limits={"memory": "12q"}), "servers.box.limits.memory: invalid size '12q' (use e.g. 256m, 1g or a number of bytes)"),
        (container(limits={"memory": "1m"}), "servers.box.limits.memory: must be at least 6m, got 1m"),
        (container(limits={"cpus": 0}), "servers.box.limits.cpus: must be greater than 0"),
        (container(limits={"cpus": float("inf")}), "servers.box.limits.cpus: must be a finite number"),
        (container(limits={"pids": -1}), "servers.box.limits.pids: must be greater than 0"),
        (container(pool=-1), "servers.box.pool: must be at least 0"),
        (container(lifecycle="forever"), "servers.box.lifecycle: expected one of 'shared', 'session', 'call'"),
        (container(idle_timeout="1x"), "servers.box.idle_timeout: invalid duration '1x'"),
        (container(network="container:abc"), "servers.box.network: invalid network"),
        (container(mounts=[{"source": "rel", "target": "/t"}]), "servers.box.mounts[0].source: must be an absolute path"),
        (container(mounts=[{"source": "/s", "target": "t"}]), "servers.box.mounts[0].target: must be an absolute path"),
        (container(mounts=[{"source": "/s", "target": "/"}]), "servers.box.mounts[0].target: must not be /"),
        (container(mounts=[{"source": "/s"}]), "servers.box.mounts[0].target: required key is missing"),
        (container(mounts=[{"source": "/s", "target": "/t", "ro": True}]), "servers.box.mounts[0].ro: unknown key"),
        (container(cap_add=["FLY"]), "servers.box.cap_add[0]: unknown capability 'FLY'"),
        (container(user=""), "servers.box.user: invalid user"),
        (container(restart_backoff="1m", restart_backoff_max="1s"), "servers.box.restart_backoff_max: must be >="),
        ({"servers": {"time": {"command": "t"}}, "mcpServers": {}}, "mcpServers: use either servers or mcpServers"),
    ],
)  # fmt: skip
def test_errors_name_the_key_path(data: object, expected: str) -> None:
    assert error(data).startswith(expected)


def test_null_is_a_type_error() -> None:
    assert (
        error(cfg(log_level=None))
        == "log_level: expected one of 'debug', 'info', 'warning', 'error', got null"
    )


# ---------------------------------------------------------------- root user


@pytest.mark.parametrize("user", [
    "0", "root", "0:0", "root:staff", 0, "00:00", "-0:1", "0000:65534", "65534:0", "1000:root",
    "1000", "nobody", "app:app", "1000:0",  # names and missing groups may resolve to root
    "99999999999:1",
])
def test_root_or_unknown_users_refused_unless_allowed(user: object) -> None:
    assert error(container(user=user)).startswith("servers.box.user: ")
    c = parse_config(container(user=user, allow_root=True))
    assert c.servers["box"].user == str(user)


def test_non_root_numeric_users_accepted() -> None:
    for user in ("10:20", "65534:65534", "1000:1000", "1000:001"):
        parse_config(container(user=user))


# ---------------------------------------------------------------- Claude Desktop format


def test_claude_desktop_format() -> None:
    c = parse_config(
        {"mcpServers": {"fs": {"type": "stdio", "command": "npx", "args": ["-y", "fs"], "env": {}}}}
    )
    assert c.servers["fs"].argv() == ["npx", "-y", "fs"]
    assert c.resolved_routes() == {"/": ["fs"]}


def test_claude_desktop_errors() -> None:
    assert error({"mcpServers": {"fs": {"type": "sse", "command": "x"}}}).startswith(
        "mcpServers.fs.type: only 'stdio' servers are supported here, got 'sse'"
    )
    assert error({"mcpServers": {"fs": {"command": "x", "disabled": True}}}).startswith(
        "mcpServers.fs.disabled: unknown key"
    )
    assert error({"mcpServers": {"fs": {"command": "x", "args": [1]}}}).startswith(
        "mcpServers.fs.args[0]: expected a string"
    )


# ---------------------------------------------------------------- files


def test_load_errors(tmp_path: Path) -> None:
    def load_error(name: str, text: str) -> str:
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"{path}: ")
        return message.removeprefix(f"{path}: ")

    assert load_error("empty.yaml", "").startswith("config is empty")
    assert load_error("comment.yaml", "# nothing\n").startswith("config is empty")
    assert load_error("list.yaml", "- a\n- b\n").startswith("the top level must be a mapping")
    assert load_error("bad.yaml", "servers:\n  time: [a\n").startswith("invalid YAML at line 3, column 1:")
    assert load_error("colon.yaml", "servers:\n  a: b: c\n") == (
        "invalid YAML at line 2, column 7: mapping values are not allowed here"
    )
    assert load_error("dup.yaml", "servers:\n  a: {command: x}\n  a: {command: y}\n") == (
        "invalid YAML at line 3, column 3: duplicate key 'a'"
    )
    assert load_error("bad.json", '{"mcpServers": }').startswith("invalid JSON at line 1, column 16:")
    assert (
        load_error("dup.json", '{"mcpServers": {}, "mcpServers": {}}')
        == "invalid JSON: duplicate key 'mcpServers'"
    )
    assert load_error("type.yaml", "servers:\n  time:\n    command: t\n    args: [1]\n") == (
        "servers.time.args[0]: expected a string, got an integer"
    )
    assert load_error("date.yaml", "servers: {t: {command: 2024-01-01}}\n").startswith(
        "servers.t.command: expected a string or a list, got a date"
    )
    with pytest.raises(ConfigError, match="cannot read config: No such file"):
        load_config(tmp_path / "missing.yaml")


def test_yaml_merge_keys_allowed(tmp_path: Path) -> None:
    path = tmp_path / "merge.yaml"
    path.write_text("servers:\n  a: &b {command: x, args: [a]}\n  b:\n    <<: *b\n    args: [b]\n")
    assert load_config(path).servers["b"].argv() == ["x", "b"]


def test_json_via_yaml_suffix(tmp_path: Path) -> None:
    path = tmp_path / "c.conf"
    path.write_text(json.dumps(cfg(listen={"port": 0})))
    assert load_config(path).listen.port == 0


# ---------------------------------------------------------------- secrets


def secret_config(**extra: Any) -> dict[str, Any]:
    return container(secrets={"API_TOKEN": "env:GW_TEST_TOKEN", "KEY": "file:/run/secrets/key"}, **extra)


def test_secrets_validated_without_echoing() -> None:
    text = error(container(secrets={"API_TOKEN": SECRET}))
    assert text.startswith("servers.box.secrets.API_TOKEN: must be 'env:NAME' or 'file:/absolute/path'")
    assert SECRET not in text
    assert error(container(secrets={"bad-name": "env:X"})).startswith(
        "servers.box.secrets.bad-name: invalid name"
    )
    assert error(container(secrets={"A": "env:X"}, env={"A": "1"})).startswith(
        "servers.box.secrets.A: also set in env"
    )
    assert error(container(secrets={"A": "file:rel"})).startswith("servers.box.secrets.A: must be")


def test_secret_values_never_in_errors_or_describe() -> None:
    # A secret pasted into env (common in Claude Desktop configs) must not leak either.
    c = parse_config(secret_config(env={"OPENAI_API_KEY": SECRET}))
    text = describe(c)
    assert SECRET not in text and "GW_TEST_TOKEN" not in text and "/run/secrets/key" not in text
    assert "API_TOKEN (from env)" in text and "KEY (from file)" in text and "OPENAI_API_KEY" in text
    far = parse_config(
        {"servers": {"far": {"url": f"https://u:{SECRET}@mcp.example.com:8443/mcp?k={SECRET}"}}}
    )
    assert SECRET not in describe(far) and "url: https://mcp.example.com:8443/mcp" in describe(far)
    for bad in (cfg(zzz=SECRET), container(env={"A": [SECRET]}), container(env={"A": SECRET}, cwd="/")):
        assert SECRET not in error(bad)


def test_resolve_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_TEST_TOKEN", SECRET)
    assert resolve_secret("env:GW_TEST_TOKEN") == SECRET
    f = tmp_path / "key"
    f.write_text(SECRET + "\n")
    assert resolve_secret(f"file:{f}") == SECRET
    monkeypatch.delenv("GW_TEST_TOKEN")
    with pytest.raises(SecretError) as info:
        resolve_secret("env:GW_TEST_TOKEN", where="servers.box.secrets.API_TOKEN")
    assert str(info.value) == (
        "servers.box.secrets.API_TOKEN: env:GW_TEST_TOKEN: environment variable GW_TEST_TOKEN is not set"
    )
    with pytest.raises(SecretError, match="cannot read"):
        resolve_secret(f"file:{tmp_path}/missing")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SecretError, match="is empty"):
        resolve_secret(f"file:{tmp_path}/empty")
    with pytest.raises(SecretError) as info:
        resolve_secret(SECRET)
    assert SECRET not in str(info.value)
    assert isinstance(info.value, ConfigError)


# ---------------------------------------------------------------- describe


def test_describe_shows_every_security_setting() -> None:
    c = parse_config(
        {
            "servers": {
                "time": {"command": "python3", "args": ["-m", "mcp_server_time"]},
                "box": {
                    "image": "mcp-echo:latest",
                    "command": ["python3", "-m", "echo"],
                    "cap_add": ["NET_BIND_SERVICE"],
                    "mounts": [
                        {"source": "/srv", "target": "/data"},
                        {"source": "/o", "target": "/out", "rw": True},
                    ],
                    "call_timeout": "5s",
                },
            },
            "routes": {"/": ["time", "box"], "/team-a": ["box"]},
            "allowed_origins": ["https://App.example.com/"],
        }
    )
    text = describe(c)
    for needle in [
        "listen: 127.0.0.1:8080",
        "allowed origins: localhost, https://app.example.com",
        "limits: body 4m, header 64k, upstream message 16m",
        "timeouts: call 1m, read 30s",
        "time (process)",
        "command: python3 -m mcp_server_time",
        "box (container)",
        "image: mcp-echo:latest",
        "timeouts: start 30s, call 5s",
        "user: 65534:65534",
        "read-only root filesystem: yes",
        "tmpfs: 64m",
        "capabilities: drop ALL, add NET_BIND_SERVICE",
        "no-new-privileges: yes",
        "network: none",
        "memory: 256m, cpus: 0.5, pids: 128",
        "/srv -> /data (ro)",
        "/o -> /out (rw)",
        "/team-a  box",
    ]:
        assert needle in text, needle
    assert text.splitlines()[-3:] == ["routes:", "  /        time, box", "  /team-a  box"]
