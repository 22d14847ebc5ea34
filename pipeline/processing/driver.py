"""The broker-free test driver: run a processor's handlers on in-memory topics.

Like Kafka Streams' ``TopologyTestDriver``, it runs the real engine (lanes, inbox, retries, dead
letters, commit positions) with the real database code; only Kafka is replaced by lists::

    driver = ProcessorTestDriver(orders)          # a temporary SQLite database, migrated
    driver.send("requests.orders", place_order_event)
    driver.run()                                  # handle everything sent so far
    assert driver.metrics.processed == 1
    assert driver.dead_letters("requests.orders") == []

Each :meth:`ProcessorTestDriver.run` starts from the committed positions, as a restarted
processor would; :meth:`ProcessorTestDriver.redeliver` rewinds them to replay records.
Retries do not sleep: the backoff is recorded in :attr:`ProcessorTestDriver.waits` instead.

:meth:`ProcessorTestDriver.redrive` does what ``pipeline dlq redrive`` does, on the lists: it
takes the pending dead letters of ``<topic>.dlq`` (all, or those of one key) and

1. orders each key's letters by their original offset, keys in the order they were first
   dead-lettered; the last letter of each key is marked ``last_of_key`` (a keyless letter is
   always the last of its own);
2. per letter, appends :func:`~pipeline.dead_letters.letter.redrive_message` to its original topic
   and
   partition, then :func:`~pipeline.dead_letters.letter.redriven_marker` to the dead-letter topic,
   so
   it is no longer pending (a second redrive does not send it again).

The redriven records are handled by the next :meth:`ProcessorTestDriver.run`.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import defaultdict
from pathlib import Path

from sqlalchemy.engine import Engine

from pipeline.database import build_engine, migrate
from pipeline.dead_letters.letter import (
    DeadLetter,
    pending_dead_letters,
    read_dead_letter,
    redrive_message,
    redriven_marker,
)
from pipeline.envelope import Event, KafkaMessage, encode
from pipeline.ids import new_event_id
from pipeline.processing.engine import ProcessingEngine
from pipeline.processing.metrics import MetricsSnapshot, ProcessorMetrics
from pipeline.processing.offsets import CommitPosition
from pipeline.processing.processor import Processor
from pipeline.processing.records import Record
from pipeline.settings import DatabaseSettings, ProcessingSettings
from pipeline.topics.spec import dlq_name

__all__ = ["ProcessorTestDriver"]


class _ListSink:
    def __init__(self, driver: ProcessorTestDriver) -> None:
        self._driver = driver

    async def send(self, topic: str, message: KafkaMessage) -> None:
        self._driver.send(topic, message)


class ProcessorTestDriver:
    """In-memory topics (one partition each unless told) and a processor reading them."""

    def __init__(
        self,
        processor: Processor,
        *,
        database: Engine | None = None,
        settings: ProcessingSettings | None = None,
    ) -> None:
        self.processor = processor
        self.settings = settings or ProcessingSettings()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if database is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="pipeline-driver-")
            path = Path(self._tmp.name) / "driver.db"
            database = build_engine(DatabaseSettings(url=f"sqlite:///{path}"))
        migrate(database)
        processor.start(database)
        self.database = database
        self.topics: dict[tuple[str, int], list[Record]] = defaultdict(list)
        self.committed: dict[tuple[str, int], int] = {}
        self.waits: list[float] = []
        self._metrics = ProcessorMetrics(processor.name)

    @property
    def metrics(self) -> MetricsSnapshot:
        return self._metrics.snapshot()

    def send(
        self,
        topic: str,
        message: Event | KafkaMessage,
        *,
        partition: int = 0,
        key: bytes | None = None,
    ) -> Record:
        """Append a message (an event is encoded first) to a topic; returns the record."""
        encoded = encode(message) if isinstance(message, Event) else message
        log = self.topics[(topic, partition)]
        record = Record(
            topic=topic,
            partition=partition,
            offset=len(log),
            key=key if key is not None else encoded.key,
            value=encoded.value,
            headers=list(encoded.headers),
            timestamp_ms=None,
        )
        log.append(record)
        return record

    def run(self) -> MetricsSnapshot:
        """Handle every record of the processor's topics above the committed positions."""
        asyncio.run(self._run())
        return self.metrics

    def redeliver(self, topic: str, partition: int = 0, from_offset: int = 0) -> None:
        """Rewind a partition's committed position, as after a crash before the commit."""
        self.committed[(topic, partition)] = from_offset

    def dead_letters(self, topic: str, partition: int = 0) -> list[DeadLetter]:
        """The dead letters of ``topic`` not redriven yet."""
        log = self.topics.get((dlq_name(topic), partition), [])
        return pending_dead_letters(
            read_dead_letter(r.topic, r.partition, r.offset, r.key, r.value, r.headers) for r in log
        )

    def redrive(
        self, topic: str, *, key: bytes | None = None, redrive_id: str | None = None
    ) -> list[Record]:
        """Send the pending dead letters of ``topic`` (only ``key``'s when given) back to it.

        See the module's docstring for the order and the markers. Returns the records appended
        to ``topic``, in the order they were appended.
        """
        redrive_id = redrive_id or new_event_id()
        dlq = dlq_name(topic)
        letters = [
            letter
            for (name, partition) in sorted(self.topics)
            if name == dlq
            for letter in self.dead_letters(topic, partition)
            if letter.original_topic == topic and (key is None or letter.key == key)
        ]
        groups: dict[object, list[DeadLetter]] = {}
        for letter in letters:
            group: object = letter.position if letter.key is None else letter.key
            groups.setdefault(group, []).append(letter)
        sent: list[Record] = []
        for group_letters in groups.values():
            group_letters.sort(key=lambda x: (x.original_partition, x.original_offset))
            for index, letter in enumerate(group_letters):
                last = index == len(group_letters) - 1
                message = redrive_message(letter, redrive_id=redrive_id, last_of_key=last)
                sent.append(self.send(topic, message, partition=letter.original_partition))
                self.send(dlq, redriven_marker(letter), partition=letter.dlq_partition)
        return sent

    def close(self) -> None:
        self.database.dispose()
        if self._tmp is not None:
            self._tmp.cleanup()

    async def _no_sleep(self, seconds: float) -> None:
        self.waits.append(seconds)

    def _commit(self, plan: list[CommitPosition]) -> None:
        for topic, partition, position in plan:
            self.committed[(topic, partition)] = position

    async def _run(self) -> None:
        engine = ProcessingEngine(
            self.processor,
            database=self.database,
            dead_letters=_ListSink(self),
            on_commit=self._commit,
            settings=self.settings,
            metrics=self._metrics,
            sleep=self._no_sleep,
        )
        wanted = set(self.processor.topics)
        partitions = [tp for tp in list(self.topics) if tp[0] in wanted]
        engine.assigned(partitions)
        try:
            for tp in partitions:
                for record in self.topics[tp][self.committed.get(tp, 0) :]:
                    await engine.submit(record)
            await engine.wait_idle()
        finally:
            await engine.close()
