"""How often and how many at once: token buckets and concurrency caps for calls.

Pure: no trio, no clock of its own. :meth:`RateLimiter.admit` takes ``now`` (seconds on any
monotonic clock, e.g. ``trio.current_time()``), so tests drive time explicitly.

The rules (``rate_limits:`` in the config, one :class:`~gateway.config.access.RateLimit` each):

- A call (``tools/call``, ``prompts/get``, ``resources/read``) is ``(identity, route, name)``.
  Every rule whose ``who`` matches the caller (the patterns of :mod:`.policy`), one of whose
  ``routes`` globs matches the route and one of whose ``tools`` globs matches the name applies.
- ``per: identity`` gives each caller (``identity.key``) its own bucket and in-flight count under
  that rule; ``per: all`` one bucket and count shared by every caller the rule matches.
- ``rate`` refills a bucket of capacity ``burst`` (default ``max(1, rate)``) at that many tokens per
  second; a call takes one token. ``concurrent`` caps the calls in flight; a :class:`Ticket` holds a
  slot until :meth:`Ticket.release`.
- All or nothing: when any applicable rule refuses, :class:`RateLimited` is raised and no rule's
  tokens or slots are taken. It names the rule that holds the call back longest and
  ``retry_after``: the seconds until that rule has a token (exact for a rate); for a concurrency
  cap, which frees when some call ends, a fixed hint of :data:`CONCURRENCY_RETRY` seconds.
- Bounded memory: at most ``max_buckets`` per-identity buckets per rule. A new caller's bucket
  first evicts buckets that are full and idle (a full bucket with nothing in flight is exactly a
  fresh one, so eviction loses nothing), oldest use first. When none of the oldest can go, the
  new caller is refused (``what="capacity"``) rather than letting a flood of identities evict,
  and so reset, someone's partly spent bucket.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, Literal

from ..config.access import RateLimit
from . import Identity
from .policy import Glob, Who, compile_globs

CONCURRENCY_RETRY: Final = 1.0  # seconds: Retry-After for a concurrency cap (no way to know when a call ends)
DEFAULT_MAX_BUCKETS: Final = 10_000  # per-identity buckets kept per rule
DEFAULT_RULE_CACHE: Final = 4096  # (caller, route, name) -> applicable rules, kept
EVICTION_SCAN: Final = 16  # oldest buckets looked at for a full idle one before a new caller is refused
_EPSILON: Final = 1e-9  # float refill (0.1 s * 10/s) must give a whole token, not 0.9999999

What = Literal["rate", "concurrent", "capacity"]


class RateLimited(Exception):
    """A call refused by rule ``rule`` (its index in ``rate_limits``); retry after ``retry_after`` s.

    ``what`` says which limit: ``rate`` (no token), ``concurrent`` (too many calls in flight), or
    ``capacity`` (too many distinct callers tracked at once). The message is safe to show the client.
    """

    def __init__(self, retry_after: float, rule: int, what: What, message: str) -> None:
        super().__init__(message)
        self.retry_after, self.rule, self.what, self.message = retry_after, rule, what, message

    @property
    def retry_after_header(self) -> str:
        """``Retry-After`` is whole seconds (RFC 9110): rounded up, at least 1."""
        return str(max(1, math.ceil(self.retry_after - _EPSILON)))


class _Bucket:
    __slots__ = ("tokens", "stamp", "in_flight")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens, self.stamp, self.in_flight = tokens, stamp, 0


class _Rule:
    __slots__ = ("index", "who", "routes", "tools", "per_identity", "rate", "burst", "concurrent", "buckets",
                 "shared", "what")

    def __init__(self, index: int, limit: RateLimit) -> None:
        if limit.rate is None and limit.concurrent is None:
            raise ValueError(f"rate_limits[{index}]: set rate or concurrent, or both")
        if limit.rate is not None and not (limit.rate > 0 and math.isfinite(limit.rate)):
            raise ValueError(f"rate_limits[{index}].rate: must be a finite number above 0, got {limit.rate}")
        self.index = index
        self.who = Who(limit.who)
        self.routes: Glob = compile_globs(limit.routes)
        self.tools: Glob = compile_globs(limit.tools)
        self.per_identity = limit.per == "identity"
        self.rate = limit.rate
        self.burst = float(limit.burst) if limit.burst is not None else max(1.0, limit.rate or 1.0)
        self.concurrent = limit.concurrent
        self.buckets: OrderedDict[str, _Bucket] = OrderedDict()  # per identity, least recently used first
        self.shared = _Bucket(self.burst, -math.inf)
        parts = [f"{limit.rate:g} calls per second (burst {self.burst:g})"] if limit.rate is not None else []
        parts += [f"{limit.concurrent} at once"] if limit.concurrent is not None else []
        self.what = ", ".join(parts) + (" per caller" if self.per_identity else " for all callers together")

    def refill(self, bucket: _Bucket, now: float) -> None:
        if self.rate is not None and now > bucket.stamp:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = max(bucket.stamp, now)  # a clock that steps back refills nothing

    def idle_and_full(self, bucket: _Bucket, now: float) -> bool:
        if bucket.in_flight:
            return False
        self.refill(bucket, now)
        return self.rate is None or bucket.tokens >= self.burst - _EPSILON


class Ticket:
    """An admitted call: :meth:`release` (or leaving ``with``) frees its concurrency slots; idempotent."""

    __slots__ = ("_held", "_limiter")

    def __init__(self, limiter: RateLimiter | None, held: list[_Bucket]) -> None:
        self._limiter, self._held = limiter, held

    def release(self) -> None:
        if self._held:
            held, self._held = self._held, []
            for bucket in held:
                bucket.in_flight -= 1
            if self._limiter is not None:
                self._limiter._in_flight -= 1

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


_FREE: Final = Ticket(None, [])  # no concurrency cap applied: nothing to release, shared by all


@dataclass(frozen=True, slots=True)
class RateLimiterStatistics:
    admitted: int
    refused: tuple[int, ...]  # per rule index: calls that rule refused (each refused call counted once)
    buckets: int  # per-identity buckets held, all rules
    in_flight: int  # admitted calls holding a concurrency slot
    evicted: int  # full idle buckets dropped to make room
    cached: int  # (caller, route, name) entries in the applicable-rules cache


class RateLimiter:
    """The ``rate_limits`` rules, compiled. See the module docstring for the semantics."""

    def __init__(self, rules: list[RateLimit], *, max_buckets: int = DEFAULT_MAX_BUCKETS,
                 rule_cache: int = DEFAULT_RULE_CACHE) -> None:
        if max_buckets < 1 or rule_cache < 1:
            raise ValueError(f"max_buckets and rule_cache must be at least 1, got {max_buckets}, {rule_cache}")
        self._rules = [_Rule(i, r) for i, r in enumerate(rules)]
        self._max_buckets = max_buckets
        self._cache: dict[tuple[str, frozenset[str], frozenset[str], str, str], tuple[_Rule, ...]] = {}
        self._cache_size = rule_cache
        self._admitted = 0
        self._refused = [0] * len(self._rules)
        self._in_flight = 0
        self._evicted = 0

    @property
    def enabled(self) -> bool:
        """False when there are no rules: every call is admitted (callers may skip :meth:`admit`)."""
        return bool(self._rules)

    def _applicable(self, identity: Identity, route: str, name: str) -> tuple[_Rule, ...]:
        # Groups and scopes are part of the key: the same subject may carry other groups in a new token.
        key = (identity.key, identity.groups, identity.scopes, route, name)
        found = self._cache.get(key)
        if found is None:
            found = tuple(r for r in self._rules if r.routes(route) and r.tools(name) and r.who(identity))
            if len(self._cache) >= self._cache_size:
                del self._cache[next(iter(self._cache))]  # oldest entry out: O(1), and bounded
            self._cache[key] = found
        return found

    def _bucket(self, rule: _Rule, identity: Identity, now: float) -> _Bucket | None:
        """The caller's bucket under ``rule`` (made if new), or None when there is no room for it."""
        if not rule.per_identity:
            return rule.shared
        buckets = rule.buckets
        bucket = buckets.get(identity.key)
        if bucket is not None:
            buckets.move_to_end(identity.key)
            return bucket
        if len(buckets) >= self._max_buckets:
            stale = [k for k, b in _oldest(buckets, EVICTION_SCAN) if rule.idle_and_full(b, now)]
            if not stale:
                return None
            for k in stale:
                del buckets[k]
            self._evicted += len(stale)
        bucket = buckets[identity.key] = _Bucket(rule.burst, now)
        return bucket

    def admit(self, identity: Identity, route: str, name: str, now: float) -> Ticket:
        """Admit one call or raise :class:`RateLimited` (taking nothing). ``name``: tool, prompt or URI."""
        rules = self._applicable(identity, route, name) if self._rules else ()
        if not rules:
            self._admitted += 1
            return _FREE
        picked: list[tuple[_Rule, _Bucket]] = []
        refusal: tuple[float, _Rule, What] | None = None
        for rule in rules:
            what: What
            bucket = self._bucket(rule, identity, now)
            if bucket is None:
                wait, what = self._capacity_wait(rule, now), "capacity"
            else:
                rule.refill(bucket, now)
                if rule.concurrent is not None and bucket.in_flight >= rule.concurrent:
                    wait, what = CONCURRENCY_RETRY, "concurrent"
                elif rule.rate is not None and bucket.tokens < 1.0 - _EPSILON:
                    wait, what = (1.0 - bucket.tokens) / rule.rate, "rate"
                else:
                    picked.append((rule, bucket))
                    continue
            if refusal is None or wait > refusal[0]:
                refusal = (wait, rule, what)
        if refusal is not None:
            wait, rule, what = refusal
            self._refused[rule.index] += 1
            raise RateLimited(wait, rule.index, what, _message(rule, what, wait))
        held: list[_Bucket] = []
        for rule, bucket in picked:
            if rule.rate is not None:
                bucket.tokens -= 1.0
            if rule.concurrent is not None:
                bucket.in_flight += 1
                held.append(bucket)
        self._admitted += 1
        if not held:
            return _FREE
        self._in_flight += 1
        return Ticket(self, held)

    def _capacity_wait(self, rule: _Rule, now: float) -> float:
        # The oldest bucket is the likeliest to fill first: say when it will (if it is idle).
        for _, bucket in _oldest(rule.buckets, 1):
            if not bucket.in_flight and rule.rate is not None:
                return max((rule.burst - bucket.tokens) / rule.rate, _EPSILON)
        return CONCURRENCY_RETRY

    def statistics(self) -> RateLimiterStatistics:
        return RateLimiterStatistics(self._admitted, tuple(self._refused), sum(len(r.buckets) for r in self._rules),
                                     self._in_flight, self._evicted, len(self._cache))


def _oldest(buckets: OrderedDict[str, _Bucket], n: int) -> list[tuple[str, _Bucket]]:
    out: list[tuple[str, _Bucket]] = []
    for item in buckets.items():
        if len(out) == n:
            break
        out.append(item)
    return out


def _message(rule: _Rule, what: What, wait: float) -> str:
    why = {"rate": "rate limit", "concurrent": "too many calls at once",
           "capacity": "too many callers at once"}[what]
    return f"{why}: rate_limits[{rule.index}] allows {rule.what}; retry after {wait:.3g} s"
