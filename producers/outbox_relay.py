"""The outbox relay: committed outbox rows to Kafka, marked published only once acknowledged.

One batch (:meth:`OutboxRelay.publish_batch`):

1. claim unpublished rows, oldest position first (see *Claiming* below);
2. send each row with the idempotent :class:`~pipeline.kafka.producer.EventProducer`: key = the
   aggregate id, topic and CloudEvents headers as stored by :class:`pipeline.outbox.table.Outbox`;
3. wait until the broker acknowledged (or failed) every one of them;
4. mark the acknowledged rows published in one UPDATE (a row whose aggregate had an earlier
   failure in the batch stays unpublished too: :func:`pipeline.outbox.table.publishable_positions`);
5. commit, which releases the claim.

A relay killed between 3 and 4 publishes the same rows again when it (or another) restarts:
the same event ids, which consumers' inboxes drop. Publishing is at least once, never lossy.

Claiming
--------
*PostgreSQL* (several relays may run): an aggregate is hashed to one of
``outbox.lock_buckets`` advisory locks (CRC-32 of type and id). A relay reads the oldest
unpublished rows (one batch's worth, no row locks) and tries the locks of their buckets with
``pg_try_advisory_xact_lock`` (oldest first, only as many as fill a batch); when other relays
hold some, it reads the next window and tries again (up to 3 rounds, see
:class:`pipeline.outbox.table.ClaimPlan`). Then, in a new statement (so a new snapshot, taken after
the locks), it reads the rows of the buckets it got that are still unpublished. A relay
therefore only ever publishes aggregates no other relay holds, and holds them until its marks
are committed: per aggregate, rows reach Kafka in
position order whichever relay sends them. Row locks (``FOR UPDATE SKIP LOCKED``) alone would
not do: relay B would skip A's locked rows of aggregate X and publish X's *next* row, ahead of
them. Locking per aggregate row-by-row would take one lock per row and scan the whole backlog
to find each aggregate's head; buckets bound the locks per batch (``lock_buckets``) and the
scan to the head of the backlog. Hash collisions only make two aggregates share a lock.

*SQLite* (and any other database): one relay holds the lease row
(``pipeline_outbox_lease``: owner, expiry), renewed every batch and while waiting for Kafka;
another relay waits and takes over once the lease expired (or was released at a clean stop).
Reading, publishing and marking are three short steps, so writers are never blocked while
Kafka is slow.

Waking up: a full batch is followed at once by the next; otherwise the relay waits for the
poll interval or, on PostgreSQL with ``outbox.listen``, until the insert trigger's
``NOTIFY pipeline_outbox`` arrives on a separate psycopg connection (``LISTEN``), whichever
comes first. SIGTERM (:meth:`OutboxRelay.stop`) ends the loop after the current batch.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from types import FrameType
from typing import Any, cast

import psycopg
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from pipeline.database import build_engine, is_postgres, migrate
from pipeline.errors import PipelineError
from pipeline.kafka.producer import (
    Delivery,
    DeliveryError,
    EventProducer,
    FlushTimeout,
    ProduceRefused,
    build_event_producer,
)
from pipeline.metrics_server import serve_metrics
from pipeline.outbox.table import (
    NOTIFY_CHANNEL,
    RECORD_COLUMNS,
    ClaimPlan,
    OutboxRecord,
    OutboxStatus,
    delete_published,
    outbox_lease_table,
    outbox_status,
    outbox_table,
    publishable_positions,
    record_of,
    utc_now,
)
from pipeline.settings import OutboxSettings, PipelineSettings

__all__ = [
    "BatchResult",
    "OutboxRelay",
    "RelayMetrics",
    "RelayTotals",
    "relay_subprocess",
    "run_relay",
    "running_relay",
]

_log = logging.getLogger(__name__)

#: The first argument of the two-key advisory locks (int4): "obx\0". The one-key (bigint)
#: locks, such as the migration lock, live in a separate key space.
LOCK_NAMESPACE = 0x6F627800
#: Windows of the backlog read (and rounds of lock attempts) per batch while other relays
#: hold some of the buckets at its head.
_LOCK_ROUNDS = 3
#: How soon a relay looks again when every bucket at the head of the backlog was held.
_CONTENDED_WAIT_S = 0.2
#: How often backlog, age and rate are refreshed from the database (metrics, log line).
_STATUS_INTERVAL_S = 5.0
#: Longest uninterrupted sleep, so a stop is noticed promptly.
_WAIT_SLICE_S = 0.5
_LEASE_NAME = "relay"


# --- metrics ----------------------------------------------------------------------------------


class RelayMetrics:
    """The relay's Prometheus metrics, in their own registry (several relays per process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.published = Counter(
            "pipeline_outbox_published",
            "Outbox events acknowledged by Kafka and marked published by this relay",
            ["topic"],
            registry=r,
        )
        self.failed = Counter(
            "pipeline_outbox_publish_failures",
            "Outbox events Kafka did not acknowledge (left unpublished, sent again later)",
            registry=r,
        )
        self.batches = Counter(
            "pipeline_outbox_batches", "Batches claimed and published", registry=r
        )
        self.deleted = Counter(
            "pipeline_outbox_deleted", "Published rows deleted after their retention", registry=r
        )
        self.backlog = Gauge(
            "pipeline_outbox_backlog", "Outbox rows not yet published (all relays)", registry=r
        )
        self.oldest_age = Gauge(
            "pipeline_outbox_oldest_unpublished_age_seconds",
            "Age of the oldest unpublished outbox row (0 when none)",
            registry=r,
        )
        self.rate = Gauge(
            "pipeline_outbox_publish_rate",
            "Outbox events published per second over the last minute (all relays)",
            registry=r,
        )
        self.lease_held = Gauge(
            "pipeline_outbox_lease_held",
            "1 while this relay holds the lease (SQLite), else 0",
            registry=r,
        )

    def observe(self, status: OutboxStatus) -> None:
        self.backlog.set(status.backlog)
        self.oldest_age.set(status.oldest_unpublished_age_s or 0.0)
        self.rate.set(status.publish_rate_per_s)


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchResult:
    """One batch: rows claimed, rows marked published, and why fewer than asked."""

    claimed: int
    published: int
    #: Another relay held some of the aggregates at the head of the backlog.
    contended: bool = False
    #: Another relay holds the lease (SQLite); this one published nothing.
    lease_busy: bool = False


@dataclass
class RelayTotals:
    published: int = 0
    failed: int = 0
    batches: int = 0
    deleted: int = 0
    #: The other relay's owner name when the lease was busy at the last attempt.
    lease_holder: str | None = None


# --- the pieces -------------------------------------------------------------------------------


class _Lease:
    """The one lease row: held by this relay until ``expires_at``; see the module docstring."""

    def __init__(self, engine: Engine, owner: str, duration_s: float) -> None:
        self._engine = engine
        self.owner = owner
        self._duration = timedelta(seconds=duration_s)
        self.holder: str | None = None

    def hold(self) -> bool:
        """Take or renew the lease; ``False`` while another relay's lease is valid."""
        table = outbox_lease_table
        now = utc_now()
        with self._engine.begin() as connection:
            renewed = connection.execute(
                sa.update(table)
                .where(
                    table.c.name == _LEASE_NAME,
                    sa.or_(table.c.owner == self.owner, table.c.expires_at < now),
                )
                .values(owner=self.owner, expires_at=now + self._duration)
            ).rowcount
            if renewed:
                self.holder = self.owner
                return True
            holder = connection.execute(
                sa.select(table.c.owner).where(table.c.name == _LEASE_NAME)
            ).scalar_one_or_none()
            if holder is None:
                try:
                    with connection.begin_nested():
                        connection.execute(
                            sa.insert(table).values(
                                name=_LEASE_NAME,
                                owner=self.owner,
                                expires_at=now + self._duration,
                            )
                        )
                except IntegrityError:  # another relay inserted it first
                    self.holder = None
                    return False
                self.holder = self.owner
                return True
        self.holder = str(holder)
        return False

    def release(self) -> None:
        """Let another relay take over at once (a clean stop)."""
        table = outbox_lease_table
        with self._engine.begin() as connection:
            connection.execute(
                sa.update(table)
                .where(table.c.name == _LEASE_NAME, table.c.owner == self.owner)
                .values(expires_at=utc_now() - timedelta(seconds=1))
            )


class _Listener:
    """A psycopg connection that LISTENs for the outbox's NOTIFY (psycopg 3 directly: SQLAlchemy
    has no API for notifications)."""

    def __init__(self, engine: Engine) -> None:
        url = engine.url.set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._where = url.render_as_string(hide_password=True)
        self._connection: psycopg.Connection[Any] | None = None

    def _connect(self) -> psycopg.Connection[Any] | None:
        if self._connection is None or self._connection.closed:
            try:
                self._connection = psycopg.connect(self._conninfo, autocommit=True)
                self._connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
            except psycopg.Error as error:
                _log.warning("cannot LISTEN on %s (polling instead): %s", self._where, error)
                self._connection = None
        return self._connection

    def open(self) -> None:
        self._connect()

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a notification; ``True`` if one came."""
        connection = self._connect()
        if connection is None:
            time.sleep(timeout_s)
            return False
        try:
            for _ in connection.notifies(timeout=timeout_s, stop_after=1):
                return True
        except psycopg.Error as error:
            _log.warning("lost the LISTEN connection (reconnecting): %s", error)
            self.close()
        return False

    def drain(self) -> None:
        """Forget notifications already received: the next batch reads what they announced."""
        connection = self._connect()
        if connection is None:
            return
        try:
            for _ in connection.notifies(timeout=0):
                pass
        except psycopg.Error:
            self.close()

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            finally:
                self._connection = None


# --- the relay --------------------------------------------------------------------------------


class OutboxRelay:
    """Publishes committed outbox rows; :meth:`run` until :meth:`stop` (see the module doc).

    ``engine`` and ``producer`` are passed in (built by :func:`run_relay` from settings); the
    schema must be migrated already. Not thread-safe: one thread runs it, any may stop it.
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
    ) -> None:
        self._engine = engine
        self._producer = producer
        self._settings = settings
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.metrics = metrics or RelayMetrics()
        self._delivery_timeout_s = delivery_timeout_s
        self._postgres = is_postgres(engine)
        self._lease = None if self._postgres else _Lease(engine, self.name, settings.lease_s)
        self._stop = threading.Event()
        self.totals = RelayTotals()
        self._next_cleanup = time.monotonic() + settings.cleanup_interval_s
        self._next_status = 0.0
        self._next_log = time.monotonic() + settings.log_interval_s
        self._logged_published = 0
        self._last_log = time.monotonic()
        self.last_status: OutboxStatus | None = None

    # ---- control ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop after the current batch (safe from signal handlers and other threads)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, *, once: bool = False) -> RelayTotals:
        """Publish batch after batch until :meth:`stop`; with ``once``, until a batch comes
        back short (what could be claimed now is published), raising errors instead of
        retrying them."""
        listening = self._postgres and self._settings.listen and not once
        listener = _Listener(self._engine) if listening else None
        if listener is not None:
            listener.open()  # before the first batch: nothing committed after it is missed
        try:
            while not self._stop.is_set():
                if listener is not None:
                    listener.drain()
                try:
                    result = self.publish_batch()
                    self._housekeeping()
                except (SQLAlchemyError, PipelineError) as error:
                    if once:
                        raise
                    _log.error("outbox relay %s: batch failed, retrying: %s", self.name, error)
                    self._pause(self._settings.poll_interval_s)
                    continue
                if result.claimed >= self._settings.batch_size:
                    continue
                if once:
                    break
                if result.contended and not result.claimed:
                    self._pause(_CONTENDED_WAIT_S)
                elif not result.contended:
                    self._wait_for_rows(listener)
        finally:
            if listener is not None:
                listener.close()
            if self._lease is not None and self._lease.holder == self.name:
                try:
                    self._lease.release()
                except SQLAlchemyError as error:
                    _log.warning("could not release the outbox lease: %s", error)
            self._report(final=True)
        return self.totals

    def _pause(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _wait_for_rows(self, listener: _Listener | None) -> None:
        deadline = time.monotonic() + self._settings.poll_interval_s
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if listener is not None:
                if listener.wait(min(remaining, _WAIT_SLICE_S)):
                    return
            else:
                self._stop.wait(min(remaining, _WAIT_SLICE_S))
            self._report()

    # ---- one batch ---------------------------------------------------------------------------

    def publish_batch(self) -> BatchResult:
        """Claim, publish and mark one batch (see the module docstring)."""
        result = self._batch_postgres() if self._postgres else self._batch_leased()
        if result.claimed:
            self.totals.batches += 1
            self.metrics.batches.inc()
        self._report()
        return result

    def _batch_postgres(self) -> BatchResult:
        with self._engine.connect() as connection, connection.begin():
            records, contended = self._claim_postgres(connection)
            if not records:
                return BatchResult(0, 0, contended=contended)
            positions = self._send(records)
            if positions:
                connection.execute(
                    sa.text(
                        "UPDATE pipeline_outbox SET published_at = :now "
                        "WHERE position = ANY(CAST(:positions AS bigint[]))"
                    ),
                    {"now": utc_now(), "positions": positions},
                )
        self._count(records, positions)
        return BatchResult(len(records), len(positions), contended=contended)

    def _claim_postgres(self, connection: Connection) -> tuple[list[OutboxRecord], bool]:
        table = outbox_table
        batch_size = self._settings.batch_size
        plan = ClaimPlan(self._settings.lock_buckets, batch_size)
        after = 0
        for _ in range(_LOCK_ROUNDS):
            window = connection.execute(
                sa.select(table.c.position, table.c.aggregate_type, table.c.aggregate_id)
                .where(table.c.published_at.is_(None), table.c.position > after)
                .order_by(table.c.position)
                .limit(batch_size)
            ).all()
            if window:
                after = window[-1][0]
                plan.add_window(cast(Sequence[tuple[int, str, str]], window))
            chosen = plan.to_try()
            if chosen:
                granted = connection.execute(
                    sa.text(
                        "SELECT b FROM unnest(CAST(:buckets AS integer[])) AS b "
                        "WHERE pg_try_advisory_xact_lock(:namespace, b)"
                    ),
                    {"buckets": chosen, "namespace": LOCK_NAMESPACE},
                ).scalars()
                plan.granted(chosen, granted)
            if plan.full or len(window) < batch_size:
                break  # a batch, or the end of the backlog
        mine = plan.positions
        if not mine:
            return [], plan.contended
        # A new statement, so a snapshot taken after the locks: rows another relay published
        # while it held a bucket are seen as published now.
        rows = connection.execute(
            sa.select(*RECORD_COLUMNS)
            .where(
                table.c.position == sa.any_(sa.bindparam("mine", mine, sa.ARRAY(sa.BigInteger))),
                table.c.published_at.is_(None),
            )
            .order_by(table.c.position)
            .limit(batch_size)
        ).all()
        return [record_of(row) for row in rows], plan.contended

    def _batch_leased(self) -> BatchResult:
        assert self._lease is not None
        if not self._lease.hold():
            self.metrics.lease_held.set(0)
            self.totals.lease_holder = self._lease.holder
            return BatchResult(0, 0, lease_busy=True)
        self.metrics.lease_held.set(1)
        self.totals.lease_holder = None
        table = outbox_table
        with self._engine.connect() as connection:
            records = [
                record_of(row)
                for row in connection.execute(
                    sa.select(*RECORD_COLUMNS)
                    .where(table.c.published_at.is_(None))
                    .order_by(table.c.position)
                    .limit(self._settings.batch_size)
                ).all()
            ]
        if not records:
            return BatchResult(0, 0)
        positions = self._send(records, keepalive=self._lease.hold)
        if positions:
            with self._engine.begin() as connection:
                connection.execute(
                    sa.update(table)
                    .where(table.c.position.in_(positions))
                    .values(published_at=utc_now())
                )
        self._count(records, positions)
        return BatchResult(len(records), len(positions))

    def _send(
        self, records: Sequence[OutboxRecord], keepalive: Callable[[], bool] | None = None
    ) -> list[int]:
        """Send every record and wait for the broker; the positions that may be marked.

        The producer's bulk path (no callback per event: a success costs no Python call) and
        then ``flush``, which names the failed events by id (:class:`DeliveryError`); flushed
        in slices so the SQLite lease is renewed while Kafka is slow.
        """
        sent = [False] * len(records)
        refused: set[tuple[str, str]] = set()
        for index, record in enumerate(records):
            if record.aggregate in refused:
                continue  # never send an aggregate's later rows past one that cannot go
            try:
                self._producer.send(record.topic, record.message())
            except ProduceRefused as refusal:
                refused.add(record.aggregate)
                _log.error(
                    "outbox row %d (event %s) cannot be published: %s",
                    record.position,
                    record.event_id,
                    refusal.reason,
                )
                continue
            sent[index] = True
        failures = self._wait_for_deliveries(keepalive)
        failed_ids = {failure.event_id for failure in failures or ()}
        if failures is None:  # not all settled in time: nothing can be counted as delivered
            acknowledged = [False] * len(records)
        else:
            acknowledged = [
                ok and record.event_id not in failed_ids
                for ok, record in zip(sent, records, strict=True)
            ]
        if failures:
            first = failures[0]
            _log.error(
                "outbox relay %s: %d events not acknowledged (first: %s to %s: %s); they stay "
                "unpublished and are sent again",
                self.name,
                len(failures),
                first.event_id,
                first.topic,
                first.error,
            )
        failed = len(records) - sum(acknowledged)
        if failed:
            self.totals.failed += failed
            self.metrics.failed.inc(failed)
        return publishable_positions(records, acknowledged)

    def _wait_for_deliveries(self, keepalive: Callable[[], bool] | None) -> list[Delivery] | None:
        """Every failure of the batch once all settled; ``None`` if some did not in time."""
        failures: list[Delivery] = []
        slice_s = self._settings.lease_s / 3 if keepalive is not None else None
        deadline = time.monotonic() + self._delivery_timeout_s
        while True:
            remaining = deadline - time.monotonic()
            try:
                self._producer.flush(remaining if slice_s is None else min(slice_s, remaining))
                return failures
            except DeliveryError as error:
                failures.extend(error.failures)
                return failures
            except FlushTimeout:  # some still unacknowledged after this slice
                if time.monotonic() >= deadline:
                    _log.error("outbox relay %s: Kafka did not answer in time", self.name)
                    return None
                if keepalive is not None:
                    keepalive()

    def _count(self, records: Sequence[OutboxRecord], positions: Sequence[int]) -> None:
        if not positions:
            return
        marked = set(positions)
        per_topic = Tally(record.topic for record in records if record.position in marked)
        for topic, count in per_topic.items():
            self.metrics.published.labels(topic).inc(count)
        self.totals.published += len(positions)

    # ---- housekeeping and reporting ----------------------------------------------------------

    def _housekeeping(self) -> None:
        if time.monotonic() < self._next_cleanup:
            return
        self._next_cleanup = time.monotonic() + self._settings.cleanup_interval_s
        self.cleanup()

    def cleanup(self) -> int:
        """Delete published rows older than the retention; returns how many."""
        deleted = delete_published(
            self._engine,
            retention_s=self._settings.retention_s,
            batch_size=self._settings.cleanup_batch_size,
        )
        self.totals.deleted += deleted
        self.metrics.deleted.inc(deleted)
        return deleted

    def _report(self, *, final: bool = False) -> None:
        now = time.monotonic()
        if now >= self._next_status:
            self._next_status = now + _STATUS_INTERVAL_S
            try:
                self.last_status = outbox_status(self._engine)
                self.metrics.observe(self.last_status)
            except SQLAlchemyError as error:
                _log.warning("cannot read the outbox status: %s", error)
        interval = self._settings.log_interval_s
        if not final and (interval <= 0 or now < self._next_log):
            return
        self._next_log = now + interval
        published = self.totals.published - self._logged_published
        elapsed = max(now - self._last_log, 1e-9)
        self._logged_published, self._last_log = self.totals.published, now
        status = self.last_status
        _log.info(
            "outbox relay %s: published %d in %.0f s (%.0f/s); backlog %s, oldest unpublished %s",
            self.name,
            published,
            elapsed,
            published / elapsed,
            "?" if status is None else status.backlog,
            "-"
            if status is None or status.oldest_unpublished_age_s is None
            else f"{status.oldest_unpublished_age_s:.1f} s",
        )


# --- running it -------------------------------------------------------------------------------


def run_relay(
    settings: PipelineSettings,
    *,
    once: bool = False,
    stop: threading.Event | None = None,
    on_start: Callable[[OutboxRelay], None] | None = None,
    handle_signals: bool = False,
) -> RelayTotals:
    """Migrate the database, build the engine and producer, and run one relay in this thread.

    ``stop`` (set from another thread) ends it after the current batch, as does SIGTERM or
    SIGINT with ``handle_signals`` (main thread only). ``on_start`` is given the relay once it
    exists (to read its metrics or totals).
    """
    engine = build_engine(settings.database, pool_size=2)
    try:
        migrate(engine)
        producer = build_event_producer(settings.kafka, settings.producer)
        relay = OutboxRelay(
            engine,
            producer,
            settings.outbox,
            delivery_timeout_s=settings.producer.delivery_timeout_ms / 1000 + 10,
        )
        stop_serving = (
            serve_metrics(relay.metrics.registry, settings.outbox.metrics_port)
            if settings.outbox.metrics_port is not None
            else None
        )
        watcher: threading.Thread | None = None
        if stop is not None:

            def watch() -> None:
                while not relay.stopping:
                    if stop.wait(0.2):
                        relay.stop()

            watcher = threading.Thread(target=watch, name="outbox-relay-stop", daemon=True)
            watcher.start()
        previous: dict[signal.Signals, Any] = {}
        if handle_signals:

            def on_signal(_signum: int, _frame: FrameType | None) -> None:
                relay.stop()

            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, on_signal)
        try:
            if on_start is not None:
                on_start(relay)
            with producer:
                return relay.run(once=once)
        finally:
            relay.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if stop_serving is not None:
                stop_serving()
            if watcher is not None:
                watcher.join(1)
    finally:
        engine.dispose()


@contextmanager
def running_relay(settings: PipelineSettings) -> Iterator[OutboxRelay]:
    """A relay running in a background thread for the block; stopped (after its current
    batch) and joined at the end. Errors of the relay's setup are raised here."""
    stop = threading.Event()
    started = threading.Event()
    holder: list[OutboxRelay] = []
    errors: list[BaseException] = []

    def on_start(relay: OutboxRelay) -> None:
        holder.append(relay)
        started.set()

    def target() -> None:
        try:
            run_relay(settings, stop=stop, on_start=on_start)
        except BaseException as error:  # handed to the caller below
            errors.append(error)
            started.set()

    thread = threading.Thread(target=target, name="outbox-relay", daemon=True)
    thread.start()
    started.wait()
    if errors:
        thread.join()
        raise errors[0]
    try:
        yield holder[0]
    finally:
        stop.set()
        thread.join()
    if errors:
        raise errors[0]


def relay_subprocess(
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    **popen: Any,
) -> subprocess.Popen[bytes]:
    """Start ``pipeline outbox relay ARGS`` as a child process (same interpreter); stop it with
    ``terminate()`` (SIGTERM: it finishes its batch and exits 0). ``env`` adds variables, such
    as ``PIPELINE_DATABASE__URL``, to this process's environment."""
    command = [
        sys.executable,
        "-c",
        "from pipeline.cli.main import run; run()",
        "outbox",
        "relay",
        *args,
    ]
    return subprocess.Popen(command, env={**os.environ, **(env or {})}, **popen)
