"""The config store's part of ``mcp-gateway``: ``run`` with a store, and ``export``.

These run before the event loop starts (or without one), so they use the blocking
:class:`~admin.store.ConfigStore` directly.
"""

from __future__ import annotations

import getpass
import logging
import os
import sqlite3
import sys

from gateway.config import ConfigError, GatewayConfig, load_config, load_document, parse_config

from .store import ConfigStore, StoreError, to_yaml

log = logging.getLogger("mcp_gateway.admin")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container with an arbitrary uid)
        return "unknown"


def startup_config(path: str, config: GatewayConfig) -> GatewayConfig:
    """``mcp-gateway run --config FILE`` with ``store.path``: import the file as a new version when
    it changed (see ConfigStore.import_file), then the configuration of the current version.

    Raises ConfigError (the current version is invalid: its number is in the message) or StoreError.
    """
    assert config.store is not None
    data = load_document(path)
    if not isinstance(data, dict):  # (load_config accepted it, so this cannot happen)
        raise ConfigError("the top level must be a mapping", source=path)
    try:
        store = ConfigStore(config.store.path)
        try:
            version, imported = store.import_file(data, path, who=f"{_user()} (mcp-gateway run)")
        finally:
            store.close()
    except (StoreError, sqlite3.Error) as exc:
        raise ConfigError(str(exc), path="store.path", source=path) from None
    if imported:
        log.info("config store %s: %s is version %d (now current)", config.store.path, path, version.id)
    else:
        log.info("config store %s: running version %d (%s, %s)", config.store.path, version.id, version.what,
                 version.who)
    return parse_config(version.document, source=f"{config.store.path} version {version.id}")


def export(config_path: str, version: int | None) -> int:
    """``mcp-gateway export --config FILE [--version N]``: a version's document as YAML on stdout."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"mcp-gateway: invalid config: {exc}", file=sys.stderr)
        return 2
    if config.store is None:
        print(f"mcp-gateway: {config_path} has no store.path: the file itself is the configuration",
              file=sys.stderr)
        return 2
    if not os.path.exists(config.store.path):
        print(f"mcp-gateway: {config.store.path}: no such store (run the gateway once)", file=sys.stderr)
        return 1
    try:
        store = ConfigStore(config.store.path)
    except StoreError as exc:
        print(f"mcp-gateway: {exc}", file=sys.stderr)
        return 2
    try:
        found = store.get(version) if version is not None else store.current()
    finally:
        store.close()
    if found is None:
        what = f"no version {version}" if version is not None else "no version yet (run the gateway once)"
        print(f"mcp-gateway: {config.store.path}: {what}", file=sys.stderr)
        return 1
    sys.stdout.write(f"# mcp-gateway config version {found.id}: {found.what} ({found.who})\n")
    sys.stdout.write(to_yaml(found.document))
    return 0
