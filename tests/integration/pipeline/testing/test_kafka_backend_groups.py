"""The Kafka test backend runs each processor under a consumer group of the test's own: a real
group of the processor's name on the stack, with events it has not read yet, keeps its committed
offsets (it used to be committed at the end of its topics, and never handled those events),
while the test's group handles the test's events, owns their inbox rows and dead letters, and is
deleted after the test."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from confluent_kafka import TopicPartition

from pipeline.dead_letters.letter import DeadLetter
from pipeline.dead_letters.redrive import open_dead_letter_consumer, read_dead_letters
from pipeline.envelope import Event, encode
from pipeline.kafka.clients import build_consumer, build_producer
from pipeline.kafka.watermarks import read_watermarks
from pipeline.processing.inbox import inbox_table
from pipeline.settings import PipelineSettings
from pipeline.testing.kafka_backend import KafkaBackend
from pipeline.topics.spec import dlq_name

PARTITIONS = (0, 1)

PROCESSOR_MODULE = """
import sqlalchemy as sa

from pipeline.processing import Processor, Reject

TOPIC = "{topic}"
tables = sa.MetaData()
handled = sa.Table("fx1_handled", tables, sa.Column("event_id", sa.String(64), primary_key=True))
processor = Processor("{name}")


@processor.on_start
def create_tables(database):
    tables.create_all(database)


@processor.handler(TOPIC)
def handle(event, unit):
    if event.data.get("refuse"):
        raise Reject("refused by the test")
    unit.session.execute(sa.insert(handled).values(event_id=event.id))
"""


def _event(key: str, **data: object) -> Event:
    return Event(source="/tests/fx1", type="Payment", partitionkey=key, data=data)


def _committed(settings: PipelineSettings, group: str, topic: str) -> dict[int, int]:
    """``group``'s committed offset on each partition of ``topic`` (read, never joined)."""
    consumer = build_consumer(settings.kafka, group)
    try:
        wanted = [TopicPartition(topic, partition) for partition in PARTITIONS]
        return {tp.partition: tp.offset for tp in consumer.committed(wanted, timeout=30)}
    finally:
        consumer.close()


def _ends(settings: PipelineSettings, topic: str) -> dict[int, int]:
    consumer = build_consumer(settings.kafka, f"fx1-watermarks-{uuid.uuid4().hex[:8]}")
    try:
        return {p: read_watermarks(consumer, topic, p, timeout_s=30)[1] for p in PARTITIONS}
    finally:
        consumer.close()


def _handled(database: sa.Engine) -> set[str]:
    with database.connect() as connection:
        rows = connection.execute(sa.text("SELECT event_id FROM fx1_handled"))
        return {event_id for (event_id,) in rows}


def test_a_kafka_backend_run_leaves_the_real_group_where_it_was_and_reads_as_its_own(
    pipeline_settings: PipelineSettings,
    postgres_url: str,
    new_topic: Callable[..., str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = uuid.uuid4().hex[:8]
    topic = new_topic(name=f"fx1-payments-{token}.requests", partitions=len(PARTITIONS))
    new_topic(name=dlq_name(topic), partitions=1)  # deleted after the test, as its topic
    name = f"fx1-payments-{token}"  # the real group: the processor's name
    modules = tmp_path / "modules"
    modules.mkdir()
    module = f"fx1_payments_{token}"
    (modules / f"{module}.py").write_text(PROCESSOR_MODULE.format(topic=topic, name=name))
    monkeypatch.syspath_prepend(str(modules))

    # The real processor has read one event of each partition and not yet the other: lag 1 on
    # each, as the reviewer's rv1-payments had.
    producer = build_producer(pipeline_settings.kafka)
    for partition in PARTITIONS:
        for n in range(2):
            message = encode(_event(f"before-{partition}-{n}", n=n))
            producer.produce(
                topic,
                partition=partition,
                key=message.key,
                value=message.value,
                headers=list(message.headers),
            )
    assert producer.flush(30) == 0
    real = build_consumer(pipeline_settings.kafka, name)
    real.commit(offsets=[TopicPartition(topic, p, 1) for p in PARTITIONS], asynchronous=False)
    real.close()
    assert _committed(pipeline_settings, name, topic) == {0: 1, 1: 1}
    assert _ends(pipeline_settings, topic) == {0: 2, 1: 2}

    workdir = tmp_path / "work"
    workdir.mkdir()
    backend = KafkaBackend(
        [f"{module}:processor"],
        settings=pipeline_settings,
        database_url=postgres_url,
        workdir=workdir,
        cwd=modules,
    )
    try:
        backend.start()
        sent = [_event(f"test-{n}", n=n) for n in range(4)]
        backend.send(topic, [*sent, _event("test-refused", refuse=True)])
        backend.wait_until(
            lambda: len(_handled(backend.database)) == len(sent),
            timeout_s=120,
            what="the test's events handled",
        )
        backend.settle()

        # The real group's offsets are where they were: what it had not read, it still reads.
        assert _committed(pipeline_settings, name, topic) == {0: 1, 1: 1}
        # The test's events were handled, and only they: its group started at the end.
        assert _handled(backend.database) == {event.id for event in sent}
        group = backend.consumer_group(name)
        assert group == f"{name}.test-{backend.token}"
        assert _committed(pipeline_settings, group, topic) == _ends(pipeline_settings, topic)
        with backend.database.connect() as connection:
            owners = connection.execute(sa.select(inbox_table.c.consumer_group)).scalars().all()
        assert set(owners) == {group} and len(owners) == len(sent) + 1  # the refused one too
        # The refused event's letter names the test group in the topic (a redrive goes to the
        # test's program, not the real one), and the processor in what the backend gives.
        [letter] = backend.wait_until(
            lambda: backend.dead_letters(topic), timeout_s=60, what="the refused event's letter"
        )
        assert (letter.key, letter.reason, letter.consumer_group) == (
            b"test-refused",
            "rejected",
            name,
        )
        with open_dead_letter_consumer(pipeline_settings.kafka) as consumer:
            read = read_dead_letters(consumer, dlq_name(topic), timeout_s=30)
        assert [item.consumer_group for item in read if isinstance(item, DeadLetter)] == [group]
    finally:
        backend.close()

    # Still where it was once the programs stopped; the test's group is gone with the test.
    assert _committed(pipeline_settings, name, topic) == {0: 1, 1: 1}
    assert all(offset < 0 for offset in _committed(pipeline_settings, group, topic).values())
