"""The dead-letter format (pipeline.dead_letters.letter): pure functions, no broker."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.dead_letters import letter as dl
from pipeline.dead_letters.letter import (
    DeadLetter,
    Failure,
    Marker,
    dead_letter_message,
    discarded_marker,
    pending_dead_letters,
    read_dead_letter,
    redrive_message,
    redriven_marker,
    settled_dead_letters,
)
from pipeline.envelope import Event, encode

WHEN = datetime(2024, 7, 15, 13, 45, 35, 123_456, tzinfo=UTC)


def an_event(key: str = "order-1") -> Event:
    return Event(
        source="/orders",
        type="com.example.order.placed",
        partitionkey=key,
        correlationid="req-1",
        data={"order_id": key, "amount": "12.50"},
    )


def dead_letter(failure: Failure, event: Event | None = None, **position: int) -> DeadLetter:
    message = encode(event or an_event())
    dead = dead_letter_message(
        key=message.key,
        value=message.value,
        headers=message.headers,
        topic="requests.orders",
        partition=position.get("partition", 4),
        offset=position.get("offset", 17),
        timestamp_ms=1_721_051_135_000,
        consumer_group="orders-processor",
        failure=failure,
        now=WHEN,
    )
    read = read_dead_letter(
        "requests.orders.dlq", 2, position.get("dlq_offset", 9), dead.key, dead.value, dead.headers
    )
    assert isinstance(read, DeadLetter)
    return read


FAILURE = Failure(
    reason="retries_exhausted",
    error_type="app.PaymentDeclined",
    message="card declined",
    stacktrace="Traceback ...",
    attempts=5,
)


def test_round_trip_keeps_key_value_original_headers_and_every_field():
    event = an_event()
    original = encode(event)

    letter = dead_letter(FAILURE, event)

    assert letter.key == original.key == b"order-1"
    assert letter.value == original.value
    assert letter.headers == original.headers  # every ce_* and content-type, in order
    assert (letter.dlq_topic, letter.dlq_partition, letter.dlq_offset) == (
        "requests.orders.dlq",
        2,
        9,
    )
    assert letter.position == "2:9"
    assert letter.reason == "retries_exhausted"
    assert letter.error_type == "app.PaymentDeclined"
    assert letter.error_message == "card declined"
    assert letter.stacktrace == "Traceback ..."
    assert letter.attempts == 5
    assert (letter.original_topic, letter.original_partition, letter.original_offset) == (
        "requests.orders",
        4,
        17,
    )
    assert letter.original_timestamp_ms == 1_721_051_135_000
    assert letter.consumer_group == "orders-processor"
    assert letter.dead_lettered_at == "2024-07-15T13:45:35.123Z"
    assert letter.parked_by is None
    assert letter.event_id == event.id
    assert letter.event_type == "com.example.order.placed"
    assert letter.key_text == "order-1"


def test_dead_letter_headers_are_the_documented_names_after_the_original_ones():
    message = encode(an_event())
    dead = dead_letter_message(
        key=message.key,
        value=message.value,
        headers=message.headers,
        topic="t",
        partition=0,
        offset=1,
        timestamp_ms=None,
        consumer_group="g",
        failure=Failure("key_parked", "KeyParked", "parked", parked_by="evt-1"),
        now=WHEN,
    )
    names = [name for name, _ in dead.headers]
    assert names[: len(message.headers)] == [name for name, _ in message.headers]
    assert names[len(message.headers) :] == [
        "dlq.reason",
        "dlq.error.type",
        "dlq.error.message",
        "dlq.error.stacktrace",
        "dlq.attempts",
        "dlq.original.topic",
        "dlq.original.partition",
        "dlq.original.offset",
        "dlq.original.timestamp",
        "dlq.consumer.group",
        "dlq.dead_lettered_at",
        "dlq.parked_by",
    ]
    letter = read_dead_letter("t.dlq", 0, 0, dead.key, dead.value, dead.headers)
    assert isinstance(letter, DeadLetter)
    assert letter.original_timestamp_ms is None
    assert letter.parked_by == "evt-1"


def test_long_message_and_stacktrace_are_clipped_with_an_ellipsis():
    failure = Failure("rejected", "E", "m" * 5_000, stacktrace="s" * 20_000)

    letter = dead_letter(failure)

    assert len(letter.error_message) == 1_000 and letter.error_message.endswith("…")
    assert len(letter.stacktrace) == 8_000 and letter.stacktrace.endswith("…")


def test_failure_from_exception_names_the_qualified_type_and_one_line_message():
    try:
        raise ValueError("bad\n  amount")
    except ValueError as error:
        failure = Failure.from_exception("schema_invalid", error, attempts=2)

    assert failure.error_type == "ValueError"  # builtins are not prefixed
    assert failure.message == "bad amount"
    assert "Traceback" in failure.stacktrace and "ValueError" in failure.stacktrace
    assert failure.attempts == 2


def test_failure_from_exception_masks_secrets_in_the_message_and_the_traceback():
    # A handler's error quoting a connection URL and a password, as a driver's often do: the
    # letter's headers reach dlq inspect's output and every reader of the dead-letter topic.
    secret_url = "postgresql://app:hunter2@db:5432/orders"
    try:
        raise ConnectionError(f"cannot reach {secret_url} (api_key=sk-live-42)")
    except ConnectionError as error:
        failure = Failure.from_exception("retries_exhausted", error)

    for text in (failure.message, failure.stacktrace):
        assert "hunter2" not in text and "sk-live-42" not in text
        assert "[REDACTED]" in text
    assert failure.message.startswith("cannot reach postgresql://app:")  # the rest kept


def test_dead_lettering_again_replaces_earlier_dlq_and_redrive_headers():
    first = dead_letter(FAILURE)
    redriven = redrive_message(first, redrive_id="run-1", last_of_key=True)
    second_failure = Failure("rejected", "app.Refused", "no")

    again = dead_letter_message(
        key=redriven.key,
        value=redriven.value,
        headers=redriven.headers,
        topic="requests.orders",
        partition=4,
        offset=90,
        timestamp_ms=None,
        consumer_group="orders-processor",
        failure=second_failure,
        now=WHEN,
    )

    names = [name for name, _ in again.headers]
    assert names.count("dlq.reason") == 1
    assert not [name for name in names if name.startswith("pipeline.redrive.")]
    letter = read_dead_letter("requests.orders.dlq", 0, 50, again.key, again.value, again.headers)
    assert isinstance(letter, DeadLetter)
    assert (letter.reason, letter.error_type, letter.original_offset) == (
        "rejected",
        "app.Refused",
        90,
    )
    assert letter.headers == first.headers


def test_redrive_message_is_the_original_plus_the_redrive_headers():
    letter = dead_letter(FAILURE)

    message = redrive_message(letter, redrive_id="run-7", last_of_key=False)

    assert (message.key, message.value) == (letter.key, letter.value)
    assert message.headers == [
        *letter.headers,
        (dl.REDRIVE_ID, b"run-7"),
        (dl.REDRIVE_LAST, b"false"),
        (dl.REDRIVE_OF, b"requests.orders.dlq:2:9"),
        (dl.REDRIVE_GROUP, b"orders-processor"),  # the letter's group: only it handles it
    ]
    assert redrive_message(letter, redrive_id="r", last_of_key=True).headers[-3] == (
        dl.REDRIVE_LAST,
        b"true",
    )


def test_marker_reads_back_as_the_position_it_names():
    letter = dead_letter(FAILURE)

    marker = redriven_marker(letter)

    assert marker.value is None and marker.key == letter.key
    assert read_dead_letter(
        "requests.orders.dlq", 1, 30, marker.key, None, marker.headers
    ) == Marker("2:9")


def test_a_discard_marker_reads_back_with_its_position_and_note():
    letter = dead_letter(FAILURE)
    when = datetime(2026, 12, 6, 1, 2, 3, 456000, tzinfo=UTC)

    marker = discarded_marker(letter, "a card number in the payload", now=when)

    assert marker.value is None and marker.key == letter.key
    assert dict(marker.headers)["dlq.discarded.at"] == b"2026-12-06T01:02:03.456Z"
    assert read_dead_letter(
        "requests.orders.dlq", 1, 31, marker.key, None, marker.headers
    ) == Marker("2:9", "discarded", "a card number in the payload")


def test_a_message_without_dlq_headers_is_neither_letter_nor_marker():
    message = encode(an_event())
    assert read_dead_letter("x.dlq", 0, 0, message.key, message.value, message.headers) is None
    assert read_dead_letter("x.dlq", 0, 1, None, b"junk", None) is None


@pytest.mark.parametrize("marker_first", [False, True])
def test_pending_leaves_out_letters_with_a_marker_wherever_it_was_read(marker_first):
    one = dead_letter(FAILURE, dlq_offset=1)
    two = dead_letter(FAILURE, dlq_offset=2)
    three = dead_letter(FAILURE, dlq_offset=3)
    read: list[DeadLetter | Marker | None] = [one, two, None, three]
    read = [Marker("2:2"), *read] if marker_first else [*read, Marker("2:2")]

    assert pending_dead_letters(read) == [one, three]


def test_a_discarded_letter_is_no_longer_pending_and_settled_says_how_each_went():
    one = dead_letter(FAILURE, dlq_offset=1)
    two = dead_letter(FAILURE, dlq_offset=2)
    three = dead_letter(FAILURE, dlq_offset=3)
    discarded = Marker("2:1", "discarded", "poison")
    read = [one, two, three, discarded, Marker("2:3")]

    assert pending_dead_letters(read) == [two]
    assert settled_dead_letters(read) == (
        [one, two, three],
        {"2:1": discarded, "2:3": Marker("2:3")},
    )
