"""The relay's loop: claim -> send -> wait for the broker -> mark, batch after batch.

One batch (:meth:`OutboxRelay.publish_batch`):

1. claim unpublished rows, oldest position first, with the database's
   :class:`~producers.outbox_relay.claims.ClaimStrategy` (chosen once, when the relay is built);
2. send them and wait until the broker acknowledged (or failed) every one
   (:func:`~producers.outbox_relay.sending.send_batch`);
3. mark the acknowledged rows published in one UPDATE, or delete them in one DELETE with
   ``outbox.retention_s`` 0 (a row whose aggregate had an earlier failure in the batch stays
   unpublished too); what could not be published is remembered
   (:mod:`~producers.outbox_relay.holds`): a row Kafka refused as too large is held, a failed
   one is sent again without its aggregate's later rows, and the rows left are counted once;
4. commit, which releases the claim.

A relay killed between 2 and 3 publishes the same rows again when it (or another) restarts:
the same event ids, which consumers' inboxes drop. Publishing is at least once, never lossy.

Overlap (:meth:`OutboxRelay.run`, where the strategy allows
:attr:`~producers.outbox_relay.claims.ClaimStrategy.concurrent_claims`: PostgreSQL): steps 3
and 4 of a batch run on a background thread while the main thread claims, sends and waits for
the next batch, whose locks keep it off the aggregates of the batch still committing. The
relay waits for those marks before it marks the next batch, and before it idles or stops; a
batch is counted published once its marks are committed. And after a full batch, step 1 of the
next one runs on a second background thread while the main thread sends (steps 2 and 3 of the
current one): that claim waits for the marks of the batch before, so it can take the buckets
they held, and the locks keep it off those of the batch being sent. (Without it, the main
thread waited for the database about 40% of the time: the reads of a claim are two fifths of a
batch.)

Waking up: a full batch is followed at once by the next; otherwise the relay waits for the poll
interval or, on PostgreSQL with ``outbox.listen``, until the insert trigger's NOTIFY arrives
(:class:`~producers.outbox_relay.notify.NotifyListener`), whichever comes first. The stop
signal (a :class:`threading.Event`, passed in or the relay's own; :meth:`OutboxRelay.stop`
sets it) ends the loop after the current batch and cuts short any wait between batches.

A batch that fails (the database or Kafka away) is tried again after the poll interval, then
twice as long each time up to a few seconds
(:class:`~producers.outbox_relay.failed_batches.FailedBatches`, which also keeps the log to a
line per error a minute); the periodic log line and the metrics keep coming meanwhile, and say
the database is down while its errors fail the batches
(:meth:`~producers.outbox_relay.housekeeping.Housekeeping.database_failed`). No LISTEN is tried
until a batch works again (each try was a warning); the relay then looks again at once, now
listening, rather than wait for a notification it may have missed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter as Tally
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from pipeline.database import DatabaseError, error_text, is_postgres
from pipeline.errors import PipelineError
from pipeline.kafka.producer import EventProducer
from pipeline.outbox.table import OutboxRecord, OutboxStatus
from pipeline.settings import OutboxSettings
from producers.outbox_relay.claims import Claim, ClaimStrategy, LeaseState
from producers.outbox_relay.failed_batches import FailedBatches
from producers.outbox_relay.holds import Hold, LeftRows, TooLarge
from producers.outbox_relay.housekeeping import Housekeeping
from producers.outbox_relay.metrics import RelayMetrics
from producers.outbox_relay.notify import NotifyListener
from producers.outbox_relay.postgres_claims import BucketClaims
from producers.outbox_relay.sending import RefusalLog, SendOutcome, UnacknowledgedLog, send_batch
from producers.outbox_relay.sqlite_claims import LeaseClaims
from producers.outbox_relay.topic_checks import TopicChecks, framed_size

__all__ = ["BatchResult", "OutboxRelay", "RelayTotals", "claim_strategy"]

_log = logging.getLogger(__name__)

#: How soon a relay looks again when every bucket at the head of the backlog was held.
_CONTENDED_WAIT_S = 0.2
#: Longest wait between two status refreshes while idle; a LISTEN wait (which the stop signal
#: cannot interrupt) is cut in slices this long too, so a stop is noticed promptly.
_WAIT_SLICE_S = 0.5


@dataclass(frozen=True)
class BatchResult:
    """One batch: rows claimed, rows marked published, and why fewer than asked."""

    claimed: int
    published: int
    #: Another relay held some of the aggregates at the head of the backlog.
    contended: bool = False
    #: Another relay holds the lease (SQLite); this one published nothing.
    lease_busy: bool = False


@dataclass(frozen=True)
class _OpenClaim:
    """A claim not sent yet; closing ``block`` ends it (nothing marked: its locks are let go)."""

    claim: Claim
    block: ExitStack


@dataclass(frozen=True)
class _SentBatch:
    """A claimed batch Kafka has settled; its claim stays open until :meth:`commit`."""

    claim: Claim
    #: The claim's block, still open: closing it commits the marks and releases the claim.
    block: ExitStack
    #: The acknowledged rows that may be marked published.
    positions: list[int]

    def commit(self) -> None:
        """Mark the rows and end the claim's block (commit; roll back if the marking fails)."""
        with self.block:
            self.claim.mark(self.positions)


@dataclass(frozen=True)
class _Marking:
    """A batch whose marks commit on the background thread."""

    sent: _SentBatch
    done: Future[None]


@dataclass
class RelayTotals:
    published: int = 0
    #: Rows this relay left unpublished at their last try (held back, or sent and not
    #: acknowledged), each counted once however often it was tried; 0 once they are published.
    #: (Counting every try, a backlog blocked on a missing topic grew by its size every poll.)
    failed: int = 0
    #: Of those, the rows held back (not published; not sent at their last try): topic missing,
    #: too large (also once Kafka refused one when sent), or behind such a row.
    held: int = 0
    #: Sends Kafka did not acknowledge (failed, or not settled in time), every try counted:
    #: ``pipeline_outbox_publish_failures_total``.
    unacknowledged: int = 0
    #: Batches of which some rows were published.
    batches: int = 0
    deleted: int = 0
    #: Batches whose claim was made while the batch before was being sent (PostgreSQL).
    claimed_ahead: int = 0
    #: The other relay's owner name when the lease was busy at the last attempt.
    lease_holder: str | None = None


def claim_strategy(engine: Engine, settings: OutboxSettings, owner: str) -> ClaimStrategy:
    """The strategy for ``engine``'s database: advisory-lock buckets on PostgreSQL (several
    relays), else the lease held by ``owner`` (one relay at a time)."""
    if is_postgres(engine):
        return BucketClaims(engine, settings)
    return LeaseClaims(engine, settings, owner)


class OutboxRelay:
    """Publishes committed outbox rows; :meth:`run` until stopped (see the module docstring).

    ``engine`` and ``producer`` are passed in (built by
    :func:`~producers.outbox_relay.runner.run_relay` from settings); the schema must be migrated
    already. ``stop`` is the stop signal (default: the relay's own, set by :meth:`stop`);
    ``claims`` replaces the strategy chosen from the engine's database; ``topics`` checks a
    batch's rows before it is sent (a missing topic, an event over its topic's own limit: see
    :mod:`~producers.outbox_relay.topic_checks`); ``producer_within(limit)`` makes a producer
    whose batches stay under a topic's own ``max.message.bytes``, used once such a topic is
    seen. Not thread-safe: one thread runs it, any may stop it.
    """

    def __init__(
        self,
        engine: Engine,
        producer: EventProducer,
        settings: OutboxSettings,
        *,
        name: str | None = None,
        metrics: RelayMetrics | None = None,
        delivery_timeout_s: float = 130.0,
        stop: threading.Event | None = None,
        claims: ClaimStrategy | None = None,
        topics: TopicChecks | None = None,
        producer_within: Callable[[int], EventProducer] | None = None,
    ) -> None:
        self._engine = engine
        self._producer = producer
        self._settings = settings
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.metrics = metrics or RelayMetrics()
        self._delivery_timeout_s = delivery_timeout_s
        self._stop = stop if stop is not None else threading.Event()
        self._claims = claims if claims is not None else claim_strategy(engine, settings, self.name)
        self._housekeeping = Housekeeping(engine, settings, self.metrics, self.name)
        self._refusals = RefusalLog(f"outbox relay {self.name}")
        self._unacknowledged = UnacknowledgedLog(f"outbox relay {self.name}")
        self._failures = FailedBatches(self.name, settings.poll_interval_s)
        self._too_large = TooLarge()
        self._left = LeftRows()
        self._topics = topics
        self._producer_within = producer_within
        #: The own limit the producer's batches are kept under (None: librdkafka's own).
        self._batch_limit: int | None = None
        self.totals = RelayTotals()
        #: Whether this relay waited for another's lease at the last claim (None: no lease).
        self._waiting_for_lease: bool | None = None

    # ---- control ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop after the current batch (sets the stop signal; safe from other threads)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def last_status(self) -> OutboxStatus | None:
        """The outbox status as last read (refreshed every few seconds while running)."""
        return self._housekeeping.last_status

    def run(self, *, once: bool = False) -> RelayTotals:
        """Publish batch after batch until stopped; with ``once``, until a batch comes back
        short (what could be claimed now is published), raising errors instead of retrying
        them."""
        listening = self._claims.notifies and self._settings.listen and not once
        listener = NotifyListener(self._engine) if listening else None
        if listener is not None:
            listener.open()  # before the first batch: nothing committed after it is missed
        if once:
            self._housekeeping.clean_up_next()
        concurrent = self._claims.concurrent_claims
        marking = ThreadPoolExecutor(1, thread_name_prefix="outbox-marks") if concurrent else None
        claiming = ThreadPoolExecutor(1, thread_name_prefix="outbox-claims") if concurrent else None
        pending: _Marking | None = None
        ahead: Future[_OpenClaim] | None = None  # the next batch's claim, made meanwhile
        unwatch = self._housekeeping.watch(lambda: self.totals.published)  # line while stalled
        try:
            while not self._stop.is_set():
                if listener is not None and not self._failures.count:
                    # Not while batches fail: the database is likely away, and each try to
                    # LISTEN again was one more warning.
                    listener.drain()
                try:
                    if pending is not None and pending.done.done():
                        # Its buckets are free again: claim them too rather than skip them.
                        finished, pending = pending, None
                        self._settle(finished)
                    # Claimed while buckets were held (by the previous batch's marks, or, for
                    # a claim made ahead, by the batch then being sent): if it comes back
                    # short, look again at once rather than wait for new rows.
                    made_ahead, ahead = ahead, None
                    overlapped = pending is not None or made_ahead is not None
                    self.metrics.now_doing("claiming rows")
                    if made_ahead is None:
                        opened = self._open_claim()
                    else:
                        opened = made_ahead.result()
                        self.totals.claimed_ahead += bool(opened.claim.records)
                    if (
                        claiming is not None
                        and len(opened.claim.records) >= self._settings.batch_size
                    ):
                        # More is likely waiting: claim it while this batch goes to Kafka.
                        ahead = claiming.submit(self._open_claim_after, pending)
                    sent = self._send(opened)
                    if marking is not None and sent.claim.records:
                        # Queued behind the previous batch's marks, if they are still going.
                        previous, pending = pending, _Marking(sent, marking.submit(sent.commit))
                        self._settle(previous)
                    else:
                        self.metrics.now_doing("marking rows published")
                        sent.commit()
                        self._settled(sent)
                    recovered = self._failures.worked()
                    self.totals.deleted += self._housekeeping.cleanup_if_due()
                    claimed = len(sent.claim.records)
                    if claimed >= self._settings.batch_size:
                        if not sent.positions:
                            if once:
                                # The next claim would take the same rows: --once looped on
                                # them for ever.
                                break
                            # A full batch of which nothing could go (rows refused or failed,
                            # their aggregates' later rows held): no spinning on it.
                            self._stop.wait(self._settings.poll_interval_s)
                        continue
                    # A short batch: its marks are committed before the relay idles or stops.
                    previous, pending = pending, None
                    self._settle(previous)
                except (SQLAlchemyError, PipelineError) as error:
                    if once and isinstance(error, SQLAlchemyError):
                        # One line, not the driver's traceback (a read-only database, say).
                        raise DatabaseError(
                            f"outbox relay {self.name}: the batch failed: {error_text(error)} "
                            "(rows it sent to Kafka stay unmarked and go again next run)"
                        ) from None
                    if once:
                        raise
                    text = error_text(error)
                    if isinstance(error, SQLAlchemyError | DatabaseError):
                        self._housekeeping.database_failed(text)
                    wait_s = self._failures.failed(text)
                    self._let_go(ahead)  # not held through the wait
                    ahead = None
                    self._pause(wait_s)  # the log line and the metrics keep coming meanwhile
                    continue
                if recovered and listener is not None:
                    continue  # look again, LISTENing now: a NOTIFY may have been missed
                if overlapped:
                    continue  # claimed while the previous batch held its buckets: look again
                if once:
                    break
                if sent.claim.contended and not claimed:
                    self._stop.wait(_CONTENDED_WAIT_S)
                elif not sent.claim.contended:
                    self._wait_for_rows(listener)
        finally:
            unwatch()  # first: whatever fails below, no thread is left writing lines
            self._let_go(ahead)
            if claiming is not None:
                claiming.shutdown()
            try:
                self._settle(pending)
            except (SQLAlchemyError, PipelineError) as error:
                _log.error("outbox relay %s: marking the last batch failed: %s", self.name, error)
            if marking is not None:
                marking.shutdown()
            if listener is not None:
                listener.close()
            try:
                self._claims.close()
            except SQLAlchemyError as error:
                _log.warning("could not release the outbox lease: %s", error)
            self._report(final=True)
        return self.totals

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds`` (cut short by the stop signal), reporting meanwhile."""
        self.metrics.now_doing("waiting to try a failed batch again")
        self._wait_for_rows(None, seconds)

    def _wait_for_rows(self, listener: NotifyListener | None, seconds: float | None = None) -> None:
        """Until the poll interval (or ``seconds``) passed, a NOTIFY came or the stop signal
        was set."""
        wait_s = self._settings.poll_interval_s if seconds is None else seconds
        deadline = time.monotonic() + wait_s
        while not self._stop.is_set():
            if seconds is None:  # waiting for new rows: not stalled
                self.metrics.round_finished("waiting for new rows")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            wait_s = min(remaining, _WAIT_SLICE_S)
            if listener is not None:
                if listener.wait(wait_s, self._stop):
                    return
            elif self._stop.wait(wait_s):
                return
            self._report()

    # ---- one batch ---------------------------------------------------------------------------

    def publish_batch(self) -> BatchResult:
        """Claim, publish and mark one batch (see the module docstring); returns once the
        marks are committed."""
        sent = self._claim_and_send()
        sent.commit()
        return self._settled(sent)

    def _claim_and_send(self) -> _SentBatch:
        """Steps 1 and 2: the claim's block stays open (an error closes it: rolled back)."""
        return self._send(self._open_claim())

    def _open_claim(self) -> _OpenClaim:
        """Step 1: the claim, its block left open."""
        with ExitStack() as block:
            claim = block.enter_context(self._claims.claim(self._settings.batch_size))
            return _OpenClaim(claim, block.pop_all())
        raise AssertionError("unreachable: the block returns or raises")  # for mypy

    def _open_claim_after(self, marking: _Marking | None) -> _OpenClaim:
        """Step 1 on the claiming thread, once ``marking``'s marks are done (committed or
        failed: the main thread settles them), so the buckets they held can be claimed."""
        if marking is not None:
            wait([marking.done])
        return self._open_claim()

    def _let_go(self, ahead: Future[_OpenClaim] | None) -> None:
        """End a claim made ahead and not sent (nothing marked), once it is made; a failure to
        make it is only logged (its rows stay for the next claim)."""
        if ahead is None:
            return
        try:
            opened = ahead.result()
        except (SQLAlchemyError, PipelineError) as error:
            _log.warning("outbox relay %s: a claim made ahead failed: %s", self.name, error)
            return
        opened.block.close()

    def _send(self, opened: _OpenClaim) -> _SentBatch:
        """Step 2 for an open claim: its block stays open (an error closes it: rolled back)."""
        with ExitStack() as block:
            block.enter_context(opened.block)  # an error in sending reaches the claim's block
            claim = opened.claim
            self._note_lease(claim.lease)
            positions: list[int] = []
            if claim.records:
                self.metrics.now_doing("sending to Kafka")
                refuse: dict[int, Hold] = {}
                if self._topics is not None:
                    refuse = self._topics.problems(claim.records)
                    self._fit_batches(self._topics.smallest_limit())
                # Rows Kafka refused as too large: held as the relay's own size check holds one.
                refused_before = self._too_large.holds(claim.records)
                refuse = {**refused_before, **refuse} if refused_before else refuse
                outcome = send_batch(
                    self._producer,
                    claim.records,
                    timeout_s=self._delivery_timeout_s,
                    refuse=refuse,
                    alone=self._left.retrying if self._left else (),
                    renew=self._claims.renew,
                    renew_every_s=self._claims.renew_every_s,
                    name=f"outbox relay {self.name}",
                )
                self._note(claim.records, outcome, refused_before)
                positions = outcome.positions
            return _SentBatch(claim, block.pop_all(), positions)
        raise AssertionError("unreachable: the block returns or raises")  # for mypy

    def _note(
        self,
        records: Sequence[OutboxRecord],
        outcome: SendOutcome,
        refused_before: dict[int, Hold],
    ) -> None:
        """Count and log what a batch could not publish, and remember the rows Kafka refused as
        too large (held from now on) or failed (sent again alone for their aggregate)."""
        if outcome.failed:
            self.totals.unacknowledged += outcome.failed
            self.metrics.failed.inc(outcome.failed)
        if outcome.held:
            self._refusals.note(outcome.held)
        retry = set(refused_before)
        for refusal in outcome.refused:
            if refusal.too_large:  # the client's own limit (message.max.bytes)
                retry.add(refusal.position)
                # The same reason as this batch's line, so the log counts it as the same.
                self._too_large.note(refusal.position, Hold(refusal.reason, "too_large"))
        if outcome.unacknowledged:
            self._unacknowledged.note(outcome.unacknowledged)
            by_id = {record.event_id: record for record in records}
            # The broker refuses a whole batch of a partition for one record too large: every
            # record of it comes back too large. Only the largest of each topic is held; the
            # others go again alone, and a second too large one is found the next time.
            largest: dict[str, tuple[int, int, str]] = {}
            for failure in outcome.unacknowledged:
                record = by_id.get(failure.event_id)
                if record is None:
                    continue
                retry.add(record.position)
                if failure.too_large:
                    size = framed_size(record)
                    if size > largest.get(record.topic, (-1, 0, ""))[0]:
                        largest[record.topic] = (size, record.position, failure.error or "?")
            for topic, (size, position, error) in largest.items():
                if not self._batches_were_too_large(topic, size):
                    self._too_large.note(position, _refused_as_too_large(error))
        held = {position: (r.topic, r.kind) for position, r in outcome.held.items()}
        self._left.update(records, held, outcome.unacknowledged_positions, retry)
        self._show_held()

    def _show_held(self) -> None:
        """The held-rows gauge and the totals of the rows left, from :class:`LeftRows`."""
        counts = self._left.held()
        self.metrics.show_held(counts)
        self.totals.held = sum(counts.values())
        self.totals.failed = len(self._left)

    def _batches_were_too_large(self, topic: str, size: int) -> bool:
        """Whether Kafka refused ``topic``'s rows because its limit was set or lowered since it
        was looked up (a row of ``size`` fits the new limit, which the relay's batches were
        over): then the next batches keep under it and the row goes with them, where it was
        held 30 s. The topic is looked up at once; when Kafka does not answer, with the next
        batch."""
        if self._topics is None:
            return False
        try:
            limit = self._topics.limit_now(topic)
        except PipelineError:
            self._topics.forget(topic)
            return False
        return (
            limit is not None
            and size <= limit
            and (self._batch_limit is None or limit < self._batch_limit)
        )

    def _fit_batches(self, smallest: tuple[str, int] | None) -> None:
        """A producer whose batches stay under the smallest own ``max.message.bytes`` of the
        topics seen, when it is below the current one's (between batches: the producer holds
        nothing then). The broker refuses an oversized batch whole; sent again, it failed every
        time, and with it every row of its partition's batch."""
        if smallest is None or self._producer_within is None:
            return
        topic, limit = smallest
        if self._batch_limit is not None and limit >= self._batch_limit:
            return
        self._producer = self._producer_within(limit)
        self._batch_limit = limit
        _log.info(
            "outbox relay %s: batches kept under %s bytes (topic %s takes at most %s)",
            self.name,
            f"{limit:,}",
            topic,
            f"{limit:,}",
        )

    def _settle(self, marking: _Marking | None) -> None:
        """Wait for a batch's marks to commit on the background thread (raising their error),
        then count them."""
        if marking is not None:
            self.metrics.now_doing("marking rows published")
            marking.done.result()
            self._settled(marking.sent)

    def _settled(self, sent: _SentBatch) -> BatchResult:
        """Count a batch whose marks are committed."""
        claim = sent.claim
        self._count(claim.records, sent.positions)
        result = BatchResult(
            len(claim.records),
            len(sent.positions),
            contended=claim.contended,
            lease_busy=claim.lease is not None and not claim.lease.held,
        )
        if result.published:  # not a batch of which nothing went (rows held or failed)
            self.totals.batches += 1
            self.metrics.batches.inc()
        self._housekeeping.database_works()
        self.metrics.round_finished()
        self._report()
        return result

    def _note_lease(self, lease: LeaseState | None) -> None:
        if lease is None:
            return
        self.metrics.lease_held.set(1 if lease.held else 0)
        self.totals.lease_holder = None if lease.held else lease.holder
        waiting = not lease.held
        if waiting and self._waiting_for_lease is not True:
            # Said once, at the change: its start line and reports ("published 0") read as if
            # it relayed while another relay held the outbox.
            _log.info(
                "outbox relay %s: the outbox lease is held by %s; this relay waits and takes "
                "over when that one stops (one relay at a time publishes from this database)",
                self.name,
                lease.holder,
            )
        elif not waiting and self._waiting_for_lease:
            _log.info("outbox relay %s: took the outbox lease; publishing", self.name)
        self._waiting_for_lease = waiting

    def _count(self, records: Sequence[OutboxRecord], positions: Sequence[int]) -> None:
        if not positions:
            return
        if len(positions) == len(records):  # the usual batch: every row was marked
            per_topic = Tally(record.topic for record in records)
        else:
            marked = set(positions)
            per_topic = Tally(record.topic for record in records if record.position in marked)
        for topic, count in per_topic.items():
            self.metrics.published.labels(topic).inc(count)
        self.totals.published += len(positions)

    # ---- housekeeping and reporting ----------------------------------------------------------

    def cleanup(self) -> int:
        """Delete published rows older than the retention; returns how many."""
        deleted = self._housekeeping.cleanup()
        self.totals.deleted += deleted
        return deleted

    def _report(self, *, final: bool = False) -> None:
        self._housekeeping.report(self.totals.published, final=final)


def _refused_as_too_large(error: str) -> Hold:
    """Why a row Kafka refused as too large is held from then on."""
    return Hold(f"Kafka refused the event as too large ({error}) when it was sent", "too_large")
