"""EventTemplate: the same events, messages and errors as Event(...) and encode, at less cost."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from pipeline.envelope import Event, KafkaMessage, decode, encode
from pipeline.envelope.json_data import dump_json
from pipeline.envelope.template import EventTemplate

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

TEMPLATES: dict[str, dict[str, Any]] = {
    "produce's": {"source": "/pipeline/cli", "type": "com.example.event", "correlationid": "r-1"},
    "minimal": {"source": "/s", "type": "t"},
    "every attribute": {
        "source": "/services/orders",
        "type": "com.example.order.created",
        "subject": "order-42",
        "traceparent": TRACEPARENT,
        "correlationid": "req-7",
        "causationid": "0190b6a4-0000-7000-8000-000000000001",
        "extensions": {"tenant": "acme", "region": "eu1"},
    },
    "plus json": {"source": "/s", "type": "t", "datacontenttype": "application/x+json"},
}

DATA: dict[str, Any] = {
    "object": {"order_id": "order-42", "total": 12.5, "items": [1, 2], "note": "café"},
    "none": None,
    "scalar": 12345678901234567890,
    "floats": [1e-05, 1e16, 0.1, -0.0],
    "nested": {"a": {"b": [{"c": None, "d": True}]}},
}


def _reference(fixed: dict[str, Any], event: Event, key: str | None, data: Any) -> Event:
    """What Event(...) makes of the same parts, with the template's event's id and time."""
    made = Event(**fixed, partitionkey=key, data=data)
    return made.model_copy(update={"id": event.id, "time": event.time})


@pytest.mark.parametrize("fixed", TEMPLATES.values(), ids=TEMPLATES.keys())
@pytest.mark.parametrize("data", DATA.values(), ids=DATA.keys())
@pytest.mark.parametrize("key", ["order-42", None, "клиент-1"])
def test_the_event_and_its_message_are_those_of_event_and_encode(fixed, data, key):
    event, message = EventTemplate(**fixed).event_and_message(data, key)

    reference = _reference(fixed, event, key, data)
    assert event == reference
    assert list(event.__dict__.items()) == list(reference.__dict__.items())
    assert event.model_fields_set == Event(**fixed, partitionkey=key, data=data).model_fields_set
    assert message == encode(reference)


def test_the_fast_path_builds_the_model_as_model_construct_does():
    fixed = TEMPLATES["every attribute"]
    event = EventTemplate(**fixed).event({"a": 1}, "k-1")

    constructed = Event.model_construct(
        _fields_set={*fixed, "partitionkey", "data"}, **event.__dict__
    )
    assert event.__dict__ == constructed.__dict__
    assert event.__pydantic_fields_set__ == constructed.__pydantic_fields_set__
    assert event.__pydantic_extra__ == constructed.__pydantic_extra__
    assert event.__pydantic_private__ == constructed.__pydantic_private__


def test_each_event_has_a_fresh_id_and_the_current_utc_time_and_its_own_extensions():
    template = EventTemplate(**TEMPLATES["every attribute"])
    before = datetime.now(UTC)

    first, second = template.event({}), template.event({})

    assert first.id != second.id
    assert first.id < second.id
    assert first.time is not None and before <= first.time <= datetime.now(UTC)
    assert first.time.tzinfo is UTC
    assert first.extensions == second.extensions and first.extensions is not second.extensions


def test_data_parsed_from_json_text_gives_the_same_event_and_message():
    text = '{"a": [1, 2.5, "x"], "b": {"c": null}}'
    data = {"a": [1, 2.5, "x"], "b": {"c": None}}

    event, message = EventTemplate(source="/s", type="t").event_and_message(
        data, "k", json_text=text
    )

    assert message == encode(_reference({"source": "/s", "type": "t"}, event, "k", data))


def test_a_non_json_content_type_takes_bytes_as_the_model_does():
    fixed = {"source": "/s", "type": "t", "datacontenttype": "application/octet-stream"}

    event, message = EventTemplate(**fixed).event_and_message(b"\x00\xff", "k")

    assert message.value == b"\x00\xff"
    assert message == encode(_reference(fixed, event, "k", b"\x00\xff"))


def _errors(call: Any) -> list[Any]:
    with pytest.raises(ValidationError) as caught:
        call()
    return caught.value.errors(include_url=False)


BAD_PARTS: dict[str, tuple[dict[str, Any], Any, Any, str | None]] = {
    "empty key": ({}, {"a": 1}, "", None),
    "key not text": ({}, {"a": 1}, 5, None),
    "NaN in data": ({}, {"a": [float("nan")]}, "k", None),
    "tuple in data": ({}, {"a": (1, 2)}, "k", None),
    "lone surrogate in data": ({}, ["ok", "\udc80"], "k", None),
    "lone surrogate from an escape in the text": ({}, ["\ud800"], "k", '["\\ud800"]'),
    "float overflowing in the text": ({}, {"x": float("-inf")}, "k", '{"x":-1E400}'),
    "bytes under json": ({}, b"{}", "k", None),
    "text under a binary type": ({"datacontenttype": "text/plain"}, "hello", "k", None),
}


@pytest.mark.parametrize(("fixed", "data", "key", "text"), BAD_PARTS.values(), ids=BAD_PARTS.keys())
def test_bad_parts_raise_exactly_the_errors_of_event(fixed, data, key, text):
    fields = {"source": "/s", "type": "t", **fixed}
    template = EventTemplate(**fields)

    errors = _errors(lambda: template.event_and_message(data, key, json_text=text))

    assert errors == _errors(lambda: Event(**fields, partitionkey=key, data=data))


def test_bad_fixed_attributes_raise_the_errors_of_event_at_once():
    fields = {"source": "/my orders", "type": "", "traceparent": "00-0-0-0"}

    assert _errors(lambda: EventTemplate(**fields)) == _errors(lambda: Event(**fields))


def test_only_the_attributes_events_share_can_be_fixed():
    with pytest.raises(TypeError, match="fixes only"):
        EventTemplate(source="/s", type="t", partitionkey="k")


@pytest.mark.parametrize("fixed", TEMPLATES.values(), ids=TEMPLATES.keys())
@pytest.mark.parametrize("key", ["order-42", None, "клиент-1"])
def test_a_checked_message_is_the_encoded_event_with_a_fresh_id_and_time(fixed, key):
    template = EventTemplate(**fixed)
    data = DATA["object"]
    extra = (("tenant", b"acme"), ("trace", b""))
    before = datetime.now(UTC)

    first = template.checked_message(dump_json(data), key, extra)
    second = template.checked_message(dump_json(data), key)

    for message, after_envelope in ((first, list(extra)), (second, [])):
        event = decode(message.value, message.headers, message.key)
        assert event.time is not None and before <= event.time <= datetime.now(UTC)
        expected = encode(_reference(fixed, event, key, data))
        assert message == KafkaMessage(
            expected.key, expected.value, [*expected.headers, *after_envelope]
        )
    assert second.headers[0][1] > first.headers[0][1]  # a fresh id, later than the first


@pytest.mark.parametrize("key", ["", 5, b"k"])
def test_a_checked_message_refuses_a_key_the_model_refuses(key):
    with pytest.raises(ValueError, match="partitionkey must be a non-empty str"):
        EventTemplate(source="/s", type="t").checked_message(b"{}", key)
