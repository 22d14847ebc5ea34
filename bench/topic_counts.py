"""What reached a benchmark's topic: how many messages it holds, by its watermarks (the check
a round's result must pass, so that a fast run that lost messages cannot count), and whether
each key's messages came in order."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable

from confluent_kafka import TopicPartition

from pipeline.kafka.clients import build_consumer
from pipeline.kafka.readback import end_offsets
from pipeline.settings import PipelineSettings


def messages_in(settings: PipelineSettings, topic: str, partitions: int) -> int:
    """The messages ``topic`` holds: high - low watermark, summed over its ``partitions``."""
    consumer = build_consumer(settings.kafka, f"bench-count-{uuid.uuid4().hex[:8]}")
    try:
        total = 0
        for partition in range(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=15)
            total += high - low
        return total
    finally:
        consumer.close()


def keyed_sequence(settings: PipelineSettings, topic: str) -> list[tuple[bytes | None, int]]:
    """Every message of ``topic`` as (key, the ``n`` of its data), each partition in its order
    (an aggregate's messages share a key, so a partition)."""
    consumer = build_consumer(settings.kafka, f"bench-outbox-order-{uuid.uuid4().hex[:8]}")
    try:
        ends = {end.partition: end.offset for end in end_offsets(consumer, topic) if end.offset}
        consumer.assign([TopicPartition(topic, partition, 0) for partition in ends])
        found: list[tuple[bytes | None, int]] = []
        deadline = time.monotonic() + 120
        while ends and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=0.5):
                if message.error() is not None:
                    continue
                found.append((message.key(), json.loads(message.value() or b"{}")["n"]))
                partition, offset = message.partition(), message.offset()
                if (
                    partition is not None
                    and offset is not None
                    and offset + 1 >= ends.get(partition, 0)
                ):
                    ends.pop(partition, None)
        if ends:
            raise RuntimeError(f"{topic}: could not read back partitions {sorted(ends)}")
        return found
    finally:
        consumer.close()


def order_violations(sequence: Iterable[tuple[bytes | None, int]]) -> int:
    """The messages that came after a later one of their key (their ``n`` below the highest
    seen for it). A repeat of a message already seen is a duplicate, counted elsewhere."""
    highest: dict[bytes | None, int] = {}
    seen: set[tuple[bytes | None, int]] = set()
    violations = 0
    for key, n in sequence:
        if (key, n) in seen:
            continue
        seen.add((key, n))
        if key in highest and n < highest[key]:
            violations += 1
        else:
            highest[key] = n
    return violations


def round_problems(found: int, expected: int, out_of_order: int | None) -> list[str]:
    """Why a round failed its checks (empty when it did not): fewer messages in its topic than
    expected, or messages out of order per aggregate."""
    problems = []
    if found < expected:
        problems.append(f"{found:,} of {expected:,} messages in the topic")
    if out_of_order:
        problems.append(f"{out_of_order:,} messages out of order per aggregate")
    return problems
