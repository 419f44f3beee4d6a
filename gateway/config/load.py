"""Reading a config: a YAML or JSON file (duplicate keys refused) -> data -> a validated GatewayConfig."""

from __future__ import annotations

import json
import os
from typing import Any

import yaml

from .errors import ConfigError, Invalid
from .schema import GatewayConfig
from .validate import gateway


class _Loader(yaml.SafeLoader):  # type: ignore[misc,unused-ignore]
    """``yaml.safe_load`` that refuses duplicate keys (plain PyYAML keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            # A merge key (<<) may legitimately be overridden by explicit keys.
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``' object_pairs_hook that refuses duplicate keys (plain json keeps the last one)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read and validate a config file: JSON if it ends in ``.json``, else YAML."""
    return parse_config(load_document(path), source=os.fspath(path))


def load_document(path: str | os.PathLike[str]) -> object:
    """A config file's data, not yet validated (the config store keeps documents as written)."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            text = f.read().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config: {e.strerror or e}", source=source) from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text (byte {e.start})", source=source) from None
    try:
        if source.lower().endswith(".json"):
            data = json.loads(text, object_pairs_hook=no_duplicate_keys) if text.strip() else None
        else:
            data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}", source=source
        ) from None
    except ValueError as e:  # duplicate key in JSON
        raise ConfigError(f"invalid JSON: {e}", source=source) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"invalid YAML{where}: {e.problem or e.context}", source=source) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML: {' '.join(str(e).split())}", source=source) from None
    return data


def parse_config(data: object, *, source: str = "<config>") -> GatewayConfig:
    """Validate already-loaded Python data (a dict from YAML/JSON) into a GatewayConfig."""
    try:
        return gateway(data)
    except Invalid as e:
        # "<config>" is only a placeholder: the message already starts with the key path.
        raise ConfigError(e.message, path=e.path, source="" if source == "<config>" else source) from None
