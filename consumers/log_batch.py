"""One batch of log records, as pure data: index actions, bulk results, dead letters, commits.

What :class:`consumers.log_shipper.LogShipper` does with a batch, without any I/O:

1. :func:`plan_batch` turns the records into index actions. A record's document is its value,
   as the Kafka log handler writes it; a record that is a CloudEvent whose data is a JSON object
   (any mode, read by :func:`pipeline.envelope.decode` as processors read it) is that data.
   ``_id`` is the document's ``event.id`` (so a redelivery overwrites, never duplicates; a
   record without one, or with one over Elasticsearch's 512-byte limit, gets a hash of
   topic/partition/offset), ``_index``
   the daily index of its own ``@timestamp`` (:func:`pipeline.logs.schema.index_for`), or of
   the shipper's day when that ``@timestamp`` is more than a day ahead of the shipper's clock
   or more than :data:`PAST_LIMIT` behind it (a wrong clock). ``log.level`` is lower-cased.
   What is sent is UTF-8 JSON, always: a UTF-8 byte order mark is dropped, a lone surrogate
   (``"\\ud800"``, which no UTF-8 can hold) becomes U+FFFD. A record that is not a UTF-8 JSON
   object with a valid ``@timestamp``, or that nests deeper than
   :data:`~pipeline.envelope.json_data.MAX_JSON_DEPTH`, is an :class:`UnshippableRecord` at once;
2. :func:`classify` (:func:`item_verdict` of a bulk item) says what to do with each bulk item
   from its status and error type: 2xx ``ok``; 429 and a cluster block ``blocked`` (the cluster
   takes no writes now, whatever the document: kept, and sent again once it does); 5xx
   ``retry``; any other 4xx (a mapping conflict) ``reject``, with Elasticsearch's reason
   (:func:`item_reason`, :func:`item_error_type`); :func:`refused_runs` finds the documents of
   a request Elasticsearch refused whole, to be sent again in halves;
3. :func:`dlq_message` is the dead-letter message of an unshippable record, cut down
   (``shrink``) when Kafka refuses it as too large;
4. :func:`commit_positions` is, per partition, how far every record is done;
   :func:`partition_lag` how many records are left to read.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pipeline.dead_letters.letter import PREFIX as DLQ_PREFIX
from pipeline.dead_letters.letter import Failure, Reason, dead_letter_of
from pipeline.envelope import EnvelopeError, KafkaMessage, decode
from pipeline.envelope.json_data import MAX_JSON_DEPTH, parse_json
from pipeline.envelope.structured_mode import looks_structured
from pipeline.logs.schema import INDEX_ALIAS, index_for
from pipeline.logs.timestamps import parse_timestamp

__all__ = [
    "DLQ_VALUE_PREFIX",
    "ES_STATUS_HEADER",
    "MAX_ID_BYTES",
    "NO_WRITES",
    "TRUNCATED_HEADER",
    "VALUE_SIZE_HEADER",
    "IndexAction",
    "ItemVerdict",
    "Position",
    "SourceRecord",
    "UnshippableRecord",
    "classify",
    "commit_positions",
    "dlq_message",
    "fallback_id",
    "is_request_refusal",
    "item_error_type",
    "item_reason",
    "item_verdict",
    "partition_lag",
    "plan_batch",
    "refused_runs",
]

#: What to do with one bulk item: done, try again (a few times), dead-letter it, or wait for a
#: cluster that takes no writes now and send it again.
ItemVerdict = Literal["ok", "retry", "reject", "blocked"]
Position = tuple[str, int]  # topic, partition

#: The header of a dead letter that holds Elasticsearch's HTTP status for the document.
ES_STATUS_HEADER = "dlq.elasticsearch.status"
#: On a dead letter cut down to fit (``shrink``): what was cut (``value``, or
#: ``key,value,headers``), and the size in bytes of the original value.
TRUNCATED_HEADER = "dlq.truncated"
VALUE_SIZE_HEADER = "dlq.original.value.size"
#: The bytes of the value a dead letter cut down once (``shrink=1``) keeps: enough to see what
#: the line was, far below any topic's size limit.
DLQ_VALUE_PREFIX = 16 * 1024
#: Elasticsearch refuses a longer ``_id`` (in UTF-8 bytes, not characters), and with it the
#: whole bulk request.
MAX_ID_BYTES = 512


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


#: What a UTF-8 text may begin with, and JSON must not (RFC 8259 lets a parser ignore it).
_UTF8_BOM = b"\xef\xbb\xbf"
#: A UTF-16 surrogate: in a parsed str only from a ``\uD800``-style escape left unpaired
#: (strict UTF-8 decoding refuses an encoded one), and no UTF-8 can carry it.
_SURROGATE = re.compile("[\ud800-\udfff]")


class _TooDeep(Exception):
    """A document nested deeper than :data:`MAX_JSON_DEPTH`."""


def _without_surrogates(text: str) -> str:
    return _SURROGATE.sub("\ufffd", text)


def _repair(document: dict[str, Any]) -> bool:
    """Replace, in place, every lone surrogate in ``document``'s keys and strings with U+FFFD;
    whether any was. :class:`_TooDeep` beyond :data:`MAX_JSON_DEPTH`.

    Iterative: a document is never walked by recursion (a deep one would crash the shipper).
    """
    changed = False
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise _TooDeep
        if isinstance(node, dict):
            if any(_SURROGATE.search(key) for key in node if not key.isascii()):
                items = [(_without_surrogates(key), value) for key, value in node.items()]
                node.clear()
                node.update(items)
                changed = True
            slots: Iterable[tuple[Any, Any]] = node.items()
        else:
            slots = enumerate(node)
        for slot, value in list(slots):
            if isinstance(value, str):
                if not value.isascii() and _SURROGATE.search(value):
                    node[slot] = _without_surrogates(value)
                    changed = True
            elif isinstance(value, dict | list):
                stack.append((value, depth + 1))
    return changed


def _normalise_level(document: dict[str, Any]) -> bool:
    """Lower-case ``log.level`` (nested, or the dotted key ECS loggers write), so a foreign
    ``ERROR`` is found by ``log.level:error``; whether it changed."""
    changed = False
    log = document.get("log")
    holders = [(document, "log.level")]
    if isinstance(log, dict):
        holders.append((log, "level"))
    for holder, name in holders:
        level = holder.get(name)
        if isinstance(level, str) and level.lower() != level:
            holder[name] = level.lower()
            changed = True
    return changed


#: JSON's names of what a line that is no object holds (Python's would reach the user).
_JSON_KINDS = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
_JSON_KINDS[type(None)] = "null"


def _read_document(value: bytes) -> dict[str, Any] | str:
    """The log document of a record's value, or why it is none (the dead letter's reason)."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as error:
        # UTF-16 and UTF-32 too, which json.loads would guess and read: the bytes are what
        # Elasticsearch would store, and could not return.
        return f"undecodable: not UTF-8 JSON ({error})"
    try:
        document = parse_json(text)
    except RecursionError:
        return f"undecodable: JSON nested too deeply (more than {MAX_JSON_DEPTH} levels)"
    except ValueError as error:
        return f"undecodable: not JSON ({error})"
    if not isinstance(document, dict):
        return f"undecodable: a JSON {_JSON_KINDS.get(type(document), 'value')}, not an object"
    return document


def _source_of(value: bytes, document: dict[str, Any]) -> bytes | str:
    """The ``_source`` to send for a record's value and its parsed document (lone surrogates
    replaced, level lower-cased), or why there is none."""
    changed = b"\n" in value
    # Only escapes make surrogates, only many brackets make depth: the walk is rarely needed.
    if b"\\u" in value or value.count(b"[") + value.count(b"{") > MAX_JSON_DEPTH:
        try:
            changed = _repair(document) or changed
        except _TooDeep:
            return f"undecodable: JSON nested too deeply (more than {MAX_JSON_DEPTH} levels)"
    changed = _normalise_level(document) or changed
    if not changed:
        return value  # a log line's JSON is sent as it came, saving a second serialisation
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _event_id(document: dict[str, Any], record: SourceRecord) -> str:
    """The document's ``event.id``; its position's hash when it has none Elasticsearch takes."""
    event = document.get("event")
    event_id = event.get("id") if isinstance(event, dict) else None
    if isinstance(event_id, str) and event_id and len(event_id.encode("utf-8")) <= MAX_ID_BYTES:
        return event_id
    return fallback_id(record)


def _plan_one(record: SourceRecord, alias: str, now: datetime | None) -> IndexAction | str:
    value = _document_of(record)
    if not value:
        return "undecodable: the record has no value"
    if value.startswith(_UTF8_BOM):  # what Elasticsearch would store, and JSON must not have
        value = value[len(_UTF8_BOM) :]
    document = _read_document(value)
    if isinstance(document, str):
        return document
    moment = parse_timestamp(document.get("@timestamp"))
    if moment is None:
        if document.get("@timestamp") is None:  # absent, or null
            return "undecodable: no @timestamp (an ECS document has one)"
        return f"undecodable: no valid @timestamp (got {document['@timestamp']!r:.60})"
    source = _source_of(value, document)
    if isinstance(source, str):
        return source
    return IndexAction(record, _index_of(moment, now, alias), _event_id(document, record), source)


def plan_batch(
    records: Iterable[SourceRecord], *, alias: str = INDEX_ALIAS, now: datetime | None = None
) -> tuple[list[IndexAction], list[UnshippableRecord]]:
    """Index actions for the records that are log documents; dead letters for the rest.
    ``now``: the shipper's clock, which a document's ``@timestamp`` may pass by at most
    :data:`FUTURE_SLACK`, and lag by at most :data:`PAST_LIMIT`, and still choose its index."""
    actions: list[IndexAction] = []
    dead: list[UnshippableRecord] = []
    for record in records:
        try:
            planned = _plan_one(record, alias, now)
        except RecursionError:
            # The last guard: no document may crash the shipper, on every restart again.
            planned = "undecodable: JSON nested too deeply"
        if isinstance(planned, str):
            dead.append(UnshippableRecord(record, planned))
        else:
            actions.append(planned)
    return actions, dead


#: How far a record's ``@timestamp`` may lie after the shipper's clock and still choose the
#: index: beyond, a host's wrong clock would make an index per day it claims (year 2099, ...).
#: (The record's Kafka timestamp is no check: the same host's producer set it.)
FUTURE_SLACK = timedelta(days=1)
#: How far it may lie before: ten times the logs topic's retention (3 days), so a replayed
#: recent recording still lands on its days, while a clock at 1970-01-01 or a zero date
#: (0001-01-01) does not make an index of its own.
PAST_LIMIT = timedelta(days=30)


def _index_of(moment: datetime, now: datetime | None, alias: str) -> str:
    """The daily index of ``moment``; today's (``now``'s) when ``moment`` is more than
    :data:`FUTURE_SLACK` after ``now`` or more than :data:`PAST_LIMIT` before it (the document
    keeps its ``@timestamp``)."""
    if now is not None and (moment - now > FUTURE_SLACK or now - moment > PAST_LIMIT):
        return index_for(now, alias=alias)
    return index_for(moment, alias=alias)


#: Elasticsearch's error types that say a block refused the write (``index.blocks.write``: 403;
#: the flood-stage disk watermark's ``read_only_allow_delete``: 429; the cluster read-only, or
#: no elected master).
NO_WRITES = frozenset({"cluster_block_exception"})


def classify(
    status: int | None, error_type: str | None = None, reason: str | None = None
) -> ItemVerdict:
    """2xx done; 429 (its queues full, a circuit breaker, a full disk) and a block of the
    whole cluster (:data:`NO_WRITES`, its reason naming no index) ``blocked``: no document of
    the cluster is taken now, so none is dead-lettered for it (every record was, the shipper's
    own lines too); a block of one index (``index [...] blocked by``) retried, then
    dead-lettered: an operator's maintenance ends soon, but a lifecycle's read-only step on
    an older day's index is for good, and waiting on it held every later record; 5xx (and no
    status at all) retried; any other 4xx rejected."""
    if status is not None and 200 <= status < 300:
        return "ok"
    if status == 429:
        return "blocked"
    if error_type in NO_WRITES:
        return "retry" if reason is not None and "index [" in reason else "blocked"
    if status is None or status >= 500:
        return "retry"
    return "reject"


def item_verdict(item: Mapping[str, Any]) -> ItemVerdict:
    """:func:`classify` of one bulk item (its status, its error's type and reason)."""
    status = item.get("status")
    error = _error_of(item)
    kind = error.get("type") if isinstance(error, Mapping) else None
    reason = error.get("reason") if isinstance(error, Mapping) else None
    return classify(
        status if isinstance(status, int) else None,
        kind if isinstance(kind, str) else None,
        reason if isinstance(reason, str) else None,
    )


def _error_of(item: Mapping[str, Any]) -> Any:
    """The item's error: Elasticsearch's own (a dict), also for a request it refused whole,
    whose items the bulk helper gives the error as text and the exception beside it."""
    body = getattr(item.get("exception"), "body", None)
    if isinstance(body, Mapping) and isinstance(body.get("error"), dict):
        return body["error"]
    return item.get("error")


def is_request_refusal(item: Mapping[str, Any]) -> bool:
    """Whether the item failed because Elasticsearch refused its whole bulk request with a 4xx
    (one bad action fails them all, a 400 ``action_request_validation_exception``), rather than
    this document."""
    return "exception" in item and item_verdict(item) == "reject"


def refused_runs(items: Sequence[Mapping[str, Any]]) -> list[tuple[int, int]]:
    """The ``[start, end)`` runs of two or more consecutive items of a request refused whole
    (:func:`is_request_refusal`): which documents to send again, in halves, until the refusal
    falls on the documents that caused it alone."""
    runs: list[tuple[int, int]] = []
    start: int | None = None
    for index, item in enumerate([*items, {}]):
        if is_request_refusal(item):
            start = index if start is None else start
        elif start is not None:
            if index - start > 1:
                runs.append((start, index))
            start = None
    return runs


def item_reason(item: Mapping[str, Any]) -> str:
    """Elasticsearch's reason for one failed bulk item, on one line."""
    error = _error_of(item)
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
    error = _error_of(item)
    kind = error.get("type") if isinstance(error, dict) else None
    return f"elasticsearch.{kind}" if kind else f"elasticsearch.status_{item.get('status')}"


def dlq_message(
    letter: UnshippableRecord,
    consumer_group: str,
    now: datetime | None = None,
    *,
    shrink: Literal[0, 1, 2] = 0,
) -> KafkaMessage:
    """The dead letter of a record: the original bytes plus the ``dlq.*`` headers of
    :func:`pipeline.dead_letters.letter.dead_letter_message`, and Elasticsearch's status in
    ``dlq.elasticsearch.status`` when it answered.

    A record that just fitted its topic may not fit the dead-letter topic once the ``dlq.*``
    headers are added; Kafka refuses it, and the partition could not move past it. So it is
    sent again cut down: ``shrink=1`` keeps the first :data:`DLQ_VALUE_PREFIX` bytes of the
    value (a shorter value is kept whole), ``shrink=2`` only the ``dlq.*`` headers (no key,
    no value, no original headers); both say so in :data:`TRUNCATED_HEADER` and give the
    value's size in :data:`VALUE_SIZE_HEADER`.
    """
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
    value = record.value or b""
    if shrink == 0 or (shrink == 1 and len(value) <= DLQ_VALUE_PREFIX):
        return message  # nothing to cut (refused with a larger one in the same batch)
    size = str(len(value)).encode()
    if shrink == 1:
        cut = value[:DLQ_VALUE_PREFIX]
        headers = [*message.headers, (TRUNCATED_HEADER, b"value"), (VALUE_SIZE_HEADER, size)]
        return KafkaMessage(key=message.key, value=cut, headers=headers)
    headers = [(name, data) for name, data in message.headers if name.startswith(DLQ_PREFIX)]
    headers += [(TRUNCATED_HEADER, b"key,value,headers"), (VALUE_SIZE_HEADER, size)]
    return KafkaMessage(key=None, value=None, headers=headers)


def partition_lag(low: int, high: int, position: int, committed: int) -> int:
    """The records of one partition not read yet: its high watermark minus where the consumer
    reads next (``position``), or, before it read anything since the partition was assigned
    (no position yet), where the group committed; with neither, from the low watermark (a new
    group reads from the earliest record). Negative offsets are librdkafka's "none"."""
    if position >= 0:
        start = position
    elif committed >= 0:
        start = committed
    else:
        start = low
    return max(0, high - start)
