"""Every valid CloudEvents 1.0 message is read: without ``time``, in structured mode (as the
official SDK writes it), and with data that is not JSON."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from pipeline.envelope import EnvelopeError, Event, decode, encode

JAN_1 = datetime(2024, 1, 1, tzinfo=UTC)
STRUCTURED = [("content-type", b"application/cloudevents+json")]

# What Kafka's console producer writes with `--property parse.headers=true` and the headers of
# the issue: the required attributes, no ce_time.
CONSOLE_HEADERS = [
    ("ce_specversion", b"1.0"),
    ("ce_id", b"console-1"),
    ("ce_source", b"/console"),
    ("ce_type", b"com.example.console"),
    ("content-type", b"application/json"),
]


def _structured(**members: object) -> bytes:
    return json.dumps({"specversion": "1.0", "id": "s-1", "source": "/s", "type": "t", **members})


# --- binary mode without time -----------------------------------------------------------------


def test_a_binary_event_without_ce_time_is_read_with_no_time():
    event = decode(b'{"n":1}', CONSOLE_HEADERS, b"k1")

    assert event == Event(
        id="console-1",
        source="/console",
        type="com.example.console",
        time=None,
        partitionkey="k1",
        data={"n": 1},
    )


def test_an_event_without_time_is_written_without_ce_time_and_reads_back_the_same():
    event = Event(source="/s", type="t", time=None, data=[1])

    message = encode(event)

    assert "ce_time" not in dict(message.headers)
    assert decode(message.value, message.headers, message.key) == event


def test_our_events_still_carry_ce_time():
    message = encode(Event(source="/s", type="t"))

    assert "ce_time" in dict(message.headers)


# --- binary mode with data that is not JSON -----------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "value"),
    [
        (b"text/plain", b"hello, world"),
        (b"application/octet-stream", b"\x00\xff\xfe binary"),
        (b"application/xml", b"<order id='1'/>"),
    ],
)
def test_non_json_data_is_kept_as_bytes_with_its_content_type(content_type, value):
    headers = [*CONSOLE_HEADERS[:-1], ("content-type", content_type)]

    event = decode(value, headers)

    assert event.data == value
    assert event.datacontenttype == content_type.decode()


# --- structured mode --------------------------------------------------------------------------


def test_a_structured_event_is_read_from_the_value():
    value = _structured(
        time="2024-01-01T01:00:00+01:00",
        subject="order-1",
        partitionkey="order-1",
        correlationid="req-1",
        tenant="acme",
        data={"total": 3},
    )

    event = decode(value.encode(), STRUCTURED, b"order-1")

    assert event == Event(
        id="s-1",
        source="/s",
        type="t",
        time=JAN_1,
        subject="order-1",
        partitionkey="order-1",
        correlationid="req-1",
        extensions={"tenant": "acme"},
        data={"total": 3},
    )


def test_a_structured_event_without_time_or_data_has_neither():
    event = decode(_structured().encode(), STRUCTURED)

    assert event.time is None
    assert event.data is None
    assert event.datacontenttype == "application/json"


def test_structured_base64_data_is_bytes_of_its_content_type():
    raw = b"\x00\xff binary"
    value = _structured(
        datacontenttype="application/octet-stream", data_base64=base64.b64encode(raw).decode()
    )

    event = decode(value.encode(), STRUCTURED)

    assert event.data == raw
    assert event.datacontenttype == "application/octet-stream"


def test_structured_text_data_is_its_utf8_bytes():
    event = decode(_structured(datacontenttype="text/plain", data="café").encode(), STRUCTURED)

    assert event.data == "café".encode()


def test_structured_json_data_given_as_base64_under_a_json_content_type_is_parsed():
    value = _structured(
        datacontenttype="application/json", data_base64=base64.b64encode(b'{"a":[1]}').decode()
    )

    assert decode(value.encode(), STRUCTURED).data == {"a": [1]}


def test_structured_base64_data_of_no_content_type_is_bytes_as_the_sdk_reads_it():
    # It was read as JSON (the event format's default type for `data`) and refused when its
    # bytes were not JSON; the format says data_base64 is binary data.
    for raw in (b"\x00\x01\xff", b'{"a":1}'):
        event = decode(_structured(data_base64=base64.b64encode(raw).decode()).encode(), STRUCTURED)

        assert event.data == raw
        assert event.datacontenttype == "application/octet-stream"


def test_structured_extensions_that_are_integers_or_booleans_are_their_canonical_text():
    value = _structured(priority=5, urgent=True, dataschema="urn:s")

    event = decode(value.encode(), STRUCTURED)

    assert event.extensions == {"priority": "5", "urgent": "true", "dataschema": "urn:s"}


def test_the_key_is_the_partitionkey_of_a_structured_event_without_one():
    assert decode(_structured().encode(), STRUCTURED, b"k-7").partitionkey == "k-7"


def test_the_structured_content_type_may_have_parameters_and_any_case():
    headers = [("Content-Type", b"Application/CloudEvents+JSON; charset=utf-8")]

    assert decode(_structured().encode(), headers).id == "s-1"


def test_the_classic_sdk_structured_mode_without_a_content_type_header_is_read():
    # cloudevents.kafka.to_structured (the classic API) writes no content-type for JSON data,
    # and the data's own content type otherwise.
    assert decode(_structured(data={"a": 1}).encode(), []).data == {"a": 1}
    value = _structured(datacontenttype="text/plain", data="hi").encode()
    assert decode(value, [("content-type", b"text/plain")]).data == b"hi"


STRUCTURED_ERRORS = {
    "no value": (None, STRUCTURED, "structured-mode message has no value"),
    "not json": (b"{oops", STRUCTURED, "structured event is not valid JSON: Expecting"),
    "an array": (b"[1]", STRUCTURED, "structured event is a JSON array, not an object"),
    "missing attributes": (
        b'{"specversion":"1.0","type":"t"}',
        STRUCTURED,
        "missing id, source attributes in the structured event",
    ),
    "wrong specversion": (
        _structured(specversion="0.3").encode(),
        STRUCTURED,
        "unsupported specversion '0.3'",
    ),
    "bad time": (_structured(time="yesterday").encode(), STRUCTURED, "invalid time attribute"),
    "non-string source": (
        _structured(source=5).encode(),
        STRUCTURED,
        "invalid source attribute: must be a string, got integer",
    ),
    "object extension": (
        _structured(tenant={"a": 1}).encode(),
        STRUCTURED,
        "invalid tenant attribute: must be a string, an integer or a boolean, got object",
    ),
    "bad extension name": (
        _structured(Tenant="a").encode(),
        STRUCTURED,
        "invalid attribute: extension name 'Tenant' must use only lowercase",
    ),
    "both data forms": (
        _structured(data=1, data_base64="AA==").encode(),
        STRUCTURED,
        "the structured event has both data and data_base64",
    ),
    "bad base64": (
        _structured(datacontenttype="text/plain", data_base64="***").encode(),
        STRUCTURED,
        "invalid data_base64: not base64",
    ),
    "non-string data of a non-json type": (
        _structured(datacontenttype="text/plain", data=[1]).encode(),
        STRUCTURED,
        "invalid data: must be a string (or data_base64)",
    ),
    "bad source": (
        _structured(source="not a uri").encode(),
        STRUCTURED,
        "invalid source attribute: must be a URI-reference",
    ),
    "another event format": (
        _structured().encode(),
        [("content-type", b"application/cloudevents+avro")],
        "unsupported event format 'application/cloudevents+avro'",
    ),
}


@pytest.mark.parametrize(
    ("value", "headers", "start"), STRUCTURED_ERRORS.values(), ids=STRUCTURED_ERRORS.keys()
)
def test_an_invalid_structured_event_says_what_is_wrong(value, headers, start):
    with pytest.raises(EnvelopeError) as caught:
        decode(value, headers)

    assert str(caught.value).startswith(start), str(caught.value)


def test_a_binary_message_whose_data_type_is_an_event_format_stays_binary():
    # With ce_specversion it is binary mode, whatever its content type says.
    headers = [*CONSOLE_HEADERS[:-1], ("content-type", b"application/cloudevents-batch+json")]

    assert decode(b'[{"a":1}]', headers).data == [{"a": 1}]


def test_a_json_value_with_specversion_but_binary_headers_is_binary_data():
    value = _structured(data=1).encode()

    assert decode(value, CONSOLE_HEADERS).data == json.loads(value)


# --- the official SDK -------------------------------------------------------------------------


def test_we_read_what_the_sdk_2_core_binding_writes_in_structured_mode():
    binding = pytest.importorskip("cloudevents.core.bindings.kafka")
    v1 = pytest.importorskip("cloudevents.core.v1.event")
    sdk_event = v1.CloudEvent(
        attributes={
            "id": "sdk-1",
            "source": "https://example.com/orders",
            "type": "com.example.order.created",
            "time": datetime(2024, 1, 1, tzinfo=UTC),
            "partitionkey": "order-1",
            "tenant": "acme",
        },
        data={"total": 3},
    )
    message = binding.to_structured_event(sdk_event)
    key = message.key.encode() if isinstance(message.key, str) else message.key

    event = decode(message.value, list(message.headers.items()), key)

    assert event == Event(
        id="sdk-1",
        source="https://example.com/orders",
        type="com.example.order.created",
        time=JAN_1,
        partitionkey="order-1",
        extensions={"tenant": "acme"},
        data={"total": 3},
    )


def test_we_read_sdk_structured_events_with_binary_and_text_data():
    binding = pytest.importorskip("cloudevents.core.bindings.kafka")
    v1 = pytest.importorskip("cloudevents.core.v1.event")
    cases = [
        ("application/octet-stream", b"\x00\xff", b"\x00\xff"),
        ("text/plain", "hé", b"h\xc3\xa9"),
    ]
    for content_type, data, expected in cases:
        sdk_event = v1.CloudEvent(
            attributes={"source": "/s", "type": "t", "datacontenttype": content_type}, data=data
        )
        message = binding.to_structured_event(sdk_event)

        event = decode(message.value, list(message.headers.items()))

        assert (event.id, event.datacontenttype, event.data) == (
            sdk_event.get_id(),
            content_type,
            expected,
        )


def test_we_read_what_the_classic_sdk_writes_in_structured_mode():
    try:
        from cloudevents import http, kafka  # type: ignore[attr-defined]
    except ImportError:
        from cloudevents.v1 import http, kafka
    for attributes, data, expected in [
        ({"source": "/s", "type": "t"}, {"a": 1}, {"a": 1}),
        ({"source": "/s", "type": "t", "datacontenttype": "text/plain"}, b"\x00hi", b"\x00hi"),
    ]:
        sdk_event = http.CloudEvent.create(attributes, data)
        message = kafka.to_structured(sdk_event)

        event = decode(message.value, list(message.headers.items()))

        assert (event.id, event.data) == (sdk_event["id"], expected)
        assert event.time is not None


def test_base64_data_of_no_content_type_reads_as_the_sdk_reads_it():
    binding = pytest.importorskip("cloudevents.core.bindings.kafka")
    value = json.dumps(
        {"specversion": "1.0", "id": "kc-7", "source": "/kcat", "type": "t", "data_base64": "AAH/"}
    ).encode()
    headers = {"content-type": b"application/cloudevents+json"}

    sdk_event = binding.from_structured_event(binding.KafkaMessage(headers, b"kc-7", value))
    event = decode(value, list(headers.items()), b"kc-7")

    assert event.data == sdk_event.get_data() == b"\x00\x01\xff"
