"""Dead letters of the log shipper: records it cannot index, written to the dead-letter topic.

Each letter is the original key and value with the ``dlq.*`` headers of
:mod:`pipeline.dead_letters.letter` (:func:`~consumers.log_batch.dlq_message`); the producer is
flushed, and the positions Kafka acknowledged are what the shipper may commit past. A letter
Kafka refuses as too large (a record that just fitted its topic, plus the headers) is sent again
cut down, one at a time: its value's first 16 KiB, then only the headers, so that the partition
moves past it (the ``dlq.truncated`` header says so).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from confluent_kafka import KafkaError, KafkaException

from consumers.log_batch import DLQ_VALUE_PREFIX, SourceRecord, UnshippableRecord, dlq_message
from pipeline.logs.context import log_context
from pipeline.plurals import counted

__all__ = ["DeadLetterWriter", "DlqProducer", "Where", "where_of"]

_log = logging.getLogger("consumers.log_shipper")

_DLQ_FLUSH_TIMEOUT_S = 30.0
#: Kafka's answers to a message over a size limit (librdkafka's own check says it as the broker
#: does, the topic's max.message.bytes), or to a batch over the broker's segment size.
_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})

Where = tuple[str, int, int]  # topic, partition, offset


class DlqProducer(Protocol):
    """What the shipper uses of ``confluent_kafka.Producer``."""

    def produce(self, topic: str, *args: Any, **kwargs: Any) -> None: ...
    def poll(self, timeout: float = ...) -> int: ...
    def flush(self, timeout: float = ...) -> int: ...


class DeadLetterWriter:
    """Writes the shipper's dead letters to ``dlq_topic`` with ``producer``; the lines of the
    shipper's own records (``is_own``) are not logged one by one (each log line would be one
    more record to ship)."""

    def __init__(
        self,
        producer: DlqProducer,
        dlq_topic: str,
        consumer_group: str,
        *,
        is_own: Callable[[SourceRecord], bool],
    ) -> None:
        self._producer = producer
        self.dlq_topic = dlq_topic
        self.consumer_group = consumer_group
        self._is_own = is_own

    def write(self, dead: list[UnshippableRecord]) -> set[Where]:
        """Produce the dead letters and flush; the positions Kafka acknowledged.

        A dead letter Kafka refuses as too large (a record that just fitted its topic, plus the
        ``dlq.*`` headers) is sent again cut down (:func:`~consumers.log_batch.dlq_message`'s
        ``shrink``), so that the partition can move past it.
        """
        if not dead:
            return set()
        now = datetime.now(UTC)
        delivered: set[Where] = set()
        failed: dict[Where, str] = {}
        cut: list[UnshippableRecord] = []
        pending = dead
        for shrink in (0, 1, 2):
            sent, errors = self._send_letters(pending, shrink, now)
            delivered |= sent
            too_large = [
                letter
                for letter in pending
                if _is_too_large(errors.get(where_of(letter.record))) and shrink < 2
            ]
            failed.update(
                (where, _error_text(error))
                for where, error in errors.items()
                if not (shrink < 2 and _is_too_large(error))
            )
            cut += [it for it in pending if where_of(it.record) in sent and _was_cut(it, shrink)]
            if not too_large:
                break
            pending = too_large
        # The shipper's own lines are not logged one by one: each log line is one more record.
        for letter in dead:
            record = letter.record
            if self._is_own(record) or where_of(record) not in delivered:
                continue
            where = log_context(
                topic=record.topic, partition=record.partition, offset=record.offset
            )
            with where:  # the fields of the "Dead letters" search, as a processor's lines
                _log.warning(
                    "dead-lettered %s[%d]@%d: %s",
                    record.topic, record.partition, record.offset, letter.reason,
                    extra={
                        "event_action": "dead_lettered",
                        "event_outcome": "failure",
                        "error_type": letter.error_type,
                        "error_message": letter.reason,
                    },
                )  # fmt: skip
        for letter in cut:
            if not self._is_own(letter.record):
                _log.warning(
                    "the dead letter of %s[%d]@%d was too large for %s: sent cut down (%s bytes "
                    "of value; see its dlq.truncated header)",
                    letter.record.topic, letter.record.partition, letter.record.offset,
                    self.dlq_topic, f"{len(letter.record.value or b''):,}",
                )  # fmt: skip
        unsettled = len(dead) - len(delivered) - len(failed)
        if failed or unsettled:
            _log.error(
                "%s not written to %s (%s); the records stay uncommitted and are tried again",
                counted(len(dead) - len(delivered), "dead letter"),
                self.dlq_topic,
                next(iter(failed.values()))
                if failed
                else f"no answer from Kafka in {_DLQ_FLUSH_TIMEOUT_S:g} s",
            )
        return delivered

    def _send_letters(
        self, letters: list[UnshippableRecord], shrink: Literal[0, 1, 2], now: datetime
    ) -> tuple[set[Where], dict[Where, Any]]:
        """Produce the dead letters (cut down by ``shrink``) and flush: the positions Kafka
        acknowledged, and Kafka's error for those it refused."""
        delivered: set[Where] = set()
        errors: dict[Where, Any] = {}

        def report(where: Where) -> Callable[[Any, Any], None]:
            def on_delivery(error: Any, _message: Any) -> None:
                if error is None:
                    delivered.add(where)
                else:
                    errors[where] = error

            return on_delivery

        for letter in letters:
            if shrink:
                # One at a time: Kafka refuses a batch over the topic's limit whole, so a
                # letter may have been refused only for the company it was in.
                self._producer.flush(_DLQ_FLUSH_TIMEOUT_S)
            message = dlq_message(letter, self.consumer_group, now, shrink=shrink)
            where = where_of(letter.record)
            while True:
                try:
                    self._producer.produce(
                        self.dlq_topic,
                        key=message.key,
                        value=message.value,
                        headers=message.headers,
                        on_delivery=report(where),
                    )
                    break
                except BufferError:
                    self._producer.poll(0.1)
                except KafkaException as error:  # refused at once (too large, say): not sent
                    errors[where] = error.args[0] if error.args else error
                    break
        self._producer.flush(_DLQ_FLUSH_TIMEOUT_S)
        return delivered, errors


def where_of(record: SourceRecord) -> Where:
    return (record.topic, record.partition, record.offset)


def _was_cut(letter: UnshippableRecord, shrink: int) -> bool:
    """Whether :func:`~consumers.log_batch.dlq_message` cuts the letter down at ``shrink``."""
    return shrink == 2 or (shrink == 1 and len(letter.record.value or b"") > DLQ_VALUE_PREFIX)


def _is_too_large(error: Any) -> bool:
    """Whether Kafka's error (a ``KafkaError``, or ``None``) says the message is too large."""
    code = getattr(error, "code", None)
    return callable(code) and code() in _TOO_LARGE


def _error_text(error: Any) -> str:
    text = getattr(error, "str", None)
    return str(text()) if callable(text) else str(error)
