"""The policy engine and tool filters: tables of caller x route x item -> allowed, and a reference check."""

from __future__ import annotations

import fnmatch
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from gateway.auth import LOCAL, Identity
from gateway.auth.policy import Kind, Policy, compile_filter
from gateway.config import parse_config
from gateway.config.access import Rule, ToolFilter


def rules(data: list[dict[str, Any]]) -> list[Rule]:
    return msgspec.convert(data, list[Rule])


POLICY = rules([
    {"allow": {"who": ["alice"], "tools": ["time__*"]}},
    {"allow": {"who": ["group:ops"], "servers": ["fs", "time"]}},  # no kinds given: tools, prompts, resources
    {"allow": {"who": ["scope:tools.read"], "routes": ["/team-*"], "tools": ["*"]}},
    {"allow": {"who": ["bob"], "prompts": ["fs__*"], "resources": ["file:///srv/*"]}},
    {"allow": {"who": ["group:eng-*", "svc-*"], "tools": ["git__*", "time__get_[ab]?"]}},
    {"deny": {"who": ["*"], "tools": ["*__delete_*"]}},
    {"deny": {"who": ["mallory"]}},  # no kinds given: everything, on every route and server
])

ALICE = Identity("alice", "key")
CAROL = Identity("carol", "jwt", groups=frozenset({"ops"}))
DAVE = Identity("dave", "jwt", scopes=frozenset({"tools.read", "profile"}))
DAVE_WIDER = Identity("dave", "jwt", scopes=frozenset({"tools.read.all"}))
MALLORY = Identity("mallory", "key", groups=frozenset({"ops"}))
BOB = Identity("bob", "key")
EVE = Identity("eve", "key")
FRANK = Identity("frank", "jwt", groups=frozenset({"staff", "eng-web"}))
ENG = Identity("eng", "jwt", groups=frozenset({"eng"}))
SVC = Identity("svc-ci", "key")
SVC_BARE = Identity("svc", "key")
ALICE_UPPER = Identity("Alice", "key")

T: Kind = "tool"
P: Kind = "prompt"
R: Kind = "resource"

TABLE: list[tuple[str, Identity, str, Kind, str, str, bool]] = [
    # why, who, route, kind, server, name, allowed
    ("name glob on the public name", ALICE, "/", T, "time", "time__now", True),
    ("same rule on any route", ALICE, "/team-a", T, "time", "time__convert", True),
    ("no allow rule matches: default deny", ALICE, "/", T, "fs", "fs__read", False),
    ("a tools-only rule does not cover prompts", ALICE, "/", P, "time", "time__now", False),
    ("a tools-only rule does not cover resources", ALICE, "/", R, "time", "time__now", False),
    ("deny wins over a matching allow", ALICE, "/", T, "time", "time__delete_zone", False),
    ("globs are case-sensitive (name)", ALICE, "/", T, "time", "TIME__now", False),
    ("globs are case-sensitive (caller)", ALICE_UPPER, "/", T, "time", "time__now", False),
    ("group: a rule without kinds covers tools", CAROL, "/", T, "fs", "fs__read", True),
    ("... and prompts", CAROL, "/", P, "fs", "fs__summarise", True),
    ("... and resources (by URI)", CAROL, "/", R, "fs", "file:///etc/hosts", True),
    ("servers glob: another server is not covered", CAROL, "/", T, "git", "git__log", False),
    ("servers glob: the server, not the name prefix, decides", CAROL, "/", T, "git", "fs__read", False),
    ("deny *__delete_* wins over a group allow", CAROL, "/", T, "fs", "fs__delete_file", False),
    ("deny *__delete_* also on a route", CAROL, "/team-a", T, "time", "time__delete_all", False),
    ("a deny rule does not cover other kinds", CAROL, "/", P, "fs", "fs__delete_prompt", True),
    ("scope: on a matching route", DAVE, "/team-a", T, "git", "git__log", True),
    ("scope: a route the rule does not name", DAVE, "/", T, "git", "git__log", False),
    ("scope: the route glob is anchored", DAVE, "/x/team-a", T, "git", "git__log", False),
    ("scope: tools only, no prompts", DAVE, "/team-a", P, "git", "git__summary", False),
    ("scope: is exact, not a prefix or glob", DAVE_WIDER, "/team-a", T, "git", "git__log", False),
    ("a deny rule without kinds denies every tool", MALLORY, "/", T, "fs", "fs__read", False),
    ("... every prompt", MALLORY, "/", P, "fs", "fs__summarise", False),
    ("... every resource", MALLORY, "/team-a", R, "fs", "file:///srv/a", False),
    ("prompts glob", BOB, "/", P, "fs", "fs__review", True),
    ("resources glob crosses /", BOB, "/", R, "fs", "file:///srv/a/b/c.txt", True),
    ("resources glob: outside the tree", BOB, "/", R, "fs", "file:///etc/passwd", False),
    ("resources glob is anchored at the start", BOB, "/", R, "fs", "xfile:///srv/a", False),
    ("a prompts+resources rule does not cover tools", BOB, "/", T, "fs", "fs__read", False),
    ("group glob", FRANK, "/", T, "git", "git__log", True),
    ("group glob needs the dash", ENG, "/", T, "git", "git__log", False),
    ("name glob in who", SVC, "/", T, "git", "git__diff", True),
    ("name glob in who is anchored", SVC_BARE, "/", T, "git", "git__diff", False),
    ("[ab]? in a tools glob", SVC, "/", T, "time", "time__get_a1", True),
    ("[ab]? in a tools glob: c not in the set", SVC, "/", T, "time", "time__get_c1", False),
    ("? is exactly one character", SVC, "/", T, "time", "time__get_a", False),
    ("an exact caller name is not a prefix", Identity("bobby", "key"), "/", P, "fs", "fs__review", False),
    ("an exact server name is not a prefix", CAROL, "/", T, "fs2", "fs__read", False),
    ("nobody's rule", EVE, "/", T, "time", "time__now", False),
    ("the local user is a caller like any other", LOCAL, "/", T, "time", "time__now", False),
]


@pytest.mark.parametrize(("who", "route", "kind", "server", "name", "allowed"),
                         [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_policy_table(who: Identity, route: str, kind: Kind, server: str, name: str, allowed: bool) -> None:
    policy = Policy(POLICY)
    assert policy.enabled
    assert policy.allows(who, route, kind, server, name) is allowed
    # The listing fast path gives the same answer, also from its cache.
    assert policy.view(who, route).allows(kind, server, name) is allowed
    assert policy.view(who, route).allows(kind, server, name) is allowed


@pytest.mark.parametrize("who", [ALICE, EVE, LOCAL, MALLORY])
@pytest.mark.parametrize(("kind", "name"), [(T, "time__now"), (T, "fs__delete_all"), (P, "p"), (R, "file:///x")])
def test_no_rules_allow_everything(who: Identity, kind: Kind, name: str) -> None:
    policy = Policy([])
    assert not policy.enabled
    assert policy.allows(who, "/any", kind, "srv", name)
    assert policy.view(who, "/any").anything


def test_a_deny_only_policy_denies_everything() -> None:
    # With any rule, what no allow rule matches is denied: a lone deny does not mean "allow the rest".
    policy = Policy(rules([{"deny": {"tools": ["*__delete_*"]}}]))
    assert not policy.allows(ALICE, "/", T, "fs", "fs__read")
    assert not policy.view(ALICE, "/").anything


def test_view_says_whether_a_caller_sees_anything_on_a_route() -> None:
    policy = Policy(POLICY)
    assert policy.view(ALICE, "/").anything
    assert policy.view(DAVE, "/team-a").anything
    assert not policy.view(DAVE, "/").anything  # only the /team-* rule allows dave anything
    assert not policy.view(EVE, "/").anything


def test_views_are_per_groups_and_scopes_not_only_per_name() -> None:
    # The same subject with another token (other groups) must not get a cached answer for the old one.
    policy = Policy(POLICY)
    without = Identity("carol", "jwt")
    assert policy.allows(CAROL, "/", T, "fs", "fs__read")
    assert not policy.allows(without, "/", T, "fs", "fs__read")
    assert policy.allows(CAROL, "/", T, "fs", "fs__read")
    # ... and the same name under another kind of credential is another caller for the cache.
    assert policy.view(Identity("alice", "jwt"), "/") is not policy.view(ALICE, "/")


def test_the_view_cache_is_bounded_and_stays_correct_after_eviction() -> None:
    policy = Policy(POLICY, view_cache=8)
    for i in range(1000):
        who = Identity(f"svc-{i}" if i % 2 else f"user-{i}", "key")
        assert policy.allows(who, "/", T, "git", "git__log") is bool(i % 2)
    stats = policy.statistics()
    assert stats.views_cached == 8
    assert stats.view_misses == 1000 and stats.view_hits == 0
    # An evicted caller gets a fresh, still correct view; a recent one a cached one.
    assert policy.allows(Identity("svc-1", "key"), "/", T, "git", "git__log")
    assert policy.allows(Identity("svc-999", "key"), "/", T, "git", "git__log")
    assert policy.statistics().view_hits == 1
    assert policy.statistics().views_cached == 8


def test_the_view_cache_keeps_the_most_recently_used() -> None:
    policy = Policy(POLICY, view_cache=2)
    policy.view(ALICE, "/")
    policy.view(BOB, "/")
    policy.view(ALICE, "/")  # alice is now the most recent
    policy.view(EVE, "/")  # evicts bob
    hits = policy.statistics().view_hits
    policy.view(ALICE, "/")
    assert policy.statistics().view_hits == hits + 1
    policy.view(BOB, "/")
    assert policy.statistics().view_hits == hits + 1


def test_the_policy_of_a_parsed_config() -> None:
    config = parse_config({
        "servers": {"time": {"command": "mcp-server-time"}},
        "policy": [{"allow": {"who": ["group:ops"], "tools": ["time__*"]}},
                   {"deny": {"tools": ["time__convert_time"]}}],
    })
    policy = Policy(config.policy)
    ops = Identity("x", "jwt", groups=frozenset({"ops"}))
    assert policy.allows(ops, "/", T, "time", "time__get_current_time")
    assert not policy.allows(ops, "/", T, "time", "time__convert_time")
    assert not policy.allows(LOCAL, "/", T, "time", "time__get_current_time")


def test_a_rule_that_is_both_or_neither_is_refused() -> None:
    with pytest.raises(ValueError, match=r"policy\[1\]: a rule is either"):
        Policy(rules([{"allow": {}}, {"allow": {}, "deny": {}}]))
    with pytest.raises(ValueError, match=r"policy\[0\]"):
        Policy([Rule()])


# A reference: the semantics read straight off the docstring, with fnmatch and no caching or pre-filtering.
def _reference(data: list[dict[str, Any]], who: Identity, route: str, kind: Kind, server: str, name: str) -> bool:
    def any_glob(patterns: list[str], value: str) -> bool:
        return any(fnmatch.fnmatchcase(value, p) for p in patterns)

    def caller(pattern: str) -> bool:
        if pattern == "*":
            return True
        if pattern.startswith("group:"):
            return any(fnmatch.fnmatchcase(g, pattern[6:]) for g in who.groups)
        if pattern.startswith("scope:"):
            return pattern[6:] in who.scopes
        return fnmatch.fnmatchcase(who.name, pattern)

    def matches(m: dict[str, Any]) -> bool:
        if not any(caller(p) for p in m.get("who", ["*"])):
            return False
        if not any_glob(m.get("routes", ["*"]), route) or not any_glob(m.get("servers", ["*"]), server):
            return False
        kinds = {"tool": m.get("tools"), "prompt": m.get("prompts"), "resource": m.get("resources")}
        if all(v is None for v in kinds.values()):
            return True
        globs = kinds[kind]
        return globs is not None and any_glob(globs, name)

    allowed = any(matches(r["allow"]) for r in data if "allow" in r)
    return allowed and not any(matches(r["deny"]) for r in data if "deny" in r)


_WORDS = ["a", "b", "ab", "ops", "x-1", "fs", "time__now", "time__delete_x", "/team-a", "/", "file:///srv/a"]
_GLOBS = st.sampled_from(["*", "a", "ab", "a*", "*b", "?", "a?", "[ab]", "[!a]*", "ops", "x-*", "fs", "time__*",
                          "*__delete_*", "/team-*", "/", "file:///srv/*", "TIME__*"])
_WHO = st.one_of(_GLOBS, _GLOBS.map(lambda g: f"group:{g}"), st.sampled_from(_WORDS).map(lambda w: f"scope:{w}"))
_MATCH = st.fixed_dictionaries({}, optional={
    "who": st.lists(_WHO, max_size=3), "routes": st.lists(_GLOBS, max_size=3),
    "servers": st.lists(_GLOBS, max_size=3), "tools": st.lists(_GLOBS, max_size=3),
    "prompts": st.lists(_GLOBS, max_size=3), "resources": st.lists(_GLOBS, max_size=3)})
_RULE = st.one_of(st.builds(lambda m: {"allow": m}, _MATCH), st.builds(lambda m: {"deny": m}, _MATCH))
_IDENTITY = st.builds(lambda n, g, s: Identity(n, "key", groups=frozenset(g), scopes=frozenset(s)),
                      st.sampled_from(_WORDS), st.sets(st.sampled_from(_WORDS), max_size=2),
                      st.sets(st.sampled_from(_WORDS), max_size=2))
_ITEM = st.tuples(st.sampled_from(_WORDS), st.sampled_from(["tool", "prompt", "resource"]),
                  st.sampled_from(_WORDS), st.sampled_from(_WORDS))


@settings(max_examples=400, deadline=None)
@given(st.lists(_RULE, max_size=6), st.lists(st.tuples(_IDENTITY, _ITEM), min_size=1, max_size=8))
def test_policy_agrees_with_the_reference(data: list[dict[str, Any]],
                                          calls: list[tuple[Identity, tuple[str, Kind, str, str]]]) -> None:
    policy = Policy(rules(data), view_cache=3)  # a small cache, so some answers come from evicted views
    for who, (route, kind, server, name) in calls:
        expected = _reference(data, who, route, kind, server, name) if data else True
        assert policy.allows(who, route, kind, server, name) is expected, (data, who, route, kind, server, name)


FILTERS: list[tuple[str, ToolFilter, str, bool]] = [
    ("allow list: a match is visible", ToolFilter(allow=["get_*", "list"]), "get_time", True),
    ("allow list: exact name", ToolFilter(allow=["get_*", "list"]), "list", True),
    ("allow list: anything else is hidden", ToolFilter(allow=["get_*", "list"]), "set_time", False),
    ("allow list is anchored", ToolFilter(allow=["get_*"]), "forget_it", False),
    ("an empty allow list hides everything", ToolFilter(allow=[]), "get_time", False),
    ("deny list: a match is hidden", ToolFilter(deny=["*delete*", "drop_?"]), "fs__delete_file", False),
    ("deny list: ? is one character", ToolFilter(deny=["drop_?"]), "drop_db", True),
    ("deny list: the rest is visible", ToolFilter(deny=["*delete*"]), "fs__read", True),
    ("deny wins over allow", ToolFilter(allow=["fs__*"], deny=["*__delete_*"]), "fs__delete_file", False),
    ("allow and deny: allowed, not denied", ToolFilter(allow=["fs__*"], deny=["*__delete_*"]), "fs__read", True),
    ("case-sensitive", ToolFilter(deny=["rm"]), "RM", True),
]


@pytest.mark.parametrize(("f", "name", "visible"), [row[1:] for row in FILTERS], ids=[row[0] for row in FILTERS])
def test_tool_filter_table(f: ToolFilter, name: str, visible: bool) -> None:
    predicate = compile_filter(f)
    assert predicate is not None
    assert predicate(name) is visible


@pytest.mark.parametrize("f", [None, ToolFilter(), ToolFilter(deny=[])])
def test_a_filter_that_hides_nothing_compiles_to_none(f: ToolFilter | None) -> None:
    assert compile_filter(f) is None


def test_a_filter_from_a_parsed_config() -> None:
    config = parse_config({
        "servers": {"fs": {"command": "x", "tools": {"deny": ["delete_*"]}}},
        "routes": {"/": {"servers": ["fs"], "tools": {"allow": ["fs__*"], "deny": ["fs__write"]}}},
    })
    server = compile_filter(config.servers["fs"].tools)
    route = compile_filter(config.routes["/"].tools if config.routes else None)
    assert server is not None and route is not None
    assert [server(n) for n in ("delete_file", "read")] == [False, True]
    assert [route(n) for n in ("fs__read", "fs__write", "other__read")] == [True, False, False]
