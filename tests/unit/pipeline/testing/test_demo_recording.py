"""The demo recording in tests/data/ is what its generator makes, and a valid recording."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from pipeline.kafka.partitioner import partition_for
from pipeline.replay.recording import read_recording
from tests.data import make_demo_recording

RECORDING = Path(make_demo_recording.__file__).with_name("demo_orders.ndjson")


def test_the_committed_recording_is_what_the_generator_makes():
    assert RECORDING.read_text(encoding="utf-8") == make_demo_recording.text()


def test_the_recording_is_keyed_partitioned_and_ordered_as_kafka_would_store_it():
    messages = list(read_recording(RECORDING))
    kinds = Counter(dict(m.headers)["ce_type"] for m in messages)

    assert kinds == {
        b"com.example.requests.place_order": 60,
        b"com.example.requests.cancel_order": 8,
    }
    assert all(m.partition == partition_for(m.key or b"", 6) for m in messages)
    for partition in range(6):
        offsets = [m.offset for m in messages if m.partition == partition]
        assert offsets == list(range(len(offsets)))
    assert len({dict(m.headers)["ce_id"] for m in messages}) == len(messages)
