"""Dead letters of messages with a header name that is not UTF-8 (read surrogate-escaped by the
Faust binding): sent with the name escaped and its bytes in ``dlq.original.header``, read back
and redriven without a crash."""

from __future__ import annotations

import base64
from typing import Any

from pipeline.dead_letters import redrive
from pipeline.dead_letters.letter import (
    DeadLetter,
    Failure,
    Stray,
    dead_letter_message,
    read_dead_letter,
    redrive_message,
)
from pipeline.envelope import EnvelopeError
from pipeline.envelope.consumed_headers import header_name_bytes

BAD_NAME = "x-bad\udcff\udcfe"  # b"x-bad\xff\xfe", surrogate-escaped
HEADERS = [("ce_id", b"x1"), (BAD_NAME, b"1"), ("ce_type", b"com.example.deposit")]
FAILURE = Failure.from_exception("undecodable", EnvelopeError("header name is not UTF-8"))


def dead_letter(headers: list[tuple[str, bytes]]) -> Any:
    return dead_letter_message(
        key=b"poison-g",
        value=b'{"seq":1}',
        headers=headers,
        topic="fxh.deposits",
        partition=0,
        offset=1,
        timestamp_ms=None,
        consumer_group="fxh-deposits",
        failure=FAILURE,
    )


def test_header_name_bytes_are_those_of_a_name_that_is_not_text_only() -> None:
    assert header_name_bytes("ce_id") is None
    assert header_name_bytes("café") is None
    assert header_name_bytes(BAD_NAME) == b"x-bad\xff\xfe"
    assert header_name_bytes("lone\ud800") == b"lone\xed\xa0\x80"  # not from surrogateescape


def test_the_name_is_escaped_in_place_and_its_bytes_kept_in_base64() -> None:
    message = dead_letter(HEADERS)

    headers = list(message.headers or [])
    assert headers[:3] == [
        ("ce_id", b"x1"),
        ("x-bad\\xff\\xfe", b"1"),
        ("ce_type", b"com.example.deposit"),
    ]
    originals = [data for name, data in headers if name == "dlq.original.header"]
    assert [base64.b64decode(data) for data in originals] == [b"x-bad\xff\xfe"]
    for name, _ in headers:
        name.encode("utf-8")  # every name can be sent by Kafka's Python clients


def test_a_letter_without_such_a_name_has_no_original_header() -> None:
    headers = list(dead_letter([("ce_id", b"x1")]).headers or [])

    assert "dlq.original.header" not in [name for name, _ in headers]


def test_it_reads_back_and_redrives_under_the_escaped_name() -> None:
    message = dead_letter(HEADERS)

    letter = read_dead_letter(
        "fxh.deposits.dlq", 0, 5, message.key, message.value, list(message.headers or [])
    )

    assert isinstance(letter, DeadLetter)
    assert letter.reason == "undecodable"
    assert letter.event_id == "x1"
    assert letter.headers == [
        ("ce_id", b"x1"),
        ("x-bad\\xff\\xfe", b"1"),
        ("ce_type", b"com.example.deposit"),
    ]
    sent = redrive_message(letter, redrive_id="r1", last_of_key=True)
    assert all(name.isascii() for name, _ in sent.headers or [])


class UnreadableHeaders:
    """A confluent-kafka message whose header name is not UTF-8: ``headers()`` raises."""

    def headers(self) -> Any:
        raise SystemError("<built-in method headers> returned a result with an exception set")

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v"


def test_a_message_of_the_dead_letter_topic_whose_headers_cannot_be_read_is_no_dead_letter() -> (
    None
):
    # Never one of ours (see above): written there by someone else, as kcat can. Read as a
    # stray, that inspect and redrive name, and never redriven.
    read = redrive._read("fxh.deposits.dlq", 0, 3, UnreadableHeaders())
    assert read == Stray("fxh.deposits.dlq", 0, 3, "a header name that is not UTF-8")
