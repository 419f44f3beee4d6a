"""``mcp-gateway keys create|list|revoke``: API keys, in the database the config names.

The key goes alone to stdout (``KEY=$(mcp-gateway keys create ...)``), notes go to stderr, and
every error is one line with exit code 2. A running gateway sees a change within
``auth.api_keys.refresh`` (it reads the same database).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime

from ..auth.keys import InvalidKeyRequest, KeyRecord, KeyStore, KeyStoreError, check_lifetime, keys_db_path
from ..config import ConfigError, GatewayConfig, format_duration, load_config, parse_duration

_FLAGS = {"name": "--name", "routes": "--routes", "groups": "--groups", "expires": "--expires"}


class _Fail(Exception):
    """One line for stderr; exit code 2."""


def add_keys_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="create, list and revoke API keys (auth: {api_keys: true})")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser("create", help="make a key and print it (once) on stdout")
    create.add_argument("--config", required=True, help="the config file (its auth.api_keys says where keys live)")
    create.add_argument("--name", required=True, help="who the key is for (1-64 of A-Z a-z 0-9 _ . @ -)")
    create.add_argument("--routes", help="comma-separated routes the key may use, e.g. /team-a,/team-b "
                                         "(default: every route)")
    create.add_argument("--groups", help="comma-separated groups, for policy rules (group:NAME)")
    create.add_argument("--expires", help="lifetime, e.g. 30d, 12h (default: never)")
    listing = actions.add_parser("list", help="the keys (never their secrets)")
    listing.add_argument("--config", required=True)
    listing.add_argument("--all", action="store_true", help="revoked keys too")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    revoke = actions.add_parser("revoke", help="revoke a key by name")
    revoke.add_argument("--config", required=True)
    revoke.add_argument("name")
    keys.set_defaults(func=cmd_keys)


def cmd_keys(args: argparse.Namespace) -> int:
    try:
        config = _load(args.config)
        path = keys_db_path(config, args.config)
        if path is None:
            raise _Fail(f"API keys are off in {args.config}: add `auth: {{api_keys: true}}` to it (or "
                        "`api_keys: true` under its auth)")
        if args.keys_command == "create":
            return _create(args, config, path)
        if args.keys_command == "list":
            return _list(args, path)
        return _revoke(args, config, path)
    except _Fail as exc:
        print(f"mcp-gateway: {exc}", file=sys.stderr)
        return 2
    except InvalidKeyRequest as exc:
        flag = _FLAGS.get(exc.field.split("[")[0], exc.field)
        print(f"mcp-gateway: {flag}: {exc.message}", file=sys.stderr)
        return 2
    except KeyStoreError as exc:
        print(f"mcp-gateway: {exc}", file=sys.stderr)
        return 2


def _load(path: str) -> GatewayConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise _Fail(f"invalid config: {exc}") from None
    except OSError as exc:
        raise _Fail(f"cannot read config {path}: {exc.strerror or exc}") from None


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _when(t: float | None) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%MZ") if t is not None else "-"


def _refresh(config: GatewayConfig) -> str:
    keys = config.authentication.keys if config.authentication is not None else None
    return format_duration(keys.refresh if keys is not None else 1.0)


def _create(args: argparse.Namespace, config: GatewayConfig, path: str) -> int:
    expires = None
    if args.expires is not None:
        try:
            lifetime = parse_duration(args.expires)
        except ValueError as exc:
            raise _Fail(f"--expires: {exc}") from None
        if lifetime <= 0:
            raise _Fail("--expires: a key's lifetime must be more than 0 (leave --expires out for never)")
        expires = time.time() + check_lifetime(lifetime)
    routes = _split(args.routes) or None
    with KeyStore(path) as store:
        made = store.create(args.name, routes=routes, groups=_split(args.groups), expires=expires)
    sys.stdout.write(made.key + "\n")
    sys.stdout.flush()
    record = made.record
    known = config.resolved_routes()
    for route in record.routes or ():
        if route not in known:
            print(f"mcp-gateway: note: {route} is not a route of {args.config} (yet)", file=sys.stderr)
    scope = f"routes {', '.join(record.routes)}" if record.routes else "every route"
    groups = f", groups {', '.join(record.groups)}" if record.groups else ""
    until = f"expires {_when(record.expires)}" if record.expires is not None else "never expires"
    print(f"mcp-gateway: API key {record.name!r} (id {record.id}; {scope}{groups}; {until}) kept hashed in {path}; "
          f"shown once, on stdout; a running gateway accepts it within {_refresh(config)}", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace, path: str) -> int:
    records: list[KeyRecord] = []
    if os.path.exists(path):  # listing never makes a database
        with KeyStore(path) as store:
            records = store.list(include_revoked=args.all)
    now = time.time()
    if args.json:
        sys.stdout.write(json.dumps([r.as_json(now) for r in records], indent=2) + "\n")
        return 0
    if not records:
        print(f"mcp-gateway: no API keys in {path} (mcp-gateway keys create --config {args.config} --name NAME)",
              file=sys.stderr)
        return 0
    head = ("NAME", "ID", "ROUTES", "GROUPS", "CREATED", "EXPIRES", "LAST USED", "STATUS")
    rows = [(r.name, r.id, ",".join(r.routes) if r.routes else "*", ",".join(r.groups) or "-", _when(r.created),
             _when(r.expires), _when(r.last_used), r.status(now)) for r in records]
    widths = [max(len(row[i]) for row in (head, *rows)) for i in range(len(head))]
    for row in (head, *rows):
        sys.stdout.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n")
    return 0


def _revoke(args: argparse.Namespace, config: GatewayConfig, path: str) -> int:
    if not os.path.exists(path):
        raise _Fail(f"no API key named {args.name[:64]!r} (there are no keys in {path})")
    with KeyStore(path) as store:
        record = store.revoke(args.name)
    print(f"mcp-gateway: revoked API key {record.name!r} (id {record.id}); a running gateway refuses it within "
          f"{_refresh(config)}", file=sys.stderr)
    return 0
