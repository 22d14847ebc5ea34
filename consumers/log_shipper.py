"""The log shipper: the ``logs`` topic into Elasticsearch, nothing lost and nothing doubled.

A batch consumer (confluent-kafka, built by :mod:`pipeline.kafka.clients`) and bulk indexing
(``elasticsearch.helpers.streaming_bulk``). For each batch (the pure parts are
:mod:`consumers.log_batch`):

1. :func:`~consumers.log_batch.plan_batch` turns the records into index actions; a record that
   is not a log document is dead-lettered at once;
2. the actions go to Elasticsearch in one bulk request; each item is classified by
   :func:`~consumers.log_batch.classify`: 2xx done, 5xx retried with bounded exponential
   backoff (:func:`retry_policy`, then dead-lettered), any other 4xx (a mapping conflict)
   dead-lettered with Elasticsearch's reason (a write block of one index too, after the
   retries). A 429 (queues full, a full disk) or a block of the whole cluster says it takes no
   writes now: an outage (below), the documents kept and sent again once it takes them, none
   dead-lettered for it. A request Elasticsearch
   refuses whole with a 4xx (one action it does not take fails them all) is sent again in
   halves until the refusal falls on the documents that cause it: only those are
   dead-lettered;
3. dead letters go to ``logs.dlq`` (the original key and value, the ``dlq.*`` headers of
   :mod:`pipeline.dead_letters.letter` and Elasticsearch's status; see
   :func:`~consumers.log_batch.dlq_message`), and the producer is flushed; one Kafka refuses
   as too large is sent again cut down (its value's first 16 KiB, then only the headers);
4. only then are the offsets committed, per partition up to the first record that is neither
   acknowledged nor dead-lettered (:func:`~consumers.log_batch.commit_positions`); the consumer
   goes back to that record (a dead letter Kafka did not take: a DLQ topic missing, say), and
   tries again after a pause, so no later commit passes it. The records after it that are
   done are remembered, and skipped when read again: not indexed nor dead-lettered twice.

The shipper's own log lines (keyed by its service, ``own_key``) travel the same way, but their
dead-lettering is not logged line by line (each such line would be one more record to ship: with
Elasticsearch refusing everything, an endless loop), and they do not count as activity for
``until_idle_s`` (its periodic metrics line would keep it busy for ever).

Every request to Elasticsearch is made beside the consuming thread
(:class:`~consumers.log_shipper_outages.Outages`): while its answer takes more than a second the
partitions are paused and the group served, so the lag gauge and the metrics line go on while
Elasticsearch stalls. When Elasticsearch cannot be reached (connection refused, no answer within
the request timeout, counted from when the request was sent) or takes no writes, the shipper
pauses its partitions, waits (1 s doubling up to ``outage_max_backoff_s``, while serving the
group), probes ``_cluster/health`` (or sends the documents again) and resumes with the same
batch: no loss, no busy loop. The metrics line keeps coming every ``metrics_interval_s``
meanwhile, saying since when Elasticsearch is away. The shipper joins its group while it first
puts the index template, so one started during an outage (or a stall) holds its partitions
(paused) and its lag is known. A server at that URL that is not Elasticsearch (an answer that
is no JSON) is no outage: a :class:`PipelineError` at once.

SIGTERM/SIGINT (``stop`` set): the current batch finishes (or, in an outage or while a request
waits for its answer, is abandoned), what is acknowledged is committed, and the consumer leaves
its group.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError, KafkaException, TopicPartition
from elasticsearch import ApiError, Elasticsearch
from elasticsearch.helpers import streaming_bulk

from consumers.log_batch import (
    IndexAction,
    Position,
    SourceRecord,
    UnshippableRecord,
    commit_positions,
    first_undone,
    item_error_type,
    item_reason,
    item_verdict,
    plan_batch,
    refused_runs,
)
from consumers.log_dead_letters import DeadLetterWriter, DlqProducer, Where, where_of
from consumers.log_shipper_metrics import MetricsLine, ShipperCounters
from consumers.log_shipper_outages import Outages, Stopped
from consumers.log_shipper_standing import (
    LagMeter,
    ShipperConsumer,
    commit_starts_at_end,
    not_caught_up,
    partitions_not_owned,
)
from pipeline.envelope.consumed_headers import HeaderNameError, read_headers
from pipeline.errors import PipelineError
from pipeline.logs.elasticsearch import (
    not_elasticsearch,
    refusal_of,
    template_refusal,
)
from pipeline.logs.schema import INDEX_ALIAS, ensure_index_template
from pipeline.plurals import counted
from pipeline.retry import RetryPolicy
from pipeline.settings import LogSettings

__all__ = ["DlqProducer", "LogShipper", "ShipperConsumer", "ShipperCounters", "retry_policy"]

_log = logging.getLogger(__name__)

#: Largest bulk request body (Elasticsearch refuses above http.max_content_length, 100 MB).
_MAX_CHUNK_BYTES = 20 * 1024 * 1024


def retry_policy(settings: LogSettings) -> RetryPolicy:
    """The retries of a document Elasticsearch answered 429 or 5xx: ``retry_attempts`` in all,
    waiting ``retry_initial_backoff_s`` doubled after each failure, at most
    ``retry_max_backoff_s``, without jitter."""
    return RetryPolicy(
        max_attempts=settings.retry_attempts,
        # A first wait above the cap is the cap, as min(cap, first * 2**n) always was.
        initial_backoff_s=min(settings.retry_initial_backoff_s, settings.retry_max_backoff_s),
        max_backoff_s=settings.retry_max_backoff_s,
        multiplier=2.0,
        jitter=0.0,
    )


class LogShipper:
    """Ships one topic into Elasticsearch; see the module docstring for the order of things."""

    def __init__(
        self,
        consumer: ShipperConsumer,
        es: Elasticsearch,
        dlq_producer: DlqProducer,
        settings: LogSettings,
        *,
        topic: str | None = None,
        dlq_topic: str | None = None,
        alias: str = INDEX_ALIAS,
        consumer_group: str = "",
        stop: threading.Event | None = None,
        report: Callable[[str], None] | None = None,
        own_key: bytes | None = None,
        start_at_end: bool = False,
        es_url: str = "",
    ) -> None:
        self._consumer = consumer
        #: Elasticsearch's address, for the line saying a server there is not Elasticsearch.
        self._es_url = es_url
        #: ``--start latest``: a partition the group never committed starts at its end, which
        #: is committed as it is assigned (:func:`commit_starts_at_end`).
        self._start_at_end = start_at_end
        self._es = es
        self._settings = settings
        self._retry = retry_policy(settings)
        self.topic = topic or settings.topic
        self.dlq_topic = dlq_topic or settings.dlq_topic
        self.alias = alias
        self.consumer_group = consumer_group or settings.shipper_group
        self.stop = stop or threading.Event()
        self._report = report or _log.info
        self.counters = ShipperCounters()
        #: Keeps counters.lag, the lag gauge, fresh (every second, not every metrics line).
        self.lag_meter = LagMeter(consumer, self.counters)
        self._assigned: set[Position] = set()
        self._own_key = own_key
        self._letters = DeadLetterWriter(
            dlq_producer,
            self.dlq_topic,
            self.consumer_group,
            is_own=self._is_own,
        )
        #: Since when dead letters keep failing to be written (``None``: they are not).
        self._dlq_failing_since: float | None = None
        #: Records done (indexed or dead-lettered) after a record that is not, in a partition
        #: the consumer was sent back in: read again, they are skipped, not sent twice.
        self._settled: set[Where] = set()
        #: When the assignment last changed (``run(until_idle_s=...)`` waits that long again).
        self._assigned_at = 0.0
        self._metrics_line = MetricsLine(
            self.counters, self._settings.metrics_interval_s, lambda line: self._report(line)
        )
        #: Elasticsearch's requests (beside this thread) and outages.
        self.outages = Outages(
            consumer, es, settings, stop=self.stop, es_url=es_url, counters=self.counters,
            metrics_line=self._metrics_line, tick=self._tick,
        )  # fmt: skip

    # ---- running --------------------------------------------------------------------------

    def run(self, *, until_idle_s: float | None = None) -> ShipperCounters:
        """Ship until ``stop`` is set (or, with ``until_idle_s``, until caught up: every
        partition of the topic assigned to this shipper and nothing new for that long; a
        :class:`PipelineError` if Elasticsearch stays away (unreachable, or taking no writes)
        that long, or if other members of the group keep partitions past
        :meth:`_ownership_wait_s`); returns the counters. The caller closes the consumer
        afterwards."""
        self.outages.limit_s = until_idle_s
        # The metrics lines come every interval, also while Elasticsearch is away or does not
        # answer (from Outages.serve_for), saying so.
        self._metrics_line.start()
        # In the group while the template is put: a shipper started while Elasticsearch is
        # away or stalls holds its partitions (paused, in Outages.serve_for), so its lag and
        # backlog are seen.
        self._consumer.subscribe(
            [self.topic], on_assign=self._assigned_cb, on_revoke=self._revoked_cb,
            on_lost=self._revoked_cb,
        )  # fmt: skip
        try:
            self.outages.call(self._put_template)
        except Stopped:
            return self.counters
        idle_since = time.monotonic()
        partial_since: float | None = None  # idle, but some partitions not ours, since then
        while not self.stop.is_set():
            messages = self._consumer.consume(
                num_messages=self._settings.shipper_batch_size,
                timeout=self._settings.shipper_batch_timeout_s,
            )
            records = self._records(messages)
            now = time.monotonic()
            theirs = any(not self._is_own(record) for record in records)
            if theirs or not self._assigned:  # idle only counts once partitions are ours
                idle_since = now
            # Before the batch is shipped (that may take a while): the lag once it was read.
            self.lag_meter.refresh(self._assigned_at, read=bool(records))
            if records:
                self.ship_batch(records)
            # Idle counts on a stable assignment: partitions just assigned were not seen idle.
            if (
                until_idle_s is not None
                and now - max(idle_since, self._assigned_at) >= until_idle_s
            ):
                missing = partitions_not_owned(self._consumer, self.topic, self._assigned)
                if missing == []:
                    self._report(
                        f"caught up: every partition of {self.topic} read, nothing new for "
                        f"{until_idle_s:g} s"
                    )
                    break
                # A killed shipper keeps its partitions until its session times out: wait for
                # the rebalance that hands them over, rather than call the rest caught up.
                partial_since = now if partial_since is None else partial_since
                if now - partial_since >= self._ownership_wait_s(until_idle_s):
                    raise PipelineError(
                        not_caught_up(self.topic, self.consumer_group, missing, now - partial_since)
                    )
            self._report_when_due()
        self.report_metrics()
        return self.counters

    def _put_template(self) -> None:
        try:
            ensure_index_template(
                self._es,
                alias=self.alias,
                shards=self._settings.index_shards,
                replicas=self._settings.index_replicas,
                lifecycle_policy=self._settings.index_lifecycle_policy,
            )
        except ApiError as error:
            if refusal_of(error) is not None:  # credentials or TLS: said by the caller
                raise
            foreign = not_elasticsearch(self._es_url, error.meta.status, error.body)
            raise PipelineError(foreign or template_refusal(error)) from None

    def _ownership_wait_s(self, until_idle_s: float) -> float:
        """How long an idle run waits for the partitions it does not own: a dead member's
        session timeout (ours, as the shippers of a group share their settings), then the
        idle time again on the new assignment."""
        return self._settings.shipper_session_timeout_ms / 1000 + until_idle_s

    def _assigned_cb(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        self._assigned |= {(tp.topic, tp.partition) for tp in partitions}
        self._assigned_at = time.monotonic()
        self._report(f"assigned {_describe(partitions)}")
        if self._start_at_end:
            commit_starts_at_end(self._consumer, partitions)

    def _revoked_cb(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._assigned -= gone
        self._assigned_at = time.monotonic()
        # The next owner reads them from the committed offset; nothing to remember here.
        self._settled = {w for w in self._settled if (w[0], w[1]) not in gone}
        self._report(f"revoked {_describe(partitions)}")

    def _records(self, messages: Sequence[Any]) -> list[SourceRecord]:
        records = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                if error.code() != KafkaError._PARTITION_EOF:
                    _log.warning("kafka: %s", error.str())
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            key, value, timestamp_ms = message.key(), message.value(), _timestamp_ms(message)
            try:  # a consumed message's headers: a list of (str, bytes)
                headers = cast(tuple[tuple[str, bytes], ...], tuple(read_headers(message) or ()))
            except HeaderNameError as error:
                # confluent-kafka cannot read a header name that is not UTF-8 (nor may the
                # message be touched again); a log line is its value: shipped without headers.
                _log.warning("%s[%d]@%d: %s; shipped without them", topic, partition, offset, error)
                headers = ()
            records.append(
                SourceRecord(topic, partition, offset, key, value, headers, timestamp_ms)
            )
        self.counters.consumed += len(records)
        return records

    # ---- one batch ------------------------------------------------------------------------

    def ship_batch(self, records: Sequence[SourceRecord]) -> dict[Position, int]:
        """Index, dead-letter and commit one batch; returns the committed positions."""
        offsets: dict[Position, list[int]] = {}
        for record in records:
            offsets.setdefault((record.topic, record.partition), []).append(record.offset)
        # Read again after a record that was not done: what was done after it is not redone.
        done: set[Where] = {where_of(record) for record in records} & self._settled
        fresh = [record for record in records if where_of(record) not in done]
        actions, dead = plan_batch(fresh, alias=self.alias, now=datetime.now(UTC))
        # Stopping in an outage: commit what is acknowledged, the rest comes again.
        with contextlib.suppress(Stopped):
            self._index(actions, dead, done)
        done |= self._dead_letter(dead)
        positions = commit_positions(offsets, done)
        self._commit(positions)
        undone = first_undone(offsets, done)
        self._remember(offsets, done, undone)
        self._read_again(undone)
        return positions

    def _remember(
        self,
        offsets: Mapping[Position, Sequence[int]],
        done: set[Where],
        undone: Mapping[Position, int],
    ) -> None:
        """Keep the records done after each partition's first record not done (the consumer
        goes back there), and what was remembered beyond this batch; forget the rest."""
        last = {position: max(numbers) for position, numbers in offsets.items()}
        kept = {where for where in self._settled if where[2] > last.get(where[:2], -1)}
        kept |= {
            where
            for where in done
            if (where[0], where[1]) in undone and where[2] > undone[(where[0], where[1])]
        }
        self._settled = kept

    def _is_own(self, record: SourceRecord) -> bool:
        """One of the shipper's own log lines (keyed by its service)."""
        return self._own_key is not None and record.key == self._own_key

    def _read_again(self, undone: dict[Position, int]) -> None:
        """Send the consumer back to each partition's first record not done, after a pause; an
        error once that has lasted the ``until_idle_s`` of the run."""
        if not undone:
            self._dlq_failing_since = None
            return
        for (topic, partition), offset in sorted(undone.items()):
            if (topic, partition) in self._assigned:
                self._consumer.seek(TopicPartition(topic, partition, offset))
        now = time.monotonic()
        if self._dlq_failing_since is None:
            self._dlq_failing_since = now
        limit = self.outages.limit_s
        if limit is not None and now - self._dlq_failing_since >= limit:
            raise PipelineError(
                f"for {limit:g} s {counted(len(undone), 'partition')} could not get past a record "
                f"neither indexed nor dead-lettered to {self.dlq_topic} (see the errors above); "
                "it is not committed: the next run tries it again"
            )
        self.stop.wait(self._retry.initial_backoff_s)

    def _index(
        self,
        actions: list[IndexAction],
        dead: list[UnshippableRecord],
        done: set[tuple[str, int, int]],
    ) -> None:
        pending = actions
        attempt = 0  # of the documents answered 5xx
        while pending:
            results = self.outages.call(partial(self._bulk, pending))
            retry: list[tuple[IndexAction, Mapping[str, Any], int | None]] = []
            blocked: list[tuple[IndexAction, Mapping[str, Any]]] = []
            for action, (_ok, item) in zip(pending, results, strict=True):
                status = item.get("status")
                status = status if isinstance(status, int) else None
                verdict = item_verdict(item)
                where = (action.record.topic, action.record.partition, action.record.offset)
                if verdict == "ok":
                    done.add(where)
                    self.counters.shipped += 1
                elif verdict == "reject":
                    dead.append(
                        UnshippableRecord(
                            action.record, item_reason(item), status, "rejected",
                            item_error_type(item), attempt + 1,
                        )
                    )  # fmt: skip
                elif verdict == "blocked":  # the cluster takes no writes now: kept
                    blocked.append((action, item))
                else:
                    retry.append((action, item, status))
            if blocked:  # an outage: its back-off (serving the group), then all again
                self.outages.blocked(item_reason(blocked[0][1]))
            else:
                self.outages.writes_taken()
            if retry:
                attempt += 1
                if self._retry.exhausted(attempt):
                    for action, failed, status in retry:
                        why = f"gave up after {attempt} attempts: {item_reason(failed)}"
                        dead.append(
                            UnshippableRecord(
                                action.record, why, status, "retries_exhausted",
                                item_error_type(failed), attempt,
                            )
                        )  # fmt: skip
                    retry = []
                elif not blocked:
                    pause = self._retry.delay(attempt)
                    _log.warning(
                        "elasticsearch asked to retry %s (%s); again in %.1f s",
                        counted(len(retry), "document"), item_reason(retry[0][1]), pause,
                    )  # fmt: skip
                    if self.outages.serve_for(pause):
                        return  # stopping: those are not done, they come again
            again = {id(action) for action, _item in blocked} | {id(a) for a, _i, _s in retry}
            pending = [action for action in pending if id(action) in again]
            self.counters.retried += len(pending)

    def _bulk(self, actions: list[IndexAction]) -> list[tuple[bool, dict[str, Any]]]:
        """The bulk results of ``actions``. A request Elasticsearch refused whole with a 4xx
        gives every one of its documents that status: those are sent again in halves, and
        halves of those, until each refusal is of a request of one document, the culprit."""
        results = self._bulk_request(actions)
        runs = refused_runs([item for _ok, item in results])
        while runs:
            start, end = runs.pop()
            middle = (start + end) // 2
            for low, high in ((start, middle), (middle, end)):
                part = self._bulk_request(actions[low:high])
                results[low:high] = part
                runs += [(low + a, low + b) for a, b in refused_runs([item for _ok, item in part])]
        return results

    def _bulk_request(self, actions: list[IndexAction]) -> list[tuple[bool, dict[str, Any]]]:
        # streaming_bulk: the chunking and per-item results of the official helper; its own
        # retry covers only 429, so it is off (max_retries=0) and ours covers 429 and 5xx.
        results = []
        for ok, item in streaming_bulk(
            self._es,
            (action.bulk_action() for action in actions),
            chunk_size=max(1, len(actions)),
            max_chunk_bytes=_MAX_CHUNK_BYTES,
            raise_on_error=False,
            raise_on_exception=False,
            max_retries=0,
        ):
            results.append((ok, next(iter(item.values()))))
        return results

    def _dead_letter(self, dead: list[UnshippableRecord]) -> set[Where]:
        """Write the dead letters (:class:`~consumers.log_dead_letters.DeadLetterWriter`); the
        positions Kafka acknowledged."""
        delivered = self._letters.write(dead)
        self.counters.dead_lettered += len(delivered)
        return delivered

    def _commit(self, positions: dict[Position, int]) -> None:
        wanted = [
            TopicPartition(topic, partition, position)
            for (topic, partition), position in sorted(positions.items())
            if (topic, partition) in self._assigned
        ]
        if not wanted:
            return
        try:
            self._consumer.commit(offsets=wanted, asynchronous=False)
            self.counters.commits += 1
        except KafkaException as error:
            # Indexed but not committed: a redelivery overwrites the same documents.
            self.counters.commit_failures += 1
            _log.warning("commit failed: %s", error.args[0].str())

    # ---- metrics --------------------------------------------------------------------------

    def _tick(self) -> None:
        """While the group is served (partitions paused, :meth:`Outages.serve_for`): the lag,
        and the metrics line when due."""
        self.lag_meter.refresh(self._assigned_at, paused=True)
        self._report_when_due(paused=True)

    def _report_when_due(self, *, paused: bool = False) -> None:
        """:meth:`report_metrics` once every ``metrics_interval_s`` of a run."""
        if self._metrics_line.when_due():
            self.report_metrics(paused=paused)

    def report_metrics(self, *, paused: bool = False) -> None:
        """Log the counters, with the lag (records not yet read) of the assigned partitions and
        the documents shipped per second since the last line (the first line of a run: since
        it started); while Elasticsearch is away, for how long (:class:`MetricsLine`).
        ``paused``: nothing is fetched, so the end offsets are asked of Kafka (the fetches'
        last ones made the line say the lag of the outage's start, and the gauge with it)."""
        self.lag_meter.measure(self._assigned_at, paused=paused)
        self._metrics_line.say()


def _timestamp_ms(message: Any) -> int | None:
    kind, stamp = message.timestamp()
    return None if kind == TIMESTAMP_NOT_AVAILABLE else int(stamp)


def _describe(partitions: list[TopicPartition]) -> str:
    names = sorted({tp.topic for tp in partitions})
    numbers = ",".join(str(tp.partition) for tp in sorted(partitions, key=lambda t: t.partition))
    return f"{'/'.join(names) or '-'} [{numbers}]"
