"""The outbox relay against the real Kafka, on SQLite and on the stack's PostgreSQL."""

import json
import os
import random
import subprocess
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from confluent_kafka import TopicPartition
from sqlalchemy.orm import Session

from pipeline.database import build_engine, migrate
from pipeline.envelope import Event, encode
from pipeline.kafka.clients import build_consumer
from pipeline.kafka.producer import build_event_producer
from pipeline.kafka.readback import end_offsets, read_from
from pipeline.outbox.table import Outbox, delete_published, outbox_status, outbox_table
from pipeline.settings import DatabaseSettings, OutboxSettings
from producers.outbox_relay import OutboxRelay
from tests.support.stack_cli import PIPELINE


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'outbox.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def engine(database_url):
    engine = build_engine(DatabaseSettings(url=database_url))
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def relays(pipeline_stack, pipeline_settings):
    """Builds relays (each with its own producer); closes them at the end."""
    made = []

    def make(engine, **outbox):
        settings = OutboxSettings(**{"log_interval_s": 0, **outbox})
        producer = build_event_producer(pipeline_settings.kafka, pipeline_settings.producer)
        relay = OutboxRelay(engine, producer, settings)
        made.append(producer)
        return relay

    yield make
    for producer in made:
        producer.flush(30)


def _event(aggregate_id, n, **fields):
    return Event(
        source="/orders",
        type="com.example.order.changed",
        partitionkey=aggregate_id,
        data={"aggregate": aggregate_id, "n": n},
        **fields,
    )


def _messages(settings, topic, group):
    """Every message of ``topic``, per partition in offset order."""
    consumer = build_consumer(settings.kafka, group)
    try:
        ends = end_offsets(consumer, topic)
        wanted = sum(p.offset for p in ends)
        consumer.assign([TopicPartition(topic, p.partition, 0) for p in ends])
        messages = []
        deadline = time.monotonic() + 60
        while len(messages) < wanted and time.monotonic() < deadline:
            messages += [m for m in consumer.consume(500, timeout=0.5) if m.error() is None]
        return sorted(messages, key=lambda m: (m.partition(), m.offset()))
    finally:
        consumer.close()


def _header(message, name):
    return dict(message.headers())[name].decode()


def _assert_each_aggregate_in_order(messages, aggregates, per_aggregate):
    """Every aggregate's events (keyed by its id) arrived numbered 0, 1, 2, ... in order."""
    numbers = defaultdict(list)
    for message in messages:
        numbers[message.key()].append(json.loads(message.value())["n"])
    assert len(numbers) == aggregates
    for key, seen in numbers.items():
        assert seen == list(range(per_aggregate)), f"{key!r} out of order: {seen[:20]}"


def test_a_committed_event_reaches_kafka_exactly_once_with_its_id_headers_and_key(
    engine, relays, new_topic, pipeline_settings, consumer_group
):
    topic = new_topic(partitions=3)
    # A NUL in a header value too: confluent-kafka would cut it short if it were sent as text.
    # The envelope refuses control characters now; a row written before it did may hold one.
    event = _event("order-1", 1, correlationid="corr-1", subject="order/order-1").model_copy(
        update={"subject": "order/order-1\x00 line 2"}
    )
    with Session(engine) as session, session.begin():
        Outbox().add(session, event, aggregate_type="order", aggregate_id="order-1", topic=topic)

    first = relays(engine).run(once=True)
    again = relays(engine).run(once=True)  # a second relay finds nothing left to publish

    assert (first.published, again.published) == (1, 0)
    [message] = _messages(pipeline_settings, topic, consumer_group)
    expected = encode(event)
    assert message.key() == b"order-1"
    assert message.headers() == expected.headers
    assert _header(message, "ce_id") == event.id
    assert message.value() == expected.value
    assert outbox_status(engine).backlog == 0


def test_a_rolled_back_event_never_reaches_kafka(
    engine, relays, new_topic, pipeline_settings, consumer_group
):
    topic = new_topic(partitions=3)
    rolled_back, committed = _event("order-1", 1), _event("order-2", 1)
    with Session(engine) as session:
        Outbox().add(
            session, rolled_back, aggregate_type="order", aggregate_id="order-1", topic=topic
        )
        session.rollback()
    with Session(engine) as session, session.begin():
        Outbox().add(
            session, committed, aggregate_type="order", aggregate_id="order-2", topic=topic
        )

    assert relays(engine).run(once=True).published == 1

    ids = [_header(m, "ce_id") for m in _messages(pipeline_settings, topic, consumer_group)]
    assert ids == [committed.id]


def _write(engine, topic, aggregates, per_aggregate, per_transaction, written):
    """One writer: its own aggregates, in order, a few events per transaction."""
    outbox = Outbox()
    pending = [(a, n) for n in range(per_aggregate) for a in aggregates]
    for start in range(0, len(pending), per_transaction):
        with engine.begin() as connection:
            for aggregate, n in pending[start : start + per_transaction]:
                event = _event(aggregate, n)
                outbox.add(
                    connection, event, aggregate_type="order", aggregate_id=aggregate, topic=topic
                )
                written.append(event.id)


def test_two_relays_on_postgres_keep_per_aggregate_order_and_publish_each_event_once(
    postgres_url, relays, new_topic, pipeline_settings, consumer_group
):
    aggregates, per_aggregate, writers = 50, 100, 5
    engine = build_engine(DatabaseSettings(url=postgres_url))
    migrate(engine)
    topic = new_topic(partitions=6)
    first, second = (relays(engine, batch_size=200, poll_interval_s=0.05) for _ in range(2))
    running = [threading.Thread(target=relay.run) for relay in (first, second)]
    for thread in running:
        thread.start()
    written: list[str] = []
    names = [f"order-{n}" for n in range(aggregates)]
    # Each writer owns its aggregates, as a processor's key lanes do.
    writing = [
        threading.Thread(
            target=_write,
            args=(engine, topic, names[w::writers], per_aggregate, 7, written),
        )
        for w in range(writers)
    ]
    for thread in writing:
        thread.start()
    for thread in writing:
        thread.join()
    deadline = time.monotonic() + 120
    while outbox_status(engine).backlog and time.monotonic() < deadline:
        time.sleep(0.2)
    for relay in (first, second):
        relay.stop()
    for thread in running:
        thread.join()
    engine.dispose()

    messages = _messages(pipeline_settings, topic, consumer_group)
    ids = [_header(m, "ce_id") for m in messages]
    assert len(written) == aggregates * per_aggregate
    assert sorted(ids) == sorted(written)  # every event, each exactly once
    assert first.totals.published > 0 and second.totals.published > 0  # both relays worked
    assert first.totals.published + second.totals.published == len(written)
    _assert_each_aggregate_in_order(messages, aggregates, per_aggregate)


def test_on_postgres_claims_made_while_the_batch_before_is_sent_keep_per_aggregate_order(
    postgres_url, relays, new_topic, pipeline_settings, consumer_group
):
    aggregates, per_aggregate = 60, 50
    engine = build_engine(DatabaseSettings(url=postgres_url))
    migrate(engine)
    topic = new_topic(partitions=6)
    written: list[str] = []
    outbox = Outbox()
    with engine.begin() as connection:  # the backlog, interleaved: each batch holds many
        for n in range(per_aggregate):
            for a in range(aggregates):
                event = _event(f"order-{a}", n)
                outbox.add(
                    connection,
                    event,
                    aggregate_type="order",
                    aggregate_id=f"order-{a}",
                    topic=topic,
                )
                written.append(event.id)
    relay = relays(engine, batch_size=200)
    totals = relay.run(once=True)
    engine.dispose()

    assert totals.published == len(written)
    assert totals.claimed_ahead >= 2  # the path under test was taken
    messages = _messages(pipeline_settings, topic, consumer_group)
    assert sorted(_header(m, "ce_id") for m in messages) == sorted(written)  # each once
    _assert_each_aggregate_in_order(messages, aggregates, per_aggregate)


def test_with_retention_zero_each_row_is_deleted_as_it_is_published_in_per_aggregate_order(
    engine, relays, new_topic, pipeline_settings, consumer_group
):
    aggregates, per_aggregate = 30, 40
    topic = new_topic(partitions=6)
    written: list[str] = []
    _write(engine, topic, [f"order-{a}" for a in range(aggregates)], per_aggregate, 50, written)
    relay = relays(engine, batch_size=200, retention_s=0)

    totals = relay.run(once=True)

    with engine.connect() as connection:
        left = connection.execute(sa.select(sa.func.count()).select_from(outbox_table)).scalar()
    engine.dispose()
    assert (totals.published, left) == (len(written), 0)  # published, and nothing kept
    messages = _messages(pipeline_settings, topic, consumer_group)
    assert sorted(_header(m, "ce_id") for m in messages) == sorted(written)  # each once
    _assert_each_aggregate_in_order(messages, aggregates, per_aggregate)


def test_on_sqlite_a_second_relay_waits_for_the_lease_and_takes_over_when_it_expires(
    tmp_path, relays, new_topic, pipeline_settings, consumer_group
):
    engine = build_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'lease.db'}"))
    migrate(engine)
    topic = new_topic(partitions=1)
    holder, waiter = relays(engine, lease_s=2.0), relays(engine, lease_s=2.0)
    first, second = _event("order-1", 1), _event("order-1", 2)
    outbox = Outbox()
    with engine.begin() as connection:
        outbox.add(connection, first, aggregate_type="order", aggregate_id="order-1", topic=topic)
    assert holder.publish_batch().published == 1  # takes the lease; then "dies" holding it
    with engine.begin() as connection:
        outbox.add(connection, second, aggregate_type="order", aggregate_id="order-1", topic=topic)

    blocked = waiter.publish_batch()
    assert blocked.lease_busy and blocked.published == 0
    assert waiter.totals.lease_holder == holder.name
    assert outbox_status(engine).backlog == 1

    time.sleep(2.5)  # the holder's lease expires
    assert waiter.publish_batch().published == 1
    ids = [_header(m, "ce_id") for m in _messages(pipeline_settings, topic, consumer_group)]
    assert ids == [first.id, second.id]
    engine.dispose()


def test_listen_notify_wakes_the_relay_long_before_its_poll_interval(
    postgres_url, relays, new_topic, pipeline_settings
):
    engine = build_engine(DatabaseSettings(url=postgres_url))
    migrate(engine)
    topic = new_topic(partitions=1)
    relay = relays(engine, poll_interval_s=60.0, listen=True)
    running = threading.Thread(target=relay.run)
    running.start()
    try:
        time.sleep(1.0)  # the relay found nothing and waits (60 s unless notified)
        consumer = build_consumer(pipeline_settings.kafka, f"listen-{random.random()}")
        start = end_offsets(consumer, topic)
        event = _event("order-1", 1)
        with engine.begin() as connection:
            Outbox().add(
                connection, event, aggregate_type="order", aggregate_id="order-1", topic=topic
            )
        report = read_from(consumer, start, {event.id}, timeout_s=30)
        consumer.close()
        assert [e.id for e in report.events] == [event.id]  # well within the 60 s poll
    finally:
        relay.stop()
        running.join()
        engine.dispose()


def test_housekeeping_deletes_only_published_rows_older_than_the_retention(engine):
    now = datetime.now(UTC)
    outbox = Outbox()

    def put(published_at):
        row = outbox.row(_event("order-1", 0), aggregate_type="order", aggregate_id="order-1")
        row.update(created_at=now - timedelta(hours=5), published_at=published_at)
        with engine.begin() as connection:
            connection.execute(sa.insert(outbox_table), [row])
        return row["event_id"]

    expired = [put(now - timedelta(hours=2)) for _ in range(5)]
    recent = put(now - timedelta(minutes=1))
    unpublished = put(None)

    assert delete_published(engine, retention_s=3600, batch_size=2) == len(expired)
    with engine.connect() as connection:
        left = set(connection.execute(sa.select(outbox_table.c.event_id)).scalars())
    assert left == {recent, unpublished}


def test_status_command_shows_backlog_per_topic(database_url, engine):
    outbox = Outbox()
    with engine.begin() as connection:
        for n in range(3):
            outbox.add(
                connection, _event(f"o-{n}", n), aggregate_type="order", aggregate_id=f"o-{n}"
            )
        outbox.add(connection, _event("p-1", 0), aggregate_type="payment", aggregate_id="p-1")
    env = {**os.environ, "PIPELINE_DATABASE__URL": database_url, "COLUMNS": "200"}
    result = subprocess.run(
        [PIPELINE, "outbox", "status"], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "│" in line}
    assert "orders.events" in lines and " 3 " in lines["orders.events"]
    assert "payments.events" in lines and " 1 " in lines["payments.events"]
    assert " 4 " in lines["total"]


def test_relay_command_once_publishes_the_backlog_and_exits(
    database_url, engine, new_topic, pipeline_settings, consumer_group
):
    topic = new_topic(partitions=3)
    events = [_event(f"o-{n % 4}", n) for n in range(20)]
    with engine.begin() as connection:
        for event in events:
            Outbox().add(
                connection,
                event,
                aggregate_type="order",
                aggregate_id=event.partitionkey,
                topic=topic,
            )
    env = {**os.environ, "PIPELINE_DATABASE__URL": database_url, "COLUMNS": "200"}
    result = subprocess.run(
        [PIPELINE, "outbox", "relay", "--once", "--batch-size", "7"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "20" in next(line for line in result.stdout.splitlines() if "published" in line)
    ids = [_header(m, "ce_id") for m in _messages(pipeline_settings, topic, consumer_group)]
    assert sorted(ids) == sorted(e.id for e in events)
    assert outbox_status(engine).backlog == 0


def test_the_relay_exposes_its_counts_backlog_and_rate_as_prometheus_metrics(
    tmp_path, relays, new_topic
):
    import socket
    import urllib.request

    from pipeline.metrics_server import serve_metrics

    engine = build_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'metrics.db'}"))
    migrate(engine)
    topic = new_topic(partitions=1)
    with engine.begin() as connection:
        for n in range(3):
            Outbox().add(
                connection,
                _event("o-1", n),
                aggregate_type="order",
                aggregate_id="o-1",
                topic=topic,
            )
    relay = relays(engine)
    relay.run(once=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stop = serve_metrics(relay.metrics.registry, port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    finally:
        stop()
    engine.dispose()
    assert f'pipeline_outbox_published_total{{topic="{topic}"}} 3.0' in text
    assert "pipeline_outbox_backlog 0.0" in text
    assert "pipeline_outbox_publish_rate 0.05" in text  # 3 in the last minute
    assert "pipeline_outbox_oldest_unpublished_age_seconds 0.0" in text
    assert "pipeline_outbox_lease_held 1.0" in text


def test_a_statement_postgres_refuses_is_a_database_failure_tried_again_not_a_crash(
    postgres_url, relays, new_topic, pipeline_settings, consumer_group
):
    # The claim's reads go through psycopg's own cursor: its error (no privilege on the table,
    # the table renamed) ended the relay with a traceback, exit 1, its metrics gone.
    topic = new_topic(partitions=1, prefix="outbox-refused")
    engine = build_engine(DatabaseSettings(url=postgres_url))
    migrate(engine)
    with Session(engine) as session, session.begin():
        for n in range(3):
            Outbox().add(
                session, _event("o-1", n), aggregate_type="order", aggregate_id="o-1", topic=topic
            )
    relay = relays(engine, poll_interval_s=0.05)
    with engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE pipeline_outbox RENAME TO pipeline_outbox_away"))
    running = threading.Thread(target=relay.run, name="relay", daemon=True)
    try:
        running.start()
        deadline = time.monotonic() + 30
        while relay.metrics.database_up._value.get() != 0 and time.monotonic() < deadline:
            assert running.is_alive(), "the relay ended on the refused statement"
            time.sleep(0.05)
        assert relay.metrics.database_up._value.get() == 0
        assert running.is_alive()
        with engine.begin() as connection:
            connection.execute(
                sa.text("ALTER TABLE pipeline_outbox_away RENAME TO pipeline_outbox")
            )
        deadline = time.monotonic() + 60
        while relay.totals.published < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        relay.stop()
        running.join(60)
        with engine.begin() as connection:
            connection.execute(
                sa.text("ALTER TABLE IF EXISTS pipeline_outbox_away RENAME TO pipeline_outbox")
            )
        engine.dispose()

    assert relay.totals.published == 3
    assert [
        json.loads(m.value())["n"] for m in _messages(pipeline_settings, topic, consumer_group)
    ] == [0, 1, 2]
