"""Who may see and call which tools, prompts and resources; and the tool filters that hide tools from all.

Pure: no trio, no I/O. Built once per configuration (a reload builds a new one).

**Policy rules** (``policy:`` in the config, a list of ``{allow: Match}`` / ``{deny: Match}``):

- No rules: every caller may see and call everything (:attr:`Policy.enabled` is False).
- With rules, an item is allowed for a caller iff at least one ``allow`` rule matches it and no
  ``deny`` rule does (deny wins; what no allow rule matches is denied).
- An item is ``(kind, route, server, name)``: ``kind`` is ``tool``, ``prompt`` or ``resource``;
  ``name`` is the name clients see (``<server><separator><tool>``) for tools and prompts, the URI
  for resources; ``server`` is the configured name of the server that provides it.
- A rule matches when any of its ``who`` patterns matches the caller, and one of its ``routes``
  globs matches the route, and one of its ``servers`` globs the server, and the item's kind list
  (``tools``/``prompts``/``resources``) has a glob that matches the name. A rule that gives none of
  the three lists covers every name of all three kinds; a rule that gives some covers only those
  kinds (``tools: ["time__*"]`` says nothing about prompts, and ``tools: []`` matches no tool).
- Caller patterns: ``*`` anyone; ``group:GLOB`` any of the caller's groups; ``scope:NAME`` one of
  the caller's scopes, exactly; anything else a glob on the caller's name (a key's name, a token's
  subject, ``local`` for the local user).
- Globs are :mod:`fnmatch` shell globs, case-sensitive, compiled once; ``*`` also matches ``/``
  (so ``file:///srv/*`` covers a whole tree).

:meth:`Policy.view` is the fast path for listings: the rules are narrowed once to those whose
``who`` and ``routes`` match a caller on a route, and the result is cached per caller and route
(bounded, least recently used out first), so listing 500 tools tests only the rules that can apply.

**Tool filters** (``tools: {allow: [...], deny: [...]}`` on a server or a route) do not depend on
the caller: :func:`compile_filter` turns one into a predicate "visible".
"""

from __future__ import annotations

import fnmatch
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, Literal

from ..config.access import Match, Rule, ToolFilter
from ..memo import Memo
from . import Identity

Kind = Literal["tool", "prompt", "resource"]
KINDS: Final[tuple[Kind, ...]] = ("tool", "prompt", "resource")
DEFAULT_VIEW_CACHE: Final = 1024  # (caller, route) views kept; a view costs a few small lists

Glob = Callable[[str], bool]


def _always(_: str) -> bool:
    return True


def _never(_: str) -> bool:
    return False


def compile_globs(patterns: Iterable[str]) -> Glob:
    """One predicate for "matches any of these globs" (case-sensitive; one regex for all of them)."""
    patterns = list(dict.fromkeys(patterns))
    if not patterns:
        return _never
    if "*" in patterns:
        return _always  # the common case costs no regex
    if all(not any(c in p for c in "*?[") for p in patterns):
        literal = frozenset(patterns)
        return literal.__contains__
    match = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)).match
    return lambda name: match(name) is not None


class Who:
    """A rule's ``who`` patterns, compiled: called with an identity, says whether one matches."""

    __slots__ = ("anyone", "names", "groups", "scopes")

    def __init__(self, patterns: list[str]) -> None:
        names: list[str] = []
        groups: list[str] = []
        scopes: set[str] = set()
        self.anyone = False
        for pattern in patterns:
            if pattern == "*":
                self.anyone = True
            elif pattern.startswith("group:"):
                groups.append(pattern[len("group:"):])
            elif pattern.startswith("scope:"):
                scopes.add(pattern[len("scope:"):])
            else:
                names.append(pattern)
        self.names = compile_globs(names) if names else None
        self.groups = compile_globs(groups) if groups else None
        self.scopes = frozenset(scopes)

    def __call__(self, identity: Identity) -> bool:
        if self.anyone:
            return True
        if self.names is not None and self.names(identity.name):
            return True
        if self.groups is not None and any(self.groups(g) for g in identity.groups):
            return True
        return not self.scopes.isdisjoint(identity.scopes)


@dataclass(frozen=True, slots=True)
class _Compiled:
    allow: bool
    who: Who
    routes: Glob
    servers: tuple[str, ...]  # globs (patterns, not compiled: a view merges the rules it keeps)
    names: dict[Kind, tuple[str, ...]]  # the kinds this rule covers, each with its name globs


def _compile(rule: Rule) -> _Compiled:
    m: Match = rule.match
    given: dict[Kind, list[str] | None] = {"tool": m.tools, "prompt": m.prompts, "resource": m.resources}
    if all(v is None for v in given.values()):
        names: dict[Kind, tuple[str, ...]] = dict.fromkeys(KINDS, ("*",))
    else:
        names = {k: _patterns(v) for k, v in given.items() if v is not None}
    return _Compiled(rule.effect == "allow", Who(m.who), compile_globs(m.routes), _patterns(m.servers), names)


def _patterns(globs: Iterable[str]) -> tuple[str, ...]:
    found = sorted(set(globs))
    return ("*",) if "*" in found else tuple(found)  # "*" covers the rest: one key for every rule that has it


# Views compile merged pattern sets; the same sets recur across callers (bounded: config-derived keys).
_globs = lru_cache(maxsize=4096)(compile_globs)
_VERDICTS: Final = 4096  # items whose verdict a view remembers (calls repeat the same few tools)


class View:
    """The policy for one caller on one route: :meth:`allows` tests only the rules that can apply.

    The rules kept are merged per kind and per ``servers`` patterns into one name regex, so an item
    usually costs one server test and one regex match on each side (deny, allow).
    """

    __slots__ = ("_allow", "_deny", "_open", "_verdicts")

    def __init__(self, rules: Iterable[_Compiled] | None) -> None:
        # None: no policy at all, everything is allowed.
        self._open = rules is None
        self._verdicts: Memo[tuple[Kind, str, str], bool] = Memo(_VERDICTS)  # remembered per item
        merged: dict[tuple[bool, Kind], dict[tuple[str, ...], list[str]]] = {}
        for rule in rules or ():
            for kind, names in rule.names.items():
                merged.setdefault((rule.allow, kind), {}).setdefault(rule.servers, []).extend(names)

        def side(allow: bool, kind: Kind) -> list[tuple[Glob, Glob]]:
            groups = merged.get((allow, kind), {})
            return [(_globs(servers), _globs(_patterns(names))) for servers, names in groups.items()]

        self._allow: dict[Kind, list[tuple[Glob, Glob]]] = {k: side(True, k) for k in KINDS}
        self._deny: dict[Kind, list[tuple[Glob, Glob]]] = {k: side(False, k) for k in KINDS}

    @property
    def anything(self) -> bool:
        """Whether some allow rule applies at all (False: this caller sees nothing on this route)."""
        return self._open or any(self._allow.values())

    def allows(self, kind: Kind, server: str, name: str) -> bool:
        """Whether the caller may see and call this item (``name``: public name, or URI)."""
        if self._open:
            return True
        key = (kind, server, name)
        verdict = self._verdicts.get(key)  # a view lives until the policy or the caller changes
        if verdict is None:
            verdict = self._verdicts.keep(key, self._judge(kind, server, name))
        return verdict

    def _judge(self, kind: Kind, server: str, name: str) -> bool:
        for servers, names in self._deny[kind]:
            if servers(server) and names(name):
                return False
        for servers, names in self._allow[kind]:
            if servers(server) and names(name):
                return True
        return False


_OPEN: Final = View(None)


@dataclass(frozen=True, slots=True)
class PolicyStatistics:
    rules: int
    views_cached: int
    view_hits: int
    view_misses: int


class Policy:
    """The ``policy`` rules, compiled. See the module docstring for the semantics."""

    def __init__(self, rules: list[Rule], *, view_cache: int = DEFAULT_VIEW_CACHE) -> None:
        for i, rule in enumerate(rules):
            if (rule.allow is None) == (rule.deny is None):
                raise ValueError(f"policy[{i}]: a rule is either {{allow: {{...}}}} or {{deny: {{...}}}}")
        if view_cache < 1:
            raise ValueError(f"view_cache must be at least 1, got {view_cache}")
        self._rules = [_compile(r) for r in rules]
        self._cache: OrderedDict[tuple[str, frozenset[str], frozenset[str], str], View] = OrderedDict()
        self._cache_size = view_cache
        self._hits = self._misses = 0

    @property
    def enabled(self) -> bool:
        """False when there are no rules (everything is allowed; callers may skip the checks)."""
        return bool(self._rules)

    def view(self, identity: Identity, route: str) -> View:
        """The rules that apply to this caller on this route, narrowed once and cached."""
        if not self._rules:
            return _OPEN
        key = (identity.key, identity.groups, identity.scopes, route)
        view = self._cache.get(key)
        if view is not None:
            self._hits += 1
            self._cache.move_to_end(key)
            return view
        self._misses += 1
        view = View(r for r in self._rules if r.routes(route) and r.who(identity))
        self._cache[key] = view
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return view

    def allows(self, identity: Identity, route: str, kind: Kind, server: str, name: str) -> bool:
        """Whether ``identity`` may see and call the ``kind`` item ``name`` of ``server`` on ``route``."""
        return self.view(identity, route).allows(kind, server, name)

    def statistics(self) -> PolicyStatistics:
        return PolicyStatistics(len(self._rules), len(self._cache), self._hits, self._misses)


def compile_filter(f: ToolFilter | None) -> Callable[[str], bool] | None:
    """A tool filter as a predicate "visible", or None when it hides nothing.

    With ``allow`` given, a name must match one of its globs; it must never match one of ``deny``.
    """
    if f is None or (f.allow is None and not f.deny):
        return None
    allow = compile_globs(f.allow) if f.allow is not None else _always
    deny = compile_globs(f.deny) if f.deny else _never
    return lambda name: allow(name) and not deny(name)
