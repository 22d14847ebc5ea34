"""API keys: the format, the digest check, the bearer header, and the key ring."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from producers.gateway.keys import (
    ApiKey,
    KeyRing,
    bearer_token,
    name_problem,
    new_key,
    secret_digest,
)

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def record(made, name="shop", types=("place_order",), revoked=False) -> ApiKey:
    return ApiKey(
        name=name,
        key_id=made.key_id,
        secret_sha256=made.secret_sha256,
        request_types=frozenset(types),
        created_at=NOW,
        revoked_at=NOW if revoked else None,
    )


def test_a_new_key_is_its_id_and_a_256_bit_secret_whose_digest_is_kept():
    made = new_key()
    prefix, key_id, secret = made.key[:4], made.key[4:20], made.key[21:]

    assert (prefix, key_id, made.key[20]) == ("pgk_", made.key_id, "_")
    assert len(secret) == 43  # token_urlsafe(32): 32 random bytes
    assert made.secret_sha256 == secret_digest(secret)
    assert new_key().key != made.key


def test_the_repr_of_a_new_key_and_of_a_record_shows_neither_the_key_nor_its_digest():
    made = new_key()

    for shown in (repr(made), repr(record(made)), repr(KeyRing([record(made)]))):
        assert made.key not in shown
        assert made.secret_sha256 not in shown
        assert made.key[21:] not in shown


def test_the_ring_authenticates_the_right_key_only():
    made, other = new_key(), new_key()
    ring = KeyRing([record(made)])

    assert ring.authenticate(made.key) == record(made)
    assert ring.authenticate(other.key) is None  # unknown key id
    tampered = made.key[:-1] + ("A" if made.key[-1] != "A" else "B")
    assert ring.authenticate(tampered) is None  # right id, wrong secret
    assert ring.authenticate(made.key[:20]) is None
    assert ring.authenticate("not-a-key") is None


def test_a_revoked_key_is_not_authenticated():
    made = new_key()

    assert KeyRing([record(made, revoked=True)]).authenticate(made.key) is None


def test_a_ring_without_keys_is_open_and_one_with_only_revoked_keys_is_not():
    assert KeyRing().open
    assert not KeyRing([record(new_key(), revoked=True)]).open


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("  Bearer   abc  ", "abc"),
        (None, None),
        ("Basic abc", None),
        ("Bearer", None),
        ("Bearer a b", None),
    ],
)
def test_bearer_token_takes_the_token_of_a_bearer_header_only(header, token):
    assert bearer_token(header) == token


@pytest.mark.parametrize("name", ["shop", "shop-1.eu_west", "A"])
def test_good_key_names(name):
    assert name_problem(name) is None


@pytest.mark.parametrize("name", ["", "-shop", "with space", "x" * 129, "naïve"])
def test_bad_key_names(name):
    assert name_problem(name) is not None
