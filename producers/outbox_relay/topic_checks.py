"""Which of a batch's rows cannot go: refused before anything is sent.

A row whose topic does not exist, or whose event is larger than its topic's own
``max.message.bytes`` (when that is below librdkafka's 1,000,000 bytes: the broker would refuse
the row's whole batch, its neighbours too, every time it is sent).

librdkafka takes a message for a topic it does not know, waits for the topic to appear (about
30 s), then fails its delivery. By then the relay had sent the aggregate's later rows of the
batch, to their own topics: they reached Kafka before the row they follow (and again with every
batch, since they could not be marked), and the whole relay waited those 30 s. A row refused
here is refused as the client refuses one at once
(:class:`~pipeline.kafka.producer.ProduceRefused`): not sent, nor are its aggregate's later rows
in the batch, and the refusal is logged at most once a minute (:class:`RefusalLog`).

The topics are looked up through the admin client (cluster metadata, which never creates a
topic), each at most every ``recheck_s`` seconds: a topic created meanwhile is noticed then, and
so is a new ``max.message.bytes`` of a topic that has one of its own (raised to let a row go).
A topic that exists with the cluster's own limit is not asked about again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from pipeline.outbox.table import OutboxRecord
from pipeline.topics.admin import KafkaAdmin, describe_cluster_topics
from pipeline.topics.limits import message_limit

__all__ = ["TopicChecks"]

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
        self._existing: set[str] = set()
        #: The own limits of the existing topics that have one, and when each was read.
        self._limits: dict[str, int] = {}
        self._limits_at: dict[str, float] = {}
        #: When each topic was last found missing.
        self._missing_at: dict[str, float] = {}

    def problems(self, records: Sequence[OutboxRecord]) -> dict[int, str]:
        """``{position: reason}`` for the rows whose topic the cluster does not have, or whose
        event is larger than its topic's own limit.

        A topic found with the cluster's own limit is not asked about again (a batch of such
        topics costs nothing); one found missing, or with a limit of its own, is asked about
        again after ``recheck_s``. A :class:`~pipeline.errors.PipelineError` when Kafka does
        not answer.
        """
        now = self._clock()
        due = sorted(
            topic for topic in {record.topic for record in records} if self._due(topic, now)
        )
        if due:
            self._look_up(due, now)
        problems: dict[int, str] = {}
        if self._missing_at:
            problems = {
                record.position: f"topic {record.topic} does not exist"
                for record in records
                if record.topic in self._missing_at
            }
        if self._limits:
            for record in records:
                limit = self._limits.get(record.topic)
                if limit is not None and (size := _size(record)) > limit:
                    problems[record.position] = (
                        f"the event is {size:,} bytes; topic {record.topic} takes at most "
                        f"{limit:,} (its max.message.bytes)"
                    )
        return problems

    def smallest_limit(self) -> tuple[str, int] | None:
        """The topic with the smallest own limit seen so far, and that limit, if any."""
        if not self._limits:
            return None
        topic = min(self._limits, key=self._limits.__getitem__)
        return topic, self._limits[topic]

    def _due(self, topic: str, now: float) -> bool:
        """Whether to ask the cluster about ``topic``: never asked, or found missing or with a
        limit of its own ``recheck_s`` ago."""
        asked_at = self._missing_at.get(topic, self._limits_at.get(topic))
        if asked_at is not None:
            return now - asked_at >= self._recheck_s
        return topic not in self._existing

    def _look_up(self, topics: list[str], now: float) -> None:
        """Ask the cluster about ``topics`` and note what it says."""
        found = describe_cluster_topics(self._admin, topics, bootstrap=self._bootstrap)
        for topic in topics:
            self._limits.pop(topic, None)
            self._limits_at.pop(topic, None)
            if topic in found:
                self._existing.add(topic)
                self._missing_at.pop(topic, None)
                limit = message_limit(found[topic])
                if limit is not None:
                    self._limits[topic] = limit
                    self._limits_at[topic] = now
            else:
                self._existing.discard(topic)
                self._missing_at[topic] = now


def _size(record: OutboxRecord) -> int:
    """The record's bytes as Kafka counts them, near enough: key, value and headers."""
    headers = sum(len(name) + len(value) for name, value in record.headers)
    return len(record.aggregate_id) + len(record.value or b"") + headers
