"""CloudEvents' String type has no control characters (U+0000-U+001F, U+007F-U+009F): the model
refuses them in every text attribute, and decode refuses a message that carries one, in either
mode, so a processor dead-letters it with the reason."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from pydantic import ValidationError

from pipeline.envelope import EnvelopeError, Event, KafkaMessage, decode, encode
from pipeline.envelope.template import EventTemplate
from pipeline.processing import Processor, ProcessorTestDriver, UnitOfWork

WHY = "must not contain control characters (U+0000-U+001F, U+007F-U+009F)"
CONTROLS = [*map(chr, range(0x20)), *map(chr, range(0x7F, 0xA0))]
# Not control characters, though str.isprintable() is False for all but the last two.
ALLOWED = ["\xa0", "\xad", "\u200b", "\u2028", "\u2029", "\ufeff", "\U000e0001", "é", "😀"]
SOME_CONTROLS = ["\x00", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f", "\x80", "\x85", "\x9f"]
REQUIRED = {"source": "/rvob", "type": "com.example.t"}

# Each text attribute and how to put a value in it ("k" + value + "y": the bad one at offset 1).
ATTRIBUTES: dict[str, Any] = {
    "id": lambda text: {"id": text},
    "type": lambda text: {"type": text},
    "subject": lambda text: {"subject": text},
    "partitionkey": lambda text: {"partitionkey": text},
    "correlationid": lambda text: {"correlationid": text},
    "causationid": lambda text: {"causationid": text},
    "extensions.tenant": lambda text: {"extensions": {"tenant": text}},
    "extensions.dataschema": lambda text: {"extensions": {"dataschema": text}},
}


def _error_of(**fields: Any) -> dict[str, Any]:
    with pytest.raises(ValidationError) as caught:
        Event(**{**REQUIRED, **fields})
    [error] = caught.value.errors()
    return dict(error)


# --- the model -------------------------------------------------------------------------------


def test_the_reviews_event_with_a_line_break_in_its_type_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        Event(source="/rvob", type="has space\nnewline", data={"a": 1})

    [error] = caught.value.errors()
    assert error["loc"] == ("type",)
    assert error["type"] == "control_characters"
    assert error["msg"] == f"{WHY}, found U+000A at offset 9"


@pytest.mark.parametrize("control", SOME_CONTROLS, ids=[f"U+{ord(c):04X}" for c in SOME_CONTROLS])
@pytest.mark.parametrize("attribute", ATTRIBUTES)
def test_every_text_attribute_refuses_a_control_character_naming_it(
    attribute: str, control: str
) -> None:
    error = _error_of(**ATTRIBUTES[attribute](f"k{control}y"))

    assert ".".join(map(str, error["loc"])) == attribute
    assert error["type"] == "control_characters"
    assert error["msg"] == f"{WHY}, found U+{ord(control):04X} at offset 1"


@pytest.mark.parametrize("control", SOME_CONTROLS, ids=[f"U+{ord(c):04X}" for c in SOME_CONTROLS])
def test_a_media_type_refuses_a_control_character_in_its_parameters(control: str) -> None:
    content_type = f'text/plain; charset="a{control}b"'

    error = _error_of(datacontenttype=content_type, data=b"x")

    assert error["loc"] == ("datacontenttype",)
    assert error["msg"] == f"{WHY}, found U+{ord(control):04X} at offset 22"


def test_source_refuses_them_by_its_uri_reference_check_as_before() -> None:
    error = _error_of(source="/a\nb")

    assert error["loc"] == ("source",)
    assert error["type"] == "uri_reference"


@pytest.mark.parametrize("text", ALLOWED, ids=[f"U+{ord(c):04X}" for c in ALLOWED])
def test_characters_that_are_not_control_characters_are_kept(text: str) -> None:
    value = f"a {text} z"
    event = Event(
        **REQUIRED,
        id=value,
        subject=value,
        partitionkey=value,
        correlationid=value,
        causationid=value,
        extensions={"tenant": value},
        datacontenttype=f"text/plain; x={value}",
        data=b"",
    )

    assert decode(*_parts(event)) == event


def test_an_empty_extension_value_is_still_taken() -> None:
    assert Event(**REQUIRED, extensions={"tenant": ""}).extensions == {"tenant": ""}


def test_control_character_at_finds_exactly_the_control_characters() -> None:
    from pipeline.envelope.event import control_character_at

    # str.isprintable() is the shortcut: every code point is checked against the definition.
    for code in range(sys.maxunicode + 1):
        if 0xD800 <= code <= 0xDFFF:
            continue
        expected = 0 if code <= 0x1F or 0x7F <= code <= 0x9F else None
        assert control_character_at(chr(code)) == expected, hex(code)
    assert control_character_at("ab\xa0c\x85d\n") == 4
    assert control_character_at("") is None


# --- decode ----------------------------------------------------------------------------------

BASE_HEADERS = [
    ("ce_id", b"e-1"),
    ("ce_source", b"/rvob"),
    ("ce_type", b"com.example.t"),
    ("ce_specversion", b"1.0"),
]
HEADERS = {
    "ce_id": "invalid ce_id header",
    "ce_type": "invalid ce_type header",
    "ce_subject": "invalid ce_subject header",
    "ce_partitionkey": "invalid ce_partitionkey header",
    "ce_correlationid": "invalid ce_correlationid header",
    "ce_causationid": "invalid ce_causationid header",
    "ce_tenant": "invalid header ce_tenant",
    "ce_dataschema": "invalid header ce_dataschema",
}


def _parts(event: Event) -> tuple[bytes | None, list[tuple[str, bytes]], bytes | None]:
    message = encode(event)
    return message.value, message.headers, message.key


def _with(name: str, value: bytes) -> list[tuple[str, bytes]]:
    return [(n, v) for n, v in BASE_HEADERS if n != name] + [(name, value)]


@pytest.mark.parametrize("control", ["\n", "\x00", "\x7f", "\x85"], ids=["LF", "NUL", "DEL", "NEL"])
@pytest.mark.parametrize("header", HEADERS)
def test_decode_refuses_a_header_holding_a_control_character(header: str, control: str) -> None:
    with pytest.raises(EnvelopeError) as caught:
        decode(b"{}", _with(header, f"k{control}y".encode()))

    assert str(caught.value) == f"{HEADERS[header]}: {WHY}, found U+{ord(control):04X} at offset 1"


def test_decode_refuses_a_line_break_in_ce_type_as_kcat_showed_it() -> None:
    with pytest.raises(EnvelopeError) as caught:
        decode(b'{"a":1}', _with("ce_type", b"has space\nnewline"))

    assert str(caught.value) == f"invalid ce_type header: {WHY}, found U+000A at offset 9"


def test_decode_refuses_a_content_type_holding_a_control_character() -> None:
    with pytest.raises(EnvelopeError) as caught:
        decode(b"x", [*BASE_HEADERS, ("content-type", b"text/plain; a=\x01")])

    assert str(caught.value) == f"invalid content-type header: {WHY}, found U+0001 at offset 14"


def test_decode_refuses_a_key_holding_a_control_character_without_a_partitionkey_header() -> None:
    java_long_7 = b"\x00\x00\x00\x00\x00\x00\x00\x07"  # LongSerializer's bytes: UTF-8, all controls

    for key, found in ((b"order\n1", "U+000A at offset 5"), (java_long_7, "U+0000 at offset 0")):
        with pytest.raises(EnvelopeError) as caught:
            decode(b"{}", BASE_HEADERS, key)
        assert str(caught.value) == (
            f"the message key holds a control character ({found}), which a partitionkey must "
            "not, and there is no ce_partitionkey header"
        )

    # With a ce_partitionkey header the key is not read: the message is valid.
    event = decode(b"{}", [*BASE_HEADERS, ("ce_partitionkey", b"7")], java_long_7)
    assert event.partitionkey == "7"


def _structured(**members: Any) -> bytes:
    return json.dumps({"specversion": "1.0", "id": "e-1", **REQUIRED, **members}).encode()


STRUCTURED = {
    "id": "invalid id attribute",
    "type": "invalid type attribute",
    "subject": "invalid subject attribute",
    "partitionkey": "invalid partitionkey attribute",
    "correlationid": "invalid correlationid attribute",
    "causationid": "invalid causationid attribute",
    "tenant": "invalid tenant attribute",
    "dataschema": "invalid dataschema attribute",
    "datacontenttype": "invalid datacontenttype attribute",
}


@pytest.mark.parametrize("with_format", [True, False], ids=["content-type", "classic SDK"])
@pytest.mark.parametrize("member", STRUCTURED)
def test_decode_refuses_a_structured_attribute_holding_a_control_character(
    member: str, with_format: bool
) -> None:
    text = "text/plain; a=\x1b" if member == "datacontenttype" else "k\x1by"
    headers = [("content-type", b"application/cloudevents+json")] if with_format else []

    with pytest.raises(EnvelopeError) as caught:
        decode(_structured(**{member: text}), headers)

    at = text.index("\x1b")
    assert str(caught.value) == f"{STRUCTURED[member]}: {WHY}, found U+001B at offset {at}"


def test_decode_of_a_structured_event_refuses_a_key_holding_a_control_character() -> None:
    headers = [("content-type", b"application/cloudevents+json")]

    with pytest.raises(EnvelopeError) as caught:
        decode(_structured(), headers, b"k\x7f")

    assert str(caught.value) == (
        "the message key holds a control character (U+007F at offset 1), which a partitionkey "
        "must not, and the event has no partitionkey attribute"
    )


# --- the template's fast paths -------------------------------------------------------------


def test_a_template_refuses_a_partitionkey_holding_a_control_character_as_the_model_does() -> None:
    template = EventTemplate(**REQUIRED)

    with pytest.raises(ValidationError) as caught:
        template.event_and_message({"a": 1}, "k\ny")
    [error] = caught.value.errors()
    assert (error["loc"], error["msg"]) == (("partitionkey",), f"{WHY}, found U+000A at offset 1")

    with pytest.raises(ValueError, match=r"partitionkey must not contain control characters"):
        template.checked_parts(b'{"a":1}', "k\ny")


def test_a_template_keeps_a_partitionkey_that_is_not_printable_but_allowed() -> None:
    template = EventTemplate(**REQUIRED)

    event, message = template.event_and_message({"a": 1}, "k\xa0y")

    assert event.partitionkey == "k\xa0y"
    assert decode(message.value, message.headers, message.key) == event
    key, _, headers = template.checked_parts(b'{"a":1}', "k\xa0y")
    assert key == "k\xa0y".encode()
    assert ("ce_partitionkey", key) in headers


# --- a processor dead-letters such a message -----------------------------------------------

TOPIC = "inputs.orders"


def test_a_processor_dead_letters_a_message_whose_ce_type_holds_a_line_break() -> None:
    processor = Processor("control-characters")
    handled: list[Event] = []

    @processor.handler(TOPIC)
    def handle(event: Event, unit: UnitOfWork) -> None:
        handled.append(event)

    driver = ProcessorTestDriver(processor, partitions={TOPIC: 1})
    try:
        headers = _with("ce_type", b"has space\nnewline")
        driver.send(TOPIC, KafkaMessage(key=b"k1", value=b'{"a":1}', headers=headers))

        driver.run()

        [letter] = driver.dead_letters(TOPIC)
    finally:
        driver.close()
    assert letter.reason == "undecodable"
    assert letter.error_message == f"invalid ce_type header: {WHY}, found U+000A at offset 9"
    assert handled == []
