"""What reached a benchmark's topic: how many messages it holds, by its watermarks (the check
a round's result must pass, so that a fast run that lost messages cannot count)."""

from __future__ import annotations

import uuid

from confluent_kafka import TopicPartition

from pipeline.kafka.clients import build_consumer
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
