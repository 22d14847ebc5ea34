"""One batch to Kafka: send every row, wait for the broker, and say which rows may be marked.

1. send each row with the idempotent :class:`~pipeline.kafka.producer.EventProducer` (key = the
   aggregate id, topic and CloudEvents headers as stored); a row the client refuses at once
   (:class:`~pipeline.kafka.producer.ProduceRefused`) is not sent, nor are its aggregate's later
   rows in the batch;
2. flush until every row is acknowledged or failed (:class:`~pipeline.kafka.producer.DeliveryError`
   names the failed ones by event id), in slices when the claim must be renewed meanwhile;
   after ``timeout_s`` (:class:`~pipeline.kafka.producer.FlushTimeout` every time) none counts
   as delivered;
3. the positions that may be marked: acknowledged rows whose aggregate had no earlier failure in
   the batch (:func:`pipeline.outbox.table.publishable_positions`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pipeline.kafka.producer import (
    Delivery,
    DeliveryError,
    EventProducer,
    FlushTimeout,
    ProduceRefused,
)
from pipeline.outbox.table import OutboxRecord, publishable_positions

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
    """A row the client refused at once (a topic that does not exist, say): not sent."""

    position: int
    event_id: str
    topic: str
    reason: str


@dataclass(frozen=True)
class SendOutcome:
    #: The rows that may be marked published, in position order.
    positions: list[int]
    #: Rows not acknowledged: refused, not sent after a refusal, failed, or not settled in time.
    failed: int
    #: The rows refused at once, oldest first (logged by :class:`RefusalLog`).
    refused: list[Refusal] = field(default_factory=list)
    #: The events the broker failed (logged by :class:`UnacknowledgedLog`).
    unacknowledged: list[Delivery] = field(default_factory=list)


class RefusalLog:
    """Logs refused rows once per topic and reason every ``every_s`` seconds, with how many
    rows were refused since: a row for a topic that does not exist is claimed again by every
    batch, and one ERROR line per row per batch flooded the log (46 lines in 10 s for 5 rows).
    A row refused again and again counts once."""

    def __init__(self, name: str, every_s: float = 60.0) -> None:
        self._name = name
        self._every_s = every_s
        self._last: dict[tuple[str, str], float] = {}
        self._since: dict[tuple[str, str], set[int]] = {}

    def note(self, refused: Sequence[Refusal], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        firsts: dict[tuple[str, str], Refusal] = {}
        for refusal in refused:
            what = (refusal.topic, refusal.reason)
            firsts.setdefault(what, refusal)
            self._since.setdefault(what, set()).add(refusal.position)
        for what, first in firsts.items():
            last = self._last.get(what)
            if last is not None and now - last < self._every_s:
                continue
            count = len(self._since.pop(what))
            self._last[what] = now
            _log.error(
                "%s: %d outbox rows for %s cannot be published: %s (first: row %d, event %s); "
                "they stay unpublished and are tried again with each batch (said at most once "
                "every %g s)",
                self._name,
                count,
                first.topic,
                first.reason,
                first.position,
                first.event_id,
                self._every_s,
            )


class UnacknowledgedLog:
    """Logs the events the broker failed once per topic and error every ``every_s`` seconds,
    with how many failed since: a row the broker refuses for good (too large for its topic)
    is sent again with every batch, and one ERROR line per batch flooded the log (29 lines in
    30 s for one row)."""

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
    refuse: Mapping[int, str] | None = None,
    renew: Callable[[], None] | None = None,
    renew_every_s: float | None = None,
    name: str = "outbox relay",
) -> SendOutcome:
    """Send ``records`` (position order) and wait for the broker; see the module docstring.

    The producer's bulk path (:meth:`EventProducer.send_parts`: no delivery object is made for
    a success, and the stored key and headers go as read, with no message made per row), then
    :meth:`EventProducer.flush`. ``renew`` is called every ``renew_every_s`` while waiting.
    ``refuse``: rows known not to be sendable (position to reason, e.g. their topic does not
    exist), refused as the client refuses one at once.
    """
    sent = [False] * len(records)
    refused: set[tuple[str, str]] = set()
    refusals: list[Refusal] = []
    for index, record in enumerate(records):
        if refused and record.aggregate in refused:
            continue  # never send an aggregate's later rows past one that cannot go
        reason = refuse.get(record.position) if refuse else None
        if reason is not None:
            refused.add(record.aggregate)
            refusals.append(Refusal(record.position, record.event_id, record.topic, reason))
            continue
        try:
            producer.send_parts(
                record.topic,
                record.aggregate_id,  # the key; text goes as UTF-8, as encode() would make it
                record.value,
                record.headers,  # as read: a list of (name, text) pairs
                event_id=record.event_id,
            )
        except ProduceRefused as refusal:
            refused.add(record.aggregate)
            refusals.append(Refusal(record.position, record.event_id, record.topic, refusal.reason))
            continue
        sent[index] = True
    failures = wait_for_deliveries(
        producer, timeout_s=timeout_s, renew=renew, renew_every_s=renew_every_s, name=name
    )
    if failures is None:  # not all settled in time: nothing can be counted as delivered
        acknowledged = [False] * len(records)
    else:
        failed_ids = {failure.event_id for failure in failures}
        acknowledged = [
            ok and record.event_id not in failed_ids
            for ok, record in zip(sent, records, strict=True)
        ]
    return SendOutcome(
        positions=publishable_positions(records, acknowledged),
        failed=len(records) - sum(acknowledged),
        refused=refusals,
        unacknowledged=list(failures or ()),
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
