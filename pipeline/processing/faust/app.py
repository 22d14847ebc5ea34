"""A processor as a Faust worker: Faust consumes, the processing engine decides what runs.

Faust (faust-streaming) owns the group membership, fetching, rebalancing and the offset commit
loop; one Faust topic channel reads all of the processor's topics, and Faust's conductor hands
each message's event to the channel's queue, which gives it to the
:class:`~pipeline.processing.engine.ProcessingEngine` (:class:`_EngineQueue`). There is no agent
and no Faust stream: the engine is the stream (ordering, concurrency, acknowledgement), and
Faust's per-event stream machinery cost more than all of our own work per event. A Faust event
is acknowledged only once the engine's commit position has passed it, so Faust's acknowledged
offsets are always contiguous from the last commit and Faust never commits a record that is not
done, whatever order records of different keys finish in.

On revocation (and on shutdown) the engine drains the revoked partitions before Faust commits:
records in flight get ``processing.drain_timeout_s`` to finish, what finished is acknowledged
and committed, and the rest is left for the next owner.

Dead letters are written with our :class:`~pipeline.kafka.producer.EventProducer` (idempotent,
``acks=all``) and awaited before the offset moves.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import defaultdict, deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import faust
from faust.types import TP, EventT
from sqlalchemy.engine import Engine

from pipeline.database import build_engine, migrate
from pipeline.envelope import KafkaMessage
from pipeline.errors import PipelineError
from pipeline.kafka.clients import build_admin
from pipeline.kafka.producer import EventProducer, build_event_producer
from pipeline.metrics_server import serve_metrics
from pipeline.processing.engine import ProcessingEngine
from pipeline.processing.faust import drain as faust_drain
from pipeline.processing.inbox import purge_inbox
from pipeline.processing.metrics import MetricsSnapshot, ProcessorMetrics, summary_line
from pipeline.processing.offsets import CommitPosition
from pipeline.processing.processor import Processor
from pipeline.processing.records import Record
from pipeline.settings import PipelineSettings
from pipeline.topics.spec import dlq_name

__all__ = [
    "ProducerDeadLetterSink",
    "build_processor_app",
    "check_topics",
    "run_processor",
    "use_event_loop",
]

logger = logging.getLogger("pipeline.processing")


class ProducerDeadLetterSink:
    """Dead letters through an :class:`EventProducer`; ``send`` waits for the acknowledgement."""

    def __init__(self, producer: EventProducer) -> None:
        self._producer = producer

    async def send(self, topic: str, message: KafkaMessage) -> None:
        delivery = await asyncio.wrap_future(self._producer.send_future(topic, message))
        if not delivery.ok:
            raise PipelineError(f"dead letter to {topic} failed: {delivery.error}")


def check_topics(settings: PipelineSettings, processor: Processor) -> None:
    """Fail with one line when a topic the processor reads or dead-letters to is missing."""
    admin = build_admin(settings.kafka)
    try:
        metadata = admin.list_topics(timeout=10)
    except Exception as error:
        raise PipelineError(
            f"cannot reach Kafka at {settings.kafka.bootstrap_servers}: {error}"
        ) from None
    wanted = [*processor.topics, *(dlq_name(topic) for topic in processor.topics)]
    missing = [topic for topic in wanted if topic not in metadata.topics]
    if missing:
        raise PipelineError(
            f"topic{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"do{'' if len(missing) > 1 else 'es'} not exist: run `pipeline topics apply` "
            "(or create them)"
        )


def _record(message: Any) -> Record:
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


class _EngineQueue:
    """The queue of the processor's Faust channel: events go to the engine as they arrive.

    Faust's conductor puts each event with ``put_nowait_enhanced`` while ``full()`` is false,
    else awaits ``put`` (through the channel), which is where backpressure waits for room.
    """

    def __init__(
        self,
        accept: Callable[[EventT[Any]], Record],
        engine: Callable[[], ProcessingEngine],
    ) -> None:
        self._accept = accept
        self._engine = engine

    def full(self) -> bool:
        return not self._engine().has_room

    def empty(self) -> bool:
        return True

    def qsize(self) -> int:
        return 0

    def put_nowait_enhanced(self, value: EventT[Any], **_: Any) -> bool:
        engine = self._engine()
        if not engine.closed:  # closed: shutting down; never committed, so read again later
            engine.submit_nowait(self._accept(value))
        return False  # no pressure: the engine's room is the limit

    async def put(self, value: EventT[Any]) -> None:
        engine = self._engine()
        if not engine.closed:
            await engine.submit(self._accept(value))


class _RawTopic(faust.Topic):
    """Faust's Topic, handing on the message as it is: the engine decodes the envelope itself,
    so Faust's serializer registry (raw in, raw out) is skipped for every message."""

    async def decode(self, message: Any, *, propagate: bool = False) -> EventT[Any]:
        return self._create_event(message.key, message.value, message.headers, message=message)


class _ProcessorApp(faust.App):
    """Faust's App, draining the engine before Faust stops its consumer."""

    engine: ProcessingEngine | None = None

    async def on_start(self) -> None:
        faust_drain.install(self)
        await super().on_start()

    async def on_stop(self) -> None:
        if self.engine is not None:
            await self.engine.close()
            try:
                await self.consumer.commit()
            except Exception as error:  # the group may already be gone; nothing is lost
                logger.warning("final commit failed: %s", error)
        await super().on_stop()


def build_processor_app(
    processor: Processor,
    settings: PipelineSettings,
    *,
    database: Engine | None = None,
    metrics: ProcessorMetrics | None = None,
) -> faust.App:
    """The Faust app of ``processor`` (nothing connects until the worker starts it)."""
    processing = settings.processing
    kafka = settings.kafka
    if kafka.security_protocol != "PLAINTEXT":
        raise PipelineError(
            "the Faust processor runtime supports kafka.security_protocol PLAINTEXT only for now"
        )
    app = _ProcessorApp(
        processor.name,
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
        broker_heartbeat_interval=processing.session_timeout_s / 5,
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=max(processing.max_buffered, 100),
        broker_client_id=f"{kafka.client_id}-{processor.name}",
    )
    database = database or build_engine(settings.database, pool_size=processing.max_in_flight)
    metrics = metrics or ProcessorMetrics(processor.name)
    producer = build_event_producer(kafka, settings.producer)
    held: dict[tuple[str, int], deque[tuple[int, EventT[Any]]]] = defaultdict(deque)
    consumed: dict[tuple[str, int], int] = {}

    # Each partition's position acknowledged so far: Faust forgets its acknowledgements of
    # revoked partitions before it calls `revoked`, so there we commit these ourselves.
    acked_to: dict[tuple[str, int], int] = {}

    def acknowledge(plan: list[CommitPosition]) -> None:
        for topic, partition, position in plan:
            waiting = held.get((topic, partition))
            while waiting and waiting[0][0] < position:
                waiting.popleft()[1].ack()
            acked_to[(topic, partition)] = position

    def accept(event: EventT[Any]) -> Record:
        record = _record(event.message)
        held[record.topic_partition].append((record.offset, event))
        consumed[record.topic_partition] = record.offset
        return record

    def engine_of_app() -> ProcessingEngine:
        if app.engine is None:
            app.engine = ProcessingEngine(
                processor,
                database=database,
                dead_letters=ProducerDeadLetterSink(producer),
                on_commit=acknowledge,
                settings=processing,
                metrics=metrics,
            )
        return app.engine

    # Faust's own Topic, with our queue; `is_iterator` lets the conductor `put` to it.
    channel = _RawTopic(
        app,
        topics=processor.topics,
        key_serializer="raw",
        value_serializer="raw",
        allow_empty=True,
        queue=_EngineQueue(accept, engine_of_app),  # type: ignore[arg-type]
        is_iterator=True,
    )
    app.topics.add(channel)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def revoked(sender: Any, revoked: set[TP], **_: Any) -> None:
        engine = app.engine
        partitions = [(tp.topic, tp.partition) for tp in revoked]
        if engine is not None and partitions:
            await engine.drain(partitions)
            positions = {TP(*tp): acked_to[tp] for tp in partitions if tp in acked_to}
            try:
                if positions:  # Faust's own commit, with offsets it no longer knows
                    await app.consumer._commit_offsets(positions)  # type: ignore[attr-defined]
                await app.consumer.commit()
            except Exception as error:
                logger.warning("commit on revocation failed: %s", error)
        for tp in partitions:
            held.pop(tp, None)
            consumed.pop(tp, None)
            acked_to.pop(tp, None)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def assigned(sender: Any, assigned: set[TP], **_: Any) -> None:
        engine_of_app().assigned([(tp.topic, tp.partition) for tp in assigned])

    @app.timer(processing.inbox_cleanup_interval_s)  # type: ignore[untyped-decorator]
    async def clean_inbox() -> None:
        # Small batches in a worker thread: processing goes on meanwhile.
        cutoff = datetime.now(UTC) - timedelta(seconds=processing.inbox_retention_s)
        try:
            deleted = await asyncio.get_running_loop().run_in_executor(
                None, partial(purge_inbox, database, older_than=cutoff)
            )
        except Exception as error:  # the next round tries again
            logger.warning("inbox cleanup failed: %s", error)
            return
        if deleted:
            logger.info("inbox cleanup: %d row(s) older than %s deleted", deleted, cutoff)

    last: list[MetricsSnapshot] = []

    @app.timer(processing.metrics_log_interval_s)  # type: ignore[untyped-decorator]
    async def report() -> None:
        for tp in list(consumed):
            highwater = app.consumer.highwater(TP(*tp))
            if highwater is not None and highwater >= 0:
                metrics.set_lag(tp[0], tp[1], max(0, highwater - consumed[tp] - 1))
        now = metrics.snapshot()
        logger.info(summary_line(processor.name, now, last[-1] if last else None))
        last[:] = [now]

    app.pipeline_producer = producer  # type: ignore[attr-defined]
    app.pipeline_database = database  # type: ignore[attr-defined]
    app.pipeline_metrics = metrics  # type: ignore[attr-defined]
    return app


def use_event_loop(kind: str) -> str:
    """Make new event loops of that kind (before the worker makes its own); returns the kind in
    use (``uvloop`` falls back to asyncio where it is not installed)."""
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            logger.warning("uvloop is not installed here: the processor runs on asyncio's loop")
        else:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            return "uvloop"
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    return "asyncio"


def run_processor(
    processor: Processor, settings: PipelineSettings, *, loglevel: str = "warn"
) -> None:
    """Run ``processor`` until SIGINT/SIGTERM: migrate, check topics, start the Faust worker."""
    processing = settings.processing
    loop_kind = use_event_loop(processing.event_loop)
    database = build_engine(settings.database, pool_size=processing.max_in_flight)
    check_topics(settings, processor)
    migrate(database)
    processor.start(database)
    metrics = ProcessorMetrics(processor.name)
    if processing.metrics_port is not None:
        serve_metrics(metrics.registry, processing.metrics_port)
    app = build_processor_app(processor, settings, database=database, metrics=metrics)
    producer: EventProducer = app.pipeline_producer  # type: ignore[attr-defined]
    logger.info(
        "%s on %s: topics %s, %d in flight, %s loop, host %s",
        processor.name,
        settings.kafka.bootstrap_servers,
        ", ".join(processor.topics),
        processing.max_in_flight,
        loop_kind,
        socket.gethostname(),
    )
    with producer.polling():
        worker = faust.Worker(app, loglevel=loglevel, quiet=True, override_logging=False)
        try:
            worker.execute_from_commandline()
        except SystemExit as exit_:
            if exit_.code not in (None, 0):
                raise
        except Exception as error:  # Faust re-raises what crashed the worker
            raise PipelineError(
                f"{processor.name} stopped after a crash: {type(error).__name__}: {error}"
            ) from None
        finally:
            producer.flush(10)
            database.dispose()
