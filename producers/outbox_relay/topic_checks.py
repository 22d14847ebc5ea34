"""Which of a batch's rows cannot go: refused before anything is sent.

A row whose topic does not exist, or whose event is larger than its topic's own
``max.message.bytes`` (when that is below librdkafka's 1,000,000 bytes: the broker would refuse
the row's whole batch, its neighbours too, every time it is sent), counted with its record
batch's framing (:func:`framed_size`).

librdkafka takes a message for a topic it does not know, waits for the topic to appear (about
30 s), then fails its delivery. By then the relay had sent the aggregate's later rows of the
batch, to their own topics: they reached Kafka before the row they follow (and again with every
batch, since they could not be marked), and the whole relay waited those 30 s. A row refused
here is refused as the client refuses one at once
(:class:`~pipeline.kafka.producer.ProduceRefused`): not sent, nor are its aggregate's later rows
in the batch, and the refusal is logged at most once a minute (:class:`RefusalLog`).

The topics are looked up through the admin client (cluster metadata, which never creates a
topic), each again every ``recheck_s`` seconds: a topic created meanwhile is noticed then, and
so is a new ``max.message.bytes`` (raised to let a row go, or set or lowered while the relay
runs). A topic Kafka refused an event of as too large is looked up again with the next batch
(:meth:`TopicChecks.forget`): a limit lowered meanwhile then shrinks the relay's batches at
once, where the broker refused the old, larger batches of its rows one after another.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from pipeline.outbox.table import OutboxRecord
from pipeline.topics.admin import KafkaAdmin, describe_cluster_topics
from pipeline.topics.limits import message_limit
from producers.outbox_relay.holds import Hold

__all__ = ["BATCH_HEADER_BYTES", "TopicChecks", "framed_size"]

#: How long what the cluster said about a topic is believed.
RECHECK_S = 30.0


class TopicChecks:
    """The rows of a batch that cannot go, by position, with the reason."""

    def __init__(
        self,
        admin: KafkaAdmin,
        *,
        bootstrap: str | None = None,
        recheck_s: float = RECHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._admin = admin
        self._bootstrap = bootstrap
        self._recheck_s = recheck_s
        self._clock = clock
        #: The existing topics, and when each was looked up.
        self._existing_at: dict[str, float] = {}
        #: The own limits of the existing topics that have one.
        self._limits: dict[str, int] = {}
        #: When each topic was last found missing.
        self._missing_at: dict[str, float] = {}

    def problems(self, records: Sequence[OutboxRecord]) -> dict[int, Hold]:
        """``{position: why}`` for the rows whose topic the cluster does not have, or whose
        event is larger than its topic's own limit.

        Each topic is asked about again after ``recheck_s`` (one request for the batch's
        topics that are due). A :class:`~pipeline.errors.PipelineError` when Kafka does not
        answer.
        """
        now = self._clock()
        due = sorted(
            topic for topic in {record.topic for record in records} if self._due(topic, now)
        )
        if due:
            self._look_up(due, now)
        problems: dict[int, Hold] = {}
        if self._missing_at:
            problems = {
                record.position: Hold(f"topic {record.topic} does not exist", "topic_missing")
                for record in records
                if record.topic in self._missing_at
            }
        if self._limits:
            for record in records:
                limit = self._limits.get(record.topic)
                if limit is not None and (size := framed_size(record)) > limit:
                    problems[record.position] = Hold(
                        f"the event is {size:,} bytes in a batch of its own; topic "
                        f"{record.topic} takes at most {limit:,} (its max.message.bytes)",
                        "too_large",
                    )
        return problems

    def smallest_limit(self) -> tuple[str, int] | None:
        """The topic with the smallest own limit seen so far, and that limit, if any."""
        if not self._limits:
            return None
        topic = min(self._limits, key=self._limits.__getitem__)
        return topic, self._limits[topic]

    def limit_now(self, topic: str) -> int | None:
        """Look ``topic`` up at once (Kafka refused one of its events as too large: its limit
        may have been set or lowered); its own limit, if it has one. A
        :class:`~pipeline.errors.PipelineError` when Kafka does not answer."""
        self._look_up([topic], self._clock())
        return self._limits.get(topic)

    def forget(self, topic: str) -> None:
        """Ask about ``topic`` again with the next batch (Kafka refused one of its events as
        too large: its limit may have been lowered)."""
        self._existing_at.pop(topic, None)
        self._missing_at.pop(topic, None)
        self._limits.pop(topic, None)

    def _due(self, topic: str, now: float) -> bool:
        """Whether to ask the cluster about ``topic``: never asked, or asked ``recheck_s``
        ago."""
        asked_at = self._missing_at.get(topic, self._existing_at.get(topic))
        return asked_at is None or now - asked_at >= self._recheck_s

    def _look_up(self, topics: list[str], now: float) -> None:
        """Ask the cluster about ``topics`` and note what it says."""
        found = describe_cluster_topics(self._admin, topics, bootstrap=self._bootstrap)
        for topic in topics:
            self._limits.pop(topic, None)
            if topic in found:
                self._existing_at[topic] = now
                self._missing_at.pop(topic, None)
                limit = message_limit(found[topic])
                if limit is not None:
                    self._limits[topic] = limit
            else:
                self._existing_at.pop(topic, None)
                self._missing_at[topic] = now


#: A v2 record batch's header: base offset 8, length 4, leader epoch 4, magic 1, CRC 4,
#: attributes 2, last offset delta 4, first and max timestamps 8 + 8, producer id 8, producer
#: epoch 2, base sequence 4, record count 4. The broker holds a topic's max.message.bytes
#: against the whole batch, this header included.
BATCH_HEADER_BYTES = 61
#: A record's attributes (1) and its timestamp and offset deltas, counted at 5 bytes each (a
#: varint's most for an int32; a timestamp delta over 99 days would take more): more than they
#: take, so that a row the estimate lets through fits.
_RECORD_FIXED_BYTES = 1 + 5 + 5


def framed_size(record: OutboxRecord) -> int:
    """The most bytes the broker counts for ``record`` in a batch of its own: the batch header,
    the record's varints, key, value and headers (text as UTF-8).

    Key, value and headers alone were short by the framing: an event of 199,791 bytes passed
    for a topic taking 200,000, and the broker refused it. Measured against the broker (one
    record, 8 headers): it took key + value + headers up to the limit less 88 bytes, this
    counts 96. Compression does not make it larger: librdkafka sends a batch that does not
    compress uncompressed.
    """
    key = _utf8_len(record.aggregate_id)
    value = record.value
    body = _RECORD_FIXED_BYTES + _varint_len(key) + key
    body += 1 if value is None else _varint_len(len(value)) + len(value)
    body += _varint_len(len(record.headers))
    for name, text in record.headers:
        name_bytes, value_bytes = _utf8_len(name), _utf8_len(text)
        body += _varint_len(name_bytes) + name_bytes + _varint_len(value_bytes) + value_bytes
    return BATCH_HEADER_BYTES + _varint_len(body) + body


def _utf8_len(text: str | bytes) -> int:
    if isinstance(text, bytes):
        return len(text)
    return len(text) if text.isascii() else len(text.encode())


def _varint_len(number: int) -> int:
    """Bytes of Kafka's zigzag varint for a length (non-negative here)."""
    zigzag = number << 1
    size = 1
    while zigzag >= 0x80:
        zigzag >>= 7
        size += 1
    return size
