"""One batch to Kafka: send every row, wait for the broker, and say which rows may be marked.

1. send each row with the idempotent :class:`~pipeline.kafka.producer.EventProducer` (key = the
   aggregate id, topic and CloudEvents headers as stored); a row held back (the relay's checks:
   ``refuse``) or refused by the client at once (:class:`~pipeline.kafka.producer.ProduceRefused`)
   is not sent, nor are its aggregate's later rows in the batch; nor are those of a row sent
   again after Kafka failed it (``alone``);
2. flush until every row is acknowledged or failed (:class:`~pipeline.kafka.producer.DeliveryError`
   names the failed ones by event id), in slices when the claim must be renewed meanwhile;
   after ``timeout_s`` (:class:`~pipeline.kafka.producer.FlushTimeout` every time) none counts
   as delivered;
3. the positions that may be marked: acknowledged rows whose aggregate had no earlier failure in
   the batch (:func:`pipeline.outbox.ordering.publishable_positions`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from pipeline.kafka.producer import (
    Delivery,
    DeliveryError,
    EventProducer,
    FlushTimeout,
    ProduceRefused,
)
from pipeline.outbox.ordering import publishable_positions
from pipeline.outbox.table import OutboxRecord
from pipeline.plurals import counted
from producers.outbox_relay.holds import Hold

__all__ = [
    "Refusal",
    "RefusalLog",
    "SendOutcome",
    "UnacknowledgedLog",
    "send_batch",
    "wait_for_deliveries",
]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refusal:
    """A row not sent: refused by the relay's checks or by the client at once (a topic that
    does not exist, say), or waiting behind an earlier row of its aggregate being sent again."""

    position: int
    event_id: str
    topic: str
    reason: str
    #: One of :data:`~producers.outbox_relay.holds.HELD_KINDS`.
    kind: str = "refused"
    #: The client refused it as larger than it takes (``message.max.bytes``).
    too_large: bool = False
    #: Its aggregate (type, id): the log counts aggregates by it.
    aggregate: tuple[str, str] | None = None


@dataclass(frozen=True)
class SendOutcome:
    #: The rows that may be marked published, in position order.
    positions: list[int]
    #: Rows sent and not acknowledged: failed, or not settled in time (rows held back, never
    #: sent, are not counted: see ``held``).
    failed: int
    #: The rows refused, oldest first: one per aggregate, the first of its rows held back
    #: (logged by :class:`RefusalLog`).
    refused: list[Refusal] = field(default_factory=list)
    #: The events the broker failed (logged by :class:`UnacknowledgedLog`).
    unacknowledged: list[Delivery] = field(default_factory=list)
    #: Every row not sent, by position: the refused rows and their aggregates' later rows,
    #: each to the refusal of its aggregate's first row held (a ``behind_failed`` one names
    #: the row sent again that it waits for).
    held: dict[int, Refusal] = field(default_factory=dict)
    #: The rows sent and not acknowledged, by position (every one sent after a flush timeout).
    unacknowledged_positions: list[int] = field(default_factory=list)


class RefusalLog:
    """Logs held rows once per topic and reason every ``every_s`` seconds, with how many rows
    (each aggregate's first held row and its later ones in the batches) and aggregates were held
    since: a row for a topic that does not exist is claimed again by every batch, and one ERROR
    line per row per batch flooded the log (46 lines in 10 s for 5 rows). A row held again and
    again counts once. (The line counted only each aggregate's first row: "50 outbox rows" for
    100 rows of 50 aggregates.) Rows waiting behind a row sent again after a failure are not
    refused: :class:`UnacknowledgedLog` tells of that one."""

    def __init__(self, name: str, every_s: float = 60.0) -> None:
        self._name = name
        self._every_s = every_s
        self._last: dict[tuple[str, str], float] = {}
        #: Per topic and reason: the rows held since the last line, and their aggregates (by
        #: aggregate, or by the position of its first held row when not known). By the first
        #: held row alone, an aggregate counted again each time a row of it went and the next
        #: became its first: "950 outbox rows of 15 aggregates" for 5.
        self._rows: dict[tuple[str, str], set[int]] = {}
        self._aggregates: dict[tuple[str, str], set[object]] = {}

    def note(self, held: Mapping[int, Refusal], now: float | None = None) -> None:
        """``held``: position to the refusal of its aggregate's first held row (itself, for
        that row), as :attr:`SendOutcome.held`."""
        now = time.monotonic() if now is None else now
        firsts: dict[tuple[str, str], Refusal] = {}
        for position, refusal in held.items():
            if refusal.kind == "behind_failed":
                continue
            # By kind, not by the reason's text: that names each row's own size, and a line
            # for every oversized row came back every minute.
            what = (refusal.topic, refusal.kind)
            first = firsts.setdefault(what, refusal)
            if refusal.position < first.position:
                firsts[what] = refusal
            self._rows.setdefault(what, set()).add(position)
            aggregate = refusal.aggregate if refusal.aggregate is not None else refusal.position
            self._aggregates.setdefault(what, set()).add(aggregate)
        for what, first in firsts.items():
            last = self._last.get(what)
            if last is not None and now - last < self._every_s:
                continue
            rows, aggregates = len(self._rows.pop(what)), len(self._aggregates.pop(what))
            self._last[what] = now
            _log.error(
                "%s: %s of %s held back by %s, not sent (the first: row %d, event %s: %s); "
                "they stay unpublished and are tried again with later batches (rows counted as "
                "claimed since the last such line: an aggregate may have more behind them; said "
                "at most once every %g s per topic and reason)",
                self._name,
                counted(rows, "outbox row"),
                counted(aggregates, "aggregate"),
                first.topic,
                first.position,
                first.event_id,
                first.reason,
                self._every_s,
            )


class UnacknowledgedLog:
    """Logs the events the broker failed once per topic and error every ``every_s`` seconds,
    with how many failed since: a row the broker refuses for another reason than its size is
    sent again with every batch, and one ERROR line per batch flooded the log (29 lines in
    30 s for one row, when a row too large for its topic was sent again too)."""

    def __init__(self, name: str, every_s: float = 60.0) -> None:
        self._name = name
        self._every_s = every_s
        self._last: dict[tuple[str, str], float] = {}
        self._since: dict[tuple[str, str], int] = {}

    def note(self, failures: Sequence[Delivery], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        firsts: dict[tuple[str, str], Delivery] = {}
        for failure in failures:
            what = (failure.topic, failure.error or "unknown")
            firsts.setdefault(what, failure)
            self._since[what] = self._since.get(what, 0) + 1
        for what, first in firsts.items():
            last = self._last.get(what)
            if last is not None and now - last < self._every_s:
                continue
            count = self._since.pop(what)
            self._last[what] = now
            _log.error(
                "%s: %d events to %s not acknowledged: %s (first: %s); they stay unpublished "
                "and are sent again (said at most once every %g s)",
                self._name,
                count,
                first.topic,
                what[1],
                first.event_id,
                self._every_s,
            )


def send_batch(
    producer: EventProducer,
    records: Sequence[OutboxRecord],
    *,
    timeout_s: float,
    refuse: Mapping[int, Hold] | None = None,
    alone: Collection[int] = (),
    renew: Callable[[], None] | None = None,
    renew_every_s: float | None = None,
    name: str = "outbox relay",
) -> SendOutcome:
    """Send ``records`` (position order) and wait for the broker; see the module docstring.

    The producer's bulk path (:meth:`EventProducer.send_parts`: no delivery object is made for
    a success, and the stored key and headers go as read, with no message made per row), then
    :meth:`EventProducer.flush`. ``renew`` is called every ``renew_every_s`` while waiting.
    ``refuse``: rows known not to be sendable (position to why, e.g. their topic does not
    exist), refused as the client refuses one at once. ``alone``: rows sent again after Kafka
    failed them; their aggregates' later rows in the batch are not sent with them (they wait,
    ``behind_failed``, for the next batch), or each failure sent those again ahead of them.
    """
    sent = [False] * len(records)
    #: Per aggregate not sent on from here: the refusal its later rows are held by.
    stopped: dict[tuple[str, str], Refusal] = {}
    held: dict[int, Refusal] = {}
    refusals: list[Refusal] = []
    for index, record in enumerate(records):
        if stopped and (by := stopped.get(record.aggregate)) is not None:
            held[record.position] = by  # never send an aggregate's later rows past it
            continue
        hold = refuse.get(record.position) if refuse else None
        if hold is not None:
            refusal = Refusal(
                record.position,
                record.event_id,
                record.topic,
                hold.reason,
                hold.kind,
                aggregate=record.aggregate,
            )
            stopped[record.aggregate] = held[record.position] = refusal
            refusals.append(refusal)
            continue
        try:
            producer.send_parts(
                record.topic,
                record.aggregate_id,  # the key; text goes as UTF-8, as encode() would make it
                record.value,
                record.headers,  # as read: a list of (name, text) pairs
                event_id=record.event_id,
            )
        except ProduceRefused as error:
            kind = "too_large" if error.too_large else "refused"
            refusal = Refusal(
                record.position,
                record.event_id,
                record.topic,
                error.reason,
                kind,
                error.too_large,
                record.aggregate,
            )
            stopped[record.aggregate] = held[record.position] = refusal
            refusals.append(refusal)
            continue
        sent[index] = True
        if alone and record.position in alone:
            stopped[record.aggregate] = Refusal(
                record.position,
                record.event_id,
                record.topic,
                f"behind row {record.position}, sent again after Kafka failed it",
                "behind_failed",
                aggregate=record.aggregate,
            )
    failures = wait_for_deliveries(
        producer, timeout_s=timeout_s, renew=renew, renew_every_s=renew_every_s, name=name
    )
    if failures is None:  # not all settled in time: nothing can be counted as delivered
        acknowledged = [False] * len(records)
    elif not failures:
        acknowledged = sent
    else:
        failed_ids = {failure.event_id for failure in failures}
        acknowledged = [
            ok and record.event_id not in failed_ids
            for ok, record in zip(sent, records, strict=True)
        ]
    unacknowledged = [
        record.position
        for was_sent, ok, record in zip(sent, acknowledged, records, strict=True)
        if was_sent and not ok
    ]
    return SendOutcome(
        positions=publishable_positions(records, acknowledged),
        failed=len(unacknowledged),
        refused=refusals,
        unacknowledged=list(failures or ()),
        held=held,
        unacknowledged_positions=unacknowledged,
    )


def wait_for_deliveries(
    producer: EventProducer,
    *,
    timeout_s: float,
    renew: Callable[[], None] | None = None,
    renew_every_s: float | None = None,
    name: str = "outbox relay",
) -> list[Delivery] | None:
    """Every failure among what was sent once all settled; ``None`` if some did not in time."""
    slice_s = renew_every_s if renew is not None else None
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        try:
            producer.flush(remaining if slice_s is None else min(slice_s, remaining))
            return []
        except DeliveryError as error:
            return list(error.failures)
        except FlushTimeout:  # some still unacknowledged after this slice
            if time.monotonic() >= deadline:
                _log.error("%s: Kafka did not answer in time", name)
                return None
            if renew is not None:
                renew()
