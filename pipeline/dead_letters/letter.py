"""Dead letters: what goes to ``<topic>.dlq``, and how it is read back and redriven.

A dead letter is the original message, byte for byte (key, value and every original header, so
the ``ce_*`` attributes survive), plus ``dlq.*`` headers saying why:

========================  ==============================================================
``dlq.reason``            one of :data:`Reason` (why the event could not be handled)
``dlq.error.type``        the exception's qualified class name
``dlq.error.message``     its message (one line, at most 1,000 characters; redacted)
``dlq.error.stacktrace``  the traceback (at most 8,000 characters; redacted)
``dlq.attempts``          how many attempts were made
``dlq.original.*``        ``topic``, ``partition``, ``offset``, ``timestamp`` (ms)
``dlq.consumer.group``    the consumer group that gave up
``dlq.dead_lettered_at``  when (RFC 3339, UTC)
``dlq.parked_by``         for ``key_parked``: the event id that parked the key
``dlq.original.header``   for each original header whose name is not UTF-8: that name's
                          bytes in base64 (see below)
========================  ==============================================================

Kafka's Python clients send header names as text only, so an original header whose name is not
UTF-8 (read as its bytes surrogate-escaped, see :func:`header_name_bytes`) goes under that name
with the bytes that are not UTF-8 written as ``\\xNN`` (``x-bad\\xff``), and its true name in a
``dlq.original.header`` header. A redrive sends it back under the escaped name.

Redriving appends, in one Kafka transaction, the message to its original topic (with the
``pipeline.redrive.*`` headers below) and a *marker* to the dead-letter topic: an empty message
whose ``dlq.redriven`` header names the dead letter's ``partition:offset``. Readers of the
dead-letter topic pair them up, so a dead letter is redriven at most once.

Discarding a dead letter (one that can never succeed) appends only a marker, whose
``dlq.discarded`` header names it, with ``dlq.discarded.note`` (the operator's why) and
``dlq.discarded.at``: the letter is no longer pending, and is never redriven.
"""

from __future__ import annotations

import base64
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

from pipeline.dead_letters.reasons import REASONS, Reason
from pipeline.envelope import EnvelopeError, KafkaMessage, decode
from pipeline.envelope.consumed_headers import header_name_bytes
from pipeline.errors import PipelineError
from pipeline.logs.redact import redact

__all__ = [
    "REASONS",
    "REDRIVE_GROUP",
    "REDRIVE_ID",
    "REDRIVE_LAST",
    "REDRIVE_OF",
    "DeadLetter",
    "Failure",
    "Marker",
    "Reason",
    "Stray",
    "dead_letter_message",
    "dead_letter_of",
    "discarded_marker",
    "pending_dead_letters",
    "position_id",
    "read_dead_letter",
    "redrive_message",
    "redriven_marker",
    "settled_dead_letters",
]


def position_id(topic: str, partition: int, offset: int) -> str:
    """The id of a message that carries none a processor can keep: where it is."""
    return f"kafka:{topic}:{partition}:{offset}"


PREFIX = "dlq."
REASON = "dlq.reason"
ERROR_TYPE = "dlq.error.type"
ERROR_MESSAGE = "dlq.error.message"
ERROR_STACKTRACE = "dlq.error.stacktrace"
ATTEMPTS = "dlq.attempts"
ORIGINAL_TOPIC = "dlq.original.topic"
ORIGINAL_PARTITION = "dlq.original.partition"
ORIGINAL_OFFSET = "dlq.original.offset"
ORIGINAL_TIMESTAMP = "dlq.original.timestamp"
CONSUMER_GROUP = "dlq.consumer.group"
DEAD_LETTERED_AT = "dlq.dead_lettered_at"
PARKED_BY = "dlq.parked_by"
ORIGINAL_HEADER = "dlq.original.header"
#: On a dead letter sent without its value, which was too large for the dead-letter topic: the
#: value's size in bytes (the original is at dlq.original.topic/partition/offset).
VALUE_OMITTED = "dlq.value.omitted"
#: On a dead letter still too large without its value: how many of the original's headers were
#: left out (those over :data:`_KEPT_HEADER_BYTES`; the original has them all).
HEADERS_OMITTED = "dlq.headers.omitted"
#: The original headers a cut-down dead letter keeps: at most this many bytes of value each
#: (its ce_* headers, which name the event, are far smaller).
_KEPT_HEADER_BYTES = 1024
REDRIVEN = "dlq.redriven"
DISCARDED = "dlq.discarded"
DISCARD_NOTE = "dlq.discarded.note"
DISCARDED_AT = "dlq.discarded.at"

#: Headers of a redriven message: the redrive run, whether it is the last of its key in that
#: run (the processor lets the key go once it succeeded), and which dead letter it came from.
REDRIVE_ID = "pipeline.redrive.id"
REDRIVE_LAST = "pipeline.redrive.last"
REDRIVE_OF = "pipeline.redrive.of"
#: The consumer group whose dead letter a redriven message is (the letter's
#: ``dlq.consumer.group``): only that group handles it; any other group reading the topic skips
#: it (:class:`pipeline.processing.attempt.Redrive`), so a redrive acts per consumer group.
REDRIVE_GROUP = "pipeline.redrive.group"
_REDRIVE_HEADERS = (REDRIVE_ID, REDRIVE_LAST, REDRIVE_OF, REDRIVE_GROUP)

_MAX_MESSAGE = 1_000
_MAX_STACKTRACE = 8_000


@dataclass(frozen=True)
class Failure:
    """Why an event is dead-lettered."""

    reason: Reason
    error_type: str
    message: str
    stacktrace: str = ""
    attempts: int = 1
    parked_by: str | None = None

    @classmethod
    def from_exception(cls, reason: Reason, error: BaseException, attempts: int = 1) -> Failure:
        kind = type(error)
        name = (
            kind.__qualname__
            if kind.__module__ == "builtins"
            else (f"{kind.__module__}.{kind.__qualname__}")
        )
        # Redacted as a log line's exception is (secrets, card numbers): the letter's headers
        # are printed by dlq inspect and read by anyone who may read the dead-letter topic.
        return cls(
            reason=reason,
            error_type=name,
            message=redact(" ".join(str(error).split())) or kind.__name__,
            stacktrace=redact("".join(traceback.format_exception(error))),
            attempts=attempts,
        )


def _sendable(
    headers: Sequence[tuple[str, bytes]],
) -> tuple[list[tuple[str, bytes]], list[tuple[str, str]]]:
    """``headers`` without the ``dlq.*`` and redrive ones, each name Kafka's Python clients can
    send (see the module docstring); and the ``dlq.original.header`` of those renamed."""
    kept: list[tuple[str, bytes]] = []
    renamed: list[tuple[str, str]] = []
    for name, data in headers:
        if name.startswith(PREFIX) or name in _REDRIVE_HEADERS:
            continue
        raw = header_name_bytes(name)
        if raw is not None:
            name = raw.decode("utf-8", "backslashreplace")
            renamed.append((ORIGINAL_HEADER, base64.b64encode(raw).decode("ascii")))
        kept.append((name, data))
    return kept, renamed


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def dead_letter_message(
    *,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]],
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    consumer_group: str,
    failure: Failure,
    now: datetime | None = None,
) -> KafkaMessage:
    """The dead letter of one consumed message (pure).

    Earlier ``dlq.*`` and redrive headers are replaced, so a message dead-lettered again after a
    redrive carries only the newest failure. A header whose name is not UTF-8 is renamed (see
    the module docstring): Kafka's Python clients could not send the dead letter otherwise.
    """
    kept, renamed = _sendable(headers)
    when = (now or datetime.now(UTC)).astimezone(UTC)
    added: list[tuple[str, str]] = [
        (REASON, failure.reason),
        (ERROR_TYPE, failure.error_type),
        (ERROR_MESSAGE, _clip(failure.message, _MAX_MESSAGE)),
        (ERROR_STACKTRACE, _clip(failure.stacktrace, _MAX_STACKTRACE)),
        (ATTEMPTS, str(failure.attempts)),
        (ORIGINAL_TOPIC, topic),
        (ORIGINAL_PARTITION, str(partition)),
        (ORIGINAL_OFFSET, str(offset)),
        (ORIGINAL_TIMESTAMP, "" if timestamp_ms is None else str(timestamp_ms)),
        (CONSUMER_GROUP, consumer_group),
        (DEAD_LETTERED_AT, when.isoformat(timespec="milliseconds").replace("+00:00", "Z")),
    ]
    if failure.parked_by is not None:
        added.append((PARKED_BY, failure.parked_by))
    added += renamed
    return KafkaMessage(
        key=key,
        value=value,
        headers=kept + [(name, text.encode("utf-8")) for name, text in added],
    )


class DeadLetterTooLarge(PipelineError):
    """The dead-letter topic (or the client) refused a dead letter as too large."""


def without_value(letter: KafkaMessage) -> KafkaMessage:
    """``letter`` (a :func:`dead_letter_message`) without its value, which was too large for the
    dead-letter topic, and with :data:`VALUE_OMITTED` saying how large it was: the partition
    goes on, and the original stays at the ``dlq.original.*`` position for a redrive to read."""
    size = len(letter.value or b"")
    return KafkaMessage(
        key=letter.key, value=None, headers=[*letter.headers, (VALUE_OMITTED, str(size).encode())]
    )


def without_large_headers(letter: KafkaMessage) -> KafkaMessage:
    """:func:`without_value`, and without the original's headers over 1 KiB (the ``dlq.*`` ones
    and the small ones, which name the event, are kept), with :data:`HEADERS_OMITTED` saying how
    many were left out: for a letter still too large without its value."""
    cut = without_value(letter)
    kept = [
        (name, data)
        for name, data in cut.headers
        if name.startswith(PREFIX) or len(data or b"") <= _KEPT_HEADER_BYTES
    ]
    omitted = len(cut.headers) - len(kept)
    return KafkaMessage(
        key=cut.key, value=None, headers=[*kept, (HEADERS_OMITTED, str(omitted).encode())]
    )


class ConsumedRecord(Protocol):
    """What :func:`dead_letter_of` reads of a consumed record (the processors' and the log
    shipper's records both have it)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...
    @property
    def timestamp_ms(self) -> int | None: ...


def dead_letter_of(
    record: ConsumedRecord,
    *,
    consumer_group: str,
    failure: Failure,
    now: datetime | None = None,
) -> KafkaMessage:
    """:func:`dead_letter_message` of a consumed record (pure)."""
    return dead_letter_message(
        key=record.key,
        value=record.value,
        headers=record.headers,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp_ms,
        consumer_group=consumer_group,
        failure=failure,
        now=now,
    )


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter as read back from ``<topic>.dlq``."""

    dlq_topic: str
    dlq_partition: int
    dlq_offset: int
    key: bytes | None
    value: bytes | None
    #: The original message's headers (without ``dlq.*``).
    headers: list[tuple[str, bytes]]
    reason: str
    error_type: str
    error_message: str
    stacktrace: str
    attempts: int
    original_topic: str
    original_partition: int
    original_offset: int
    original_timestamp_ms: int | None
    consumer_group: str
    dead_lettered_at: str
    parked_by: str | None = None
    event_id: str | None = field(default=None)
    event_type: str | None = field(default=None)
    #: The size of a value too large to be kept in the dead letter (``value`` is then None; the
    #: original is at ``original_topic``/``original_partition``/``original_offset``).
    value_omitted: int | None = None
    #: How many of the original's headers were left out too (``headers`` lacks them).
    headers_omitted: int | None = None

    @property
    def position(self) -> str:
        """``partition:offset`` in the dead-letter topic, as redrive markers name it."""
        return f"{self.dlq_partition}:{self.dlq_offset}"

    @property
    def position_id(self) -> str:
        """Where its original was (``kafka:TOPIC:PARTITION:OFFSET``): the id processors name a
        message by when it carries no event id they can keep (logs, ``dlq.parked_by``, the
        inbox), and which ``--event-id`` selects too."""
        return position_id(self.original_topic, self.original_partition, self.original_offset)

    @property
    def key_text(self) -> str:
        if self.key is None:
            return ""
        return self.key.decode("utf-8", errors="backslashreplace")


@dataclass(frozen=True)
class Marker:
    """A marker read back from ``<topic>.dlq``: the dead letter at ``position`` was redriven, or
    discarded (with the operator's ``note``)."""

    #: ``partition:offset`` of the dead letter it settles.
    position: str
    kind: Literal["redriven", "discarded"] = "redriven"
    note: str = ""


@dataclass(frozen=True)
class Stray:
    """A message of ``<topic>.dlq`` that is neither a dead letter nor a marker (written there by
    someone else), and why: it is never redriven, and readers say it is there."""

    dlq_topic: str
    dlq_partition: int
    dlq_offset: int
    #: Why it is not a dead letter: :data:`NO_REASON`, or a header name that is not UTF-8.
    why: str = ""

    @property
    def position(self) -> str:
        """``partition:offset`` in the dead-letter topic."""
        return f"{self.dlq_partition}:{self.dlq_offset}"


#: Why a message of a dead-letter topic that is not a marker is not a dead letter either.
NO_REASON = f"no {REASON} header"


def _texts(headers: Iterable[tuple[str, bytes | str | None]]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for name, data in headers:
        if data is None:
            texts[name] = ""
        elif isinstance(data, bytes):
            texts[name] = data.decode("utf-8", errors="replace")
        else:
            texts[name] = data
    return texts


def _int(text: str | None, default: int = -1) -> int:
    try:
        return int(text) if text else default
    except ValueError:
        return default


def read_dead_letter(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | str | None]] | None,
) -> DeadLetter | Marker | None:
    """What one message of a dead-letter topic is (pure).

    A :class:`DeadLetter`; or, for a redrive or discard marker, a :class:`Marker`; or ``None``
    for a message that is neither (written there by someone else: it has no ``dlq.reason``
    header, :data:`NO_REASON`; readers of a whole topic make a :class:`Stray` of it).
    """
    all_headers = list(headers or [])
    texts = _texts(all_headers)
    if REDRIVEN in texts:
        return Marker(texts[REDRIVEN])
    if DISCARDED in texts:
        return Marker(texts[DISCARDED], "discarded", texts.get(DISCARD_NOTE, ""))
    if REASON not in texts:
        return None
    original = [
        (name, data if isinstance(data, bytes) else (data or "").encode("utf-8"))
        for name, data in all_headers
        if not name.startswith(PREFIX)
    ]
    timestamp = _int(texts.get(ORIGINAL_TIMESTAMP))
    event_id, event_type = _identity(key, value, original, texts)
    return DeadLetter(
        dlq_topic=topic,
        dlq_partition=partition,
        dlq_offset=offset,
        key=key,
        value=value,
        headers=original,
        reason=texts[REASON],
        error_type=texts.get(ERROR_TYPE, ""),
        error_message=texts.get(ERROR_MESSAGE, ""),
        stacktrace=texts.get(ERROR_STACKTRACE, ""),
        attempts=_int(texts.get(ATTEMPTS), 0),
        original_topic=texts.get(ORIGINAL_TOPIC, ""),
        original_partition=_int(texts.get(ORIGINAL_PARTITION)),
        original_offset=_int(texts.get(ORIGINAL_OFFSET)),
        original_timestamp_ms=None if timestamp < 0 else timestamp,
        consumer_group=texts.get(CONSUMER_GROUP, ""),
        dead_lettered_at=texts.get(DEAD_LETTERED_AT, ""),
        parked_by=texts.get(PARKED_BY),
        event_id=event_id,
        event_type=event_type,
        value_omitted=_int(texts[VALUE_OMITTED]) if VALUE_OMITTED in texts else None,
        headers_omitted=_int(texts[HEADERS_OMITTED]) if HEADERS_OMITTED in texts else None,
    )


def _identity(
    key: bytes | None,
    value: bytes | None,
    original: list[tuple[str, bytes]],
    texts: dict[str, str],
) -> tuple[str | None, str | None]:
    """The event id and type of the original message, read as processors read it (binary or
    structured mode); for a message that is no valid event, its ``ce_id`` and ``ce_type``
    headers, if any."""
    try:
        event = decode(value, original, key)
    except EnvelopeError:
        return texts.get("ce_id"), texts.get("ce_type")
    return event.id, event.type


def pending_dead_letters(read: Iterable[DeadLetter | Marker | Stray | None]) -> list[DeadLetter]:
    """The dead letters neither redriven nor discarded yet, in the order read (markers remove
    theirs)."""
    letters, settled = settled_dead_letters(read)
    return [letter for letter in letters if letter.position not in settled]


def settled_dead_letters(
    read: Iterable[DeadLetter | Marker | Stray | None],
) -> tuple[list[DeadLetter], dict[str, Marker]]:
    """Every dead letter read, in order, and the marker of each settled one by position (the
    first marker, should a letter have two)."""
    letters: list[DeadLetter] = []
    settled: dict[str, Marker] = {}
    for item in read:
        if isinstance(item, DeadLetter):
            letters.append(item)
        elif isinstance(item, Marker):
            settled.setdefault(item.position, item)
    return letters, settled


def redrive_message(letter: DeadLetter, *, redrive_id: str, last_of_key: bool) -> KafkaMessage:
    """The message that sends ``letter`` back to its original topic (pure), for its consumer
    group only (:data:`REDRIVE_GROUP`; a letter naming no group, for every group reading the
    topic); a letter sent without its value needs it back first
    (:mod:`pipeline.dead_letters.originals`)."""
    if letter.value_omitted is not None:
        raise PipelineError(
            f"dead letter {letter.dlq_topic}:{letter.position} holds no value (it was too large "
            "to keep): read it back with pipeline.dead_letters.originals.with_original_values"
        )
    headers = [(name, data) for name, data in letter.headers if name not in _REDRIVE_HEADERS]
    headers += [
        (REDRIVE_ID, redrive_id.encode()),
        (REDRIVE_LAST, b"true" if last_of_key else b"false"),
        (REDRIVE_OF, f"{letter.dlq_topic}:{letter.position}".encode()),
    ]
    if letter.consumer_group:
        headers.append((REDRIVE_GROUP, letter.consumer_group.encode("utf-8")))
    return KafkaMessage(key=letter.key, value=letter.value, headers=headers)


def redriven_marker(letter: DeadLetter) -> KafkaMessage:
    """The marker appended to the dead-letter topic once ``letter`` is redriven (pure)."""
    return KafkaMessage(key=letter.key, value=None, headers=[(REDRIVEN, letter.position.encode())])


def discarded_marker(letter: DeadLetter, note: str, now: datetime | None = None) -> KafkaMessage:
    """The marker appended to the dead-letter topic to discard ``letter`` (pure)."""
    when = (now or datetime.now(UTC)).astimezone(UTC)
    return KafkaMessage(
        key=letter.key,
        value=None,
        headers=[
            (DISCARDED, letter.position.encode()),
            (DISCARD_NOTE, _clip(note, _MAX_MESSAGE).encode("utf-8")),
            (DISCARDED_AT, when.isoformat(timespec="milliseconds").replace("+00:00", "Z").encode()),
        ],
    )


def is_reason(text: str) -> bool:
    return text in REASONS
