"""``mcp-gateway``: run, check and doctor."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import trio

from .config import ConfigError, GatewayConfig, describe, load_config

log = logging.getLogger("mcp_gateway")


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")


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
    _setup_logging(args.log_level or config.log_level)
    from .app import Gateway, GatewayError

    try:
        _preflight(config)
        gateway = Gateway(config, host=args.host, port=args.port)
    except (GatewayError, ConfigError) as exc:
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

            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                draining = False
                async for signum in signals:
                    if not draining:
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


def _preflight(config: GatewayConfig) -> None:
    """Fail fast, with the fix, when container servers are configured and Docker is unreachable."""
    if any(s.kind == "container" for s in config.servers.values()):
        from sandbox.engine import check_engine

        status = check_engine()
        if not status.reachable:
            from .app import GatewayError

            raise GatewayError(f"container servers are configured but Docker is unreachable: {status.error}")


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    _setup_logging("warning")
    print(describe(config))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mcp-gateway", description="One MCP endpoint in front of many servers")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the gateway")
    run.add_argument("--config", required=True, help="YAML or JSON config (Claude Desktop format accepted)")
    run.add_argument("--host", help="listen address (default: listen.host, 127.0.0.1)")
    run.add_argument("--port", type=int, help="listen port (default: listen.port, 8080)")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("check", help="validate the config, start each server once and print the tool table")
    check.add_argument("--config", required=True)
    check.add_argument("--no-start", action="store_true", help="only validate; do not start the servers")
    check.set_defaults(func=cmd_check)
    doctor = sub.add_parser("doctor", help="check Docker and the configured images")
    doctor.add_argument("--config", required=True)
    doctor.set_defaults(func=cmd_doctor)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
