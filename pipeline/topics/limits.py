"""A topic's own message size limit, and the producer batch size that stays under it.

The broker applies a topic's ``max.message.bytes`` to a whole batch of messages and refuses an
oversized batch whole: every event in it fails, not just one too large. Kafka's Java producer
splits such a batch and tries again; librdkafka does not. A producer that sends to a topic whose
limit is below librdkafka's ``batch.size`` (1,000,000 bytes) keeps its batches under it
(:func:`batch_bytes_within`), so an event too large fails alone.
"""

from __future__ import annotations

from collections.abc import Iterable

from pipeline.topics.plan import ActualTopic

__all__ = ["LIBRDKAFKA_BATCH_BYTES", "batch_bytes_within", "message_limit", "smallest_limit"]

#: librdkafka's own batch.size: the most bytes of messages it sends to a partition at once.
LIBRDKAFKA_BATCH_BYTES = 1_000_000


def message_limit(topic: ActualTopic) -> int | None:
    """The topic's ``max.message.bytes`` when it is below what librdkafka batches by default,
    else ``None``."""
    text = topic.configs.get("max.message.bytes")
    if text is None or not text.isdigit() or int(text) >= LIBRDKAFKA_BATCH_BYTES:
        return None
    return int(text)


def batch_bytes_within(limit: int) -> int:
    """A producer ``batch.size`` whose batches the broker takes under ``limit``: a tenth left
    for the batch's framing and a compression that makes bytes larger (lz4 on data that does
    not compress)."""
    return max(1, limit * 9 // 10)


def smallest_limit(topics: Iterable[ActualTopic]) -> tuple[str, int] | None:
    """The topic with the smallest :func:`message_limit` and that limit, if any has one."""
    limits = [(limit, topic.name) for topic in topics if (limit := message_limit(topic))]
    if not limits:
        return None
    limit, name = min(limits)
    return name, limit
