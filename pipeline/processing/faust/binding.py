"""A processor bound to a Faust app: Faust consumes, the processing engine decides what runs.

Faust (faust-streaming) owns the group membership, fetching, rebalancing and the offset commit
loop; one Faust topic channel reads all of the processor's topics and hands each event to the
:class:`FaustBinding`, which gives it to the
:class:`~pipeline.processing.engine.ProcessingEngine`. There is no agent and no Faust stream:
the engine is the stream (ordering, concurrency, acknowledgement), and Faust's per-event stream
machinery cost more than all of our own work per event. A Faust event is acknowledged only once
the engine's commit position has passed it, so Faust's acknowledged offsets are always
contiguous from the last commit and Faust never commits a record that is not done, whatever
order records of different keys finish in.

On revocation (and on shutdown) the engine drains the revoked partitions before Faust commits:
records in flight get ``processing.drain_timeout_s`` to finish (in a revocation at most 0.85 x
the session timeout, so that the drain ends before Faust's flight recorder calls the revocation
hung: :mod:`pipeline.processing.faust.rebalance`), what finished is acknowledged and committed,
and the rest is left for the next owner. Each assignment and each revocation is one INFO line.
The summary line at the stop comes once Faust has left the group and the records the drain gave
up on have finished (or had ``drain_timeout_s`` more), so it counts what they committed; its lag
is what the final commit left (end offsets minus committed positions, as Kafka's tools count).

Dead letters are written with our :class:`~pipeline.kafka.producer.EventProducer` (idempotent,
``acks=all``) and awaited before the offset moves. What depends on Faust's internals is in
:mod:`pipeline.processing.faust.internals`.

A record with a header name that is not UTF-8 (which aiokafka reads only through
:mod:`pipeline.processing.faust.tolerant_batches`, the name surrogate-escaped) is dead-lettered
as ``undecodable``: the envelope refuses such a name (Kafka says a header name is text), and
the dead letter carries it escaped (it could not be sent on as it is).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import faust
from faust.types import TP, EventT
from sqlalchemy.engine import Engine

from pipeline.database import build_engine
from pipeline.dead_letters.letter import DeadLetterTooLarge
from pipeline.envelope import KafkaMessage
from pipeline.errors import PipelineError
from pipeline.kafka.clients import build_consumer
from pipeline.kafka.delivery import Delivery, ProduceRefused
from pipeline.kafka.producer import EventProducer, build_event_producer
from pipeline.plurals import counted
from pipeline.processing.engine import ProcessingEngine, TopicPartition
from pipeline.processing.faust import tolerant_batches
from pipeline.processing.faust.credentials import faust_credentials
from pipeline.processing.faust.internals import FaustInternals, last_fetch_answer_ms
from pipeline.processing.faust.rebalance import (
    install_routine_rebalance_lines,
    partitions_text,
    revocation_drain_timeout,
)
from pipeline.processing.faust.session_expiry import install_session_expiry_warnings
from pipeline.processing.faust.stall_checks import install_stall_check_warnings
from pipeline.processing.group_progress import CONSUMER_CONFIG as GROUP_PROGRESS_CONFIG
from pipeline.processing.group_progress import GroupProgress
from pipeline.processing.inbox import purge_inbox
from pipeline.processing.metrics import (
    MetricsSnapshot,
    ProcessorMetrics,
    consumer_lag,
    summary_line,
)
from pipeline.processing.offsets import CommitPosition
from pipeline.processing.periodic_failures import PeriodicFailures
from pipeline.processing.processor import PeriodicTask, Processor
from pipeline.processing.records import Record
from pipeline.settings import PipelineSettings

__all__ = ["FaustBinding", "ProducerDeadLetterSink", "record_of"]

logger = logging.getLogger("pipeline.processing")

#: How long a metrics report waits for the consumer's fetch position of one partition.
_POSITION_WAIT_S = 1.0
#: How often the lag gauge is refreshed (the summary line, every metrics_log_interval_s, says
#: the lag too): a scrape sees a lag at most this old.
LAG_REFRESH_S = 1.0
#: How often the group's progress (processor.progress) is asked of Kafka.
PROGRESS_REFRESH_S = 1.0


class ProducerDeadLetterSink:
    """Dead letters through an :class:`EventProducer`; ``send`` waits for the acknowledgement.

    The broker refuses a whole batch as too large when one of its messages is: a small dead
    letter that shared a batch with a huge one was refused with it, and went without its value
    (which only its original, until retention removes it, still held). A letter the broker
    refused is therefore sent again alone: one such at a time, once the letters in flight are
    answered, while the others wait (dead letters are few; a letter lost is not).
    """

    def __init__(self, producer: EventProducer) -> None:
        self._producer = producer
        self._alone = asyncio.Lock()
        self._state = asyncio.Condition()
        self._in_flight = 0
        self._sending_alone = False

    async def send(self, topic: str, message: KafkaMessage) -> None:
        async with self._state:
            await self._state.wait_for(lambda: not self._sending_alone)
            self._in_flight += 1
        try:
            delivery = await self._delivery(topic, message)
        finally:
            async with self._state:
                self._in_flight -= 1
                self._state.notify_all()
        if delivery.too_large:
            delivery = await self._alone_in_flight(topic, message)
        if delivery.too_large:
            raise DeadLetterTooLarge(f"dead letter to {topic} refused: {delivery.error}")
        if not delivery.ok:
            raise PipelineError(f"dead letter to {topic} failed: {delivery.error}")

    async def _alone_in_flight(self, topic: str, message: KafkaMessage) -> Delivery:
        async with self._alone:
            async with self._state:
                self._sending_alone = True
                await self._state.wait_for(lambda: self._in_flight == 0)
            try:
                return await self._delivery(topic, message)
            finally:
                async with self._state:
                    self._sending_alone = False
                    self._state.notify_all()

    async def _delivery(self, topic: str, message: KafkaMessage) -> Delivery:
        try:
            return await asyncio.wrap_future(self._producer.send_future(topic, message))
        except ProduceRefused as refused:  # by the client itself: this message alone
            if refused.too_large:
                raise DeadLetterTooLarge(str(refused)) from None
            raise


def record_of(message: Any) -> Record:
    """The :class:`Record` of a Faust message."""
    headers = message.headers or []
    if isinstance(headers, dict):
        headers = list(headers.items())
    timestamp = message.timestamp
    return Record(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        headers=[(name, value if value is not None else b"") for name, value in headers],
        timestamp_ms=int(timestamp * 1000) if timestamp else None,
    )


class _ProcessorApp(faust.App):
    """Faust's App, draining the binding's engine before Faust stops its consumer."""

    #: Faust's lines about the app ("Starting...", "Flush producer buffer..."): mode names a
    #: service's logger after the module of its class, which put them under this module's, at
    #: INFO; under ``faust`` they follow Faust's level (WARNING unless the program logs at DEBUG).
    logger = logging.getLogger("faust.app")

    def __init__(self, binding: FaustBinding, name: str, **options: Any) -> None:
        self.binding = binding
        super().__init__(name, **options)

    async def on_start(self) -> None:
        self.binding.starting()
        await super().on_start()

    async def on_stop(self) -> None:
        await self.binding.stopping()
        await super().on_stop()

    async def on_shutdown(self) -> None:
        # After the consumer stopped (and left the group): the tally at the stop.
        await super().on_shutdown()
        await self.binding.stopped()


class FaustBinding:
    """One processor as a Faust app (nothing connects until a worker starts :attr:`app`).

    Per partition it keeps the events not acknowledged yet, the last offset consumed (for the
    lag) and the position acknowledged so far (committed on revocation).

    ``datadir`` is the directory Faust creates when its worker starts (its default is
    ``<name>-data`` in the current directory); ``pipeline process`` gives it a temporary one.
    Nothing is kept there: the app's tables are in memory. ``group``: the app's id, so the
    Kafka consumer group, and the owner of the inbox rows, parked keys and dead letters (the
    processor's name unless given; ``pipeline process --group``).
    """

    def __init__(
        self,
        processor: Processor,
        settings: PipelineSettings,
        *,
        database: Engine | None = None,
        metrics: ProcessorMetrics | None = None,
        producer: EventProducer | None = None,
        internals: FaustInternals | None = None,
        datadir: Path | None = None,
        group: str | None = None,
    ) -> None:
        processing = settings.processing
        kafka = settings.kafka
        self.processor = processor
        self.group = group or processor.name
        self.settings = processing
        #: The outbox routes of the handlers' emits (``settings.outbox``).
        self.outbox = settings.outbox
        self.database = database or build_engine(
            settings.database, pool_size=processing.max_in_flight
        )
        self.metrics = metrics or ProcessorMetrics(processor.name)
        self.producer = producer or build_event_producer(kafka, settings.producer)
        self.internals = internals or FaustInternals()
        self._periodic_failures = PeriodicFailures(processor.name)
        self._engine: ProcessingEngine | None = None
        self._held: dict[TopicPartition, deque[tuple[int, EventT[Any]]]] = defaultdict(deque)
        self._consumed: dict[TopicPartition, int] = {}
        #: When each partition's last event was taken: Faust's monitor's, once the app starts.
        self._inbound_times: dict[Any, float] = {}
        #: The offset each partition had reached when its time there was last set.
        self._inbound_offsets: dict[TopicPartition, int] = {}
        # Faust forgets its acknowledgements of revoked partitions before it calls `revoked`,
        # so there these positions are committed through the internals.
        self._acked_to: dict[TopicPartition, int] = {}
        # The first summary line's rate counts from here (it had none).
        self._last_snapshot: MetricsSnapshot = self.metrics.snapshot()
        #: The lag at the stop: as last measured (the drain at the stop forgets it), then as
        #: left by the final commit.
        self._lag_at_stop: dict[TopicPartition, int] | None = None
        self.app = _ProcessorApp(
            self,
            self.group,
            broker=[f"kafka://{server.strip()}" for server in kafka.bootstrap_servers.split(",")],
            autodiscover=False,
            web_enabled=False,
            store="memory://",
            topic_disable_leader=True,
            topic_allow_declare=False,
            # Waiting is ours (the engine's drain, bounded); Faust's own wait has no bound and
            # would wait forever on a record held back by its key.
            stream_wait_empty=False,
            broker_commit_interval=processing.commit_interval_s,
            broker_session_timeout=processing.session_timeout_s,
            # Faust refuses a session timeout over its request timeout (90 s by default), with
            # a traceback at start: a session_timeout_s of 120 crashed every processor.
            broker_request_timeout=max(90.0, processing.session_timeout_s + 30),
            broker_heartbeat_interval=processing.session_timeout_s / 5,
            consumer_group_instance_id=processing.group_instance_id,
            consumer_auto_offset_reset=processing.start,
            stream_buffer_maxsize=max(processing.max_buffered, 100),
            broker_client_id=f"{kafka.client_id}-{processor.name}",
            broker_credentials=faust_credentials(kafka),
            **({"datadir": datadir} if datadir is not None else {}),
        )
        #: How far the group has handled each topic (the saga orchestrator's timeouts wait for
        #: it): a consumer of the group's id that never joins it asks Kafka every second about
        #: the topics asked about (none: no consumer, no question).
        self.progress = GroupProgress(
            partial(build_consumer, kafka, self.app.conf.id, **GROUP_PROGRESS_CONFIG),
            start=processing.start,
        )
        processor.progress = self.progress
        self.internals.subscribe(self.app, processor.topics, self)
        self.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        self.app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]
        self.app.timer(processing.inbox_cleanup_interval_s)(self.clean_inbox)
        self.app.timer(processing.metrics_log_interval_s)(self.report)
        self.app.timer(LAG_REFRESH_S)(self.refresh_lag)
        self.app.timer(PROGRESS_REFRESH_S)(self.refresh_progress)
        for task in processor.periodic_tasks:
            self.app.timer(task.every_s)(self.periodic(task))

    @property
    def engine(self) -> ProcessingEngine:
        """The processing engine, made on first use (inside the worker's event loop)."""
        if self._engine is None:
            self._engine = ProcessingEngine(
                self.processor,
                database=self.database,
                dead_letters=ProducerDeadLetterSink(self.producer),
                on_commit=self.acknowledge,
                settings=self.settings,
                metrics=self.metrics,
                consumer_group=self.group,
                outbox=self.outbox,
            )
        return self._engine

    # --- events in ----------------------------------------------------------------------------

    @property
    def has_room(self) -> bool:
        return self.engine.has_room

    def deliver_nowait(self, event: EventT[Any]) -> None:
        """Hand ``event`` to the engine (the caller checked :attr:`has_room`)."""
        engine = self.engine
        if not engine.closed:  # closed: shutting down; never committed, so read again later
            engine.submit_nowait(self.accept(event))

    async def deliver(self, event: EventT[Any]) -> None:
        """Hand ``event`` to the engine, waiting for room."""
        engine = self.engine
        if not engine.closed:
            await engine.submit(self.accept(event))

    def accept(self, event: EventT[Any]) -> Record:
        """``event`` as a record, held until the engine's commit position passes it."""
        record = record_of(event.message)
        self._held[record.topic_partition].append((record.offset, event))
        self._consumed[record.topic_partition] = record.offset
        return record

    def acknowledge(self, plan: list[CommitPosition]) -> None:
        """Acknowledge to Faust every held event below each partition's new commit position."""
        for topic, partition, position in plan:
            waiting = self._held.get((topic, partition))
            while waiting and waiting[0][0] < position:
                waiting.popleft()[1].ack()
            self._acked_to[(topic, partition)] = position

    # --- rebalance and shutdown ---------------------------------------------------------------

    def assigned(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions this member now owns (all of them: a rebalance revoked the others)."""
        assigned = list(partitions)
        logger.info("%s: assigned %s", self.processor.name, partitions_text(assigned))
        self.engine.assigned(assigned)

    async def revoked(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions taken away: drain them, commit what finished, forget them."""
        revoked = list(partitions)
        started = time.monotonic()
        engine = self._engine
        if engine is not None and revoked:
            # Ends before Faust's flight recorder would call the revocation hung (rebalance.py).
            timeout = revocation_drain_timeout(
                self.settings.drain_timeout_s, self.settings.session_timeout_s
            )
            await engine.drain(revoked, timeout)
            positions = {TP(*tp): self._acked_to[tp] for tp in revoked if tp in self._acked_to}
            consumer = self.app.consumer
            try:
                await self.internals.commit_revoked(consumer, positions)
                await consumer.commit()
            except Exception as error:
                logger.warning("commit on revocation failed: %s", error)
        for tp in revoked:
            self._held.pop(tp, None)
            self._consumed.pop(tp, None)
            self._inbound_offsets.pop(tp, None)
            self._acked_to.pop(tp, None)
        if revoked:  # none at the first join
            logger.info(
                "%s: revoked %s after draining %.1f s",
                self.processor.name,
                partitions_text(revoked),
                time.monotonic() - started,
            )

    def starting(self) -> None:
        """The app is starting."""
        self.internals.starting(self.app)
        # Before the consumer fetches: a header name that is not UTF-8 no longer stops it.
        tolerant_batches.install()
        self._inbound_times = self.app.monitor.stream_inbound_time
        install_stall_check_warnings()
        install_session_expiry_warnings(
            self.settings.session_timeout_s, self.settings.group_instance_id
        )
        install_routine_rebalance_lines()

    async def stopping(self) -> None:
        """The app is stopping, its consumer still running: drain everything, commit."""
        self.progress.close()  # a refresh under way closes its consumer when it ends
        if self._engine is None:
            return
        # The lag as last measured: closing the engine revokes every partition, which forgets
        # their lag (the line said "lag 0 (at stop)" with thousands of events unread).
        self._lag_at_stop = self.metrics.snapshot().lag
        await self._engine.close()
        try:
            await self.app.consumer.commit()
        except Exception as error:  # the group may already be gone; nothing is lost
            logger.warning("final commit failed: %s", error)
        else:
            # What the drain finished is committed now: the lag left is counted from there, as
            # Kafka's tools count it (it said "lag 236 (at stop)" where they said 162).
            self._lag_at_stop.update(self._lag_after_commit())

    def _lag_after_commit(self) -> dict[TopicPartition, int]:
        """Each partition's end offset minus its committed position, for the partitions events
        were taken from (the others' lag, from their fetch position, did not move): the
        position last acknowledged, or where the group stood (the oldest event held) if none
        was. A partition whose end offset is not known keeps its lag as last measured."""
        consumer = self.app.consumer
        lags: dict[TopicPartition, int] = {}
        for tp in self._consumed:
            waiting = self._held.get(tp)
            committed = self._acked_to.get(tp, waiting[0][0] if waiting else None)
            try:
                highwater = consumer.highwater(TP(*tp))
            except Exception:  # not known (the consumer never fetched, or let it go)
                continue
            lag = consumer_lag(highwater, committed)
            if lag is not None:
                lags[tp] = lag
        return lags

    async def stopped(self) -> None:
        """The app has stopped its consumer: the tally, once the records drains gave up on
        have finished (they keep the process alive anyway: a worker thread cannot be stopped).

        It said "550 processed" while 551 effects were committed: a record the drain gave up on
        finished and committed 3 s after the line. Waiting here, after the group was left,
        holds up no partition.
        """
        if self._engine is None:  # stopped before any partition came: there is no lag to say
            logger.info(
                "%s: stopped before any partition was assigned, nothing processed (at stop)",
                self.processor.name,
            )
            return
        if self._lag_at_stop is None:
            return
        still = await self._engine.finish_late(self.settings.drain_timeout_s)
        # However short the run (the periodic line may never have come); the lag as left by
        # the final commit, the broker is not asked again.
        now = dataclasses.replace(self.metrics.snapshot(), lag=self._lag_at_stop)
        logger.info("%s (at stop)", summary_line(self.processor.name, now, self._last_snapshot))
        if still:
            logger.warning(
                "%s: %s still running at the stop, not counted above: if one commits its "
                "effects before the process exits, the partition's next owner skips it as a "
                "duplicate",
                self.processor.name,
                counted(still, "event"),
            )

    async def _on_assigned(self, sender: Any, assigned: set[TP], **_: Any) -> None:
        self.assigned((tp.topic, tp.partition) for tp in assigned)

    async def _on_revoked(self, sender: Any, revoked: set[TP], **_: Any) -> None:
        await self.revoked((tp.topic, tp.partition) for tp in revoked)

    # --- timers -------------------------------------------------------------------------------

    async def clean_inbox(self) -> None:
        """Delete inbox rows past their retention, in small batches in a worker thread."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.settings.inbox_retention_s)
        try:
            deleted = await asyncio.get_running_loop().run_in_executor(
                None, partial(purge_inbox, self.database, older_than=cutoff)
            )
        except Exception as error:  # the next round tries again
            logger.warning("inbox cleanup failed: %s", error)
            return
        if deleted:
            logger.info("inbox cleanup: %s older than %s deleted", counted(deleted, "row"), cutoff)

    def periodic(self, task: PeriodicTask) -> Callable[[], Awaitable[None]]:
        """The Faust timer of one of the processor's own periodic tasks (a worker thread; a
        failure is logged, at most once a minute while it lasts, and the next round tries
        again: :mod:`~pipeline.processing.periodic_failures`)."""

        async def run() -> None:
            try:
                await asyncio.get_running_loop().run_in_executor(None, task.run, self.database)
            except Exception as error:
                self._periodic_failures.failed(task.name, error)
            else:
                self._periodic_failures.worked(task.name)

        # Faust names its timers after the function.
        run.__name__ = run.__qualname__ = f"periodic_{task.name.replace('.', '_')}"
        return run

    async def refresh_progress(self) -> None:
        """Ask Kafka how far the group has handled the topics asked about (worker thread)."""
        await asyncio.get_running_loop().run_in_executor(None, self.progress.refresh)

    async def report(self) -> None:
        """Set each partition's lag and log the metrics summary line."""
        await self.refresh_lag()
        now = self.metrics.snapshot()
        logger.info(summary_line(self.processor.name, now, self._last_snapshot))
        self._last_snapshot = now

    async def refresh_lag(self) -> None:
        """Set each partition's lag (``pipeline_consumer_lag``) from the oldest record not done;
        and tell Faust's monitor which partitions took events since the last time."""
        self._note_inbound()
        consumer = self.app.consumer
        for tp, consumed in list(self._consumed.items()):
            faust_tp = TP(*tp)
            position = await self._position(faust_tp)
            if tp not in self._consumed:
                continue  # revoked while waiting for the position: not ours to report
            try:
                highwater = consumer.highwater(faust_tp)
            except Exception:  # revoked by a rebalance meanwhile (aiokafka asserts it is ours)
                continue
            waiting = self._held.get(tp)
            if waiting:
                # Records handed to the engine and not done yet count, as they do for Kafka's
                # tools (the committed offset is below them); and so does what is fetched but
                # not handed over: the lag runs from the oldest record not done.
                lag = consumer_lag(highwater, waiting[0][0])
            else:
                # All seen is done. The fetch position is at least one past the last record
                # seen; it is further on past a transaction marker, which is never a record
                # (see consumer_lag).
                seen_to = consumed + 1 if position is None else max(position, consumed + 1)
                lag = consumer_lag(highwater, seen_to)
            if lag is not None:
                self.metrics.set_lag(tp[0], tp[1], lag)
        await self._refresh_idle_lag()
        self._refresh_lag_age()

    def _refresh_lag_age(self) -> None:
        """How old the end offsets behind the lag are: they come with fetch answers, and while
        Kafka answers none (it refuses the login, say) the lag would not move."""
        try:
            assigned = [(tp.topic, tp.partition) for tp in self.app.consumer.assignment()]
        except Exception:  # not started, or stopping
            return
        answered_ms = last_fetch_answer_ms(self.app.consumer, assigned) if assigned else None
        self.metrics.set_lag_answered_at(None if answered_ms is None else answered_ms / 1000)

    async def _refresh_idle_lag(self) -> None:
        """The lag of assigned partitions nothing was taken from yet (since the start, or the
        last rebalance): from the fetch position, so that each partition has its series (an
        alert on one could not see an idle partition, nor one stuck before its first record)."""
        consumer = self.app.consumer
        try:
            assigned = consumer.assignment()
        except Exception:  # not started, or stopping
            return
        for faust_tp in assigned:
            tp = (faust_tp.topic, faust_tp.partition)
            if tp in self._consumed:
                continue
            position = await self._position(faust_tp)
            try:
                highwater = consumer.highwater(faust_tp)
            except Exception:  # revoked meanwhile
                continue
            lag = consumer_lag(highwater, position)
            if lag is not None and tp not in self._consumed:
                self.metrics.set_lag(tp[0], tp[1], lag)

    def _note_inbound(self) -> None:
        """What a Faust stream tells the monitor as it takes each event: Faust's stall check
        reads it (stall_checks.py). Set here, every second, for each partition that took events
        since (the check waits minutes), rather than per event. (A TP is a named tuple: the
        plain tuple is the same key.)"""
        now = time.monotonic()
        seen = self._inbound_offsets
        for tp, consumed in self._consumed.items():
            if seen.get(tp) != consumed:
                seen[tp] = consumed
                self._inbound_times[tp] = now

    async def _position(self, tp: TP) -> int | None:
        """The consumer's fetch position on ``tp``; ``None`` if it is not known right now (the
        partition is being revoked, say): the lag then counts from the last record seen."""
        try:
            position = await asyncio.wait_for(self.app.consumer.position(tp), _POSITION_WAIT_S)
        except Exception:
            return None
        return position if isinstance(position, int) else None
