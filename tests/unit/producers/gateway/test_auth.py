"""The authorisation decision: open without keys, 401 without a valid key, 403 for a type the
key may not send; the key refresher's open-mode warning and its refresh."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import pytest

from pipeline.errors import PipelineError
from producers.gateway.answers import ErrorAnswer
from producers.gateway.auth import Authorizer, KeyRefresher
from producers.gateway.keys import ApiKey, KeyRing, new_key

MADE = new_key()
SHOP = ApiKey(
    name="shop",
    key_id=MADE.key_id,
    secret_sha256=MADE.secret_sha256,
    request_types=frozenset({"place_order"}),
    created_at=datetime(2025, 1, 1, tzinfo=UTC),
)


def test_an_open_gateway_lets_anything_in_as_no_key():
    authorizer = Authorizer(KeyRing())

    assert authorizer.authenticate(None) is None
    assert authorizer.authenticate("Bearer anything") is None
    Authorizer.authorise(None, "cancel_order")  # no 403


@pytest.mark.parametrize("header", [None, "Basic dXNlcjpwdw==", "Bearer pgk_nope"])
def test_without_a_valid_key_the_answer_is_401_with_a_bearer_challenge(header):
    with pytest.raises(ErrorAnswer) as refused:
        Authorizer(KeyRing([SHOP])).authenticate(header)

    assert refused.value.status == 401
    assert refused.value.code == "unauthorized"
    assert refused.value.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_valid_key_is_its_record_and_the_401_never_echoes_a_key():
    authorizer = Authorizer(KeyRing([SHOP]))

    assert authorizer.authenticate(f"Bearer {MADE.key}") == SHOP
    wrong = MADE.key[:-3] + "xyz"
    with pytest.raises(ErrorAnswer) as refused:
        authorizer.authenticate(f"Bearer {wrong}")
    assert wrong not in refused.value.body().decode()
    assert MADE.key_id not in refused.value.body().decode()


def test_a_type_the_key_may_not_send_is_403_naming_what_it_may_send():
    Authorizer.authorise(SHOP, "place_order")
    with pytest.raises(ErrorAnswer) as refused:
        Authorizer.authorise(SHOP, "cancel_order")

    assert refused.value.status == 403
    assert refused.value.code == "forbidden"
    assert "place_order" in refused.value.message


def test_the_first_read_warns_once_when_open_and_fails_loudly(caplog):
    caplog.set_level(logging.INFO, logger="producers.gateway")
    authorizer = Authorizer()
    asyncio.run(KeyRefresher(authorizer, lambda: []).first())

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "open" in warnings[0].getMessage()

    def broken() -> list[ApiKey]:
        raise OSError("database away")

    with pytest.raises(PipelineError, match="cannot read the API keys: database away"):
        asyncio.run(KeyRefresher(Authorizer(), broken).first())


def test_a_refresh_replaces_the_keys_and_warns_when_the_gateway_becomes_open(caplog):
    caplog.set_level(logging.WARNING, logger="producers.gateway")
    authorizer = Authorizer()
    refresher = KeyRefresher(authorizer, lambda: [])

    refresher.refresh([SHOP])
    assert authorizer.authenticate(f"Bearer {MADE.key}") == SHOP
    assert caplog.records == []

    refresher.refresh([])
    assert authorizer.open
    assert ["open" in r.getMessage() for r in caplog.records] == [True]
