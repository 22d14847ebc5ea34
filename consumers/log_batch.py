"""One batch of log records, as pure data: index actions, bulk results, dead letters, commits.

What :class:`consumers.log_shipper.LogShipper` does with a batch, without any I/O:

1. :func:`plan_batch` turns the records into index actions. A record's document is its value,
   as the Kafka log handler writes it; a record that is a CloudEvent whose data is a JSON object
   (any mode, read by :func:`pipeline.envelope.decode` as processors read it) is that data.
   ``_id`` is the document's
   ``event.id`` (so a redelivery overwrites, never duplicates; a record without one gets a hash
   of topic/partition/offset), ``_index`` the daily index of its own ``@timestamp``
   (:func:`pipeline.logs.schema.index_for`), or of the shipper's day when that ``@timestamp``
   is more than a day ahead of the shipper's clock (a wrong clock). A record that is not a
   JSON object with a valid ``@timestamp`` is an :class:`UnshippableRecord` at once;
2. :func:`classify` says what to do with each bulk item from its status: 2xx ``ok``, 429 and
   5xx ``retry``, any other 4xx (a mapping conflict) ``reject``, with Elasticsearch's reason
   (:func:`item_reason`, :func:`item_error_type`);
3. :func:`dlq_message` is the dead-letter message of an unshippable record;
4. :func:`commit_positions` is, per partition, how far every record is done.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pipeline.dead_letters.letter import Failure, Reason, dead_letter_of
from pipeline.envelope import EnvelopeError, KafkaMessage, decode
from pipeline.envelope.structured_mode import looks_structured
from pipeline.logs.schema import INDEX_ALIAS, index_for

__all__ = [
    "ES_STATUS_HEADER",
    "IndexAction",
    "ItemVerdict",
    "Position",
    "SourceRecord",
    "UnshippableRecord",
    "classify",
    "commit_positions",
    "dlq_message",
    "fallback_id",
    "item_error_type",
    "item_reason",
    "plan_batch",
]

#: What to do with one bulk item: done, try again, or dead-letter it.
ItemVerdict = Literal["ok", "retry", "reject"]
Position = tuple[str, int]  # topic, partition

#: The header of a dead letter that holds Elasticsearch's HTTP status for the document.
ES_STATUS_HEADER = "dlq.elasticsearch.status"


@dataclass(frozen=True)
class SourceRecord:
    """One consumed Kafka record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class IndexAction:
    """One document to index, and the record it came from."""

    record: SourceRecord
    index: str
    id: str
    source: bytes  # the document as one line of JSON

    def bulk_action(self) -> dict[str, Any]:
        return {"_op_type": "index", "_index": self.index, "_id": self.id, "_source": self.source}


@dataclass(frozen=True)
class UnshippableRecord:
    """A record that goes to the dead-letter topic instead of Elasticsearch, and why (the
    message is made by :func:`dlq_message`)."""

    record: SourceRecord
    reason: str  # the decoder's or Elasticsearch's reason, one line
    status: int | None = None  # Elasticsearch's status; None when it never got there
    kind: Reason = "undecodable"
    error_type: str = "undecodable"
    attempts: int = 1


def fallback_id(record: SourceRecord) -> str:
    """The document id of a record without ``event.id``: stable across redeliveries."""
    where = f"{record.topic}/{record.partition}/{record.offset}".encode()
    return hashlib.sha256(where).hexdigest()[:40]


def _parse_timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _is_event_header(name: str) -> bool:
    lowered = name.lower()
    return lowered.startswith("ce_") or lowered == "content-type"


def _document_of(record: SourceRecord) -> bytes | None:
    """The log document's JSON: the value, or the data of a CloudEvent that carries one."""
    value = record.value
    if not any(_is_event_header(name) for name, _ in record.headers) and not looks_structured(
        value
    ):
        return value  # what the Kafka log handler writes: the document, no event headers
    try:
        event = decode(value, record.headers, record.key)
    except EnvelopeError:
        return value  # not an event: the value is read as a document, or dead-lettered
    if not isinstance(event.data, dict):
        return value
    return json.dumps(event.data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def plan_batch(
    records: Iterable[SourceRecord], *, alias: str = INDEX_ALIAS, now: datetime | None = None
) -> tuple[list[IndexAction], list[UnshippableRecord]]:
    """Index actions for the records that are log documents; dead letters for the rest.
    ``now``: the shipper's clock, which a document's ``@timestamp`` may pass by at most
    :data:`FUTURE_SLACK` and still choose its index."""
    actions: list[IndexAction] = []
    dead: list[UnshippableRecord] = []
    for record in records:
        value = _document_of(record)
        if not value:
            dead.append(UnshippableRecord(record, "undecodable: the record has no value"))
            continue
        try:
            document = json.loads(value)
        except (UnicodeDecodeError, ValueError) as error:
            dead.append(UnshippableRecord(record, f"undecodable: not JSON ({error})"))
            continue
        if not isinstance(document, dict):
            kind = type(document).__name__
            dead.append(UnshippableRecord(record, f"undecodable: a JSON {kind}, not an object"))
            continue
        moment = _parse_timestamp(document.get("@timestamp"))
        if moment is None:
            stamp = document.get("@timestamp")
            dead.append(
                UnshippableRecord(record, f"undecodable: no valid @timestamp (got {stamp!r:.60})")
            )
            continue
        event = document.get("event")
        event_id = event.get("id") if isinstance(event, dict) else None
        if not isinstance(event_id, str) or not event_id or len(event_id) > 512:
            event_id = fallback_id(record)
        # A log line's JSON is sent as it came (one line), saving a second serialisation.
        source = value if b"\n" not in value else json.dumps(document).encode()
        actions.append(IndexAction(record, _index_of(moment, now, alias), event_id, source))
    return actions, dead


#: How far a record's ``@timestamp`` may lie after the shipper's clock and still choose the
#: index: beyond, a host's wrong clock would make an index per day it claims (year 2099, ...).
#: (The record's Kafka timestamp is no check: the same host's producer set it.)
FUTURE_SLACK = timedelta(days=1)


def _index_of(moment: datetime, now: datetime | None, alias: str) -> str:
    """The daily index of ``moment``; today's (``now``'s) when ``moment`` is more than
    :data:`FUTURE_SLACK` after ``now`` (the document keeps its ``@timestamp``)."""
    if now is not None and moment - now > FUTURE_SLACK:
        return index_for(now, alias=alias)
    return index_for(moment, alias=alias)


def classify(status: int | None) -> ItemVerdict:
    """2xx done; 429 and 5xx (and no status at all) retried; any other 4xx rejected."""
    if status is None:
        return "retry"
    if 200 <= status < 300:
        return "ok"
    if status == 429 or status >= 500:
        return "retry"
    return "reject"


def item_reason(item: Mapping[str, Any]) -> str:
    """Elasticsearch's reason for one failed bulk item, on one line."""
    error = item.get("error")
    if isinstance(error, dict):
        parts = [f"{error.get('type', 'error')}: {error.get('reason', '')}".strip()]
        cause = error.get("caused_by")
        while isinstance(cause, dict):
            parts.append(f"{cause.get('type', '')}: {cause.get('reason', '')}")
            cause = cause.get("caused_by")
        text = " / ".join(parts)
    elif error is not None:
        text = str(error)
    else:
        text = f"status {item.get('status')}"
    return " ".join(text.split())


def commit_positions(
    offsets: Mapping[Position, Sequence[int]], done: set[tuple[str, int, int]]
) -> dict[Position, int]:
    """Per partition, the position to commit: one past the highest offset below which (in
    this batch) every record is done; partitions whose first record is not done are left out."""
    positions: dict[Position, int] = {}
    for (topic, partition), numbers in offsets.items():
        position = None
        for offset in sorted(numbers):
            if (topic, partition, offset) not in done:
                break
            position = offset + 1
        if position is not None:
            positions[(topic, partition)] = position
    return positions


def first_undone(
    offsets: Mapping[Position, Sequence[int]], done: set[tuple[str, int, int]]
) -> dict[Position, int]:
    """Per partition, the lowest offset of this batch that is not done (where the consumer must
    read again); partitions whose records are all done are left out."""
    return {
        (topic, partition): min(missing)
        for (topic, partition), numbers in offsets.items()
        if (missing := [n for n in numbers if (topic, partition, n) not in done])
    }


def item_error_type(item: Mapping[str, Any]) -> str:
    """The Elasticsearch error type of a failed bulk item (``document_parsing_exception``)."""
    error = item.get("error")
    kind = error.get("type") if isinstance(error, dict) else None
    return f"elasticsearch.{kind}" if kind else f"elasticsearch.status_{item.get('status')}"


def dlq_message(
    letter: UnshippableRecord, consumer_group: str, now: datetime | None = None
) -> KafkaMessage:
    """The dead letter of a record: the original bytes plus the ``dlq.*`` headers of
    :func:`pipeline.dead_letters.letter.dead_letter_message`, and Elasticsearch's status in
    ``dlq.elasticsearch.status`` when it answered."""
    record = letter.record
    message = dead_letter_of(
        record,
        consumer_group=consumer_group,
        failure=Failure(
            reason=letter.kind,
            error_type=letter.error_type,
            message=letter.reason,
            attempts=letter.attempts,
        ),
        now=now,
    )
    if letter.status is not None:
        message.headers.append((ES_STATUS_HEADER, str(letter.status).encode()))
    return message
