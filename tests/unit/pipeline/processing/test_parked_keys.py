"""Parked keys: parking, letting go, counting and looking up many at once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.engine import Connection, Engine

from pipeline.processing import parked_keys
from tests.support.parking import GROUP, park, parked, plans_of_parked_keys

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(database: Engine) -> Engine:
    return database


def test_a_key_never_parked_is_not_parked(engine: Engine) -> None:
    with engine.connect() as connection:
        assert parked(connection) is None


def test_park_key_records_the_event_reason_and_time(engine: Engine) -> None:
    with engine.begin() as connection:
        park(connection, now=T0)

    with engine.connect() as connection:
        found = parked(connection)
    assert found is not None
    assert (found.event_id, found.reason, found.redrive_id) == (
        "e1",
        "retries_exhausted: boom",
        None,
    )
    assert found.parked_at.replace(tzinfo=UTC) == T0


def test_park_is_per_group_topic_and_key(engine: Engine) -> None:
    with engine.begin() as connection:
        park(connection)

    with engine.connect() as connection:
        assert parked(connection, b"k2") is None
        assert (
            parked_keys.parked_key(
                connection, consumer_group="billing", topic="requests.orders", key=b"k1"
            )
            is None
        )
        assert (
            parked_keys.parked_key(connection, consumer_group=GROUP, topic="other", key=b"k1")
            is None
        )


def test_re_park_replaces_the_park_with_the_redrive_that_failed(engine: Engine) -> None:
    with engine.begin() as connection:
        park(connection)
    with engine.begin() as connection:
        park(connection, event_id="e1", reason="rejected: still bad", redrive_id="r-1")

    with engine.connect() as connection:
        found = parked(connection)
        assert parked_keys.count_parked(connection, consumer_group=GROUP) == 1
    assert found is not None
    assert (found.reason, found.redrive_id) == ("rejected: still bad", "r-1")


def test_unpark_key_lets_the_key_go_and_says_whether_it_was_parked(engine: Engine) -> None:
    with engine.begin() as connection:
        park(connection)

    with engine.begin() as connection:
        assert parked_keys.unpark_key(
            connection, consumer_group=GROUP, topic="requests.orders", key=b"k1"
        )
        assert not parked_keys.unpark_key(
            connection, consumer_group=GROUP, topic="requests.orders", key=b"k1"
        )
        assert parked(connection) is None


def unpark_settled(connection: Connection, *settled: str, key: bytes = b"k1") -> str:
    return parked_keys.unpark_settled(
        connection,
        consumer_group=GROUP,
        topic="requests.orders",
        key=key,
        settled=set(settled),
    )


def test_settling_the_dead_letter_that_parked_a_key_last_lets_it_go(engine: Engine) -> None:
    with engine.begin() as connection:
        park(connection, b"k1", event_id="e1")
        park(connection, b"k2", event_id="e5")

    with engine.begin() as connection:
        assert unpark_settled(connection, "e9") == "parked after"  # another letter: stays
        assert parked(connection) is not None
        assert unpark_settled(connection, "e1", "e9") == "let go"
        assert parked(connection) is None
        assert unpark_settled(connection, "e1") == "not parked"
        assert parked(connection, b"k2") is not None  # other keys untouched


def test_a_key_with_a_dead_letter_behind_the_settled_ones_stays_parked(engine: Engine) -> None:
    with engine.begin() as connection:
        park(connection, event_id="e1")
        parked_keys.note_parked_dead_letter(
            connection, consumer_group=GROUP, topic="requests.orders", key=b"k1", event_id="e2"
        )

    with engine.begin() as connection:
        assert unpark_settled(connection, "e1") == "parked after"
        assert parked(connection) is not None
        assert unpark_settled(connection, "e1", "e2") == "let go"


def test_a_settled_latest_dead_letter_is_replaced_by_the_last_one_pending(engine: Engine) -> None:
    # d1 parked the key, d2 and d3 behind it; d1 and d3 discarded: a redrive of d2 alone must
    # let the key go, so the park's latest becomes d2.
    with engine.begin() as connection:
        park(connection, event_id="d1")
        parked_keys.note_parked_dead_letter(
            connection, consumer_group=GROUP, topic="requests.orders", key=b"k1", event_id="d3"
        )

    def note(last_pending: str, *settled: str) -> bool:
        return parked_keys.note_last_pending(
            connection,
            consumer_group=GROUP,
            topic="requests.orders",
            key=b"k1",
            last_pending=last_pending,
            settled=set(settled),
        )

    with engine.begin() as connection:
        assert not note("d2", "d1")  # the latest, d3, is still pending: left as it is
        assert note("d2", "d1", "d3")
        found = parked(connection)
        assert found is not None and found.let_go_by("d2") and not found.let_go_by("d3")


def test_count_parked_counts_the_keys_of_one_group(engine: Engine) -> None:
    with engine.begin() as connection:
        park(connection, b"k1")
        park(connection, b"k2")
        park(connection, b"k3", topic="other")
        park(connection, b"k1", consumer_group="billing")

    with engine.connect() as connection:
        assert parked_keys.count_parked(connection, consumer_group=GROUP) == 3
        assert parked_keys.count_parked(connection, consumer_group="billing") == 1
        assert parked_keys.count_parked(connection, consumer_group="nobody") == 0


def test_parked_among_no_keys_is_empty(engine: Engine) -> None:
    with engine.begin() as connection:
        park(connection)

    with engine.connect() as connection:
        assert parked_keys.parked_among(connection, consumer_group=GROUP, keys=[]) == set()


def test_parked_among_gives_the_parked_pairs_matching_topic_and_key_and_group(
    engine: Engine,
) -> None:
    with engine.begin() as connection:
        park(connection, b"k1")
        park(connection, b"k2", topic="requests.payments")
        park(connection, b"k3", consumer_group="billing")

    with engine.connect() as connection:
        found = parked_keys.parked_among(
            connection,
            consumer_group=GROUP,
            keys={
                ("requests.orders", b"k1"),
                ("requests.payments", b"k1"),  # k1 is parked on the other topic only
                ("requests.orders", b"k2"),  # k2 is parked on the other topic only
                ("requests.payments", b"k2"),
                ("requests.orders", b"k3"),  # parked for another group
                ("requests.orders", b"k4"),  # never parked
            },
        )

    assert found == {("requests.orders", b"k1"), ("requests.payments", b"k2")}


def test_parked_among_probes_each_key_instead_of_reading_the_groups_parked_keys(
    engine: Engine,
) -> None:
    # Matching on the key alone read every parked key of the group (2.5 ms with 10,000).
    keys = {("requests.orders", b"k1"), ("requests.payments", b"k2")}
    with engine.connect() as connection:
        plans = plans_of_parked_keys(
            connection,
            lambda: parked_keys.parked_among(connection, consumer_group=GROUP, keys=keys),
        )

    assert plans and all("consumer_group=? AND topic=? AND key=?" in plan for plan in plans)


def test_parked_among_more_keys_than_a_statement_probes_reads_the_group_and_answers_alike(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parked_keys, "_MOST_PROBED", 1)
    with engine.begin() as connection:
        park(connection, b"k1")
        park(connection, b"k2", topic="requests.payments")

    with engine.connect() as connection:
        found = parked_keys.parked_among(
            connection,
            consumer_group=GROUP,
            keys={("requests.orders", b"k1"), ("requests.orders", b"k2"), ("x", b"k3")},
        )

    assert found == {("requests.orders", b"k1")}
