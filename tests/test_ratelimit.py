"""Rate limits: token buckets over explicit and simulated time, concurrency caps, all-or-nothing, bounds."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from gateway.auth import LOCAL, Identity
from gateway.auth.ratelimit import CONCURRENCY_RETRY, RateLimited, RateLimiter, Ticket
from gateway.config import parse_config
from gateway.config.access import RateLimit

ALICE = Identity("alice", "key")
BOB = Identity("bob", "key")


def limiter(*data: dict[str, Any], **kwargs: Any) -> RateLimiter:
    return RateLimiter(msgspec.convert(list(data), list[RateLimit]), **kwargs)


def refused(lim: RateLimiter, who: Identity, now: float, route: str = "/", name: str = "t") -> RateLimited:
    with pytest.raises(RateLimited) as info:
        lim.admit(who, route, name, now)
    return info.value


def test_a_bucket_spends_its_burst_then_refills_at_the_rate() -> None:
    lim = limiter({"rate": 5, "burst": 5})
    for _ in range(5):
        lim.admit(ALICE, "/", "t", 0.0)
    e = refused(lim, ALICE, 0.0)
    assert (e.rule, e.what) == (0, "rate")
    assert e.retry_after == pytest.approx(0.2)
    assert refused(lim, ALICE, 0.1).retry_after == pytest.approx(0.1)
    lim.admit(ALICE, "/", "t", 0.2)  # one token back after 1/rate
    assert refused(lim, ALICE, 0.2).retry_after == pytest.approx(0.2)
    # A long idle time fills the bucket to its burst, not beyond.
    for _ in range(5):
        lim.admit(ALICE, "/", "t", 100.0)
    refused(lim, ALICE, 100.0)
    assert lim.statistics().refused == (4,)


@pytest.mark.parametrize(("rate", "burst", "at_once", "retry"), [(0.5, None, 1, 2.0), (3, None, 3, 1 / 3),
                                                                  (10, 2, 2, 0.1), (2.5, None, 2, 0.2)])
def test_burst_defaults_to_the_rate_and_at_least_one(rate: float, burst: int | None, at_once: int,
                                                     retry: float) -> None:
    lim = limiter({"rate": rate, "burst": burst})
    for _ in range(at_once):
        lim.admit(ALICE, "/", "t", 0.0)
    assert refused(lim, ALICE, 0.0).retry_after == pytest.approx(retry)


@pytest.mark.parametrize(("retry_after", "header"), [(0.2, "1"), (1.0, "1"), (1.0000000001, "1"), (2.5, "3"),
                                                     (10.0, "10")])
def test_retry_after_header_is_whole_seconds_rounded_up(retry_after: float, header: str) -> None:
    assert RateLimited(retry_after, 0, "rate", "m").retry_after_header == header


async def test_calls_every_100ms_at_5_per_second_burst_2(autojump_clock: trio.testing.MockClock) -> None:
    lim = limiter({"rate": 5, "burst": 2})
    start = trio.current_time()
    outcome: list[str] = []
    for _ in range(10):
        try:
            lim.admit(ALICE, "/", "t", trio.current_time())
            outcome.append("ok")
        except RateLimited as e:
            assert e.retry_after == pytest.approx(0.1)
            outcome.append("429")
        await trio.sleep(0.1)
    # t=0, 0.1 spend the burst (0.5 refilled between); then one call in two: 5/s is every 0.2 s.
    assert outcome == ["ok", "ok", "ok", "429", "ok", "429", "ok", "429", "ok", "429"]
    assert trio.current_time() - start == pytest.approx(1.0)


async def test_a_client_that_waits_retry_after_gets_through_at_the_rate(
        autojump_clock: trio.testing.MockClock) -> None:
    lim = limiter({"rate": 5, "burst": 5})
    start = trio.current_time()
    admitted_at: list[float] = []
    refusals = 0
    while len(admitted_at) < 10:
        try:
            lim.admit(ALICE, "/", "t", trio.current_time())
        except RateLimited as e:
            refusals += 1
            # Not a moment sooner: just before retry_after, it is still refused.
            refused(lim, ALICE, trio.current_time() + e.retry_after * 0.99)
            await trio.sleep(e.retry_after)
            continue
        admitted_at.append(trio.current_time() - start)
    assert admitted_at == pytest.approx([0, 0, 0, 0, 0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert refusals == 5  # each wait was exactly enough
    assert lim.statistics().admitted == 10


def test_concurrency_cap_and_release() -> None:
    lim = limiter({"concurrent": 2})
    a, b = lim.admit(ALICE, "/", "t", 0.0), lim.admit(ALICE, "/", "t", 0.0)
    e = refused(lim, ALICE, 0.0)
    assert (e.what, e.retry_after, e.rule) == ("concurrent", CONCURRENCY_RETRY, 0)
    assert lim.statistics().in_flight == 2
    a.release()
    a.release()  # idempotent: the second release frees nothing more
    assert lim.statistics().in_flight == 1
    c = lim.admit(ALICE, "/", "t", 0.0)
    refused(lim, ALICE, 0.0)
    b.release()
    c.release()
    with lim.admit(ALICE, "/", "t", 0.0), lim.admit(ALICE, "/", "t", 0.0):
        refused(lim, ALICE, 0.0)
    assert lim.statistics().in_flight == 0
    lim.admit(ALICE, "/", "t", 0.0)


def test_rate_and_concurrency_in_one_rule() -> None:
    lim = limiter({"rate": 1, "burst": 3, "concurrent": 1})
    ticket = lim.admit(ALICE, "/", "t", 0.0)
    assert refused(lim, ALICE, 0.0).what == "concurrent"
    ticket.release()
    lim.admit(ALICE, "/", "t", 0.0).release()
    lim.admit(ALICE, "/", "t", 0.0).release()
    e = refused(lim, ALICE, 0.0)
    assert e.what == "rate" and e.retry_after == pytest.approx(1.0)


def test_per_identity_gives_each_caller_a_bucket() -> None:
    lim = limiter({"rate": 1, "burst": 1})
    lim.admit(ALICE, "/", "t", 0.0)
    refused(lim, ALICE, 0.0)
    lim.admit(BOB, "/", "t", 0.0)
    # The same name with another kind of credential is another caller.
    lim.admit(Identity("alice", "jwt"), "/", "t", 0.0)
    assert lim.statistics().buckets == 3


def test_per_all_shares_one_bucket_and_one_concurrency_count() -> None:
    lim = limiter({"rate": 1, "burst": 2, "per": "all"}, {"concurrent": 1, "per": "all", "tools": ["slow"]})
    lim.admit(ALICE, "/", "t", 0.0)
    lim.admit(BOB, "/", "t", 0.0)
    assert refused(lim, LOCAL, 0.0).rule == 0
    ticket = lim.admit(ALICE, "/", "slow", 1.0)
    e = refused(lim, BOB, 2.0, name="slow")
    assert (e.rule, e.what) == (1, "concurrent")
    ticket.release()
    lim.admit(BOB, "/", "slow", 2.0)
    assert lim.statistics().buckets == 0  # shared buckets are not per-identity buckets


def test_which_rules_apply_by_who_route_and_tool() -> None:
    lim = limiter({"rate": 1, "burst": 1, "who": ["group:free"], "routes": ["/team-*"], "tools": ["*__search"]})
    free = Identity("f", "jwt", groups=frozenset({"free"}))
    paid = Identity("p", "jwt", groups=frozenset({"paid"}))
    lim.admit(free, "/team-a", "web__search", 0.0)
    refused(lim, free, 0.0, "/team-a", "web__search")
    for who, route, name in [(paid, "/team-a", "web__search"), (free, "/", "web__search"),
                             (free, "/team-a", "web__fetch"), (free, "/x/team-a", "web__search")]:
        for _ in range(3):
            lim.admit(who, route, name, 0.0)  # the rule does not apply: never limited
    # The same subject with other groups (a new token) is matched again, not served from the cache.
    lim.admit(Identity("f", "jwt"), "/team-a", "web__search", 0.0)
    refused(lim, free, 0.0, "/team-a", "web__search")


def test_all_or_nothing_a_concurrency_refusal_spends_no_tokens() -> None:
    lim = limiter({"rate": 10, "burst": 10}, {"concurrent": 1, "tools": ["slow"]})
    held = lim.admit(ALICE, "/", "slow", 0.0)  # 9 tokens left
    for _ in range(20):
        assert refused(lim, ALICE, 0.0, name="slow").rule == 1
    for _ in range(9):
        lim.admit(ALICE, "/", "fast", 0.0)  # the 20 refusals took none of the 9
    assert refused(lim, ALICE, 0.0, name="fast").rule == 0
    held.release()
    assert lim.statistics().refused == (1, 20)


def test_all_or_nothing_a_rate_refusal_takes_no_concurrency_slot() -> None:
    lim = limiter({"rate": 1, "burst": 1, "tools": ["slow"]}, {"concurrent": 1})
    lim.admit(ALICE, "/", "slow", 0.0).release()
    for _ in range(5):
        assert refused(lim, ALICE, 0.5, name="slow").rule == 0
    assert lim.statistics().in_flight == 0
    ticket = lim.admit(ALICE, "/", "other", 0.5)  # the slot is free: the refusals held none
    assert refused(lim, ALICE, 0.5, name="other").what == "concurrent"
    ticket.release()


def test_the_refusal_names_the_rule_that_holds_the_call_back_longest() -> None:
    lim = limiter({"rate": 10, "burst": 1}, {"rate": 0.1, "burst": 1}, {"rate": 1, "burst": 1})
    lim.admit(ALICE, "/", "t", 0.0)
    e = refused(lim, ALICE, 0.0)
    assert e.rule == 1 and e.retry_after == pytest.approx(10.0)
    assert "rate_limits[1]" in e.message and "0.1 calls per second" in e.message
    assert lim.statistics().refused == (0, 1, 0)  # a refused call is counted once


def test_a_flood_of_identities_is_bounded_and_cannot_reset_a_limit() -> None:
    lim = limiter({"rate": 1, "burst": 5}, max_buckets=100)
    for _ in range(5):
        lim.admit(ALICE, "/", "t", 0.0)
    # 5000 new callers in under a second: nobody's bucket is full again yet, so none can go.
    capacity = 0
    for i in range(5000):
        now = i * 0.0001
        try:
            lim.admit(Identity(f"flood-{i}", "key"), "/", "t", now)
        except RateLimited as flooded:
            assert flooded.what == "capacity" and flooded.retry_after > 0
            capacity += 1
        assert lim.statistics().buckets <= 100
    assert capacity == 5000 - 99
    e = refused(lim, ALICE, 0.6)  # alice's spent bucket survived the flood
    assert e.what == "rate" and e.retry_after == pytest.approx(0.4)
    # Later the flood's buckets are full again, equivalent to fresh ones: they make room for newcomers,
    # and so do the newcomers' own buckets a second after their call (10 new callers a second).
    for i in range(1000):
        lim.admit(Identity(f"late-{i}", "key"), "/", "t", 10.0 + i * 0.1)
    stats = lim.statistics()
    assert stats.buckets <= 100 and stats.evicted >= 900
    assert stats.cached <= 4096


def test_a_bucket_with_calls_in_flight_is_never_evicted() -> None:
    lim = limiter({"concurrent": 1}, max_buckets=2)
    a, b = lim.admit(ALICE, "/", "t", 0.0), lim.admit(BOB, "/", "t", 0.0)
    assert refused(lim, LOCAL, 0.0).what == "capacity"
    a.release()
    lim.admit(LOCAL, "/", "t", 0.0)  # alice's idle bucket made room
    refused(lim, BOB, 0.0)  # bob's (busy) one did not go: he is still at his cap
    b.release()
    assert lim.statistics().evicted == 1


def test_the_rule_cache_is_bounded() -> None:
    lim = limiter({"rate": 100}, rule_cache=8)
    for i in range(100):
        lim.admit(ALICE, "/", f"tool-{i}", 0.0)
    assert lim.statistics().cached == 8


def test_no_rules_admit_everything() -> None:
    lim = RateLimiter([])
    assert not lim.enabled
    tickets: list[Ticket] = [lim.admit(ALICE, "/", "t", 0.0) for _ in range(1000)]
    for t in tickets:
        t.release()
    assert lim.statistics().admitted == 1000 and lim.statistics().refused == ()


def test_a_clock_that_steps_back_refills_nothing() -> None:
    lim = limiter({"rate": 1, "burst": 1})
    lim.admit(ALICE, "/", "t", 100.0)
    refused(lim, ALICE, 50.0)
    refused(lim, ALICE, 100.5)
    lim.admit(ALICE, "/", "t", 101.0)


def test_rules_from_a_parsed_config() -> None:
    config = parse_config({"servers": {"s": {"command": "x"}},
                           "rate_limits": [{"rate": 2, "who": ["group:free"]}, {"concurrent": 1, "per": "all"}]})
    lim = RateLimiter(config.rate_limits)
    free = Identity("f", "jwt", groups=frozenset({"free"}))
    lim.admit(free, "/", "t", 0.0).release()
    lim.admit(free, "/", "t", 0.0).release()
    assert refused(lim, free, 0.0).rule == 0
    held = lim.admit(ALICE, "/", "t", 0.0)
    assert refused(lim, BOB, 0.0).rule == 1
    held.release()


@pytest.mark.parametrize(("rule", "message"), [
    (RateLimit(), r"rate_limits\[0\]: set rate or concurrent"),
    (RateLimit(rate=0), r"rate_limits\[0\].rate: must be a finite number above 0"),
    (RateLimit(rate=float("nan")), r"rate_limits\[0\].rate"),
    (RateLimit(rate=float("inf")), r"rate_limits\[0\].rate"),
])
def test_bad_rules_are_refused_with_their_index(rule: RateLimit, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RateLimiter([rule])
