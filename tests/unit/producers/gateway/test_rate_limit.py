"""The token bucket per client: pure, driven by a clock the test moves by hand."""

from __future__ import annotations

import pytest

from producers.gateway.rate_limit import RateDecision, TokenBucketLimiter


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_a_new_client_may_spend_its_whole_burst_at_once_then_is_refused():
    limiter = TokenBucketLimiter(rate_per_s=10, burst=3, clock=FakeClock())

    decisions = [limiter.acquire("a") for _ in range(4)]

    assert [d.allowed for d in decisions] == [True, True, True, False]


def test_a_refusal_says_how_long_until_the_next_token():
    limiter = TokenBucketLimiter(rate_per_s=4, burst=1, clock=FakeClock())
    limiter.acquire("a")

    refused = limiter.acquire("a")

    assert refused == RateDecision(allowed=False, retry_after_s=0.25)


def test_retry_after_header_is_whole_seconds_rounded_up_and_at_least_one():
    assert RateDecision(False, 0.25).retry_after_header == "1"
    assert RateDecision(False, 1.0).retry_after_header == "1"
    assert RateDecision(False, 1.01).retry_after_header == "2"
    assert RateDecision(False, 0.0).retry_after_header == "1"


def test_tokens_come_back_at_the_configured_rate():
    clock = FakeClock()
    limiter = TokenBucketLimiter(rate_per_s=2, burst=1, clock=clock)
    assert limiter.acquire("a").allowed

    clock.advance(0.4)
    assert not limiter.acquire("a").allowed
    clock.advance(0.1)
    assert limiter.acquire("a").allowed


def test_a_bucket_never_holds_more_than_the_burst():
    clock = FakeClock()
    limiter = TokenBucketLimiter(rate_per_s=100, burst=2, clock=clock)
    limiter.acquire("a")

    clock.advance(3600)

    assert [limiter.acquire("a").allowed for _ in range(3)] == [True, True, False]


def test_clients_have_buckets_of_their_own():
    limiter = TokenBucketLimiter(rate_per_s=1, burst=1, clock=FakeClock())
    assert limiter.acquire("a").allowed
    assert not limiter.acquire("a").allowed

    assert limiter.acquire("b").allowed


def test_a_clock_that_steps_back_refills_nothing():
    clock = FakeClock()
    limiter = TokenBucketLimiter(rate_per_s=1, burst=1, clock=clock)
    limiter.acquire("a")

    clock.advance(-50)

    assert not limiter.acquire("a").allowed


def test_a_client_idle_until_its_bucket_is_full_is_forgotten():
    clock = FakeClock()
    limiter = TokenBucketLimiter(rate_per_s=10, burst=5, clock=clock)  # full again after 0.5 s
    limiter.acquire("idle")
    clock.advance(0.2)
    limiter.acquire("busy")
    assert len(limiter) == 2

    clock.advance(0.3)  # "idle" untouched for 0.5 s, "busy" for 0.3 s
    limiter.acquire("busy")

    assert len(limiter) == 1


def test_forgetting_an_idle_client_does_not_change_its_answers():
    clock = FakeClock()
    limiter = TokenBucketLimiter(rate_per_s=1, burst=2, clock=clock)
    limiter.acquire("a")
    limiter.acquire("a")
    clock.advance(2.0)  # full again, so forgotten on the next call
    limiter.acquire("other")

    assert [limiter.acquire("a").allowed for _ in range(3)] == [True, True, False]


def test_past_max_clients_the_least_recently_seen_is_forgotten():
    limiter = TokenBucketLimiter(rate_per_s=1, burst=1, clock=FakeClock(), max_clients=2)
    limiter.acquire("first")
    limiter.acquire("second")
    limiter.acquire("first")  # now "second" is the least recently seen

    limiter.acquire("third")

    assert len(limiter) == 2
    assert not limiter.acquire("first").allowed  # still remembered, still empty
    assert limiter.acquire("second").allowed  # forgotten: a full bucket again


@pytest.mark.parametrize(
    ("rate", "burst", "max_clients", "message"),
    [
        (0, 1, 10, "rate_per_s must be > 0"),
        (1, 0, 10, "burst must be >= 1"),
        (1, 1, 0, "max_clients must be >= 1"),
    ],
)
def test_invalid_limits_are_refused_when_made(rate, burst, max_clients, message):
    with pytest.raises(ValueError, match=message):
        TokenBucketLimiter(rate_per_s=rate, burst=burst, max_clients=max_clients)
