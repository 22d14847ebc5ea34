"""Rotating an API key (a real SQLite database, migrated): a new secret under the same name and
key id, so the same client (rate limit, Idempotency-Key scope, types); the secret before is
accepted until the grace period ends, then refused, whether or not the keys were read again."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from sqlalchemy.engine import Engine

from pipeline.database import build_engine, migrate
from pipeline.settings import DatabaseSettings, GatewaySettings
from producers.gateway.admission import Admission
from producers.gateway.auth import Authorizer
from producers.gateway.key_table import (
    KeyRevoked,
    NoSuchKey,
    add_key,
    load_keys,
    revoke_key,
    rotate_key,
)
from producers.gateway.keys import KeyRing


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = build_engine(DatabaseSettings(url=f"sqlite:///{tmp_path}/keys.db"), pool_size=1)
    migrate(engine)
    yield engine
    engine.dispose()


def ring(engine: Engine) -> KeyRing:
    return KeyRing(load_keys(engine))


def test_a_rotated_key_keeps_its_name_and_id_and_both_secrets_work_during_the_grace(engine):
    old = add_key(engine, "shop", ["place_order"])

    rotated = rotate_key(engine, "shop", timedelta(hours=24))

    keys = ring(engine)
    assert rotated.key != old
    assert rotated.key[:21] == old[:21]  # pgk_<the same key id>_
    assert keys.authenticate(rotated.key) is not None
    assert keys.authenticate(rotated.key).name == "shop"  # type: ignore[union-attr]
    assert keys.authenticate(old) == keys.authenticate(rotated.key)
    [record] = load_keys(engine)
    assert rotated.previous_until == record.previous_until
    assert record.rotated_at is not None
    assert record.previous_until is not None
    assert record.previous_until - record.rotated_at == timedelta(hours=24)
    assert rotated.cut_short is None


def test_the_secret_before_is_refused_once_its_grace_ends_without_a_new_read(engine):
    old = add_key(engine, "shop", ["place_order"])
    rotated = rotate_key(engine, "shop", timedelta(hours=1))
    keys = ring(engine)  # read once, before the end of the grace period
    assert rotated.previous_until is not None
    end = rotated.previous_until

    assert keys.authenticate(old, now=end - timedelta(seconds=1)) is not None
    assert keys.authenticate(old, now=end) is None
    assert keys.authenticate(rotated.key, now=end + timedelta(days=400)) is not None


def test_keep_old_for_zero_refuses_the_secret_before_at_once(engine):
    old = add_key(engine, "shop", ["place_order"])

    rotated = rotate_key(engine, "shop", timedelta(0))

    assert rotated.previous_until is None
    assert ring(engine).authenticate(old) is None
    assert ring(engine).authenticate(rotated.key) is not None
    [record] = load_keys(engine)
    assert record.previous_secret_sha256 is None


def test_a_second_rotation_ends_the_first_ones_grace(engine):
    first = add_key(engine, "shop", ["place_order"])
    second = rotate_key(engine, "shop", timedelta(hours=24))

    third = rotate_key(engine, "shop", timedelta(hours=1))

    keys = ring(engine)
    assert keys.authenticate(first) is None  # only one secret before is kept
    assert keys.authenticate(second.key) is not None
    assert keys.authenticate(third.key) is not None
    assert third.cut_short == second.previous_until


def test_revoking_a_rotated_key_refuses_both_secrets(engine):
    old = add_key(engine, "shop", ["place_order"])
    rotated = rotate_key(engine, "shop", timedelta(hours=24))

    revoke_key(engine, "shop")

    keys = ring(engine)
    assert keys.authenticate(old) is None
    assert keys.authenticate(rotated.key) is None


def test_a_revoked_or_unknown_key_is_not_rotated(engine):
    add_key(engine, "shop", ["place_order"])
    revoke_key(engine, "shop")

    with pytest.raises(KeyRevoked, match="'shop' is revoked: a revoked key is not rotated"):
        rotate_key(engine, "shop", timedelta(hours=1))
    with pytest.raises(NoSuchKey):
        rotate_key(engine, "other", timedelta(hours=1))


def test_the_old_and_the_new_key_are_one_client_for_limits_and_idempotency(engine):
    # A retry spanning the switch with the same Idempotency-Key: same client, same scope.
    old = add_key(engine, "shop", ["place_order"])
    new = rotate_key(engine, "shop", timedelta(hours=24)).key
    gate = Admission(
        Authorizer(ring(engine)), GatewaySettings(rate_per_s=1, burst=2), clock=lambda: 0.0
    )

    def client(key: str) -> str:
        headers = CIMultiDictProxy(CIMultiDict([("Authorization", f"Bearer {key}")]))
        return gate.admit(headers, "192.0.2.7").client

    assert client(old) == client(new) == "shop"
    assert gate.limiter.acquire("shop").allowed is False  # one bucket: both took from it


def test_no_repr_of_a_rotated_record_shows_a_digest(engine):
    add_key(engine, "shop", ["place_order"])
    rotate_key(engine, "shop", timedelta(hours=24))
    [record] = load_keys(engine)

    assert record.previous_secret_sha256 is not None
    assert record.previous_secret_sha256 not in repr(record)
    assert record.secret_sha256 not in repr(record)
