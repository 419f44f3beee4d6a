"""``mcp-gateway``: run, check and doctor."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ..config import ConfigError, GatewayConfig, load_config
from .describe import describe

log = logging.getLogger("mcp_gateway")


def _setup_logging(level: str, fmt: str = "text") -> None:
    from .. import logfmt

    logfmt.setup(level, fmt)


def _load(path: str) -> GatewayConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"mcp-gateway: invalid config: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as exc:
        print(f"mcp-gateway: cannot read config {path}: {exc.strerror or exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    _setup_logging(args.log_level or config.log_level, args.log_format or config.log_format)
    from ..app import ConfigRefused
    from .compose import build_gateway

    try:
        if config.store is not None:  # the store's current version runs (the file imported when it changed)
            from admin.cli import startup_config

            config = startup_config(args.config, config)
        _preflight(config)
        gateway = build_gateway(config, host=args.host, port=args.port, config_file=args.config)
        if gateway.control is not None:
            gateway.control.config_file = args.config  # what a reload (SIGHUP, the watch, the admin API) reads
            gateway.control.bind()  # the admin listener: a taken port fails here, naming admin.port
    except (ConfigRefused, ConfigError) as exc:
        print(f"mcp-gateway: {exc}", file=sys.stderr)
        return 2
    if gateway.sandbox is not None:
        log.info("sandbox: this run's containers carry instance %s, identity %s",
                 gateway.sandbox.instance_id, gateway.sandbox.identity)

    async def main() -> None:
        await gateway.http.bind()  # outside any nursery: a taken port is a plain OSError
        async with trio.open_nursery() as nursery:
            await nursery.start(gateway.run)

            async def drain_then_stop() -> None:
                await gateway.shutdown()
                nursery.cancel_scope.cancel()

            reloading = trio.Lock()

            async def reload(why: str) -> None:
                async with reloading:
                    await reload_from_file(gateway, args.config, why)

            if not args.no_watch:
                nursery.start_soon(watch_file, args.config, reload)

            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
                draining = False
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        nursery.start_soon(reload, "SIGHUP")
                    elif not draining:
                        log.info("received %s: draining (send it again to stop at once)",
                                 signal.Signals(signum).name)
                        draining = True
                        nursery.start_soon(drain_then_stop)
                    else:
                        log.warning("received %s again: stopping now", signal.Signals(signum).name)
                        nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    except OSError as exc:  # raised by the bind, before anything else starts
        print(f"mcp-gateway: cannot listen on {gateway.host}:{gateway.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    log.info("stopped")
    return 0


async def reload_from_file(gateway: Any, path: str, why: str) -> bool:
    """Read the config file again and apply the difference; an invalid change is refused whole (the
    running config stays), with the reason in the log. True if it was applied."""
    from ..app import ConfigRefused

    control = getattr(gateway, "control", None)
    if control is not None and control.store is not None:  # through the store: a new version when it changed
        return bool(await control.reload_logged(why))

    try:
        config = load_config(path)
    except ConfigError as exc:
        log.error("reload (%s) refused, the running configuration stays: %s", why, exc)
        return False
    try:
        summary = await gateway.apply(config)
    except ConfigRefused as exc:
        log.error("reload (%s) refused, the running configuration stays: %s", why, exc)
        return False
    log.info("reload (%s) applied: %s", why, summary)
    return True


async def watch_file(path: str, on_change: Callable[[str], Awaitable[None]], interval: float = 1.0) -> None:
    """Call ``on_change`` when the file's modification time or size changes (polled: no inotify in trio)."""
    def stamp() -> tuple[float, int] | None:
        try:
            info = os.stat(path)
        except OSError:
            return None
        return info.st_mtime, info.st_size

    last = await trio.to_thread.run_sync(stamp)
    while True:
        await trio.sleep(interval)
        now = await trio.to_thread.run_sync(stamp)
        if now is not None and now != last:
            last = now
            await on_change("the config file changed")


def cmd_stdio(args: argparse.Namespace) -> int:
    """The gateway as a stdio MCP server: one client on stdin/stdout, logs on stderr."""
    config = _load(args.config)
    _setup_logging(args.log_level or "warning")
    from ..app import ConfigRefused
    from ..transports.stdio import serve_stdio
    from .compose import build_gateway

    if config.store is not None:  # as `run`: the store's current version (the file imported when it changed)
        from admin.cli import startup_config

        try:
            config = startup_config(args.config, config)
        except ConfigError as exc:
            print(f"mcp-gateway: {exc}", file=sys.stderr)
            return 2
    route = (args.route or "/").rstrip("/") or "/"
    routes = config.resolved_routes()
    if route not in routes:
        print(f"mcp-gateway: no route {route!r} (routes: {', '.join(routes)})", file=sys.stderr)
        return 2
    try:
        _preflight(config)
        # Port 0: its own sandbox identity, so that two stdio gateways never sweep each other's containers.
        gateway = build_gateway(config, port=0, config_file=args.config)
    except (ConfigRefused, ConfigError) as exc:
        print(f"mcp-gateway: {exc}", file=sys.stderr)
        return 2
    # stdout is the protocol stream: keep our own copy of it, and send anything else that would
    # write to fd 1 (a stray print, a library) to stderr.
    protocol_out = os.dup(1)
    protocol_in = os.dup(0)
    os.dup2(2, 1)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(gateway.run, serve_http=False))
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async def stop_on_signal() -> None:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()

                nursery.start_soon(stop_on_signal)
                await serve_stdio(gateway, route, trio.lowlevel.FdStream(protocol_in),
                                  trio.lowlevel.FdStream(protocol_out))
            nursery.cancel_scope.cancel()  # stdin closed: stop every server, remove every container

    trio.run(main)
    return 0


def _preflight(config: GatewayConfig) -> None:
    """Fail fast, with the fix, when container servers are configured and Docker is unreachable."""
    if any(s.kind == "container" for s in config.servers.values()):
        from sandbox.engine import check_engine

        status = check_engine()
        if not status.reachable:
            from ..app import ConfigRefused

            raise ConfigRefused(f"container servers are configured but Docker is unreachable: {status.error}")


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    _setup_logging("warning")
    print(describe(config, args.config))
    if args.no_start:
        return 0
    from .tools_table import collect_tool_table

    ok, table = trio.run(collect_tool_table, config)
    print(table)
    return 0 if ok else 1


def cmd_doctor(args: argparse.Namespace) -> int:
    config = _load(args.config)
    from sandbox.doctor import run_doctor

    return run_doctor(config)


def cmd_export(args: argparse.Namespace) -> int:
    from admin.cli import export

    return export(args.config, args.version)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mcp-gateway", description="One MCP endpoint in front of many servers")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the gateway")
    run.add_argument("--config", required=True, help="YAML or JSON config (Claude Desktop format accepted)")
    run.add_argument("--host", help="listen address (default: listen.host, 127.0.0.1)")
    run.add_argument("--port", type=int, help="listen port (default: listen.port, 8080)")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.add_argument("--log-format", choices=["text", "json"], help="default: log_format, text")
    run.add_argument("--no-watch", action="store_true",
                     help="do not reload when the config file changes (SIGHUP still reloads)")
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("check", help="validate the config, start each server once and print the tool table")
    check.add_argument("--config", required=True)
    check.add_argument("--no-start", action="store_true", help="only validate; do not start the servers")
    check.set_defaults(func=cmd_check)
    stdio = sub.add_parser("stdio", help="serve one MCP client on stdin/stdout (for Claude Desktop and IDEs)")
    stdio.add_argument("--config", required=True)
    stdio.add_argument("--route", help="which route to serve (default: /)")
    stdio.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    stdio.set_defaults(func=cmd_stdio)
    export = sub.add_parser("export", help="write a version of the config store as YAML to stdout")
    export.add_argument("--config", required=True, help="the config file that names store.path")
    export.add_argument("--version", type=int, help="which version (default: the current one)")
    export.set_defaults(func=cmd_export)
    doctor = sub.add_parser("doctor", help="check Docker and the configured images")
    doctor.add_argument("--config", required=True)
    doctor.set_defaults(func=cmd_doctor)
    from .keys import add_keys_parser

    add_keys_parser(sub)
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except BrokenPipeError:  # `mcp-gateway check ... | head`: the reader is gone, and that is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return result
