"""Which of a batch's rows go to a topic that does not exist: refused before anything is sent.

librdkafka takes a message for a topic it does not know, waits for the topic to appear (about
30 s), then fails its delivery. By then the relay had sent the aggregate's later rows of the
batch, to their own topics: they reached Kafka before the row they follow (and again with every
batch, since they could not be marked), and the whole relay waited those 30 s. A row refused
here is refused as the client refuses one at once
(:class:`~pipeline.kafka.producer.ProduceRefused`): not sent, nor are its aggregate's later rows
in the batch, and the refusal is logged at most once a minute (:class:`RefusalLog`).

The topics are looked up through the admin client (cluster metadata, which never creates a
topic), each at most every ``recheck_s`` seconds: a topic created meanwhile is noticed then.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from pipeline.outbox.table import OutboxRecord
from pipeline.topics.admin import KafkaAdmin, describe_cluster_topics

__all__ = ["TopicChecks"]

#: How long what the cluster said about a topic is believed.
RECHECK_S = 30.0


class TopicChecks:
    """The rows of a batch whose topic does not exist, by position, with the reason."""

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
        #: When each topic was last found missing.
        self._missing_at: dict[str, float] = {}

    def missing(self, records: Sequence[OutboxRecord]) -> dict[int, str]:
        """``{position: reason}`` for the rows whose topic the cluster does not have.

        A topic found once is not asked about again (a batch of known topics costs nothing);
        one found missing is asked about again after ``recheck_s``. A
        :class:`~pipeline.errors.PipelineError` when Kafka does not answer.
        """
        topics = {record.topic for record in records}
        unknown = topics - self._existing
        if not unknown:
            return {}
        now = self._clock()
        stale = [
            topic
            for topic in sorted(unknown)
            if now - self._missing_at.get(topic, now - self._recheck_s) >= self._recheck_s
        ]
        if stale:
            found = describe_cluster_topics(self._admin, stale, bootstrap=self._bootstrap)
            for topic in stale:
                if topic in found:
                    self._existing.add(topic)
                    self._missing_at.pop(topic, None)
                else:
                    self._missing_at[topic] = now
        return {
            record.position: f"topic {record.topic} does not exist"
            for record in records
            if record.topic in self._missing_at
        }
