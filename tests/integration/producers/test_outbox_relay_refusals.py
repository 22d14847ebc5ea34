"""Rows the relay cannot publish, through ``pipeline outbox relay --once``, against the real Kafka.

A row for a topic that does not exist: its aggregate's later rows wait for it (none reaches
Kafka first), the relay does not wait out librdkafka's 30 s for the topic, and once the topic
exists both go, in order. A topic with a small ``max.message.bytes`` of its own: the relay's
batches stay under it, so its rows go, and only an event over it is refused.
"""

from __future__ import annotations

import json
import os
import random
import string
import subprocess
import time

import sqlalchemy as sa

from pipeline.database import build_engine, migrate
from pipeline.envelope import Event
from pipeline.outbox.table import Outbox, outbox_status
from pipeline.settings import DatabaseSettings
from tests.integration.producers.test_outbox_relay import _messages
from tests.support.stack_cli import PIPELINE


def _event(aggregate_id: str, n: int) -> Event:
    return Event(
        source="/orders",
        type="com.example.order.changed",
        partitionkey=aggregate_id,
        data={"aggregate": aggregate_id, "n": n},
    )


def _numbers(settings, topic: str, group: str) -> list[tuple[bytes, int]]:
    return [(m.key(), json.loads(m.value())["n"]) for m in _messages(settings, topic, group)]


def _relay_once(database_url: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "PIPELINE_DATABASE__URL": database_url, "COLUMNS": "200"}
    began = time.monotonic()
    result = subprocess.run(
        [PIPELINE, "outbox", "relay", "--once"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    return result, time.monotonic() - began


def test_a_row_for_a_missing_topic_holds_its_aggregate_back_without_a_30_s_wait(
    new_topic, unique_name, kafka_admin, pipeline_settings, consumer_group, tmp_path
):
    database_url = f"sqlite:///{tmp_path / 'outbox.db'}"
    engine = build_engine(DatabaseSettings(url=database_url))
    migrate(engine)
    existing = new_topic(partitions=3)
    later = unique_name("not-yet")
    with engine.begin() as connection:
        outbox = Outbox()
        outbox.add(
            connection, _event("x", 1), aggregate_type="order", aggregate_id="x", topic=later
        )
        outbox.add(
            connection, _event("x", 2), aggregate_type="order", aggregate_id="x", topic=existing
        )
        outbox.add(
            connection, _event("y", 1), aggregate_type="order", aggregate_id="y", topic=existing
        )

    result, took_s = _relay_once(database_url)

    assert result.returncode == 3, result.stdout + result.stderr
    assert f"topic {later} does not exist" in " ".join(result.stderr.split()), result.stderr
    assert took_s < 25, f"the relay waited {took_s:.0f} s"
    # y went; x's second row did not go ahead of its first.
    assert _numbers(pipeline_settings, existing, consumer_group) == [(b"y", 1)]
    assert outbox_status(engine).backlog == 2

    new_topic(partitions=1, name=later)
    result, _ = _relay_once(database_url)

    assert result.returncode == 0, result.stdout + result.stderr
    assert _numbers(pipeline_settings, later, consumer_group + "-later") == [(b"x", 1)]
    assert sorted(_numbers(pipeline_settings, existing, consumer_group + "-2")) == [
        (b"x", 2),
        (b"y", 1),
    ]
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM pipeline_outbox")).scalar() == 3
    assert outbox_status(engine).backlog == 0
    engine.dispose()


def test_rows_to_a_topic_with_a_small_limit_go_and_only_the_event_over_it_is_refused(
    new_topic, pipeline_settings, consumer_group, tmp_path
):
    # Each batch librdkafka made for the partition was over the topic's limit, and the broker
    # refused it whole: every row failed, every time.
    database_url = f"sqlite:///{tmp_path / 'outbox.db'}"
    engine = build_engine(DatabaseSettings(url=database_url))
    migrate(engine)
    small = new_topic(partitions=1, **{"max.message.bytes": "20000"})
    noise = random.Random(11)
    with engine.begin() as connection:
        outbox = Outbox()
        for n in range(200):
            pad = "".join(noise.choices(string.ascii_letters, k=400))  # does not compress
            event = Event(
                source="/orders", type="t", partitionkey=f"k{n % 5}", data={"n": n, "pad": pad}
            )
            outbox.add(connection, event, aggregate_type="o", aggregate_id=f"k{n % 5}", topic=small)
        big = Event(source="/orders", type="t", partitionkey="big", data={"pad": "x" * 30_000})
        outbox.add(connection, big, aggregate_type="o", aggregate_id="big", topic=small)

    result, _ = _relay_once(database_url)

    assert result.returncode == 3, result.stdout + result.stderr
    said = " ".join(result.stderr.split())
    assert f"topic {small} takes at most 20,000 (its max.message.bytes)" in said, said
    numbers = _numbers(pipeline_settings, small, consumer_group)
    assert sorted(n for _, n in numbers) == list(range(200))
    for key in {key for key, _ in numbers}:
        mine = [n for k, n in numbers if k == key]
        assert mine == sorted(mine), f"{key!r} out of order"
    assert outbox_status(engine).backlog == 1
    engine.dispose()


def test_an_event_over_its_topics_limit_only_with_its_batch_framing_holds_its_aggregate(
    new_topic, pipeline_settings, consumer_group, tmp_path
):
    # Key, value and headers under the topic's 200,000 bytes, over it with the record batch's
    # framing: the relay's estimate let it through, the broker refused it, and the aggregate's
    # next row reached Kafka ahead of it (then again with every batch).
    database_url = f"sqlite:///{tmp_path / 'outbox.db'}"
    engine = build_engine(DatabaseSettings(url=database_url))
    migrate(engine)
    limited = new_topic(partitions=1, **{"max.message.bytes": "200000"})
    noise = random.Random(5)
    with engine.begin() as connection:
        outbox = Outbox()
        pad = "".join(noise.choices(string.ascii_letters, k=199_750))
        big = Event(source="/orders", type="t", partitionkey="a", data={"n": 0, "pad": pad})
        outbox.add(connection, big, aggregate_type="o", aggregate_id="a", topic=limited)
        outbox.add(connection, _event("a", 1), aggregate_type="o", aggregate_id="a", topic=limited)
        outbox.add(connection, _event("b", 2), aggregate_type="o", aggregate_id="b", topic=limited)
        headers, value = connection.execute(
            sa.text("SELECT headers, payload FROM pipeline_outbox ORDER BY position LIMIT 1")
        ).one()
    stored = 1 + len(value) + sum(len(k) + len(v) for k, v in json.loads(headers))
    assert 199_850 < stored < 200_000  # under the limit by key, value and headers alone

    for _ in range(2):
        result, _ = _relay_once(database_url)
        assert result.returncode == 3, result.stdout + result.stderr
    said = " ".join(result.stderr.split())
    assert f"topic {limited} takes at most 200,000 (its max.message.bytes)" in said, said
    assert _numbers(pipeline_settings, limited, consumer_group) == [(b"b", 2)]
    assert outbox_status(engine).backlog == 2
    engine.dispose()
