"""Gateway configuration: a YAML or JSON file -> frozen msgspec Structs.

Every problem is a :class:`ConfigError` whose text is one line starting with the key path
(``servers.time.args[0]: expected a string, got an integer``), with the file name in front when
the config came from a file. Whichever way a change arrives (the file, a reload, the admin API),
it goes through :func:`parse_config`: one set of rules.

- :mod:`.schema`: the Structs, their defaults and per-key types and bounds (:mod:`.access`: auth,
  policy, rate limits and tool filters);
- :mod:`.units`: durations and sizes;
- :mod:`.walker`: data -> Structs by the annotations, with key paths;
- :mod:`.validate`: the rules across keys (server kinds, names, routes, remote servers, control plane);
- :mod:`.container`: a container's sandbox rules and defaults (shared with ``sandbox/``);
- :mod:`.load`: reading files; :mod:`.secrets`: secret references; :mod:`.errors`.
"""

from __future__ import annotations

from .access import ApiKeys, Auth, Jwt, Match, RateLimit, Rule, ToolFilter
from .container import root_user_problem
from .errors import ConfigError, SecretError
from .load import load_config, load_document, parse_config
from .schema import (
    Admin,
    Audit,
    ContainerLimits,
    GatewayConfig,
    Limits,
    Listen,
    Metrics,
    Mount,
    Remote,
    RouteConfig,
    ServerConfig,
    Store,
    Timeouts,
)
from .secrets import resolve_secret
from .units import format_duration, format_size, parse_duration, parse_size
from .validate import is_loopback

__all__ = [
    "Admin",
    "ApiKeys",
    "Audit",
    "Auth",
    "Jwt",
    "Match",
    "RateLimit",
    "Rule",
    "ToolFilter",
    "ConfigError",
    "ContainerLimits",
    "GatewayConfig",
    "Limits",
    "Listen",
    "Metrics",
    "Mount",
    "Remote",
    "RouteConfig",
    "SecretError",
    "ServerConfig",
    "Store",
    "Timeouts",
    "format_duration",
    "format_size",
    "is_loopback",
    "load_config",
    "load_document",
    "parse_config",
    "parse_duration",
    "parse_size",
    "resolve_secret",
    "root_user_problem",
]
