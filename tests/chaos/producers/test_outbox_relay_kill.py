"""The outbox relay is killed (SIGKILL) again and again while rows are being written.

Each restart publishes again what the killed relay had sent but not yet marked: the same event
ids. Afterwards every event is in Kafka at least once, the first appearances keep each
aggregate's order, and a consumer's inbox (dedup by event id) sees each event exactly once.
"""

import json
import signal
import threading
import time
from collections import defaultdict

import sqlalchemy as sa
from confluent_kafka import TopicPartition

from pipeline.database import build_engine, migrate
from pipeline.envelope import Event
from pipeline.kafka.clients import build_consumer
from pipeline.kafka.readback import end_offsets
from pipeline.outbox.table import Outbox, outbox_status, outbox_table
from pipeline.processing.inbox import claim
from pipeline.settings import DatabaseSettings
from producers.outbox_relay import relay_subprocess

AGGREGATES = 40
PER_TRANSACTION = 10
WRITE_RATE_PER_S = 1_000
KILLS = 6


def _published(engine):
    with engine.connect() as connection:
        return connection.execute(
            sa.select(sa.func.count()).where(outbox_table.c.published_at.is_not(None))
        ).scalar_one()


def _writer(engine, topic, written, stop):
    """Writes round after round over the aggregates (one event each, in order) until stopped."""
    outbox = Outbox()
    began = time.monotonic()
    count = 0
    n = 0
    while not stop.is_set():
        for first in range(0, AGGREGATES, PER_TRANSACTION):
            with engine.begin() as connection:
                for a in range(first, min(first + PER_TRANSACTION, AGGREGATES)):
                    aggregate = f"order-{a}"
                    event = Event(
                        source="/orders",
                        type="com.example.order.changed",
                        data={"n": n},
                        partitionkey=aggregate,
                    )
                    outbox.add(
                        connection,
                        event,
                        aggregate_type="order",
                        aggregate_id=aggregate,
                        topic=topic,
                    )
                    written.append(event.id)
                    count += 1
            ahead = count / WRITE_RATE_PER_S - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)
        n += 1
    return n


def _all_messages(settings, topic):
    consumer = build_consumer(settings.kafka, f"chaos-outbox-{time.time_ns()}")
    try:
        ends = end_offsets(consumer, topic)
        wanted = sum(p.offset for p in ends)
        consumer.assign([TopicPartition(topic, p.partition, 0) for p in ends])
        messages = []
        deadline = time.monotonic() + 120
        while len(messages) < wanted and time.monotonic() < deadline:
            messages += [m for m in consumer.consume(1000, timeout=0.5) if m.error() is None]
        assert len(messages) == wanted, f"read {len(messages)} of {wanted} messages"
        return sorted(messages, key=lambda m: (m.partition(), m.offset()))
    finally:
        consumer.close()


def test_a_relay_killed_mid_batch_again_and_again_loses_nothing_and_only_repeats_ids(
    postgres_url, pipeline_stack, pipeline_settings, new_topic, tmp_path
):
    engine = build_engine(DatabaseSettings(url=postgres_url))
    migrate(engine)
    topic = new_topic(partitions=6)
    env = {"PIPELINE_DATABASE__URL": postgres_url, "PIPELINE_OUTBOX__LOG_INTERVAL_S": "1"}
    args = ["--batch-size", "500", "--poll-interval", "0.2"]
    log = (tmp_path / "relay.log").open("wb")

    written: list[str] = []
    stop_writing = threading.Event()
    writing = threading.Thread(target=_writer, args=(engine, topic, written, stop_writing))
    writing.start()
    kills = 0
    try:
        while kills < KILLS:  # rows are being written all along
            before = _published(engine)
            relay = relay_subprocess(args, env=env, stdout=log, stderr=log)
            # Kill it once it is publishing: after its first marks, while the backlog that
            # built up during the restart is still being sent.
            deadline = time.monotonic() + 60
            while _published(engine) == before:
                assert relay.poll() is None, "the relay exited by itself"
                assert time.monotonic() < deadline, "the relay published nothing"
                time.sleep(0.02)
            time.sleep(0.05)
            assert writing.is_alive()
            relay.send_signal(signal.SIGKILL)
            relay.wait(30)
            kills += 1
    finally:
        stop_writing.set()
        writing.join()

    # A last relay drains what is left and stops cleanly on SIGTERM.
    relay = relay_subprocess(args, env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 120
    while outbox_status(engine).backlog and time.monotonic() < deadline:
        assert relay.poll() is None, "the last relay exited by itself"
        time.sleep(0.2)
    relay.send_signal(signal.SIGTERM)
    assert relay.wait(60) == 0
    assert outbox_status(engine).backlog == 0
    engine.dispose()

    messages = _all_messages(pipeline_settings, topic)
    ids = [dict(m.headers())["ce_id"].decode() for m in messages]
    assert set(ids) == set(written)  # nothing lost, nothing foreign
    copies = defaultdict(set)
    for message, event_id in zip(messages, ids, strict=True):
        copies[event_id].add((message.key(), message.value(), tuple(message.headers())))
    assert all(len(versions) == 1 for versions in copies.values())  # a duplicate is a repeat

    first_seen: dict[bytes, list[int]] = defaultdict(list)
    seen: set[str] = set()
    for message, event_id in zip(messages, ids, strict=True):
        if event_id not in seen:
            seen.add(event_id)
            first_seen[message.key()].append(json.loads(message.value())["n"])
    rounds = len(written) // AGGREGATES
    assert len(first_seen) == AGGREGATES
    for key, numbers in first_seen.items():
        assert numbers == list(range(rounds)), f"{key!r} out of order"

    # The consumer side: the inbox lets each event through exactly once.
    inbox = build_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'inbox.db'}"))
    migrate(inbox)
    handled = []
    with inbox.begin() as connection:
        for message, event_id in zip(messages, ids, strict=True):
            result = claim(
                connection,
                consumer_group="chaos-reader",
                event_id=event_id,
                topic=topic,
                partition=message.partition(),
                offset=message.offset(),
            )
            if result.new:
                handled.append(event_id)
    inbox.dispose()
    assert sorted(handled) == sorted(written)
    print(
        f"{len(written)} events, {kills} kills while writing, "
        f"{len(messages) - len(written)} duplicates "
        "dropped by the inbox"
    )
