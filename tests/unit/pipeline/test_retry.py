"""Retry policy: exponential growth, the cap, jitter within its bounds, when attempts run out."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from pipeline.retry import RetryPolicy


def test_delay_grows_by_the_multiplier_after_each_failure() -> None:
    policy = RetryPolicy(initial_backoff_s=0.5, multiplier=3, max_backoff_s=100, jitter=0)

    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.5, 4.5, 13.5]


def test_delay_is_capped_at_max_backoff() -> None:
    policy = RetryPolicy(initial_backoff_s=1, multiplier=2, max_backoff_s=5, jitter=0)

    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 5, 5]


def test_delay_of_a_very_late_failure_is_the_cap() -> None:
    policy = RetryPolicy(initial_backoff_s=1, multiplier=2, max_backoff_s=5, jitter=0)

    assert policy.delay(1000) == 5


def test_delay_of_a_huge_multiplier_is_the_cap_not_an_overflow() -> None:
    policy = RetryPolicy(initial_backoff_s=1, multiplier=1e6, max_backoff_s=60, jitter=0)

    assert policy.delay(100) == 60


def test_jittered_delay_stays_within_the_jitter_bounds() -> None:
    policy = RetryPolicy(initial_backoff_s=1, multiplier=2, max_backoff_s=100, jitter=0.25)
    rng = random.Random(7)

    for failed in (1, 2, 3, 4):
        base = 2.0 ** (failed - 1)
        delays = [policy.delay(failed, rng) for _ in range(200)]
        assert all(base * 0.75 <= delay <= base * 1.25 for delay in delays)
        assert len(set(delays)) > 1  # it is spread, not one value


def test_jittered_delay_never_exceeds_the_cap() -> None:
    policy = RetryPolicy(initial_backoff_s=1, multiplier=2, max_backoff_s=4, jitter=0.5)
    rng = random.Random(1)

    delays = [policy.delay(10, rng) for _ in range(200)]

    assert all(2 <= delay <= 4 for delay in delays)


def test_the_same_seed_gives_the_same_delays() -> None:
    policy = RetryPolicy(jitter=0.3)

    first = [policy.delay(n, random.Random(42)) for n in (1, 2, 3)]
    again = [policy.delay(n, random.Random(42)) for n in (1, 2, 3)]

    assert first == again


def test_zero_backoff_is_never_jittered() -> None:
    policy = RetryPolicy(initial_backoff_s=0, max_backoff_s=0, jitter=1)

    assert policy.delay(3, random.Random(0)) == 0


@pytest.mark.parametrize(("attempts", "exhausted"), [(0, False), (2, False), (3, True), (4, True)])
def test_exhausted_once_max_attempts_failed(attempts: int, exhausted: bool) -> None:
    assert RetryPolicy(max_attempts=3).exhausted(attempts) is exhausted


def test_one_attempt_means_no_retry() -> None:
    assert RetryPolicy(max_attempts=1).exhausted(1)


@pytest.mark.parametrize("failed", [0, -1])
def test_delay_before_any_failure_is_an_error(failed: int) -> None:
    with pytest.raises(ValueError, match="failed_attempts must be >= 1"):
        RetryPolicy().delay(failed)


@pytest.mark.parametrize(
    "options",
    [
        {"max_attempts": 0},
        {"initial_backoff_s": -1},
        {"multiplier": 0.5},
        {"jitter": 1.5},
        {"jitter": -0.1},
        {"unknown": 1},
    ],
)
def test_invalid_options_are_rejected(options: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RetryPolicy(**options)  # type: ignore[arg-type]


def test_initial_backoff_above_the_cap_is_rejected() -> None:
    with pytest.raises(ValidationError, match="initial_backoff_s must not exceed max_backoff_s"):
        RetryPolicy(initial_backoff_s=5, max_backoff_s=1)


def test_policy_is_frozen() -> None:
    policy = RetryPolicy()

    with pytest.raises(ValidationError):
        policy.max_attempts = 9  # type: ignore[misc]
