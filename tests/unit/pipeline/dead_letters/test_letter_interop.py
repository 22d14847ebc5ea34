"""Dead letters of events from other CloudEvents producers: the DLQ tools name the same event
a processor read (pure functions, no broker)."""

from __future__ import annotations

import json

import pytest

from pipeline.dead_letters.letter import DeadLetter, Failure, dead_letter_message, read_dead_letter
from pipeline.envelope import EnvelopeError, decode

FAILURE = Failure(reason="unhandled_type", error_type="LookupError", message="no handler")


def _read_back(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
) -> DeadLetter:
    dead = dead_letter_message(
        key=key,
        value=value,
        headers=headers,
        topic="t",
        partition=0,
        offset=3,
        timestamp_ms=None,
        consumer_group="g",
        failure=FAILURE,
    )
    read = read_dead_letter("t.dlq", 0, 0, dead.key, dead.value, dead.headers)
    assert isinstance(read, DeadLetter)
    return read


def test_a_structured_event_s_dead_letter_names_its_id_and_type():
    value = json.dumps(
        {"specversion": "1.0", "id": "s-9", "source": "/s", "type": "com.example.x", "data": 1}
    ).encode()

    letter = _read_back(b"k", value, [("content-type", b"application/cloudevents+json")])

    assert (letter.event_id, letter.event_type) == ("s-9", "com.example.x")


def test_a_message_that_is_no_event_still_shows_its_ce_id_and_ce_type_headers():
    headers = [("ce_id", b"e-1"), ("ce_type", b"t")]  # no ce_source, ce_specversion: not an event

    letter = _read_back(None, b"{}", headers)

    assert (letter.event_id, letter.event_type) == ("e-1", "t")


def test_an_undecodable_message_s_error_type_is_the_public_envelope_error():
    with pytest.raises(EnvelopeError) as caught:
        decode(b"{not json", [])

    failure = Failure.from_exception("undecodable", caught.value)

    assert failure.error_type == "pipeline.envelope.EnvelopeError"
