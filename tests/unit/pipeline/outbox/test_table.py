"""The outbox model on SQLite: adding in the caller's transaction, routing, status, housekeeping."""

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from pipeline.envelope import Event, decode, encode
from pipeline.outbox.table import (
    RELAY_COLUMNS,
    Outbox,
    OutboxError,
    OutboxRecord,
    PendingEvent,
    add_to_outbox,
    delete_published,
    outbox_status,
    outbox_table,
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
    # The envelope refuses control characters now; a row written before it did may hold one.
    with_a_nul = _event(subject="a").model_copy(update={"subject": "a\x00b"})
    with engine.begin() as connection:
        add_to_outbox(connection, with_a_nul, aggregate_type="order", aggregate_id="o")
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


@pytest.mark.parametrize(
    ("fields", "event", "message"),
    [
        (
            {"aggregate_id": "o" * 300},
            {},
            r"aggregate_id is 300 characters long \('o{40}'\.\.\.\): the outbox holds at most "
            r"255 \(column pipeline_outbox\.aggregate_id\); use a shorter one",
        ),
        ({"aggregate_type": "t" * 256}, {}, "aggregate_type is 256 characters long"),
        ({"topic": "x" * 250}, {}, r"is not a Kafka topic name \(1 to 249 letters"),
        # The relay could only hold it for ever, as a topic that "does not exist".
        ({"topic": "bad topic!"}, {}, "topic 'bad topic!' is not a Kafka topic name"),
        ({}, {"type": "e" * 256}, "the event's type is 256 characters long"),
        ({}, {"id": "i" * 256}, "the event's id is 256 characters long"),
        (
            {"aggregate_id": "o-\udcff"},
            {},
            r"aggregate_id 'o-\\udcff' is not valid text \(surrogates not allowed, at position 2\)",
        ),
        ({"aggregate_type": "\ud800"}, {}, "aggregate_type '.*' is not valid text"),
        ({"aggregate_id": "o\x00"}, {}, r"aggregate_id 'o\\x00' has a NUL character"),
    ],
)
def test_a_value_its_column_cannot_hold_is_refused_alike_on_every_database_before_writing(
    engine, fields, event, message
):
    # PostgreSQL: a raw DataError for 300 characters (varchar(255)); SQLite took them whole
    # and the relay published a 300-character key; a lone surrogate was a UnicodeEncodeError.
    given = {"aggregate_type": "order", "aggregate_id": "o-1", "topic": "orders.events"}
    given.update(fields)
    with engine.begin() as connection, pytest.raises(OutboxError, match=message):
        Outbox().add(connection, Event(**{"source": "/orders", "type": "t", **event}), **given)

    assert _rows(engine) == []


def test_an_aggregate_id_with_a_control_character_is_refused_when_it_becomes_the_partitionkey(
    engine,
):
    # model_copy does not validate: a line break went out as ce_partitionkey, which every
    # reader then refused (an outside re-check).
    with engine.begin() as connection, pytest.raises(OutboxError, match=r"U\+000A at offset 1"):
        Outbox().add(
            connection,
            Event(source="/orders", type="t"),
            aggregate_type="order",
            aggregate_id="a\nb",
            topic="orders.events",
        )

    assert _rows(engine) == []


def test_values_as_long_as_their_columns_are_taken():
    row = Outbox().row(
        Event(source="/orders", id="i" * 255, type="e" * 255),
        aggregate_type="t" * 255,
        aggregate_id="é" * 255,  # characters, not bytes
        topic="x" * 249,  # Kafka's longest topic name (the column takes 255)
    )

    assert (row["aggregate_id"], row["event_type"]) == ("é" * 255, "e" * 255)


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


def test_an_empty_route_is_named_as_such_not_as_no_route():
    with pytest.raises(OutboxError, match="the route of 'order' is empty"):
        route_topic({"order": ""}, event_type="com.example.placed", aggregate_type="order")
