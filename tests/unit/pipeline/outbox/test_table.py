"""The outbox model on SQLite: adding in the caller's transaction, routing, status, housekeeping,
and the relay's ordering rules as pure functions."""

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from pipeline.envelope import Event, decode, encode
from pipeline.outbox.table import (
    RELAY_COLUMNS,
    ClaimPlan,
    Outbox,
    OutboxError,
    OutboxRecord,
    PendingEvent,
    add_to_outbox,
    delete_published,
    lock_bucket,
    outbox_status,
    outbox_table,
    publishable_positions,
    records_of,
    route_topic,
)


@pytest.fixture
def engine(database):
    return database


def _event(n=0, **fields):
    return Event(source="/orders", type="com.example.order.placed", data={"n": n}, **fields)


def _rows(engine):
    with engine.connect() as connection:
        return connection.execute(sa.select(outbox_table).order_by("position")).mappings().all()


def test_an_event_added_in_a_rolled_back_session_leaves_no_row(engine):
    with Session(engine) as session:
        Outbox().add(session, _event(), aggregate_type="order", aggregate_id="o-1")
        session.rollback()
    assert _rows(engine) == []


def test_an_event_added_in_a_rolled_back_connection_transaction_leaves_no_row(engine):
    with engine.connect() as connection:
        transaction = connection.begin()
        add_to_outbox(connection, _event(), aggregate_type="order", aggregate_id="o-1")
        transaction.rollback()
    assert _rows(engine) == []


def test_add_does_not_commit_the_callers_transaction(engine):
    with Session(engine) as session:
        Outbox().add(session, _event(), aggregate_type="order", aggregate_id="o-1")
        assert _rows(engine) == []  # another connection sees nothing before the commit
        session.commit()
    assert len(_rows(engine)) == 1


def test_a_committed_event_is_one_row_with_its_cloudevents_headers_and_value(engine):
    event = _event(7, correlationid="c-1")
    with Session(engine) as session, session.begin():
        topic = Outbox().add(session, event, aggregate_type="order", aggregate_id="o-1")
    [row] = _rows(engine)
    keyed = event.model_copy(update={"partitionkey": "o-1"})
    expected = encode(keyed)
    assert topic == "orders.events"
    assert row["event_id"] == event.id
    assert row["aggregate_type"] == "order"
    assert row["aggregate_id"] == "o-1"
    assert row["event_type"] == "com.example.order.placed"
    assert row["topic"] == "orders.events"
    assert row["payload"] == expected.value
    assert [(name, value.encode()) for name, value in row["headers"]] == expected.headers
    assert row["published_at"] is None
    assert row["created_at"] is not None


def test_the_stored_row_is_the_kafka_message_of_the_event_keyed_by_the_aggregate_id(engine):
    event = _event(3)
    with engine.begin() as connection:
        add_to_outbox(connection, event, aggregate_type="order", aggregate_id="o-9")
    [row] = _rows(engine)
    record = OutboxRecord(
        *(row[c] for c in ("position", "event_id", "aggregate_type", "aggregate_id", "topic")),
        row["payload"],
        row["headers"],
    )
    message = record.message()
    assert message.key == b"o-9"
    assert decode(message.value, message.headers, message.key) == event.model_copy(
        update={"partitionkey": "o-9"}
    )


def test_a_record_value_is_bytes_whether_the_driver_gave_bytes_a_buffer_or_nothing():
    def record(payload):
        return OutboxRecord(1, "id-1", "order", "o-1", "orders", payload, [("ce_id", "id-1")])

    assert record(b"{}").value == b"{}"
    assert type(record(memoryview(b"{}")).value) is bytes
    assert record(memoryview(b"{}")).value == b"{}"
    assert record(None).value is None


def test_a_header_value_with_a_nul_is_read_for_the_relay_as_bytes_the_others_as_text(engine):
    # confluent-kafka hands a text header value to librdkafka as a C string: cut at the NUL.
    with engine.begin() as connection:
        add_to_outbox(
            connection, _event(subject="a\x00b"), aggregate_type="order", aggregate_id="o"
        )
        add_to_outbox(connection, _event(subject="plain"), aggregate_type="order", aggregate_id="o")
        rows = connection.execute(sa.select(*RELAY_COLUMNS).order_by("position")).all()

    with_nul, plain = (dict(record.headers) for record in records_of(rows))

    assert (with_nul["ce_subject"], with_nul["ce_type"]) == (b"a\x00b", "com.example.order.placed")
    assert plain["ce_subject"] == "plain"


def test_positions_follow_the_order_of_adding(engine):
    events = [_event(n) for n in range(5)]
    with engine.begin() as connection:
        Outbox().add_all(connection, [PendingEvent(e, "order", "o-1") for e in events])
    rows = _rows(engine)
    assert [row["event_id"] for row in rows] == [e.id for e in events]
    positions = [row["position"] for row in rows]
    assert positions == sorted(positions) and len(set(positions)) == 5


def test_an_event_whose_partitionkey_is_not_the_aggregate_id_is_refused(engine):
    with engine.begin() as connection, pytest.raises(OutboxError, match="partitionkey"):
        add_to_outbox(
            connection, _event(partitionkey="other"), aggregate_type="order", aggregate_id="o-1"
        )


def test_the_same_event_id_cannot_be_added_twice(engine):
    event = _event()
    with engine.begin() as connection:
        add_to_outbox(connection, event, aggregate_type="order", aggregate_id="o-1")
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
        add_to_outbox(connection, event, aggregate_type="order", aggregate_id="o-1")


def test_an_explicit_topic_wins_over_the_routes():
    assert (
        route_topic({"order": "orders.events"}, event_type="x", aggregate_type="order", topic="t")
        == "t"
    )


def test_an_event_type_route_wins_over_the_aggregate_type_route():
    routes = {"order": "orders.events", "com.example.order.audited": "audit.events"}
    assert (
        route_topic(routes, event_type="com.example.order.audited", aggregate_type="order")
        == "audit.events"
    )
    assert route_topic(routes, event_type="other", aggregate_type="order") == "orders.events"


def test_the_default_routes_send_orders_and_payments_to_their_catalogue_topics(engine):
    outbox = Outbox()
    assert outbox.row(_event(), aggregate_type="order", aggregate_id="o")["topic"] == (
        "orders.events"
    )
    assert outbox.row(_event(), aggregate_type="payment", aggregate_id="o")["topic"] == (
        "payments.events"
    )


def test_an_aggregate_type_without_a_route_and_no_topic_is_refused():
    with pytest.raises(OutboxError, match="no topic for aggregate type 'invoice'"):
        Outbox({}).row(_event(), aggregate_type="invoice", aggregate_id="i-1")


def test_something_that_is_not_an_event_is_a_type_error():
    with pytest.raises(TypeError, match=r"expected a pipeline\.envelope\.Event"):
        Outbox().row({"id": "x"}, aggregate_type="order", aggregate_id="o")  # type: ignore[arg-type]


# --- status and housekeeping ------------------------------------------------------------------


def _put(engine, *, topic, created_at, published_at=None, aggregate_id="a"):
    row = Outbox().row(_event(), aggregate_type="order", aggregate_id=aggregate_id, topic=topic)
    row.update(created_at=created_at, published_at=published_at)
    with engine.begin() as connection:
        connection.execute(sa.insert(outbox_table), [row])
    return row["event_id"]


def test_status_counts_the_backlog_its_oldest_age_and_the_last_minutes_publishes(engine):
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    _put(engine, topic="a", created_at=now - timedelta(seconds=30))
    _put(engine, topic="a", created_at=now - timedelta(seconds=10))
    _put(engine, topic="b", created_at=now - timedelta(seconds=90))
    _put(
        engine,
        topic="b",
        created_at=now - timedelta(seconds=50),
        published_at=now - timedelta(seconds=20),
    )
    _put(engine, topic="b", created_at=now - timedelta(hours=1), published_at=now - timedelta(90))
    status = outbox_status(engine, now=now)
    assert status.backlog == 3
    assert status.oldest_unpublished_age_s == pytest.approx(90)
    assert status.published_last_minute == 1
    assert status.publish_rate_per_s == pytest.approx(1 / 60)
    by_topic = {t.topic: t for t in status.topics}
    assert by_topic["a"].backlog == 2
    assert by_topic["a"].oldest_unpublished_age_s == pytest.approx(30)
    assert by_topic["b"].backlog == 1
    assert by_topic["b"].published_last_minute == 1


def test_status_of_an_empty_outbox_is_all_zero(engine):
    status = outbox_status(engine)
    assert (status.backlog, status.oldest_unpublished_age_s, status.published_last_minute) == (
        0,
        None,
        0,
    )


def test_housekeeping_deletes_only_published_rows_older_than_the_retention(engine):
    now = datetime.now(UTC)
    old = now - timedelta(hours=3)
    expired = _put(engine, topic="t", created_at=old, published_at=now - timedelta(hours=2))
    recent = _put(engine, topic="t", created_at=old, published_at=now - timedelta(minutes=5))
    waiting = _put(engine, topic="t", created_at=old)  # old but never published: kept
    deleted = delete_published(engine, retention_s=3600, batch_size=1, now=now)
    assert deleted == 1
    assert {row["event_id"] for row in _rows(engine)} == {recent, waiting}
    assert expired not in {row["event_id"] for row in _rows(engine)}


def test_housekeeping_deletes_in_batches_until_nothing_expired_is_left(engine):
    now = datetime.now(UTC)
    for n in range(7):
        _put(
            engine,
            topic="t",
            created_at=now,
            published_at=now - timedelta(days=2),
            aggregate_id=str(n),
        )
    assert delete_published(engine, retention_s=60, batch_size=3, now=now) == 7
    assert _rows(engine) == []


# --- the relay's ordering rules ---------------------------------------------------------------


def _aggregate_in_bucket(bucket, buckets, taken=()):
    for n in range(100_000):
        name = f"agg-{n}"
        if name not in taken and lock_bucket("order", name, buckets) == bucket:
            return name
    raise AssertionError("no aggregate found for the bucket")


def test_lock_buckets_are_stable_and_in_range():
    # CRC-32 of "order\0o-1" mod 256, pinned: a per-process (salted) or changed hash fails.
    assert lock_bucket("order", "o-1", 256) == 78
    assert all(0 <= lock_bucket("order", f"o-{n}", 16) < 16 for n in range(1000))
    assert lock_bucket("order", "o-1", 1 << 20) != lock_bucket("payment", "o-1", 1 << 20)


def test_a_claim_tries_only_as_many_buckets_as_fill_a_batch_oldest_first():
    a, b, c = (_aggregate_in_bucket(n, 8) for n in (1, 2, 3))
    plan = ClaimPlan(buckets=8, batch_size=3)
    plan.add_window([(1, "order", a), (2, "order", b), (3, "order", a), (4, "order", c)])
    assert plan.to_try() == [1, 2]  # a (2 rows) + b (1 row) fill the batch of 3; c is left
    plan.granted([1, 2], [1, 2])
    assert plan.full and not plan.contended
    assert plan.positions == [1, 2, 3]


def test_a_bucket_held_elsewhere_is_skipped_with_all_its_rows_and_marks_the_claim_contended():
    a, b, c = (_aggregate_in_bucket(n, 8) for n in (1, 2, 3))
    plan = ClaimPlan(buckets=8, batch_size=3)
    plan.add_window([(1, "order", a), (2, "order", b), (3, "order", a), (4, "order", c)])
    plan.granted([1, 2], [2])  # another relay holds a's bucket
    assert plan.contended
    assert plan.positions == [2]  # none of a's rows, not even the later one
    assert plan.to_try() == [3]  # the next bucket, never a's again
    plan.granted([3], [3])
    assert plan.positions == [2, 4]


def test_a_bucket_granted_in_a_later_round_brings_its_rows_from_earlier_windows():
    a, b, c = (_aggregate_in_bucket(n, 8) for n in (1, 2, 3))
    plan = ClaimPlan(buckets=8, batch_size=2)
    plan.add_window([(1, "order", a), (2, "order", b), (3, "order", c)])
    assert plan.to_try() == [1, 2]
    plan.granted([1, 2], [2])  # a held elsewhere: one row short of a batch
    plan.add_window([(4, "order", c), (5, "order", c)])
    assert plan.to_try() == [3]  # c, first seen in the first window
    plan.granted([3], [3])
    assert plan.positions == [2, 3, 4, 5]  # c's row 3 from the first window comes with it


def _record(position, aggregate_id):
    return OutboxRecord(position, f"e{position}", "order", aggregate_id, "t", b"{}", [])


def test_after_a_failure_the_aggregates_later_rows_stay_unpublished_but_others_go():
    records = [_record(1, "x"), _record(2, "y"), _record(3, "x"), _record(4, "y")]
    acknowledged = [False, True, True, True]  # x's first row failed, its second got through
    assert publishable_positions(records, acknowledged) == [2, 4]


def test_a_fully_acknowledged_batch_is_published_entirely():
    records = [_record(n, f"a{n % 3}") for n in range(1, 10)]
    assert publishable_positions(records, [True] * 9) == list(range(1, 10))
