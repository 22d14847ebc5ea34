"""replay_recording with --speed against the real broker: a recording of several partitions,
one partition after another in the file, arrives at its recorded moments (the replayed
messages' timestamps are when they were sent).

What the target holds is read back with a plain consumer, not the code under test.
"""

from __future__ import annotations

import time

from confluent_kafka import KafkaError, TopicPartition

from pipeline.kafka.clients import build_consumer, build_producer
from pipeline.replay.bounds import Stop
from pipeline.replay.pacing import Pacing
from pipeline.replay.processes import replay_recording
from pipeline.replay.recorder import record_topics
from pipeline.replay.recording import RecordingWriter

GAP_MS = 200
COUNT = 12


def _stamped(settings, topic, first_ms):
    """``m0`` to ``m11``, stamped ``GAP_MS`` apart from ``first_ms``, cycling over 3 partitions."""
    failures = []
    producer = build_producer(
        settings.kafka, on_delivery=lambda error, _m: error and failures.append(error)
    )
    for n in range(COUNT):
        producer.produce(
            topic, f"m{n}".encode(), f"k{n}".encode(), partition=n % 3,
            timestamp=first_ms + GAP_MS * n,
        )  # fmt: skip
    assert producer.flush(60) == 0 and not failures, failures


def _stamps_of(settings, topic):
    """Every message's ``(timestamp, value, partition)``."""
    consumer = build_consumer(settings.kafka, "unused", **{"enable.partition.eof": True})
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
        held, ended = [], set()
        deadline = time.monotonic() + 120
        while len(ended) < 3 and time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=0.5):
                if message.error() is not None:
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        ended.add(message.partition())
                    continue
                held.append((message.timestamp()[1], message.value().decode(), message.partition()))
        assert len(ended) == 3, "the topic was not read to its end"
        return held
    finally:
        consumer.close()


def test_speed_sends_a_recording_of_several_partitions_at_its_recorded_moments(
    pipeline_settings, new_topic, unique_name, tmp_path
):
    source = new_topic(partitions=3, name=f"fx3_{unique_name('src')}")
    target = new_topic(partitions=3, name=f"fx3_{unique_name('dst')}")
    _stamped(pipeline_settings, source, int(time.time() * 1000) - 60_000)
    recorded = list(
        record_topics(pipeline_settings.kafka, [source], start="beginning", stop=Stop(True))
    )
    # One partition after another, as `pipeline record` writes a topic with history.
    recorded.sort(key=lambda message: message.partition)
    path = tmp_path / "live.ndjson"
    with path.open("wb") as out:
        RecordingWriter(out).write_all(recorded)

    summary = replay_recording(
        pipeline_settings.kafka,
        path,
        topic=target,
        preserve_partitions=True,
        pacing=Pacing(speed=1),
    )

    assert summary.sent == COUNT
    arrived = sorted(_stamps_of(pipeline_settings, target))
    assert [(value, partition) for _, value, partition in arrived] == [
        (f"m{n}", n % 3) for n in range(COUNT)
    ]
    first = arrived[0][0]
    late = [(value, at - first - GAP_MS * n) for n, (at, value, _) in enumerate(arrived)]
    assert all(abs(off) < GAP_MS // 2 for _, off in late), late
