"""A bounded fail-open: while the API keys cannot be read, the ones read last are used for at most
``max_stale_s`` after that read; past it a request with a key is 503 ``keys_unavailable`` (a key
revoked meanwhile is refused within the bound, not for the whole outage), the log says so at the
start, at the bound and every minute, and once the keys are read again all is as before.

Time is a fake monotonic clock, and each read is :meth:`KeyRefresher.read_again`, called by the
test: no sleeps."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import jwt
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import ValidationError

from pipeline.settings import GatewaySettings, JwtSettings
from producers.gateway.admission import Admission
from producers.gateway.answers import ErrorAnswer
from producers.gateway.auth import Authorizer, KeyRefresher
from producers.gateway.keys import ApiKey, KeyRing
from producers.gateway.tokens import TokenVerifier
from tests.support.api_keys import shop_key

MADE, SHOP = shop_key()
REVOKED = dataclasses.replace(SHOP, revoked_at=datetime(2025, 1, 2, tzinfo=UTC))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Database:
    """The keys' table as the gateway reads it: its rows, or an error while it is ``down``."""

    def __init__(self, *keys: ApiKey) -> None:
        self.keys = list(keys)
        self.down = False

    def __call__(self) -> list[ApiKey]:
        if self.down:
            raise OSError('connection refused: is the server running on host "db"?')
        return self.keys


def started(
    database: Database,
    clock: Clock,
    *,
    tokens: TokenVerifier | None = None,
    on_read: Callable[[float], None] | None = None,
) -> KeyRefresher:
    refresher = KeyRefresher(
        Authorizer(tokens=tokens, clock=clock),
        database,
        refresh_s=5.0,
        max_stale_s=60.0,
        on_read=on_read,
    )
    asyncio.run(refresher.first())
    return refresher


def read_at(refresher: KeyRefresher, clock: Clock, now: float) -> None:
    clock.now = now
    asyncio.run(refresher.read_again())


def refusal(authorizer: Authorizer, header: str | None) -> ErrorAnswer:
    with pytest.raises(ErrorAnswer) as refused:
        authorizer.authenticate(header)
    return refused.value


def test_a_key_revoked_while_the_database_is_away_is_refused_once_the_bound_is_passed():
    # The review: revoke, then the database stops; the revoked key was taken (202) for the
    # whole 70 s outage.
    clock, database = Clock(), Database(SHOP)
    refresher = started(database, clock)
    authorizer = refresher.authorizer
    database.keys, database.down = [REVOKED], True  # revoked, but never read

    read_at(refresher, clock, 1005.0)
    read_at(refresher, clock, 1060.0)
    assert authorizer.authenticate(f"Bearer {MADE.key}") == SHOP  # within the bound: known keys
    assert authorizer.keys_problem() is None

    read_at(refresher, clock, 1060.5)
    refused = refusal(authorizer, f"Bearer {MADE.key}")

    assert (refused.status, refused.code) == (503, "keys_unavailable")
    assert refused.headers == {"Retry-After": "5"}
    assert refused.message == (
        "the API keys could not be read for 60 s, longer than PIPELINE_GATEWAY__KEYS_MAX_STALE_S "
        "(60 s): requests with an API key are refused until they are read again"
    )  # the database's error, which may name its host, is for the operator (healthz, log)
    assert authorizer.keys_problem() == (
        "the API keys could not be read for 60 s (connection refused: is the server running on "
        'host "db"?), longer than PIPELINE_GATEWAY__KEYS_MAX_STALE_S (60 s): requests with an '
        "API key are refused until they are read again"
    )
    assert MADE.key not in refused.body().decode()
    assert MADE.key_id not in refused.body().decode()


def test_the_bound_counts_from_the_last_read_even_when_no_read_ends():
    # A read that hangs (a database that does not answer) must not keep the keys for ever: the
    # age is checked at each request, not by the reads.
    clock = Clock()
    authorizer = started(Database(SHOP), clock).authorizer

    clock.now = 1061.0

    assert refusal(authorizer, f"Bearer {MADE.key}").code == "keys_unavailable"
    assert authorizer.keys_problem() is not None


def test_once_the_keys_are_read_again_they_decide_again():
    clock, database = Clock(), Database(SHOP)
    refresher = started(database, clock)
    database.down = True
    read_at(refresher, clock, 1100.0)
    assert refusal(refresher.authorizer, f"Bearer {MADE.key}").code == "keys_unavailable"

    database.down, database.keys = False, [REVOKED]
    read_at(refresher, clock, 1105.0)

    assert refresher.authorizer.keys_problem() is None
    assert refusal(refresher.authorizer, f"Bearer {MADE.key}").status == 401  # now known revoked


def test_while_stale_a_jwt_is_still_verified_and_no_key_is_still_401():
    secret = "a-shared-secret-of-at-least-32-bytes"
    settings = JwtSettings(
        issuer="https://id.example.com/", audience="gw", algorithms=["HS256"], secret=secret
    )
    token = jwt.encode(
        {"iss": settings.issuer, "aud": "gw", "sub": "billing", "exp": int(time.time()) + 60},
        secret,
        algorithm="HS256",
    )
    clock = Clock()
    authorizer = started(Database(SHOP), clock, tokens=TokenVerifier(settings, secret)).authorizer
    clock.now = 2000.0

    client = authorizer.authenticate(f"Bearer {token}")

    assert client is not None and client.name == "jwt:billing"  # needs no database
    assert refusal(authorizer, None).status == 401  # no keys table makes a missing key valid
    assert refusal(authorizer, "Bearer pgk_nope").status == 401  # nor a malformed one
    assert refusal(authorizer, f"Bearer {MADE.key}").status == 503


def test_a_gateway_the_keys_left_open_refuses_everything_once_they_are_stale():
    # A first key added while the gateway cannot read them closes it: past the bound it no
    # longer knows it is open.
    clock, database = Clock(), Database()
    authorizer = started(database, clock).authorizer
    assert authorizer.open and authorizer.authenticate(None) is None

    clock.now = 1061.0

    assert not authorizer.open
    refused = refusal(authorizer, None)
    assert refused.code == "keys_unavailable"
    assert refused.message.endswith(  # not "requests with an API key": this one had none
        "(60 s): every request is refused (the gateway had no key: a first one may have been "
        "added since) until they are read again"
    )
    assert authorizer.keys_open  # what the keys read last said, for the announcements


def test_a_stale_refusal_takes_no_token_of_the_address_bucket_for_bad_credentials():
    # Requests with (likely valid) keys refused for the database: 503 each time, never turned
    # into 429 "too many requests without valid credentials".
    clock = Clock()
    authorizer = started(Database(SHOP), clock).authorizer
    gate = Admission(authorizer, GatewaySettings(rate_per_s=1, burst=1), clock=lambda: 0.0)
    key = CIMultiDictProxy(CIMultiDict([("Authorization", f"Bearer {MADE.key}")]))
    clock.now = 1061.0

    answers = []
    for _ in range(3):
        with pytest.raises(ErrorAnswer) as refused:
            gate.admit(key, "192.0.2.7")
        answers.append(refused.value.status)

    assert answers == [503, 503, 503]


def test_the_log_says_it_at_the_first_failure_at_the_bound_every_minute_and_when_read_again(
    caplog: pytest.LogCaptureFixture,
):
    caplog.set_level(logging.INFO, logger="producers.gateway")
    clock, database = Clock(), Database(SHOP)
    refresher = started(database, clock)
    caplog.clear()
    database.down = True

    said: list[tuple[float, str]] = []
    for now in range(1005, 1200, 5):  # a read every 5 s for over three minutes
        before = len(caplog.records)
        read_at(refresher, clock, float(now))
        said += [(now, r.getMessage()) for r in caplog.records[before:]]
    database.down = False
    read_at(refresher, clock, 1200.0)

    assert [r.levelname for r in caplog.records] == ["WARNING"] * 4 + ["INFO"]
    assert [now for now, _ in said] == [1005, 1065, 1125, 1185]
    assert said[0][1] == (
        'cannot read the API keys (connection refused: is the server running on host "db"?): '
        "the ones read 5 s ago are used for 55 s more (PIPELINE_GATEWAY__KEYS_MAX_STALE_S, "
        "60 s), then requests with an API key are refused until they are read again"
    )
    assert said[1][1].startswith(
        'cannot read the API keys (connection refused: is the server running on host "db"?), '
        "read last 65 s ago: past PIPELINE_GATEWAY__KEYS_MAX_STALE_S (60 s), requests with an "
        "API key are refused (503 keys_unavailable) and GET /healthz answers 503"
    )
    assert "read last 185 s ago" in said[3][1]
    assert caplog.records[-1].getMessage() == (
        "the API keys are read again, after 195 s without: requests with an API key are taken again"
    )
    assert all(MADE.key_id not in r.getMessage() for r in caplog.records)


def test_every_read_that_succeeds_is_given_to_the_metric_with_the_wall_clock_time():
    clock, database = Clock(), Database(SHOP)
    seen: list[float] = []
    before = time.time()
    refresher = started(database, clock, on_read=seen.append)
    database.down = True
    read_at(refresher, clock, 1005.0)
    database.down = False
    read_at(refresher, clock, 1010.0)

    assert len(seen) == 2  # the first read and the last; not the failed one
    assert before <= seen[0] <= seen[1] <= time.time()


def test_the_bound_must_exceed_the_refresh_interval():
    with pytest.raises(ValueError, match="max_stale_s must be more than refresh_s"):
        KeyRefresher(Authorizer(), Database(), refresh_s=5.0, max_stale_s=5.0)
    bound = r"keys_max_stale_s \(20 s\) must be more than key_refresh_s \(30 s\)"
    with pytest.raises(ValidationError, match=bound):
        GatewaySettings(key_refresh_s=30, keys_max_stale_s=20)
    assert GatewaySettings().keys_max_stale_s == 60.0


def test_keys_given_without_a_refresher_never_go_stale():
    authorizer = Authorizer(KeyRing([SHOP]), clock=Clock())

    assert authorizer.keys_problem() is None
    assert authorizer.authenticate(f"Bearer {MADE.key}") == SHOP
