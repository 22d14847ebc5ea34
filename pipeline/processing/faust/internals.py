"""Every use of Faust's internals, behind one version gate.

The Faust binding (:mod:`pipeline.processing.faust.binding`) needs a few things Faust has no
public setting for. Each one depends on how Faust works inside, so all of them are here, and
they are used only on the faust-streaming versions they were checked against
(:data:`CHECKED_VERSIONS`):

1. **Events straight to the engine.** Faust's conductor hands each event to its channel's
   queue: ``queue.put_nowait_enhanced(event, ...)`` while ``queue.full()`` is false, else
   ``await channel.put(event)``. :class:`EngineQueue` is such a queue that hands each event on
   to the binding at once, so the engine's room is the only buffer (no Faust stream, no agent).
2. **Raw messages.** :class:`RawTopic` makes the event from the message as it is, in place of
   the decoder Faust's Topic compiles from its schema: the engine decodes the envelope itself,
   so Faust's serializer registry is skipped for every message.
3. **A cheaper fetch loop.** Faust's ``Consumer._drain_messages`` hands each fetched message to
   the conductor with ``await self.wait_first(callback(message), self.suspend_flow.wait())``:
   mode's ``wait_first`` wraps the callback, the flow event and the service's stopped and
   crashed events in four tasks and an ``asyncio.wait`` for every single message, about 70 µs on
   our machines, more than Faust's fetching, decoding and our whole processing of the message
   together. :func:`drain_messages` is the same loop awaiting the callback directly; the
   callback only hands the message to the engine, so it cannot hang (while the engine is full it
   waits for room, which a rebalance's drain makes).
4. **Commits on revocation.** Faust forgets its acknowledgements of revoked partitions before
   it calls ``on_partitions_revoked``; :meth:`FaustInternals.commit_revoked` commits the
   positions the binding acknowledged with Faust's own ``Consumer._commit_offsets``.
5. **Committed messages only.** Faust's consumer reads ``read_uncommitted`` unless the app runs
   Faust's exactly-once mode (which also makes its producers transactional: not what a
   processor wants). Events a transaction wrote and then aborted (a failed redrive, say) must
   never reach a handler. :meth:`FaustInternals.starting` wraps the consumer thread's
   ``_create_worker_consumer`` so the aiokafka consumer it makes is ``read_committed``, like
   every confluent-kafka consumer of this project (set before the consumer starts, which is
   when aiokafka hands the level to its fetcher).
6. **A stop that finishes while Kafka is away.** aiokafka 0.14's ``Fetcher.close`` cancels each
   pending fetch task and awaits it; a fetch that was waiting out its retry back-off (as every
   fetch does while the broker is unreachable) re-raises the cancellation there, so the
   consumer's ``stop`` ends half way and Faust's consumer thread dies: a processor sent SIGTERM
   while Kafka was down never exited (seen: still running after 60 s).
   :func:`stop_past_cancelled_fetches` lets that close finish cancelling and awaiting the rest,
   and the consumer's ``stop`` then closes its client as usual.
7. **When Kafka last answered a fetch.** The lag comes from each partition's end offset, which
   aiokafka learns from fetch answers; while no answer comes (the broker refuses the login
   after a credential rotation, say) it stays as it was, and the lag read "0".
   :func:`last_fetch_answer_ms` reads aiokafka's ``last_poll_timestamp`` of the partitions
   through Faust's consumer thread, so the processor can say how old its lag is.

8. **The flight recorder around a revocation.** Faust's ``App._on_partitions_revoked`` runs
   the revocation (our drain is in its ``on_partitions_revoked`` signal) inside mode's
   ``flight_recorder`` with a timeout of :data:`REVOCATION_RECORDER_SHARE` x
   ``broker_session_timeout``; past it, it logs "Warning: Task timed out!", "Please make sure
   it's hanging before restart." and the task's stack, while the revocation goes on. The
   binding ends its drain before that (:mod:`pipeline.processing.faust.rebalance`).

On any other version :class:`FaustInternals` logs one line and keeps Faust's own behaviour:
Faust's topic, queue and fetch loop (a task hands each event from the channel to the binding),
and no commit of revoked partitions (their next owner reads those records again; the inbox
skips what was done). Reading committed messages only (5) is not optional: on a version not
checked, a processor refuses to start if it cannot be set (:class:`ReadCommittedUnavailable`).

``tests/unit/pipeline/processing/faust/test_faust_sources.py`` pins the source of every Faust
method this module replaces or relies on: upgrading Faust fails that test until the new sources
have been checked against this module.
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import faust
from faust.types import TP, EventT

__all__ = [
    "CHECKED_VERSIONS",
    "REVOCATION_RECORDER_SHARE",
    "EngineQueue",
    "EventSink",
    "FaustInternals",
    "RawTopic",
    "ReadCommittedUnavailable",
    "drain_messages",
    "feed",
    "read_committed",
    "stop_past_cancelled_fetches",
]

logger = logging.getLogger("pipeline.processing")

#: The faust-streaming versions whose internals this module was checked against.
CHECKED_VERSIONS = ("0.15.",)

#: Faust's revocation logs its flight recorder ("Warning: Task timed out!") once it has run
#: this share of ``broker_session_timeout`` (``App._on_partitions_revoked``; see 8 above).
REVOCATION_RECORDER_SHARE = 0.95


class EventSink(Protocol):
    """Where the processor's Faust channel delivers its events (the binding)."""

    @property
    def has_room(self) -> bool:
        """Whether :meth:`deliver_nowait` may be called now."""
        ...

    def deliver_nowait(self, event: EventT[Any]) -> None:
        """Take ``event`` now (:attr:`has_room` was checked)."""
        ...

    async def deliver(self, event: EventT[Any]) -> None:
        """Take ``event``, waiting for room."""
        ...


class EngineQueue:
    """The queue of the processor's Faust channel: each event goes on to the sink at once.

    Faust's conductor puts each event with ``put_nowait_enhanced`` while ``full()`` is false,
    else awaits ``put`` (through the channel), which is where backpressure waits for room.
    """

    def __init__(self, sink: EventSink) -> None:
        self._sink = sink

    def full(self) -> bool:
        return not self._sink.has_room

    def empty(self) -> bool:
        return True

    def qsize(self) -> int:
        return 0

    def put_nowait_enhanced(self, value: EventT[Any], **_: Any) -> bool:
        self._sink.deliver_nowait(value)
        return False  # no pressure: the engine's room is the limit

    async def put(self, value: EventT[Any]) -> None:
        await self._sink.deliver(value)


class RawTopic(faust.Topic):
    """Faust's Topic, handing on the message as it is: the engine decodes the envelope itself,
    so Faust's serializer registry (raw in, raw out) is skipped for every message."""

    def _compile_decode(self) -> None:
        # Faust's Topic compiles its schema's decoder into the instance's `decode` when it is
        # made (a method defined here would be shadowed by it); this one takes its place.
        create_event = self.app.create_event

        async def decode(message: Any, *, propagate: bool = False) -> EventT[Any]:
            return create_event(message.key, message.value, message.headers, message)

        self.decode = decode  # type: ignore[method-assign]


async def drain_messages(consumer: Any, fetcher: Any) -> None:
    """Faust 0.15's ``Consumer._drain_messages``, awaiting the callback without ``wait_first``.

    For each fetched message, as Faust does: skip it if its offset was read already; record a
    gap in the offsets (when the topic acknowledges); commit every ``broker_commit_every``
    acknowledgements; hand it to the conductor unless the flow is suspended for a rebalance (a
    suspended flow drops it, and the partition is read again from its committed offset); then
    note it as read.

    A cancellation, or the broker client stopping, while the app stops ends the loop cleanly,
    also as Faust's loop does: it is how Faust stops the fetcher. At any other time it
    propagates, for Faust's fetcher to handle (it restarts itself on a rebalance).
    """
    callback = consumer.callback
    getmany = consumer.getmany
    consumer_stopped = consumer._stopped.is_set
    fetcher_stopped = fetcher._stopped.is_set
    get_read_offset = consumer._read_offset.__getitem__
    set_read_offset = consumer._read_offset.__setitem__
    flow_suspended = consumer.suspend_flow.is_set
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    commit_every = consumer._commit_every
    since_yield = 0
    try:
        while not (consumer_stopped() or fetcher_stopped()):
            messages = getmany(timeout=1.0)
            await asyncio.sleep(0)  # getmany may return at once, again and again
            if consumer.should_stop:
                continue
            async for tp, message in messages:
                since_yield += 1
                if since_yield > 100:  # let other tasks run during a long batch, as Faust does
                    await asyncio.sleep(0)
                    since_yield = 0
                offset = message.offset
                read_offset = get_read_offset(tp)
                if read_offset is not None and offset < read_offset:
                    continue  # already read (Faust drops these too)
                if read_offset and offset - read_offset > 1 and acks_enabled_for(message.topic):
                    await consumer._add_gap(tp, read_offset + 1, offset)
                if commit_every is not None and consumer._n_acked >= commit_every:
                    consumer._n_acked = 0
                    await consumer.commit()
                if not flow_suspended():
                    await callback(message)
                set_read_offset(tp, offset)
    except asyncio.CancelledError:
        if not consumer.app.should_stop:
            raise
        logger.debug("fetch loop cancelled while stopping: a clean stop")
    except consumer.consumer_stopped_errors:
        if not consumer.app.should_stop:
            raise
        logger.debug("the broker client stopped while stopping: a clean stop")


async def feed(channel: faust.Topic, sink: EventSink) -> None:
    """Hand every event of ``channel`` (Faust's own queue) to ``sink``, until cancelled."""
    while True:
        await sink.deliver(await channel.get())


def stop_past_cancelled_fetches(client: Any) -> None:
    """Make the aiokafka consumer ``client``'s ``stop`` finish although a fetch it cancels
    re-raises the cancellation (see the module docstring, 6)."""
    stop = client.stop

    async def stop_finishing_the_fetchers_close() -> None:
        fetcher: Any = getattr(client, "_fetcher", None)
        if fetcher is not None:
            fetcher.close = _close_past_cancelled_fetches(fetcher, fetcher.close)
        await stop()

    client.stop = stop_finishing_the_fetchers_close


def _close_past_cancelled_fetches(fetcher: Any, close: Any) -> Any:
    async def close_past_cancelled_fetches() -> None:
        try:
            await close()
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the stop itself is being cancelled: not ours to swallow
            # A cancelled fetch's own CancelledError: the close stopped at it. Cancel and await
            # the rest, as it would have.
            rest = [task for task in fetcher._pending_tasks if not task.done()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

    return close_past_cancelled_fetches


class FaustInternals:
    """What the binding does through Faust's internals: ours on a checked Faust version, Faust's
    own behaviour on any other (one log line says so)."""

    def __init__(self, version: str = faust.__version__) -> None:
        self.checked = version.startswith(CHECKED_VERSIONS)
        if not self.checked:
            logger.info(
                "faust-streaming %s: Faust's own topic, queue and fetch loop, and no commit of "
                "revoked partitions (checked: %s)",
                version,
                ", ".join(f"{checked}x" for checked in CHECKED_VERSIONS),
            )

    def subscribe(self, app: faust.App, topics: Iterable[str], sink: EventSink) -> faust.Topic:
        """Subscribe ``app`` to ``topics`` (raw keys and values), every event going to ``sink``."""
        topic_type = RawTopic if self.checked else faust.Topic
        channel = topic_type(
            app,
            topics=list(topics),
            key_serializer="raw",
            value_serializer="raw",
            allow_empty=True,
            # Ours hands each event on as it arrives; Faust's is read by a task.
            queue=EngineQueue(sink) if self.checked else None,  # type: ignore[arg-type]
            # An iterator channel: the conductor may `put` to it, and a task may `get` from it.
            is_iterator=True,
        )
        app.topics.add(channel)
        if not self.checked:

            async def feed_sink() -> None:
                await feed(channel, sink)

            app.task(feed_sink)
        return channel

    def starting(self, app: faust.App) -> None:
        """Before ``app`` starts: a ``read_committed`` consumer (always), and our fetch loop for
        it (on a checked version)."""
        consumer = app.consumer
        read_committed(consumer)
        if self.checked:
            consumer._drain_messages = types.MethodType(drain_messages, consumer)  # type: ignore[attr-defined]

    async def commit_revoked(self, consumer: Any, positions: Mapping[TP, int]) -> None:
        """Commit ``positions`` of partitions just revoked, which Faust no longer tracks (nothing
        on an unchecked version: their next owner reads those records again)."""
        if self.checked and positions:
            await consumer._commit_offsets(positions)


class ReadCommittedUnavailable(RuntimeError):
    """This Faust cannot be made to read committed messages only (see the module docstring)."""


def read_committed(consumer: Any) -> None:
    """Make the aiokafka consumer Faust's ``consumer`` creates read committed messages only."""
    thread: Any = getattr(consumer, "_thread", None)
    create = getattr(thread, "_create_worker_consumer", None)
    if create is None:
        raise ReadCommittedUnavailable(
            f"faust-streaming {faust.__version__}: cannot set the consumer's isolation level to "
            "read_committed (no AIOKafkaConsumerThread._create_worker_consumer)"
        )

    def create_read_committed(transport: Any) -> Any:
        client = create(transport)
        client._isolation_level = "read_committed"  # aiokafka passes it to its fetcher on start
        stop_past_cancelled_fetches(client)
        return client

    thread._create_worker_consumer = create_read_committed


def last_fetch_answer_ms(consumer: Any, partitions: Iterable[tuple[str, int]]) -> int | None:
    """The latest moment (ms since 1970) a fetch answer told Faust's aiokafka consumer the end
    offset of any of ``partitions``; ``None`` when none did yet or it cannot be read."""
    from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]

    try:
        client: Any = consumer._thread._ensure_consumer()
    except Exception:  # not started, stopping, or another Faust: the age is then unknown
        return None
    latest: int | None = None
    for topic, partition in partitions:
        try:
            stamp = client.last_poll_timestamp(TopicPartition(topic, partition))
        except Exception:  # revoked meanwhile (aiokafka asserts it is assigned)
            continue
        if isinstance(stamp, int) and (latest is None or stamp > latest):
            latest = stamp
    return latest
