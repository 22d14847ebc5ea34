from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from pipeline.envelope import (
    EnvelopeError,
    Event,
    KafkaMessage,
    decode,
    decode_message,
    encode,
)
from pipeline.envelope.json_data import CHECKED_JSON
from pipeline.errors import PipelineError
from pipeline.ids import event_id_time

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

KNOWN = Event(
    id="0190b6a4-3c2e-7d1a-9f3b-2c4d5e6f7a8b",
    source="/services/orders",
    type="com.example.order.created",
    time=datetime(2024, 7, 15, 13, 45, 35, 22_000, tzinfo=UTC),
    subject="order-42",
    partitionkey="order-42",
    traceparent=TRACEPARENT,
    correlationid="req-7",
    causationid="0190b6a4-0000-7000-8000-000000000001",
    data={"order_id": "order-42", "total": 12.5, "items": [1, 2], "note": "café", "gift": None},
)

KNOWN_HEADERS = [
    ("ce_id", b"0190b6a4-3c2e-7d1a-9f3b-2c4d5e6f7a8b"),
    ("ce_source", b"/services/orders"),
    ("ce_type", b"com.example.order.created"),
    ("ce_specversion", b"1.0"),
    ("ce_time", b"2024-07-15T13:45:35.022000Z"),
    ("ce_subject", b"order-42"),
    ("ce_partitionkey", b"order-42"),
    ("ce_traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    ("ce_correlationid", b"req-7"),
    ("ce_causationid", b"0190b6a4-0000-7000-8000-000000000001"),
    ("content-type", b"application/json"),
]

# The headers of a minimal valid message, for the decode cases.
BASE = [
    ("ce_id", b"e-1"),
    ("ce_source", b"/s"),
    ("ce_type", b"t"),
    ("ce_specversion", b"1.0"),
    ("ce_time", b"2024-01-01T00:00:00Z"),
]
JAN_1 = datetime(2024, 1, 1, tzinfo=UTC)


def _event(**fields: Any) -> Event:
    return Event(**{"source": "/s", "type": "t", **fields})


def _without(name: str) -> list[tuple[str, bytes | None]]:
    return [header for header in BASE if header[0] != name]


def _replacing(name: str, value: bytes | None) -> list[tuple[str, bytes | None]]:
    return [*_without(name), (name, value)]


# --- encode: exact bytes ----------------------------------------------------------------------


def test_encode_writes_the_exact_headers_key_and_compact_utf8_json_value():
    message = encode(KNOWN)

    assert message == KafkaMessage(
        key=b"order-42",
        value=b'{"order_id":"order-42","total":12.5,"items":[1,2],"note":"caf\xc3\xa9","gift":null}',
        headers=KNOWN_HEADERS,
    )


def test_each_event_gets_its_own_source_type_and_content_type_headers_among_many():
    # More distinct values than encode keeps made (256 of each): the kept ones are let go and
    # made again, never handed to another event.
    events = [
        Event(
            source=f"/s/{n % 300}",
            type=f"t.{n % 301}",
            datacontenttype=f"application/x-{n % 302}",
            data=b"x",
        )
        for n in range(1_000)
    ]

    for event in events:
        headers = dict(encode(event).headers)
        assert headers["ce_source"] == event.source.encode()
        assert headers["ce_type"] == event.type.encode()
        assert headers["content-type"] == event.datacontenttype.encode()


def test_a_minimal_event_has_the_required_headers_content_type_and_no_key():
    event = Event(id="e-1", source="/s", type="t", time=JAN_1, data={"a": 1})

    assert encode(event) == KafkaMessage(
        key=None,
        value=b'{"a":1}',
        headers=[
            ("ce_id", b"e-1"),
            ("ce_source", b"/s"),
            ("ce_type", b"t"),
            ("ce_specversion", b"1.0"),
            ("ce_time", b"2024-01-01T00:00:00.000000Z"),
            ("content-type", b"application/json"),
        ],
    )


def test_an_event_without_data_has_no_value():
    assert encode(_event()).value is None


def test_time_is_written_in_utc_with_z_whatever_the_offset_given():
    plus_two = timezone(timedelta(hours=2))
    event = _event(time=datetime(2024, 7, 15, 15, 45, 35, 1, tzinfo=plus_two))

    assert event.time == datetime(2024, 7, 15, 13, 45, 35, 1, tzinfo=UTC)
    assert event.time.tzinfo is UTC
    assert dict(encode(event).headers)["ce_time"] == b"2024-07-15T13:45:35.000001Z"


def test_other_extensions_follow_the_named_ones_in_name_order_before_content_type():
    event = _event(
        id="e-1", time=JAN_1, correlationid="c-1", extensions={"tenant": "acme", "region": "eu1"}
    )

    assert [name for name, _ in encode(event).headers] == [
        "ce_id",
        "ce_source",
        "ce_type",
        "ce_specversion",
        "ce_time",
        "ce_correlationid",
        "ce_region",
        "ce_tenant",
        "content-type",
    ]
    assert dict(encode(event).headers)["ce_region"] == b"eu1"


def test_a_non_json_content_type_carries_the_raw_bytes():
    event = _event(datacontenttype="application/octet-stream", data=b"\x00\xff raw")

    message = encode(event)

    assert message.value == b"\x00\xff raw"
    assert ("content-type", b"application/octet-stream") in message.headers


def test_a_plus_json_content_type_is_json():
    event = _event(datacontenttype="application/vnd.orders+json; charset=utf-8", data=[1, "x"])

    assert encode(event).value == b'[1,"x"]'


@pytest.mark.parametrize(
    ("data", "value"),
    [
        ("text", b'"text"'),
        (0, b"0"),
        (False, b"false"),
        ([], b"[]"),
        ({}, b"{}"),
        ({"nested": {"list": [1.5, None, True]}}, b'{"nested":{"list":[1.5,null,true]}}'),
    ],
)
def test_any_json_value_is_data(data, value):
    assert encode(_event(data=data)).value == value


# --- round trip -------------------------------------------------------------------------------

ROUND_TRIP_EVENTS = {
    "known": KNOWN,
    "minimal": _event(),
    "extensions": _event(
        partitionkey="acct-9", extensions={"tenant": "acme", "dataschema": "urn:schema:1"}
    ),
    "bytes": _event(datacontenttype="application/octet-stream", data=b"\x00\x01\xfe\xff"),
    "empty bytes": _event(datacontenttype="text/plain", data=b""),
    "plus json": _event(datacontenttype="application/cloudevents-batch+json", data=[{"a": 1}]),
    "unicode": _event(subject="commande-é", partitionkey="клиент-1", data={"😀": "ü"}),
    "json scalar": _event(data=12345678901234567890),
}


@pytest.mark.parametrize("event", ROUND_TRIP_EVENTS.values(), ids=ROUND_TRIP_EVENTS.keys())
def test_decoding_an_encoded_event_gives_the_identical_event(event):
    message = encode(event)

    decoded = decode(message.value, message.headers, message.key)

    assert decoded == event
    assert decoded.model_dump() == event.model_dump()
    assert encode(decoded) == message


def test_extensions_round_trip_through_their_own_headers():
    event = _event(extensions={"tenant": "acme", "priority": "5"})

    message = encode(event)

    assert ("ce_tenant", b"acme") in message.headers
    assert ("ce_priority", b"5") in message.headers
    assert decode(message.value, message.headers).extensions == {"tenant": "acme", "priority": "5"}


def test_decode_message_reads_a_confluent_kafka_message():
    class FakeMessage:
        def value(self) -> bytes | None:
            return b'{"a":1}'

        def headers(self) -> list[tuple[str, bytes]] | None:
            return [*BASE, ("ce_subject", b"x")]

        def key(self) -> bytes | None:
            return b"k-1"

    event = decode_message(FakeMessage())

    assert event == Event(
        id="e-1", source="/s", type="t", time=JAN_1, subject="x", partitionkey="k-1", data={"a": 1}
    )


# --- decode: what it accepts ------------------------------------------------------------------


def test_decode_matches_header_names_case_insensitively():
    headers = [(name.upper(), value) for name, value in BASE] + [("Content-Type", b"text/plain")]

    event = decode(b"hi", headers)

    assert event.id == "e-1"
    assert event.datacontenttype == "text/plain"
    assert event.data == b"hi"


def test_decode_ignores_headers_that_are_not_cloudevents_attributes():
    headers = [*BASE, ("x-retry-count", b"\xff\xfe"), ("traceparent", b"nonsense")]

    assert decode(b"{}", headers) == _event(id="e-1", time=JAN_1, data={})


def test_decode_also_takes_headers_as_a_dict_or_with_str_values_as_confluent_types_them():
    expected = _event(id="e-1", time=JAN_1, subject="x", data={})

    assert decode(b"{}", {**dict(BASE), "ce_subject": b"x"}) == expected
    assert (
        decode(b"{}", [(name, value.decode()) for name, value in BASE] + [("ce_subject", "x")])
        == expected
    )


def test_the_key_becomes_the_partitionkey_when_there_is_no_ce_partitionkey_header():
    assert decode(b"{}", BASE, b"acct-1").partitionkey == "acct-1"


def test_the_ce_partitionkey_header_wins_over_the_key():
    headers = [*BASE, ("ce_partitionkey", b"from-header")]

    assert decode(b"{}", headers, b"from-key").partitionkey == "from-header"


def test_an_empty_key_is_no_partitionkey():
    assert decode(b"{}", BASE, b"").partitionkey is None


def test_without_content_type_the_data_is_read_as_json():
    event = decode(b'{"a":[1]}', BASE)

    assert event.datacontenttype == "application/json"
    assert event.data == {"a": [1]}


@pytest.mark.parametrize("value", [None, b""])
def test_no_value_or_an_empty_value_is_no_json_data(value):
    assert decode(value, BASE).data is None


def test_time_with_an_offset_and_nanoseconds_is_read_as_utc_microseconds():
    headers = _replacing("ce_time", b"2024-01-01T02:30:00.123456789+02:30")

    assert decode(b"{}", headers).time == datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)


def test_unknown_ce_headers_are_kept_as_extensions():
    headers = [*BASE, ("ce_tenant", b"acme"), ("ce_dataschema", b"urn:s")]

    assert decode(b"{}", headers).extensions == {"tenant": "acme", "dataschema": "urn:s"}


# --- decode: every EnvelopeError --------------------------------------------------------------

DEEP = b"[" * 5000 + b"]" * 5000
JUST_TOO_DEEP = b"[" * 257 + b"]" * 257

DECODE_ERRORS = {
    "no headers": (
        b"{}",
        None,
        None,
        "missing ce_id, ce_source, ce_type, ce_specversion headers",
    ),
    "missing ce_id": (b"{}", _without("ce_id"), None, "missing ce_id header"),
    "wrong specversion": (
        b"{}",
        _replacing("ce_specversion", b"0.3"),
        None,
        "unsupported ce_specversion '0.3': only CloudEvents '1.0' is read",
    ),
    "bad json": (
        b'{\n  "a": 1,\n  "b": }',
        BASE,
        None,
        "value is not valid JSON for content-type 'application/json': Expecting value at line 3 "
        "column 8",
    ),
    "json value not utf-8": (
        b'{"a": "\xe9"}',
        BASE,
        None,
        "value is not valid UTF-8 JSON for content-type 'application/json' (byte 0xe9 at offset 7)",
    ),
    "json NaN": (
        b"[1, NaN]",
        BASE,
        None,
        "value is not valid JSON for content-type 'application/json': NaN is not a JSON number",
    ),
    "json nested too deep to parse": (
        DEEP,
        BASE,
        None,
        "value nests more than 256 JSON lists/objects deep",
    ),
    "json nested too deep to keep": (
        JUST_TOO_DEEP,
        BASE,
        None,
        "invalid value: data nests more than 256 JSON lists/objects deep",
    ),
    "time not rfc 3339": (
        b"{}",
        _replacing("ce_time", b"2024-01-01 00:00:00"),
        None,
        "invalid ce_time header '2024-01-01 00:00:00': expected an RFC 3339 time such as "
        "'2024-01-31T12:00:00.000000Z'",
    ),
    "time without offset": (
        b"{}",
        _replacing("ce_time", b"2024-01-01T00:00:00"),
        None,
        "invalid ce_time header '2024-01-01T00:00:00': expected an RFC 3339 time such as "
        "'2024-01-31T12:00:00.000000Z'",
    ),
    "time not a date": (
        b"{}",
        _replacing("ce_time", b"2024-02-30T00:00:00Z"),
        None,
        "invalid ce_time header '2024-02-30T00:00:00Z': day is out of range for month",
    ),
    "header not utf-8": (
        b"{}",
        [*BASE, ("ce_subject", b"caf\xe9")],
        None,
        "header ce_subject is not valid UTF-8 (byte 0xe9 at offset 3)",
    ),
    "header without value": (
        b"{}",
        [*BASE, ("ce_subject", None)],
        None,
        "header ce_subject has no value",
    ),
    "duplicate header": (
        b"{}",
        [*BASE, ("CE_ID", b"e-2")],
        None,
        "duplicate ce_id header",
    ),
    "empty attribute": (
        b"{}",
        [*BASE, ("ce_subject", b"")],
        None,
        "invalid ce_subject header: String should have at least 1 character",
    ),
    "bad traceparent": (
        b"{}",
        [*BASE, ("ce_traceparent", b"00-abc-01")],
        None,
        "invalid ce_traceparent header: must be a W3C traceparent '00-<32 lowercase hex "
        "trace-id>-<16 lowercase hex parent-id>-<2 lowercase hex flags>', got '00-abc-01'",
    ),
    "bad source and empty type": (
        b"{}",
        [
            ("ce_id", b"e-1"),
            ("ce_source", b"not a uri"),
            ("ce_type", b""),
            ("ce_specversion", b"1.0"),
            ("ce_time", b"2024-01-01T00:00:00Z"),
        ],
        None,
        "invalid ce_source header: must be a URI-reference (RFC 3986: ASCII, no spaces, "
        "%-escapes as %XX), got 'not a uri'; invalid ce_type header: String should have at "
        "least 1 character",
    ),
    "bad extension name": (
        b"{}",
        [*BASE, ("ce_tenant-id", b"acme")],
        None,
        "invalid header ce_tenant-id: extension name 'tenant-id' must use only lowercase "
        "letters a-z and digits 0-9",
    ),
    "ce_data": (
        b"{}",
        [*BASE, ("ce_data", b"x")],
        None,
        "invalid header ce_data: 'data' is a CloudEvents attribute of its own, not an extension",
    ),
    "ce_datacontenttype": (
        b"{}",
        [*BASE, ("ce_datacontenttype", b"application/json")],
        None,
        "header ce_datacontenttype is not allowed: use content-type",
    ),
    "bad content-type": (
        b"{}",
        [*BASE, ("content-type", b"json")],
        None,
        "invalid content-type header: must be a media type such as 'application/json', got 'json'",
    ),
    "key not utf-8": (
        b"{}",
        BASE,
        b"\x80k",
        "the message key is not valid UTF-8 (byte 0x80 at offset 0) and there is no "
        "ce_partitionkey header",
    ),
}


@pytest.mark.parametrize(
    ("value", "headers", "key", "message"), DECODE_ERRORS.values(), ids=DECODE_ERRORS.keys()
)
def test_decode_says_exactly_what_is_wrong(value, headers, key, message):
    with pytest.raises(EnvelopeError) as caught:
        decode(value, headers, key)

    assert str(caught.value) == message


def test_envelope_error_is_a_value_error_and_a_pipeline_error():
    assert issubclass(EnvelopeError, ValueError)
    assert issubclass(EnvelopeError, PipelineError)


# --- Event: defaults and validation -----------------------------------------------------------


def test_defaults_are_a_fresh_uuid7_id_the_current_utc_time_and_json():
    before = datetime.now(UTC)
    event = Event(source="/s", type="t")
    after = datetime.now(UTC)

    assert event_id_time(event.id) <= after
    assert before <= event.time <= after
    assert event.time.tzinfo is UTC
    assert event.specversion == "1.0"
    assert event.datacontenttype == "application/json"
    assert event.extensions == {}
    assert event.data is None
    assert Event(source="/s", type="t").id != event.id


def test_an_event_cannot_be_changed():
    with pytest.raises(ValidationError, match="Instance is frozen"):
        KNOWN.subject = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    "traceparent",
    [
        TRACEPARENT,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        "00-00000000000000000000000000000001-0000000000000001-ff",
    ],
)
def test_valid_traceparents_are_accepted(traceparent):
    assert _event(traceparent=traceparent).traceparent == traceparent


@pytest.mark.parametrize(
    ("traceparent", "message"),
    [
        ("", "must be a W3C traceparent '00-<32 lowercase hex trace-id>"),
        ("4bf92f3577b34da6a3ce929d0e0e4736", "must be a W3C traceparent '00-<32"),
        ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "must be a W3C traceparent"),
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "must be a W3C traceparent"),
        ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", "must be a W3C traceparent"),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", "must be a W3C traceparent"),
        (
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "must be a W3C traceparent whose trace-id is not all zeros",
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "must be a W3C traceparent whose parent-id is not all zeros",
        ),
    ],
)
def test_invalid_traceparents_are_refused_with_the_reason(traceparent, message):
    with pytest.raises(ValidationError) as caught:
        _event(traceparent=traceparent)

    assert caught.value.errors()[0]["loc"] == ("traceparent",)
    assert message in caught.value.errors()[0]["msg"]


def _nested_lists(depth: int) -> list[Any]:
    outer: list[Any] = []
    inner = outer
    for _ in range(depth - 1):
        inner.append([])
        inner = inner[0]
    return outer


INVALID_EVENTS = {
    "empty source": (
        {"source": ""},
        "source",
        "String should have at least 1 character",
    ),
    "source with a space": (
        {"source": "/my orders"},
        "source",
        "must be a URI-reference (RFC 3986: ASCII, no spaces, %-escapes as %XX), got '/my orders'",
    ),
    "source with a bad escape": (
        {"source": "/a%zz"},
        "source",
        "must be a URI-reference (RFC 3986: ASCII, no spaces, %-escapes as %XX), got '/a%zz'",
    ),
    "source with a bad scheme": (
        {"source": "1orders:x"},
        "source",
        "must be a URI-reference (RFC 3986), but '1orders' before ':' is not a valid scheme",
    ),
    "empty type": ({"type": ""}, "type", "String should have at least 1 character"),
    "empty id": ({"id": ""}, "id", "String should have at least 1 character"),
    "naive time": (
        {"time": datetime(2024, 1, 1)},
        "time",
        "must be timezone-aware (e.g. datetime.now(UTC)), got naive 2024-01-01T00:00:00",
    ),
    "time as text": (
        {"time": "2024-01-01T00:00:00Z"},
        "time",
        "Input should be a valid datetime",
    ),
    "other specversion": ({"specversion": "0.3"}, "specversion", "Input should be '1.0'"),
    "unknown field": ({"partition_key": "k"}, "partition_key", "Extra inputs are not permitted"),
    "bad content type": (
        {"datacontenttype": "json"},
        "datacontenttype",
        "must be a media type such as 'application/json', got 'json'",
    ),
    "bytes under json": (
        {"data": b"{}"},
        "data",
        "is bytes but datacontenttype 'application/json' is JSON: give the parsed value, or a "
        "non-JSON content type such as 'application/octet-stream'",
    ),
    "text under a binary type": (
        {"datacontenttype": "text/plain", "data": "hello"},
        "data",
        "must be bytes (or None) for the non-JSON datacontenttype 'text/plain', got str",
    ),
    "NaN in data": (
        {"data": {"a": [1, {"b": float("nan")}]}},
        "data",
        "data['a'][1]['b'] is not JSON-compatible: nan is not a JSON number",
    ),
    "tuple in data": (
        {"data": {"a": (1, 2)}},
        "data",
        "data['a'] is not JSON-compatible: type tuple is not a JSON type",
    ),
    "non-str key in data": (
        {"data": {"a": {1: "x"}}},
        "data",
        "data['a'] is not JSON-compatible: key 1 is of type int, not str",
    ),
    "lone surrogate in data": (
        {"data": ["ok", "\udc80"]},
        "data",
        "data[1] is not JSON-compatible: a string holds '\\udc80', not UTF-8",
    ),
    "data nested too deep": (
        {"data": _nested_lists(257)},
        "data",
        "data nests more than 256 JSON lists/objects deep",
    ),
    "extension with a dash": (
        {"extensions": {"tenant-id": "x"}},
        "extensions",
        "extension name 'tenant-id' must use only lowercase letters a-z and digits 0-9",
    ),
    "extension shadowing an attribute": (
        {"extensions": {"subject": "x"}},
        "extensions",
        "'subject' is a CloudEvents attribute of its own, not an extension",
    ),
    "extension value not text": (
        {"extensions": {"priority": 5}},
        "extensions",
        "Input should be a valid string",
    ),
    "empty partitionkey": (
        {"partitionkey": ""},
        "partitionkey",
        "String should have at least 1 character",
    ),
}


@pytest.mark.parametrize(
    ("fields", "field", "message"), INVALID_EVENTS.values(), ids=INVALID_EVENTS.keys()
)
def test_an_invalid_event_is_refused_naming_the_field_and_the_reason(fields, field, message):
    with pytest.raises(ValidationError) as caught:
        _event(**fields)

    (error,) = caught.value.errors()
    assert error["loc"][0] == field
    assert error["msg"] == message


def test_json_data_nested_up_to_the_limit_is_accepted():
    event = _event(data=_nested_lists(256))

    message = encode(event)

    assert message.value == b"[" * 256 + b"]" * 256
    assert decode(message.value, message.headers) == event


# --- interoperability with the official CloudEvents SDK (no broker needed) ---------------------


def _sdk_v1() -> tuple[Any, Any]:
    """The SDK's classic API: ``cloudevents.kafka`` in 1.x, ``cloudevents.v1.kafka`` in 2.x."""
    try:
        from cloudevents import http, kafka
    except ImportError:
        from cloudevents.v1 import http, kafka
    return kafka, http


def test_the_cloudevents_sdk_reads_what_we_encode():
    kafka, _ = _sdk_v1()
    event = KNOWN.model_copy(update={"extensions": {"tenant": "acme"}})
    message = encode(event)

    read = kafka.from_binary(
        kafka.KafkaMessage(headers=dict(message.headers), key=message.key, value=message.value)
    )

    assert read["id"] == event.id
    assert read["source"] == event.source
    assert read["type"] == event.type
    assert read["specversion"] == "1.0"
    assert read["time"] == "2024-07-15T13:45:35.022000Z"
    assert read["subject"] == event.subject
    assert read["datacontenttype"] == "application/json"
    assert read["traceparent"] == TRACEPARENT
    assert read["correlationid"] == event.correlationid
    assert read["causationid"] == event.causationid
    assert read["tenant"] == "acme"
    assert read["partitionkey"] == b"order-42"  # the classic API reads the key, as bytes
    assert read.get_data() == event.data


def test_we_decode_what_the_cloudevents_sdk_encodes():
    kafka, http = _sdk_v1()
    sdk_event = http.CloudEvent.create(
        {
            "id": "sdk-1",
            "source": "https://example.com/orders",
            "type": "com.example.order.created",
            "time": "2024-01-01T01:00:00+01:00",
            "subject": "order-1",
            "datacontenttype": "application/json",
            "partitionkey": "order-1",
            "tenant": "acme",
        },
        {"total": 3},
    )
    message = kafka.to_binary(sdk_event)
    key = message.key.encode() if isinstance(message.key, str) else message.key

    event = decode(message.value, list(message.headers.items()), key)

    assert event == Event(
        id="sdk-1",
        source="https://example.com/orders",
        type="com.example.order.created",
        time=JAN_1,
        subject="order-1",
        partitionkey="order-1",
        extensions={"tenant": "acme"},
        data={"total": 3},
    )


def test_the_cloudevents_sdk_2_core_binding_reads_what_we_encode():
    binding = pytest.importorskip("cloudevents.core.bindings.kafka")
    event = KNOWN.model_copy(update={"extensions": {"tenant": "acme"}})
    message = encode(event)

    read = binding.from_binary_event(
        binding.KafkaMessage(headers=dict(message.headers), key=message.key, value=message.value)
    )

    assert read.get_id() == event.id
    assert read.get_source() == event.source
    assert read.get_type() == event.type
    assert read.get_time() == event.time
    assert read.get_subject() == event.subject
    assert read.get_extension("tenant") == "acme"
    assert read.get_extension("traceparent") == TRACEPARENT
    assert read.get_extension("partitionkey") == "order-42"
    assert read.get_data() == event.data


# --- decode: the fast paths give the same results and errors -----------------------------------


def test_a_typical_event_round_trips_without_walking_its_json(monkeypatch):
    event = _event(
        partitionkey="key-1", subject="s-1", time=JAN_1, data={"seq": 5, "n": 105, "x": [1.5]}
    )
    message = encode(event)

    def no_walk(data: Any) -> None:
        raise AssertionError("decode walked JSON it had just parsed")

    monkeypatch.setattr("pipeline.envelope.event.check_json", no_walk)

    assert decode(message.value, list(message.headers), message.key) == event


def test_events_made_directly_are_still_walked_whatever_the_context():
    fields = {"source": "/s", "type": "t", "data": ["ok", "\ud800"]}
    message = "data[1] is not JSON-compatible: a string holds '\\ud800', not UTF-8"

    for context in (None, {}, {CHECKED_JSON: ["ok", "\ud800"]}):
        with pytest.raises(ValidationError) as caught:
            Event.model_validate(fields, context=context)
        assert caught.value.errors()[0]["msg"] == message


FAST_PATH_ERRORS = {
    "lone surrogate from an escape": (
        b'["ok","\\ud800"]',
        BASE,
        "invalid value: data[1] is not JSON-compatible: a string holds '\\ud800', not UTF-8",
    ),
    "lone surrogate in a key": (
        b'{"\\udc80":1}',
        BASE,
        "invalid value: data is not JSON-compatible: a string holds '\\udc80', not UTF-8",
    ),
    "lists nested 300 deep": (
        b"[" * 300 + b"]" * 300,
        BASE,
        "invalid value: data nests more than 256 JSON lists/objects deep",
    ),
    "objects nested 257 deep": (
        b'{"a":' * 257 + b"1" + b"}" * 257,
        BASE,
        "invalid value: data nests more than 256 JSON lists/objects deep",
    ),
    "float overflowing by its exponent": (
        b'{"x":[1,-1E400]}',
        BASE,
        "invalid value: data['x'][1] is not JSON-compatible: -inf is not a JSON number",
    ),
    "float overflowing by its digits": (
        b"[" + b"9" * 309 + b".5]",
        BASE,
        "invalid value: data[0] is not JSON-compatible: inf is not a JSON number",
    ),
    "byte order mark": (
        b"\xef\xbb\xbf{}",
        BASE,
        "value is not valid JSON for content-type 'application/json': Unexpected UTF-8 BOM "
        "(decode using utf-8-sig) at line 1 column 1",
    ),
    "extra data": (
        b'{"a":1} x',
        BASE,
        "value is not valid JSON for content-type 'application/json': Extra data at line 1 "
        "column 9",
    ),
    "duplicate lowercase header": (
        b"{}",
        [*BASE, ("ce_id", b"e-2")],
        "duplicate ce_id header",
    ),
    "time at 24:00": (
        b"{}",
        _replacing("ce_time", b"2024-01-01T24:00:00.000000Z"),
        "invalid ce_time header '2024-01-01T24:00:00.000000Z': hour must be in 0..23",
    ),
    "time with a leap second": (
        b"{}",
        _replacing("ce_time", b"2024-12-31T23:59:60.000000Z"),
        "invalid ce_time header '2024-12-31T23:59:60.000000Z': second must be in 0..59",
    ),
}


@pytest.mark.parametrize(
    ("value", "headers", "message"), FAST_PATH_ERRORS.values(), ids=FAST_PATH_ERRORS.keys()
)
def test_decode_refuses_what_its_fast_paths_must_not_let_through(value, headers, message):
    with pytest.raises(EnvelopeError) as caught:
        decode(value, headers)

    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("value", "data"),
    [
        (b' {"a": [1, 2]}\n', {"a": [1, 2]}),
        (b'"\\u00e9\\ud83d\\ude00"', "é😀"),
        (b"[1e300, 2.5E-400]", [1e300, 0.0]),
        (b"[" * 256 + b"]" * 256, _nested_lists(256)),
    ],
)
def test_json_the_fast_path_leaves_to_the_walk_is_still_accepted(value, data):
    assert decode(value, BASE).data == data


@pytest.mark.parametrize(
    ("ce_time", "time"),
    [
        (b"2024-07-15T13:45:35.022000Z", datetime(2024, 7, 15, 13, 45, 35, 22_000, tzinfo=UTC)),
        (b"2024-07-15t13:45:35.022000z", datetime(2024, 7, 15, 13, 45, 35, 22_000, tzinfo=UTC)),
        (b"2024-02-29T00:00:00.000001Z", datetime(2024, 2, 29, 0, 0, 0, 1, tzinfo=UTC)),
    ],
)
def test_time_in_the_encoded_form_and_near_it_is_read_as_utc(ce_time, time):
    decoded = decode(b"{}", _replacing("ce_time", ce_time)).time

    assert decoded == time
    assert decoded.tzinfo is UTC


def test_headers_other_than_attributes_or_as_str_are_read_as_before():
    headers = [
        *BASE,
        ("x-trace", b"\xff"),
        ("ce_tenant", b"acme"),
        ("ce_subject", "text"),
        ("Content-Type", bytearray(b"application/json")),
    ]

    event = decode(b"{}", headers)

    assert event.extensions == {"tenant": "acme"}
    assert event.subject == "text"
    assert event.datacontenttype == "application/json"
