"""Who may call what: the shape of ``auth``, ``policy``, ``rate_limits`` and tool filters.

Authentication (``auth``) says who a caller is; ``policy`` says what each caller may see and
call; ``rate_limits`` how often; a ``tools`` filter on a server or a route hides tools from
everyone. The rules that relate these keys to the rest of the configuration (a listener beyond
loopback needs an auth method, JWT needs an issuer and keys) live in :mod:`.validate`.

Patterns are shell globs (``fnmatch``, case-sensitive): ``time__*``, ``*__delete_*``, ``/team-*``.
A caller pattern (``who``) is ``NAME`` (a key's name or a token's subject), ``group:NAME``,
``scope:NAME``, or ``*`` (anyone, the local user of a loopback gateway without auth included).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from .units import Duration, PositiveDuration, PositiveInt

Algorithm = Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
                    "EdDSA", "HS256", "HS384", "HS512"]


class ApiKeys(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """API keys (``Authorization: Bearer mcpg_...``), made with ``mcp-gateway keys create``."""

    # The database the keys are kept in (hashed): None: the store's, or without a store
    # ``<config file's directory>/keys.db``.
    path: str | None = None
    # A caller's key is looked up in memory; keys created or revoked by another process (the CLI)
    # are seen within this long.
    refresh: PositiveDuration = 1.0


class Jwt(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """JWT bearer tokens from an identity provider (an OAuth 2.1 authorization server)."""

    issuer: str  # the ``iss`` every token must carry
    # The ``aud`` a token must name: None: ``auth.resource`` (tokens minted for anything else are refused).
    audience: str | None = None
    # Where the verification keys are (exactly one): a JWKS document by URL (fetched, cached,
    # refetched for an unknown ``kid``) or file, a PEM public key file, or (HS*) a shared secret ref.
    jwks_url: str | None = None
    jwks_file: str | None = None
    public_key_file: str | None = None
    secret: str | None = None  # "env:NAME" or "file:/abs/path"; HS256/384/512 only
    algorithms: list[Algorithm] = msgspec.field(default_factory=lambda: ["RS256", "ES256"])
    leeway: Duration = 30.0  # clock skew allowed on exp/nbf/iat
    required_scopes: list[str] = []  # every request needs all of these (else 403 insufficient_scope)
    subject_claim: str = "sub"  # the caller's name
    groups_claim: str = "groups"  # a list of group names (or absent)
    jwks_cache: PositiveDuration = 300.0  # a fetched JWKS is used this long before it is fetched again


class Auth(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """How data-plane clients authenticate (Streamable HTTP, SSE, WebSocket; stdio is the local user).

    With no method configured the data plane is open, which is refused beyond loopback unless the
    configuration says ``auth: none``. With methods, every request needs a valid credential.
    """

    api_keys: bool | ApiKeys = False  # true: API keys with the defaults of ApiKeys
    jwt: Jwt | None = None
    # This gateway's own resource URI (``https://mcp.example.com``): the audience of its tokens and
    # the ``resource`` of /.well-known/oauth-protected-resource. Needed with ``jwt``.
    resource: str | None = None
    authorization_servers: list[str] = []  # named in the protected-resource metadata (RFC 9728)
    scopes_supported: list[str] = []  # named there too

    @property
    def keys(self) -> ApiKeys | None:
        """The API-key settings, or None when keys are off."""
        if self.api_keys is True:
            return ApiKeys()
        return self.api_keys if isinstance(self.api_keys, ApiKeys) else None

    @property
    def methods(self) -> list[str]:
        return [m for m, on in (("api_keys", self.keys is not None), ("jwt", self.jwt is not None)) if on]


class Match(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """What a policy rule is about: callers, and the routes, servers, tools, prompts and resources.

    ``tools`` and ``prompts`` match the names clients see (``<server><separator><name>``),
    ``resources`` the URIs; when none of the three is given the rule is about all three.
    """

    who: list[str] = msgspec.field(default_factory=lambda: ["*"])
    routes: list[str] = msgspec.field(default_factory=lambda: ["*"])
    servers: list[str] = msgspec.field(default_factory=lambda: ["*"])
    tools: list[str] | None = None
    prompts: list[str] | None = None
    resources: list[str] | None = None


class Rule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``- allow: {...}`` or ``- deny: {...}`` (exactly one). With any rule, what no allow rule
    matches is denied; a deny rule that matches wins over every allow."""

    allow: Match | None = None
    deny: Match | None = None

    @property
    def effect(self) -> Literal["allow", "deny"]:
        return "allow" if self.allow is not None else "deny"

    @property
    def match(self) -> Match:
        found = self.allow if self.allow is not None else self.deny
        assert found is not None
        return found


class RateLimit(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """A token bucket (and optionally a cap on calls at once) for the calls it matches.

    Calls are ``tools/call``, ``prompts/get`` and ``resources/read``; ``tools`` matches the name of
    the tool, prompt or resource URI called. Every rule that matches a call applies.
    """

    who: list[str] = msgspec.field(default_factory=lambda: ["*"])
    routes: list[str] = msgspec.field(default_factory=lambda: ["*"])
    tools: list[str] = msgspec.field(default_factory=lambda: ["*"])
    per: Literal["identity", "all"] = "identity"  # a bucket for each caller, or one shared by all
    rate: float | None = None  # calls per second (None: no rate, only `concurrent`)
    burst: PositiveInt | None = None  # None: max(1, rate)
    concurrent: PositiveInt | None = None  # calls in flight at once


class ToolFilter(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Tools hidden from every caller: what ``allow`` does not match (when given) or ``deny`` does.
    On a server the patterns match its own tool names; on a route, the names clients see."""

    allow: list[str] | None = None
    deny: list[str] = []


OnToolChange = Literal["block", "warn", "allow"]
