"""The authorisation decision: open without keys (and without JWT), 401 without a valid key or
token, 403 for a type the key or token may not send; the key refresher's open-mode warning and
its refresh."""

from __future__ import annotations

import asyncio
import logging
import time

import jwt
import pytest
from sqlalchemy.exc import DBAPIError

from pipeline.errors import PipelineError
from pipeline.settings import JwtSettings
from producers.gateway.answers import ErrorAnswer
from producers.gateway.auth import Authorizer, KeyRefresher
from producers.gateway.keys import ApiKey, KeyRing
from producers.gateway.tokens import TokenVerifier
from tests.support.api_keys import shop_key

MADE, SHOP = shop_key()


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


def test_a_refresher_that_does_not_announce_uses_the_keys_and_says_nothing_of_them(caplog):
    # All but one worker of `pipeline gateway --workers`: the open gateway was said by each.
    caplog.set_level(logging.INFO, logger="producers.gateway")
    authorizer = Authorizer()
    refresher = KeyRefresher(authorizer, lambda: [], announce=False)

    asyncio.run(refresher.first())
    assert authorizer.open
    refresher.refresh([SHOP])
    assert authorizer.authenticate(f"Bearer {MADE.key}") == SHOP
    refresher.refresh([])
    assert authorizer.open

    assert caplog.records == []


JWT_SECRET = "a-shared-secret-of-at-least-32-bytes"
JWT = JwtSettings(
    issuer="https://id.example.com/",
    audience="pipeline-gateway",
    algorithms=["HS256"],
    secret=JWT_SECRET,
)


def token(**changes: object) -> str:
    now = int(time.time())
    claims = {
        "iss": JWT.issuer,
        "aud": JWT.audience,
        "sub": "billing",
        "exp": now + 60,
        "scope": "requests:place_order",
        **changes,
    }
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def test_with_jwt_configured_and_no_key_the_gateway_is_not_open():
    authorizer = Authorizer(KeyRing(), tokens=TokenVerifier(JWT, JWT_SECRET))

    assert not authorizer.open
    with pytest.raises(ErrorAnswer) as refused:
        authorizer.authenticate(None)
    assert refused.value.status == 401
    assert "Bearer <key or JWT>" in refused.value.message


def test_a_valid_jwt_is_its_client_and_api_keys_still_work_beside_it():
    authorizer = Authorizer(KeyRing([SHOP]), tokens=TokenVerifier(JWT, JWT_SECRET))

    client = authorizer.authenticate(f"Bearer {token()}")

    assert client is not None and client.name == "jwt:billing"
    Authorizer.authorise(client, "place_order")
    assert authorizer.authenticate(f"Bearer {MADE.key}") == SHOP


def test_a_rejected_jwt_is_401_saying_why_without_the_token():
    authorizer = Authorizer(KeyRing(), tokens=TokenVerifier(JWT, JWT_SECRET))
    expired = token(exp=int(time.time()) - 3600)

    with pytest.raises(ErrorAnswer) as refused:
        authorizer.authenticate(f"Bearer {expired}")

    assert refused.value.status == 401
    assert refused.value.headers["WWW-Authenticate"].startswith("Bearer")
    assert refused.value.message == "the token has expired"
    assert expired not in refused.value.body().decode()


def test_a_valid_jwt_for_another_type_is_403_naming_its_subject_and_what_it_may_send():
    client = TokenVerifier(JWT, JWT_SECRET).verify(token())

    with pytest.raises(ErrorAnswer) as refused:
        Authorizer.authorise(client, "cancel_order")

    assert refused.value.status == 403
    assert refused.value.message == (
        "the token of 'billing' may not send 'cancel_order' requests; it may send: place_order"
    )


def test_with_jwt_configured_no_key_is_no_open_warning(caplog):
    caplog.set_level(logging.INFO, logger="producers.gateway")
    authorizer = Authorizer(tokens=TokenVerifier(JWT, JWT_SECRET))

    asyncio.run(KeyRefresher(authorizer, lambda: []).first())
    KeyRefresher(authorizer, lambda: []).refresh([])

    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "JWTs of https://id.example.com/" in caplog.records[0].getMessage()


def test_a_read_on_a_connection_the_database_dropped_is_run_once_more_and_warns_nothing(caplog):
    caplog.set_level(logging.INFO, logger="producers.gateway")
    calls: list[int] = []

    def load() -> list[ApiKey]:
        calls.append(1)
        if len(calls) == 2:  # the first refresh meets the dropped connection
            raise DBAPIError("SELECT", {}, OSError("terminating"), connection_invalidated=True)
        return [SHOP]

    async def scenario() -> None:
        refresher = KeyRefresher(Authorizer(), load, refresh_s=0.01)
        await refresher.first()
        task = asyncio.create_task(refresher.run())
        await asyncio.sleep(0.1)
        task.cancel()

    asyncio.run(scenario())

    assert len(calls) > 3
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
