"""The processing engine: key-ordered, concurrent, idempotent handling of consumed records.

It is broker-neutral: a binding (Faust in pipeline/processing/faust/app.py, or the broker-free test
driver) feeds it records in offset order per partition, gives it a dead-letter sink, and
receives commit positions. Everything here runs on one asyncio loop; only the attempts (a
database transaction around the handler) run in worker threads.

Per record:

1. :meth:`ProcessingEngine.submit` waits while ``max_buffered`` records are unfinished
   (backpressure), counts the offset as started, and queues it in its key's lane
   (:class:`~pipeline.processing.lanes.KeyLanes`): one at a time per key, ``max_in_flight`` over
   all keys;
2. an attempt runs in a worker thread (:func:`~pipeline.processing.attempt.attempt`); a
   handler failure is retried with the :class:`~pipeline.retry.RetryPolicy`'s backoff while the
   key's later records wait; a database outage, and an event whose handler raised
   :class:`~pipeline.processing.processor.NotYet` (:mod:`~pipeline.processing.waiting`), are
   retried without limit;
3. a record that is not an event, fits no handler, was rejected, used up its retries or has a
   parked key is dead-lettered: the dead letter is acknowledged by Kafka first, then noted in
   the inbox (and its key parked);
4. the offset is done; the partition's commit position moves to just below the oldest record
   not done (:class:`~pipeline.processing.offsets.PartitionOffsets`) and goes to ``on_commit``.

An ``async`` handler's first attempt takes the group path instead of step 2's thread
(:mod:`pipeline.processing.group_commit`): the inbox and the park are looked up for many events
at once, the handler runs on this loop, and many events commit in one transaction. Whatever
that path does not cover (a record that is not an event, has no handler or bad data, a redrive,
a parked key, a failed attempt's retries) takes the per-record attempt in a thread, where an
``async`` handler is run on this loop and waited for. Once its handler returned, an event of
the group path waits for its group's commit set aside (:meth:`KeyLanes.set_aside
<pipeline.processing.lanes.KeyLanes.set_aside>`): another key's event starts in its place,
while its own key's next one waits for that commit. If the commit fails, the event takes a
place back (:meth:`KeyLanes.reclaim <pipeline.processing.lanes.KeyLanes.reclaim>`) before its
handler runs again.

A synchronous handler's first attempt takes a group path too (unless
``processing.sync_group_wait_ms`` is 0): the events submitted together form groups, each
group's handlers run one after another in one transaction in a worker thread
(:func:`~pipeline.processing.group_commit.run_calls`), a group as large as the handlers' recent
duration fits in that wait; a handler that raises is taken out of its group and retried alone
on the per-record path.

A rebalance or shutdown calls :meth:`ProcessingEngine.drain`: nothing new starts on those
partitions, records in flight get ``drain_timeout_s`` to finish, what finished is committed,
and the rest is forgotten: their offsets are not committed, so the next owner handles them
again. A record still running is not stopped, though (a worker thread cannot be): it may yet
commit its effects here, and the next owner's inbox then skips it as a duplicate. It counts as
processed if it does; :meth:`ProcessingEngine.finish_late` waits for such records at the stop.
A record in the backoff of a NotYet or a database outage runs nothing: its backoff ends at
once (:mod:`~pipeline.processing.backoffs`), and it is left uncommitted, unwaited for.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

from sqlalchemy.engine import Engine

from pipeline.dead_letters.letter import Failure
from pipeline.envelope import EnvelopeError
from pipeline.outbox.table import Outbox
from pipeline.plurals import counted
from pipeline.processing import group_commit
from pipeline.processing.attempt import (
    AttemptResult,
    Redrive,
    attempt,
    call_async,
    decode_record,
    record_log_context,
)
from pipeline.processing.backoffs import Backoffs, log_retry
from pipeline.processing.database_outage import DatabaseOutage, database_answers
from pipeline.processing.dead_lettering import DeadLetterSink, dead_letter, log_dead_letter
from pipeline.processing.group_wiring import build_groups
from pipeline.processing.lanes import KeyLanes, Work
from pipeline.processing.look_ahead import LookAhead
from pipeline.processing.metrics import ProcessorMetrics
from pipeline.processing.offsets import CommitPosition, PartitionOffsets
from pipeline.processing.processor import NotYet, Processor, Reject, UnitOfWork
from pipeline.processing.records import Record
from pipeline.processing.until_done import GivenUp, until_done
from pipeline.processing.waiting import WAIT_FLOOR_S, Waiting
from pipeline.settings import OutboxSettings, ProcessingSettings
from pipeline.topics.spec import dlq_name

__all__ = ["CommitSink", "DeadLetterSink", "ProcessingEngine"]

logger = logging.getLogger("pipeline.processing")

T = TypeVar("T")
TopicPartition = tuple[str, int]


CommitSink = Callable[[list[CommitPosition]], None]


class ProcessingEngine:
    """Handles records for one processor (one consumer group member)."""

    def __init__(
        self,
        processor: Processor,
        *,
        database: Engine,
        dead_letters: DeadLetterSink,
        on_commit: CommitSink,
        settings: ProcessingSettings,
        metrics: ProcessorMetrics | None = None,
        consumer_group: str | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        outbox: OutboxSettings | None = None,
        wait: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.processor = processor
        self.consumer_group = consumer_group or processor.name
        self.settings = settings
        self.metrics = metrics or ProcessorMetrics(processor.name)
        self._database = database
        self._dead_letters = dead_letters
        self._on_commit = on_commit
        self._park = settings.on_dead_letter == "park_key"
        self._rng = rng or random.Random()
        self._outage = DatabaseOutage(  # probed in a thread of its own: the workers may all wait
            processor.name,
            self.metrics,
            consumer_group=self.consumer_group,
            probe=lambda: asyncio.to_thread(database_answers, database),
        )
        self._sleep = sleep
        self._wait = wait or sleep  # the backoff of an event that cannot be handled yet
        self._wait_floor_s = WAIT_FLOOR_S if wait is None else 0.0  # never a spin (backoff 0)
        #: The NotYet and outage backoffs in progress: a drain ends them at once.
        self._backoffs = Backoffs()
        self._waiting = Waiting(processor.name, consumer_group=self.consumer_group)
        #: Where the handlers' emits go: one object for every unit, so an ``async`` group's
        #: emits are one batch; ``outbox``'s routes (``settings.outbox``), else the built-in.
        self._outbox = Outbox.from_settings(outbox or OutboxSettings())
        self._grouped = processor.has_async_handlers or settings.sync_group_wait_ms > 0
        # The inbox look-ups of async handlers' events start while they wait for a place.
        looks_ahead = self._grouped and settings.inbox and processor.has_async_handlers
        self._lanes: KeyLanes[Record] = KeyLanes(
            settings.max_in_flight,
            unkeyed="unordered" if settings.ordering == "none" else "per_partition",
            note_waiting=looks_ahead,
        )
        self._offsets = PartitionOffsets()
        self._tasks: dict[Work[Record], asyncio.Task[None]] = {}
        #: Works set aside whose commit failed, waiting for a place back to retry.
        self._place_waiters: dict[Work[Record], asyncio.Future[None]] = {}
        self._generation: dict[TopicPartition, int] = {}
        self._revoking: set[TopicPartition] = set()
        #: Records a drain gave up on that are still running (see finish_late).
        self._late: set[asyncio.Task[None]] = set()
        self._room: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._executor = ThreadPoolExecutor(
            max_workers=settings.max_in_flight, thread_name_prefix=f"{processor.name}-worker"
        )
        self._closed = False
        self._to_commit: set[TopicPartition] = set()
        self._commit_scheduled = False
        groups = build_groups(
            database,
            settings,
            consumer_group=self.consumer_group,
            grouped=self._grouped,
            park_keys=self._park,
            outbox=self._outbox,
            in_thread=self._in_thread,
            handlers_placed=lambda: self._lanes.placed,
        )
        self._commits, self._look_ups, self._claims = groups.commits, groups.look_ups, groups.claims
        self._calls, self._loop_inbox = groups.calls, groups.loop_inbox
        self._look_ahead = LookAhead(processor, self._look_ups) if looks_ahead else None

    # --- feeding ------------------------------------------------------------------------------

    @property
    def unfinished(self) -> int:
        """Records submitted and not finished (running, or waiting behind their key)."""
        return self._lanes.in_flight + self._lanes.pending

    def assigned(self, partitions: Collection[TopicPartition]) -> None:
        """Partitions this member now owns: their records may be submitted, from any offset."""
        for tp in partitions:
            self._generation[tp] = self._generation.get(tp, 0) + 1
            self._offsets.revoke(*tp)
        if self._look_ahead is not None:
            self._look_ahead.forget(partitions)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def has_room(self) -> bool:
        """Whether :meth:`submit_nowait` may be called (fewer than ``max_buffered`` unfinished)."""
        return self.unfinished < self.settings.max_buffered

    async def submit(self, record: Record) -> None:
        """Accept the next record of its partition; waits while too many are unfinished."""
        if self._closed:
            raise RuntimeError("the engine is closed")
        room = self._events()[0]
        generation = self._generation.get(record.topic_partition)
        while not self.has_room:
            room.clear()
            await room.wait()
        if (
            record.topic_partition in self._revoking
            or self._generation.get(record.topic_partition) != generation
        ):
            return  # revoked while waiting for room: never started, the next owner handles it
        self.submit_nowait(record)

    def submit_nowait(self, record: Record) -> None:
        """:meth:`submit` without waiting: the caller checked :attr:`has_room`."""
        if self._closed:
            raise RuntimeError("the engine is closed")
        if record.topic_partition in self._revoking:
            return  # being revoked: the next owner handles it
        self._generation.setdefault(record.topic_partition, 1)
        self._offsets.started(record.topic, record.partition, record.offset)
        lane_key = record.key if self.settings.ordering == "key" else None
        work = Work(record.topic, record.partition, record.offset, lane_key, record)
        self._start(self._lanes.submit(work))

    async def wait_idle(self) -> None:
        """Wait until every submitted record is finished (the test driver's "run to the end")."""
        idle = self._events()[1]
        while self.unfinished:
            idle.clear()
            await idle.wait()

    # --- rebalance and shutdown ---------------------------------------------------------------

    async def drain(
        self, partitions: Collection[TopicPartition] | None = None, timeout_s: float | None = None
    ) -> None:
        """Stop ``partitions`` (all when ``None``): finish what runs, commit, forget the rest."""
        timeout = self.settings.drain_timeout_s if timeout_s is None else timeout_s
        wanted = set(self._generation) if partitions is None else set(partitions)
        self._revoking.update(wanted)
        self._backoffs.end(wanted)  # those events end now, uncommitted: nothing of them runs
        running = self._lanes.drain(wanted)
        tasks = [self._tasks[work] for work in running if work in self._tasks]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=timeout)
            if late:
                logger.warning(
                    "%s: %s still running after %.1f s of draining; their offsets are not "
                    "committed, so the partitions' next owner handles them again; they may "
                    "still finish here and commit their effects, which its inbox then skips "
                    "as duplicates",
                    self.processor.name,
                    counted(len(late), "event"),
                    timeout,
                )
                self._late.update(late)
                for task in late:
                    task.add_done_callback(self._late.discard)
        self._commit(wanted)
        for tp in wanted:
            self._generation[tp] = self._generation.get(tp, 0) + 1
            self._offsets.revoke(*tp)
            self.metrics.forget_lag(*tp)
        for work in [work for work in self._tasks if work.lane[:2] in wanted]:
            del self._tasks[work]
        if self._look_ahead is not None:
            self._look_ahead.forget(wanted)
        self._start(self._lanes.forget(wanted))
        for work, waiter in list(self._place_waiters.items()):
            if work.lane[:2] in wanted and not waiter.done():
                waiter.set_result(None)  # forgotten: it finds its partition revoked and ends
        self._revoking.difference_update(wanted)
        self._backoffs.resume(wanted)
        self._wake()

    async def close(self, timeout_s: float | None = None) -> None:
        """Drain everything, then release the worker threads (they finish on their own)."""
        if self._closed:
            return
        await self.drain(None, timeout_s)
        self._closed = True
        await self._outage.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._loop_inbox is not None:
            await self._loop_inbox.close()

    async def finish_late(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for the records drains gave up on that are still running
        (each counts as processed if it commits); returns how many still run after it."""
        late = [task for task in self._late if not task.done()]
        if late:
            await asyncio.wait(late, timeout=timeout_s)
        return sum(not task.done() for task in late)

    # --- running records ----------------------------------------------------------------------

    def _events(self) -> tuple[asyncio.Event, asyncio.Event]:
        if self._room is None or self._idle is None:
            self._room, self._idle = asyncio.Event(), asyncio.Event()
        return self._room, self._idle

    def _wake(self) -> None:
        room, idle = self._events()
        if self.unfinished < self.settings.max_buffered:
            room.set()
        if not self.unfinished:
            idle.set()

    def _start(self, works: list[Work[Record]]) -> None:
        for work in works:
            generation = self._generation[(work.topic, work.partition)]
            self._tasks[work] = asyncio.ensure_future(self._run(work, generation))
        self.metrics.set_in_flight(self._lanes.in_flight)
        if self._place_waiters:
            self._wake_placed()
        if self._look_ahead is not None:
            waiting = self._lanes.take_waiting()
            if waiting:
                revoking = self._revoking
                self._look_ahead.start(
                    [w for w in waiting if (w.topic, w.partition) not in revoking]
                    if revoking
                    else waiting
                )

    def _wake_placed(self) -> None:
        """Let the works that got their place back (:meth:`KeyLanes.reclaim`) go on."""
        for work in self._lanes.take_reclaimed():
            waiter = self._place_waiters.get(work)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    async def _place_back(self, work: Work[Record]) -> None:
        """A place of ``max_in_flight`` for a work set aside whose handler runs again (its
        commit failed): at once if there is room, else the first that frees."""
        if self._lanes.reclaim(work):
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._place_waiters[work] = waiter
        try:
            await waiter
        finally:
            self._place_waiters.pop(work, None)

    @property
    def waiting_for_place(self) -> int:
        """Works that wait for a place of ``max_in_flight`` back (:meth:`_place_back`)."""
        return sum(not waiter.done() for waiter in self._place_waiters.values())

    async def _wait_aside(self, work: Work[Record], delay: float) -> None:
        """The backoff of an event that cannot be handled yet: its place of max_in_flight goes
        to other keys' events meanwhile (its key's later events still wait behind it); it
        takes one back before its next attempt. A drain ends it at once (GivenUp)."""
        if not self._lanes.is_aside(work):  # aside already when its group's commit said so
            started = self._lanes.set_aside(work)
            if started or self._place_waiters:
                self._start(started)
        await self._backoffs.sleep(work.lane[:2], self._wait(delay))
        await self._backoffs.sleep(work.lane[:2], self._place_back(work))

    async def _run(self, work: Work[Record], generation: int) -> None:
        tp = (work.topic, work.partition)
        tries = 0
        while True:
            try:
                await self._handle(work.payload, work)
                break
            except asyncio.CancelledError:
                raise
            except GivenUp:
                return  # left uncommitted: the next owner handles it again
            except Exception:
                if self._closed:
                    return  # its worker threads are gone: left to the next owner, unlogged
                # A bug here must not lose the record, nor hold its key and its partition's
                # commits without a word: it is handled again (its inbox row says if it was
                # done), after a pause, with an ERROR each time, until it gets through or
                # its partition is revoked.
                tries += 1
                delay = self.settings.retry.delay(min(tries, 8), self._rng)
                logger.exception(
                    "%s: internal error handling %s; trying again in %.1f s",
                    self.processor.name,
                    work,
                    delay,
                )
                await self._sleep(delay)
                if self._closed or self._generation.get(tp) != generation:
                    return  # revoked meanwhile: the next owner handles it again
        if self._generation.get(tp) != generation:
            return  # revoked meanwhile: the next owner handles it again
        self._tasks.pop(work, None)
        self._offsets.done(work.topic, work.partition, work.offset)
        self._start(self._lanes.complete(work))
        self._commit_soon(tp)
        self._wake()

    def _commit_soon(self, tp: TopicPartition) -> None:
        """Commit ``tp`` once the records finishing in this turn of the loop are all done (a
        group commit finishes many at once: one commit position for them, not one each)."""
        self._to_commit.add(tp)
        if not self._commit_scheduled:
            self._commit_scheduled = True
            asyncio.get_running_loop().call_soon(self._commit_pending)

    def _commit_pending(self) -> None:
        self._commit_scheduled = False
        partitions, self._to_commit = self._to_commit, set()
        self._commit(partitions)

    def _commit(self, partitions: Collection[TopicPartition]) -> None:
        plan = self._offsets.commit_plan(partitions)
        if plan:
            self._on_commit(plan)
            self._offsets.mark_committed(plan)

    async def _in_thread(self, function: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function)

    async def _handle(self, record: Record, work: Work[Record]) -> None:
        """Attempt until processed, a duplicate, or dead-lettered."""
        retry = self.settings.retry
        failures = outages = waits = 0
        since: float | None = None  # when it first waited (NotYet)
        tp = record.topic_partition
        generation = self._generation.get(tp)
        grouped = self._grouped
        while True:
            if self._generation.get(tp) != generation:
                return  # revoked (drained) meanwhile: the next owner handles it again
            if not grouped and self._lanes.is_aside(work):
                # Set aside for a commit that failed: its handler runs again, which takes a
                # place of max_in_flight as a first attempt does.
                await self._place_back(work)
                continue
            outcome: AttemptResult | None = None
            if grouped:
                outcome = await self._grouped_attempt(record, work)
            grouped = False  # retries take the per-record attempt
            if outcome is None:
                outcome = await self._in_thread(self._attempt_of(record))
            if self._outage.since is not None and outcome.kind in ("processed", "duplicate"):
                self._outage.answered()
            if since is not None and outcome.kind in ("processed", "duplicate"):
                self._waiting.handled(record, outcome.event_id, since, waits)
            if outcome.kind == "processed":
                self.metrics.processed(record.topic)
                return
            if outcome.kind == "duplicate":
                self.metrics.duplicate(record.topic)
                return
            if self._generation.get(tp) != generation:
                return  # revoked while attempting: neither retry nor dead-letter it here
            if outcome.kind == "dead_letter":
                assert outcome.failure is not None
                await self._dead_letter(record, outcome.event_id, outcome.failure)
                return
            assert outcome.error is not None
            if outcome.kind == "waiting":  # not here yet: no outage, never dead-lettered
                waits += 1
                delay = max(retry.delay(min(waits, 8), self._rng), self._wait_floor_s)
                since = self._waiting.waits(record, outcome.event_id, outcome.error, delay, since)
                await self._wait_aside(work, delay)
                continue
            if outcome.kind == "unavailable":
                outages += 1
                delay = retry.delay(min(outages, 8), self._rng)
                self._outage.failed(record, outcome.event_id, outcome.error, delay)
                await self._backoffs.sleep(tp, self._sleep(delay))
                continue
            failures += 1
            if retry.exhausted(failures):
                failure = Failure.from_exception("retries_exhausted", outcome.error, failures)
                await self._dead_letter(record, outcome.event_id, failure)
                return
            self.metrics.retried(record.topic)
            delay = retry.delay(failures, self._rng)
            log_retry(self.processor.name, self.consumer_group, record, outcome, failures, delay)
            await self._sleep(delay)

    def _attempt_of(self, record: Record) -> Callable[[], AttemptResult]:
        return partial(
            attempt,
            record,
            processor=self.processor,
            engine=self._database,
            consumer_group=self.consumer_group,
            park_keys=self._park,
            use_inbox=self.settings.inbox,
            loop=asyncio.get_running_loop(),
            outbox=self._outbox,
        )

    async def _grouped_attempt(self, record: Record, work: Work[Record]) -> AttemptResult | None:
        """The first attempt of an ``async`` handler's event, on the group path; ``None`` when
        the record needs the per-record attempt (see the module's docstring)."""
        ahead = None if self._look_ahead is None else self._look_ahead.take(work)
        if ahead is None:
            try:
                event = decode_record(record)
            except EnvelopeError:
                return None
            route = self.processor.route(record.topic, event.type)
            if route is None or Redrive.of(record) is not None:
                return None
        else:  # decoded, routed and no redrive: checked when its look-up started
            event, route = ahead.event, ahead.route
        if not route.is_async and (self.settings.sync_group_wait_ms == 0 or not route.grouped):
            return None
        data = event.data
        if route.model is not None:
            try:
                data = route.model.model_validate(event.data)
            except Exception:
                return None  # the per-record attempt dead-letters it
        if not route.is_async:
            try:
                return await self._calls.submit(group_commit.Call(record, event, route, data))
            except Exception:  # a bug in the group path: the per-record attempt decides
                logger.exception("%s: group of synchronous handlers failed", self.processor.name)
                return None
        if self.settings.inbox:
            try:
                seen = await (
                    ahead.seen
                    if ahead is not None
                    else self._look_ups.submit((event.id, record.topic, record.key))
                )
            except Exception:  # the database: the per-record attempt waits for it
                return None
            if seen.outcome is not None:
                return AttemptResult("duplicate", event.id, event=event)
            if seen.parked:
                return None
        unit = UnitOfWork(
            _session=None,
            event=event,
            record=record,
            consumer_group=self.consumer_group,
            data=data,
            outbox=self._outbox,
        )
        try:
            await call_async(route, unit)
        except Reject as error:
            failure = Failure.from_exception("rejected", error)
            return AttemptResult("dead_letter", event.id, failure, event=event)
        except NotYet as error:
            return AttemptResult("waiting", event.id, error=error, event=event)
        except Exception as error:
            return AttemptResult("failed", event.id, error=error, event=event)
        if not self.settings.inbox and not unit.has_writes:
            return AttemptResult("processed", event.id, event=event)
        # Its handler is done; its commit is not: another key's event may start in its place
        # (its own key's next event waits for the commit, so it sees this one's effects).
        started = self._lanes.set_aside(work)
        if started or self._place_waiters:  # else the count in flight is the same: nothing to do
            self._start(started)
        if not unit.has_writes:  # only its inbox row: no locks on the service's own rows
            return await self._claims.submit(unit)
        return await self._commits.submit(unit)

    async def _dead_letter(self, record: Record, event_id: str, failure: Failure) -> None:
        """Send the dead letter (until Kafka takes it), then note it in the inbox."""
        await dead_letter(
            record,
            event_id,
            failure,
            name=self.processor.name,
            sink=self._dead_letters,
            database=self._database,
            consumer_group=self.consumer_group,
            park_keys=self._park and record.topic not in self.processor.keys_never_parked,
            in_thread=self._in_thread,
            until_done=partial(  # given up once closed: the worker threads are gone
                until_done,
                name=self.processor.name,
                retry=self.settings.retry,
                rng=self._rng,
                sleep=self._sleep,
                closed=lambda: self._closed,
            ),
        )
        self.metrics.dead_lettered(record.topic, failure.reason)
        with record_log_context(record, event_id, self.consumer_group):
            log_dead_letter(self.processor.name, record, event_id, dlq_name(record.topic), failure)
