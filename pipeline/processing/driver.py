"""The broker-free test driver: run a processor's handlers on in-memory topics.

Like Kafka Streams' ``TopologyTestDriver``, it runs the real engine (lanes, inbox, retries, dead
letters, commit positions) with the real database code; only Kafka is replaced by lists::

    driver = ProcessorTestDriver(orders)          # a temporary SQLite database, migrated
    driver.send("requests.orders", place_order_event)
    driver.run()                                  # handle everything sent so far
    assert driver.metrics.processed == 1
    assert driver.dead_letters("requests.orders") == []

Topics have one partition unless told (``partitions=6``, or ``{"requests.orders": 6}``); a keyed
message goes to the partition Kafka's default partitioner (murmur2,
:func:`pipeline.kafka.partitioner.partition_for`) gives its key, a keyless one round robin, and
``send(..., partition=n)`` puts it where told. A recording (``pipeline record``'s lines, or
``kcat -J``'s) goes in with :meth:`ProcessorTestDriver.send_recording`, where ``pipeline
replay`` would send it: a keyless recorded message to its recorded partition modulo the
topic's partition count here (pipeline/replay/routing.py). ``send`` takes only a
topic the processor reads (a :class:`ValueError` names those it reads otherwise), and whatever
the driver stamps (records, dead letters) has the virtual clock's time.

Each :meth:`ProcessorTestDriver.run` starts from the committed positions, as a restarted
processor would; :meth:`ProcessorTestDriver.redeliver` rewinds them to replay records.
Retries do not sleep in real time: their backoffs wait on the driver's
:class:`~pipeline.processing.clock.VirtualClock`, which jumps ahead once every record in flight
is waiting (see pipeline/processing/clock.py), and each backoff is recorded in
:attr:`ProcessorTestDriver.waits`.

An event whose handler raises :class:`~pipeline.processing.processor.NotYet` waits, tried
again without limit, never dead-lettered, as under ``pipeline process``; the clock never
jumps for such waits alone (it would move for ever): their backoffs pass while other backoffs
move the clock, and once every record in flight waits that way, :meth:`ProcessorTestDriver.run`
returns. Those events stay uncommitted, their keys' later events behind them: the next run
tries them again, after the test moved the clock or provided what they wait for.

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
import contextlib
import difflib
import random
import tempfile
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import Engine

from pipeline.database import build_engine, migrate
from pipeline.dead_letters.letter import (
    DEAD_LETTERED_AT,
    DeadLetter,
    pending_dead_letters,
    read_dead_letter,
    redrive_message,
    redriven_marker,
)
from pipeline.envelope import Event, KafkaMessage, encode
from pipeline.ids import new_event_id
from pipeline.kafka.partitioner import partition_for
from pipeline.processing.clock import ClockTimers, VirtualClock
from pipeline.processing.engine import ProcessingEngine
from pipeline.processing.metrics import MetricsSnapshot, ProcessorMetrics
from pipeline.processing.offsets import CommitPosition
from pipeline.processing.processor import Processor
from pipeline.processing.records import Record
from pipeline.replay.recording import RecordedMessage
from pipeline.replay.routing import BY_KEY, target_partition
from pipeline.settings import DatabaseSettings, OutboxSettings, ProcessingSettings
from pipeline.topics.spec import dlq_name

__all__ = [
    "ProcessorTestDriver",
    "key_bytes",
    "recorded_message",
    "recorded_partitions",
    "unread_topic_error",
]


def recorded_message(recorded: RecordedMessage) -> KafkaMessage:
    """The message a processor gets for a recorded one: its key, value and headers (a header
    recorded as null becomes empty bytes, as the processor runtime hands it over)."""
    headers = [(name, value if value is not None else b"") for name, value in recorded.headers]
    return KafkaMessage(key=recorded.key, value=recorded.value, headers=headers)


def recorded_partitions(
    messages: Iterable[RecordedMessage], *, topic: str | None = None
) -> dict[str, tuple[int, int]]:
    """Per target topic (``topic``, else each message's own), the lowest and the highest
    recorded partition: what ``preserve_partitions`` needs of it."""
    spans: dict[str, tuple[int, int]] = {}
    for recorded in messages:
        target = topic or recorded.topic
        low, high = spans.get(target, (recorded.partition, recorded.partition))
        spans[target] = (min(low, recorded.partition), max(high, recorded.partition))
    return spans


def unread_topic_error(topic: str, read: Collection[str], processors: str) -> ValueError:
    """The one-line refusal of ``topic``, which none of ``processors`` (their names) reads:
    what is sent there would never be handled, and a test asserting that nothing failed would
    pass for nothing (a typo in the topic's name, say)."""
    names = sorted(set(read))
    close = difflib.get_close_matches(topic, names, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return ValueError(
        f"no processor here ({processors}) reads {topic}, so nothing would handle it; the "
        f"topics read: {', '.join(names) or 'none'}{hint}"
    )


def _stamped(letter: KafkaMessage, moment: datetime) -> KafkaMessage:
    """``letter`` with ``moment`` as its ``dlq.dead_lettered_at``: the engine stamps a dead
    letter with the real time, while every other time of the driver (the records', the
    relay's, the sagas') is the virtual clock's."""
    stamp = moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    headers = [
        (name, stamp.encode() if name == DEAD_LETTERED_AT else value)
        for name, value in letter.headers
    ]
    return KafkaMessage(key=letter.key, value=letter.value, headers=headers)


class _ListSink:
    """The engine's dead letters, appended to ``<topic>.dlq`` at the virtual clock's time."""

    def __init__(self, driver: ProcessorTestDriver) -> None:
        self._driver = driver

    async def send(self, topic: str, message: KafkaMessage) -> None:
        self._driver.append(topic, _stamped(message, self._driver.clock()))


class ProcessorTestDriver:
    """In-memory topics (one partition each unless told) and a processor reading them.

    ``partitions``: how many partitions every topic has (an int), or per topic (a mapping;
    topics not named have one). ``clock``: the virtual clock the retries wait on (a harness
    shares one among its drivers); a new one unless given. ``seed``: of the retries' jitter, so
    that a test's waits are the same in every run. ``outbox``: the outbox settings, as
    ``pipeline process`` takes them from ``settings.outbox`` (``unit.emit`` routes with their
    ``routes``); the defaults unless given.
    """

    def __init__(
        self,
        processor: Processor,
        *,
        database: Engine | None = None,
        settings: ProcessingSettings | None = None,
        clock: VirtualClock | None = None,
        partitions: int | Mapping[str, int] = 1,
        seed: int = 0,
        outbox: OutboxSettings | None = None,
    ) -> None:
        self.processor = processor
        # The retries' jitter is drawn from this: the same waits, and the same virtual times,
        # in every run of a test.
        self._rng = random.Random(seed)
        self.settings = settings or ProcessingSettings()
        self.outbox = outbox or OutboxSettings()
        self.clock = clock or VirtualClock()
        self._partitions = partitions
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
        self._round_robin: dict[str, int] = defaultdict(int)
        processor.progress = self

    @property
    def metrics(self) -> MetricsSnapshot:
        return self._metrics.snapshot()

    def partitions_of(self, topic: str) -> int:
        """How many partitions ``topic`` has (as configured; ``send`` may use others)."""
        if isinstance(self._partitions, int):
            return self._partitions
        return self._partitions.get(topic, 1)

    def partition_for(self, topic: str, key: bytes | None) -> int:
        """Where a message with ``key`` goes: murmur2 of the key, or round robin without one."""
        count = self.partitions_of(topic)
        if key is not None:
            return partition_for(key, count)
        partition = self._round_robin[topic] % count
        self._round_robin[topic] += 1
        return partition

    def send(
        self,
        topic: str,
        message: Event | KafkaMessage,
        *,
        partition: int | None = None,
        key: bytes | str | None = None,
        timestamp_ms: int | None = None,
    ) -> Record:
        """Append a message (an event is encoded first) to a topic the processor reads; returns
        the record. A topic it does not read is a :class:`ValueError` naming those it reads, as
        Kafka Streams' ``TopologyTestDriver`` refuses an unknown input topic: nothing would
        ever handle the message.

        ``key`` replaces the message's key (text is its UTF-8); ``partition`` (else the key's
        partition) and ``timestamp_ms`` (else the clock's time) are where and when it lands (a
        partition the topic does not have is a :class:`ValueError`, as Kafka refuses it).
        """
        self.check_reads(topic)
        if partition is not None and not 0 <= partition < self.partitions_of(topic):
            count = self.partitions_of(topic)
            raise ValueError(
                f"{topic} has {count} partition{'s' if count != 1 else ''} here (0 to "
                f"{count - 1}), not {partition}: give the driver partitions={{...}} for more"
            )
        return self.append(
            topic, message, partition=partition, key=key_bytes(key), timestamp_ms=timestamp_ms
        )

    def check_reads(self, topic: str) -> None:
        """A :class:`ValueError` naming the processor's topics unless it reads ``topic``."""
        if topic not in self.processor.topics:
            raise unread_topic_error(topic, self.processor.topics, self.processor.name)

    def append(
        self,
        topic: str,
        message: Event | KafkaMessage,
        *,
        partition: int | None = None,
        key: bytes | None = None,
        timestamp_ms: int | None = None,
    ) -> Record:
        """:meth:`send` to any topic: the driver's own dead letters and markers, a harness's
        relayed events, a recording's messages of topics the processor does not read."""
        encoded = encode(message) if isinstance(message, Event) else message
        key = key if key is not None else encoded.key
        if partition is None:
            partition = self.partition_for(topic, key)
        log = self.topics[(topic, partition)]
        record = Record(
            topic=topic,
            partition=partition,
            offset=len(log),
            key=key,
            value=encoded.value,
            headers=list(encoded.headers),
            timestamp_ms=self.clock.epoch_ms if timestamp_ms is None else timestamp_ms,
        )
        log.append(record)
        return record

    def send_recording(
        self,
        messages: Iterable[RecordedMessage],
        *,
        topic: str | None = None,
        preserve_partitions: bool = False,
    ) -> list[Record]:
        """Append recorded messages in their order: to their own topics or ``topic``, on the
        key's partition or (``preserve_partitions``) the recorded one, with the recorded key,
        value, headers and timestamp. A header recorded as null arrives as empty bytes, as the
        processor runtime hands it over.

        With ``preserve_partitions``, the whole recording is checked first: a recorded partition
        its topic does not have here is a :class:`ValueError`, and nothing was sent (as
        ``pipeline replay --preserve-partitions`` refuses). A topic the processor does not read
        is taken (a recording may hold several topics): ``replay_into_driver`` warns of it."""
        messages = list(messages)
        if preserve_partitions:
            self.check_kept_partitions(recorded_partitions(messages, topic=topic))
        return [
            self.append(
                topic or recorded.topic,
                recorded_message(recorded),
                partition=self.replay_partition(
                    topic or recorded.topic, recorded, preserve=preserve_partitions
                ),
                timestamp_ms=recorded.timestamp_ms,
            )
            for recorded in messages
        ]

    def replay_partition(
        self, topic: str, recorded: RecordedMessage, *, preserve: bool
    ) -> int | None:
        """Where ``recorded`` goes in ``topic`` here, as ``pipeline replay`` sends it
        (:func:`pipeline.replay.routing.target_partition`): its recorded partition
        (``preserve``); else ``None`` (its key's partition) for a keyed one, and for a keyless
        one its recorded partition modulo ``topic``'s partition count (a keyless *new* message
        of :meth:`send` goes round robin, as a producer spreads it)."""
        partition = target_partition(
            recorded, preserve=preserve, partitions=self.partitions_of(topic)
        )
        return None if partition == BY_KEY else partition

    def check_kept_partitions(self, spans: Mapping[str, tuple[int, int]]) -> None:
        """A :class:`ValueError` naming every topic of ``spans`` (lowest and highest recorded
        partition, by topic: :func:`recorded_partitions`) that lacks one of them here."""
        problems = []
        for topic, (low, high) in sorted(spans.items()):
            count = self.partitions_of(topic)
            if low < 0 or high >= count:
                problems.append(
                    f"{topic} has {count} partition{'s' if count != 1 else ''} here and the "
                    f"recording has partition {low if low < 0 else high}"
                )
        if problems:
            raise ValueError(
                f"preserve_partitions: {'; '.join(problems)}: give the driver partitions={{...}} "
                "(or do not preserve partitions); nothing was sent"
            )

    def run(self) -> MetricsSnapshot:
        """Handle every record of the processor's topics above the committed positions; returns
        the driver's metrics, totals since it was made (as the processor's counters are), not
        this run's alone: ``after.processed - before.processed`` counts one run. Records whose
        handlers raise :class:`~pipeline.processing.processor.NotYet` end it once only they
        are left (see the module's docstring): uncommitted, they are tried again next run."""
        asyncio.run(self._run())
        return self.metrics

    def read_through(self, topic: str) -> datetime:
        """The processor's :class:`~pipeline.processing.read_through.TopicProgress`: the clock's
        time when every record of ``topic`` was handled; else just before the earliest
        timestamp of a record not handled yet."""
        waiting = [
            record.timestamp_ms
            for (name, partition), log in self.topics.items()
            if name == topic
            for record in log[self.committed.get((name, partition), 0) :]
            if record.timestamp_ms is not None
        ]
        now = self.clock()
        if not waiting:
            return now
        return min(now, datetime.fromtimestamp((min(waiting) - 1) / 1000, UTC))

    def redeliver(self, topic: str, partition: int | None = None, from_offset: int = 0) -> None:
        """Rewind a partition's committed position (every partition's when ``partition`` is
        ``None``), as after a crash before the commit."""
        numbers = sorted(n for name, n in self.topics if name == topic)
        for number in numbers if partition is None else [partition]:
            self.committed[(topic, number)] = from_offset

    def dead_letters(self, topic: str, partition: int | None = None) -> list[DeadLetter]:
        """The dead letters of ``topic`` not redriven yet: of one partition of its dead-letter
        topic, or of all of them in partition order when ``partition`` is ``None``. A topic the
        processor does not read is a :class:`ValueError` (it has none, for ever)."""
        self.check_reads(topic)
        dlq = dlq_name(topic)
        numbers = sorted(n for name, n in self.topics if name == dlq)
        letters: list[DeadLetter] = []
        for number in numbers if partition is None else [partition]:
            log = self.topics.get((dlq, number), [])
            letters += pending_dead_letters(
                read_dead_letter(r.topic, r.partition, r.offset, r.key, r.value, r.headers)
                for r in log
            )
        return letters

    def redrive(
        self, topic: str, *, key: bytes | str | None = None, redrive_id: str | None = None
    ) -> list[Record]:
        """Send the pending dead letters of ``topic`` (only ``key``'s when given, text as its
        UTF-8, as ``pipeline dlq redrive --key`` takes it) back to it.

        See the module's docstring for the order and the markers. Returns the records appended
        to ``topic``, in the order they were appended.
        """
        key = key_bytes(key)
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
                sent.append(self.append(topic, message, partition=letter.original_partition))
                self.append(dlq, redriven_marker(letter), partition=letter.dlq_partition)
        return sent

    def close(self) -> None:
        self.database.dispose()
        if self._tmp is not None:
            self._tmp.cleanup()

    def _commit(self, plan: list[CommitPosition]) -> None:
        for topic, partition, position in plan:
            self.committed[(topic, partition)] = position

    async def _run(self) -> None:
        timers = ClockTimers(self.clock)
        #: The engine's tasks in the backoff of an event that cannot be handled yet (NotYet).
        waiting: set[asyncio.Task[object]] = set()

        async def sleep(seconds: float) -> None:
            self.waits.append(seconds)
            await timers.sleep(seconds)

        async def wait(seconds: float) -> None:
            task = asyncio.current_task()
            assert task is not None
            waiting.add(task)
            try:
                # On the clock even when the policy's backoff is 0 (it spun for ever then).
                await sleep(max(seconds, 0.001))
            finally:
                waiting.discard(task)

        engine = ProcessingEngine(
            self.processor,
            database=self.database,
            dead_letters=_ListSink(self),
            on_commit=self._commit,
            settings=self.settings,
            metrics=self._metrics,
            sleep=sleep,
            rng=self._rng,
            outbox=self.outbox,
            wait=wait,
        )
        wanted = set(self.processor.topics)
        partitions = sorted(tp for tp in self.topics if tp[0] in wanted)
        engine.assigned(partitions)

        async def feed() -> None:
            for tp in partitions:
                for record in self.topics[tp][self.committed.get(tp, 0) :]:
                    await engine.submit(record)
            await engine.wait_idle()

        fed = asyncio.ensure_future(feed())
        pump = asyncio.ensure_future(
            self._pump_clock(timers, waiting, lambda: engine.waiting_for_place)
        )
        try:
            await asyncio.wait({fed, pump}, return_when=asyncio.FIRST_COMPLETED)
            if not fed.done():  # only events that cannot be handled yet are left
                for task in list(waiting):
                    task.cancel()  # left uncommitted: the next run tries them again
            await _ended(fed)
        finally:
            await _ended(pump)
            await engine.close()

    async def _pump_clock(
        self, timers: ClockTimers, waiting: Collection[object], placeless: Callable[[], int]
    ) -> None:
        """Wake the backoffs whose time came; jump the clock once all in flight wait on it
        (those waiting for a place of ``max_in_flight``, ``placeless()``, wait on the others);
        return once the sleepers all are backoffs of events that cannot be handled yet
        (``waiting``): the clock does not move for those alone. Such an event takes no place
        while it waits, so any other key's event that can start has started (and is in flight,
        not sleeping)."""
        while True:
            timers.release_due()
            if not timers.sleeping:
                timers.added.clear()
                await timers.added.wait()
            elif timers.sleeping + placeless() >= self._metrics.snapshot().in_flight:
                if len(waiting) >= timers.sleeping:
                    return
                timers.jump()
                await asyncio.sleep(0)
            else:  # some record is being handled in a worker thread: look again soon
                await asyncio.sleep(0.001)


async def _ended(task: asyncio.Future[None]) -> None:
    """``task`` cancelled unless it is done, and waited for (its error, if any, raised)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def key_bytes(key: bytes | str | None) -> bytes | None:
    """A key as the driver keeps it: bytes; text as its UTF-8. Anything else is a
    :class:`TypeError` (a key that matched nothing would pass a test vacuously)."""
    if key is None or isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8")
    raise TypeError(f"a key is bytes or text, not {type(key).__name__}: {key!r:.60}")
