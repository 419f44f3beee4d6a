"""``mcp-gateway check``'s summary of a config: every setting that matters for security or limits."""

from __future__ import annotations

import shlex
from urllib.parse import urlsplit

from ..auth.access import state_db_path
from ..auth.keys import keys_db_path
from ..config import GatewayConfig, ToolFilter, format_duration, format_size, is_loopback, root_user_problem
from ..config.rest import RestApi, secret_refs


def _days(seconds: float) -> str:
    """A retention: ``30d`` when whole days, else as a duration; 0 is "any age"."""
    if not seconds:
        return "any age"
    return f"{seconds / 86400:g}d" if seconds % 86400 == 0 else format_duration(seconds)


def describe(config: GatewayConfig, config_file: str | None = None) -> str:
    """A multi-line summary for ``mcp-gateway check``: every setting that matters for
    security or limits, with its effective value. Secrets appear by name only and env
    vars by name only (Claude Desktop configs often carry API keys in env)."""
    fd, fs = format_duration, format_size
    lim, t, sep = config.limits, config.timeouts, config.tool_separator
    origins = ", ".join("any (*)" if o == "*" else o for o in config.allowed_origins)
    admin = f"{config.admin.host}:{config.admin.port}" if config.admin.enabled else "disabled"
    if config.admin.enabled:
        token = config.admin.token
        admin += (f" (token from {token.partition(':')[0]})" if token else
                  " (token generated at first start, printed once, kept hashed in the store)" if config.store
                  else " (token generated at each start and printed: no store to keep it)")
    au = config.audit
    audit_db = au.path or (config.store.path if config.store else None)
    audit = "disabled" if au.enabled is False or audit_db is None else (
        f"{audit_db}, retention {_days(au.retention)}, max rows "
        f"{au.max_rows or 'unbounded'}, queue {au.queue} (dropped and counted beyond)")
    lines = [
        f"listen: {config.listen.host}:{config.listen.port}",
        f"admin: {admin}",
        f"store: {config.store.path if config.store else 'none (the file is the configuration)'}",
        f"audit log: {audit}",
        *_access(config, config_file),
        f"log level: {config.log_level}, format {config.log_format}",
        f"tool names: <server>{sep}<tool>",
        f"allowed origins: localhost{', ' + origins if origins else ' only'}",
        f"limits: body {fs(lim.max_body)}, header {fs(lim.max_header)}, upstream message "
        f"{fs(lim.max_message)}, sessions {lim.max_sessions}, in-flight per session "
        f"{lim.max_inflight_per_session}, connections {lim.max_connections} (at most what file descriptors "
        f"allow), connections per client address {lim.max_connections_per_peer or lim.max_connections // 4}, "
        f"sessions per client address {lim.max_sessions_per_peer or lim.max_sessions}",
        f"upstream logs: {lim.upstream_log_rate:g} lines/s per server (burst {lim.upstream_log_burst}), "
        "control characters escaped, lines capped",
        f"timeouts: call {fd(t.call)}, read {fd(t.read)}, write {fd(t.write)}, keep-alive idle {fd(t.idle)}, session idle "
        f"{fd(t.session_idle)}, shutdown grace {fd(t.shutdown_grace)}, server start {fd(t.start)}",
        f"liveness: ping idle servers every {fd(t.ping_interval) if t.ping_interval else 'never'}, "
        f"answer within {fd(t.ping_timeout)}",
        f"remote servers: hosts {', '.join(config.remote.allow_hosts) + ' only' if config.remote.allow_hosts is not None else 'any (loopback and private addresses allowed)'}"
        ", link-local and cloud metadata "
        f"{'ALLOWED' if config.remote.allow_link_local else 'refused'}; TLS verified, redirects refused, "
        "client credentials never forwarded",
        f"servers ({len(config.servers)}):",
    ]
    for name, s in config.servers.items():
        lines.append(f"  {name} ({s.kind})")
        if s.kind == "process":
            lines.append(f"    command: {shlex.join(s.argv())}")
            lines.append(f"    cwd: {s.cwd or '(gateway working directory)'}")
            lines.append("    sandbox: none (a local process running as the gateway's user)")
        elif s.kind == "container":
            lines.append(f"    image: {s.image}")
            lines.append(f"    command: {shlex.join(s.argv()) if s.command else '(image default)'}")
        elif s.kind == "http" and s.http is not None:
            lines += _rest(s.http)
        else:
            # A URL may carry credentials (user:token@, ?api_key=): show only where it points.
            u = urlsplit(s.url or "")
            lines.append(f"    url: {u.scheme}://{u.hostname or ''}{f':{u.port}' if u.port else ''}{u.path}")
            lines.append(f"    transport: {s.transport}; lifecycle: {s.lifecycle}, pool {s.pool}, max instances "
                         f"{s.max_instances}; connect timeout {fd(s.connect_timeout)}")
            credentials = [*s.headers] + ([f"Authorization (bearer from {s.bearer.partition(':')[0]})"]
                                          if s.bearer else [])
            lines.append(f"    sends: {', '.join(credentials) or 'no credentials'} (header names only)")
            if s.ca_file:
                lines.append(f"    extra CA bundle: {s.ca_file}")
        if s.env:
            lines.append(f"    env: {', '.join(s.env)}")
        if s.audit_arguments:
            lines.append("    audit: arguments stored in the audit log")
        lines.append(f"    on tool change: {s.tool_change}{'' if s.on_tool_change else ' (default for its kind)'}"
                     + ("; results: secrets redacted" if s.redact_results else ""))
        if s.tools is not None:
            lines.append(f"    tools hidden: {_filter(s.tools)}")
        if s.secrets:
            # The name and where it comes from (env or file); never the reference's target's value.
            sources = [f"{k} (from {ref.partition(':')[0]})" for k, ref in s.secrets.items()]
            lines.append(f"    secrets: {', '.join(sources)}")
        if s.kind == "http":
            continue  # (no process to start, ping or restart)
        lines.append(
            f"    timeouts: start {fd(config.start_timeout_for(name))}, call {fd(config.call_timeout_for(name))}, "
            f"idle {fd(s.idle_timeout)}; restart backoff {fd(s.restart_backoff)}..{fd(s.restart_backoff_max)}"
        )
        ping, ping_timeout = config.ping_for(name)
        lines.append(f"    liveness: ping when idle {fd(ping) if ping else 'never'} (answer within "
                     f"{fd(ping_timeout)}), and after {s.ping_after_timeouts} call timeouts in a row")
        if s.kind != "container":
            continue
        c = s.limits
        root = root_user_problem(s.user) is not None
        lines += [
            f"    lifecycle: {s.lifecycle}, pool {s.pool}, max instances {s.max_instances}",
            f"    user: {s.user}{' (ROOT)' if root else ''}",
            f"    read-only root filesystem: {'yes' if s.read_only else 'NO'}",
            f"    tmpfs: {fs(s.tmpfs_size)}",
            f"    capabilities: drop ALL, add {', '.join(s.cap_add) or 'none'}",
            "    no-new-privileges: yes",
            f"    network: {s.network}",
            f"    seccomp: {s.seccomp}{' (Docker default profile)' if s.seccomp == 'docker-default' else ''}",
            f"    memory: {fs(c.memory)}, cpus: {c.cpus:g}, pids: {c.pids}",
            "    mounts:" if s.mounts else "    mounts: none",
        ]
        lines += [f"      {m.source} -> {m.target} ({'rw' if m.rw else 'ro'})" for m in s.mounts]
    lines.append("routes:")
    routes = config.route_configs()
    width = max(map(len, routes))
    for route, rc in routes.items():
        names = []
        for server in rc.servers:
            prefix = config.name_prefix(route, server)
            names.append(server if prefix == server else f"{server} (unprefixed names)" if prefix is None
                         else f"{server} (names {prefix}{sep}<name>)")
        lines.append(f"  {route.ljust(width)}  {', '.join(names)}")
        if rc.tools is not None:
            lines.append(f"  {' ' * width}  tools hidden: {_filter(rc.tools)}")
        if rc.tool_mode == "search":
            lines.append(f"  {' ' * width}  tool mode: search (tools/list: search_tools and call_tool)")
    return "\n".join(lines)


def _rest(api: RestApi) -> list[str]:
    """An http server (a REST API): where requests go, where its tools come from, what it sends."""
    u = urlsplit(api.base_url)  # (its query may carry a key: never shown)
    tools = ([f"OpenAPI {api.openapi} ({'operations ' + ', '.join(api.operations) if api.operations is not None else 'every operation'})"]
             if api.openapi else []) + ([f"{len(api.tools)} by hand ({', '.join(t.name for t in api.tools)})"]
                                        if api.tools else [])
    sent = [f"{k} (secret from {', '.join(sorted({r.partition(':')[0] for r in secret_refs(v)}))})"
            if secret_refs(v) else k for k, v in api.headers.items()]
    return [
        f"    base url: {u.scheme}://{u.hostname or ''}{f':{u.port}' if u.port else ''}{u.path}",
        f"    tools: {'; '.join(tools)}",
        f"    sends: {', '.join(sent) or 'no credentials'} (header names only)",
        f"    limits: timeout {format_duration(api.timeout)} per call, response {format_size(api.max_response)}; "
        "TLS verified" + (f" (extra CA bundle {api.ca_file})" if api.ca_file else "") +
        ", redirects refused, the SSRF guard of remote:",
    ]


def _filter(f: ToolFilter) -> str:
    parts = ([f"all but {', '.join(f.allow)}"] if f.allow is not None else []) + \
        ([f"{', '.join(f.deny)}"] if f.deny else [])
    return "; ".join(parts) or "none"


def _access(config: GatewayConfig, config_file: str | None) -> list[str]:
    """Who may call: authentication, policy, rate limits, tool pins (a warning where it is open)."""
    auth, host = config.authentication, config.listen.host
    if auth is None:
        who = ("none: OPEN to anyone who can reach it (auth: none)" if config.auth == "none" and not
               is_loopback(host) else "none (loopback: every local user may call everything)")
        lines = [f"WARNING: authentication: {who}" if "OPEN" in who else f"authentication: {who}"]
    else:
        methods = []
        if auth.keys is not None:
            methods.append(f"API keys (hashed in {keys_db_path(config, config_file)}, changes seen within "
                           f"{format_duration(auth.keys.refresh)}; mcp-gateway keys create)")
        if auth.jwt is not None:
            j = auth.jwt
            source = (f"JWKS {urlsplit(j.jwks_url).hostname}" if j.jwks_url else f"JWKS file {j.jwks_file}"
                      if j.jwks_file else f"public key {j.public_key_file}" if j.public_key_file
                      else f"shared secret (from {(j.secret or '').partition(':')[0]})")
            methods.append(f"JWT (issuer {j.issuer}, audience {j.audience or auth.resource}, "
                           f"{'/'.join(j.algorithms)} from {source}, leeway {format_duration(j.leeway)}"
                           + (f", scopes {' '.join(j.required_scopes)} required" if j.required_scopes else "") + ")")
        lines = [f"authentication: {' and '.join(methods)}; sessions bound to their caller"]
        if auth.resource is not None:
            lines.append(f"  OAuth protected resource: {auth.resource} (/.well-known/oauth-protected-resource), "
                         f"authorization servers: {', '.join(auth.authorization_servers) or 'none named'}")
    lines.append(f"policy: {len(config.policy)} rules (deny wins; what no allow rule matches is hidden)"
                 if config.policy else "policy: none (every caller may see and call everything)")
    for limit in config.rate_limits:
        what = ", ".join(([f"{limit.rate:g}/s burst {limit.burst or max(1, int(limit.rate))}"] if limit.rate else [])
                         + ([f"{limit.concurrent} at once"] if limit.concurrent else []))
        lines.append(f"rate limit: {what} per {'caller' if limit.per == 'identity' else 'gateway'} for "
                     f"{', '.join(limit.who)} on {', '.join(limit.routes)} calling {', '.join(limit.tools)}")
    pins = state_db_path(config, config_file)
    lines.append(f"tool pins: kept in {pins}" if pins else
                 "tool pins: in memory only (every start trusts what it sees first; set store.path to keep them)")
    return lines
