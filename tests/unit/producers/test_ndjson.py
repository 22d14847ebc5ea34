"""NDJSON lines into events or rejections: every rejection reason, key paths, options, --strict."""

from __future__ import annotations

import base64
import itertools
import json
import random
import re
from typing import Any

import pytest

from pipeline.envelope import KafkaMessage, decode
from producers.ndjson import (
    DEFAULT_EVENT_TYPE,
    DEFAULT_SOURCE,
    MAX_MESSAGE_BYTES,
    KeyPath,
    LineRules,
    ProduceOptionError,
    ReadyEvent,
    RejectedLine,
    line_encoder,
    line_rules,
    message_size,
    parse_headers,
    parse_key_path,
    parse_line,
    parse_lines,
    refused,
    rejections_in,
    too_large,
)

RUN = "run-1"
ORDER = {
    "order_id": "order-1",
    "customer_id": "customer-1",
    "lines": [{"sku": "sku-1", "quantity": 2, "unit_price": "12.50"}],
}


def rules(**options: Any) -> LineRules:
    return line_rules(topic=options.pop("topic", "test.events"), correlation_id=RUN, **options)


def ready(line: str | bytes, **options: Any) -> ReadyEvent:
    parsed = parse_line(rules(**options), 1, line)
    assert isinstance(parsed, ReadyEvent), parsed
    return parsed


def reason(line: str | bytes, **options: Any) -> str:
    parsed = parse_line(rules(**options), 1, line)
    assert isinstance(parsed, RejectedLine), parsed
    return parsed.reason


# --- lines --------------------------------------------------------------------------------------


def test_a_json_object_becomes_an_event_whose_message_decodes_back_to_it() -> None:
    parsed = ready('{"id": "a-1", "n": 1}\n', key_field="id")

    assert parsed.line == 1
    assert parsed.event.data == {"id": "a-1", "n": 1}
    assert parsed.event.partitionkey == "a-1"
    assert parsed.event.source == DEFAULT_SOURCE == "/pipeline/cli"
    assert parsed.event.type == DEFAULT_EVENT_TYPE == "com.example.event"
    assert parsed.event.correlationid == RUN
    assert parsed.message.key == b"a-1"
    assert parsed.message.value == b'{"id":"a-1","n":1}'
    message = parsed.message
    assert decode(message.value, message.headers, message.key) == parsed.event


def test_blank_lines_are_skipped_but_still_counted() -> None:
    parsed = list(parse_lines(rules(), ['{"a": 1}\n', "\n", "   \t\r\n", '{"a": 2}\n']))

    assert [p.line for p in parsed] == [1, 4]


def test_bytes_lines_with_crlf_and_a_byte_order_mark_are_read() -> None:
    first = parse_line(rules(), 1, b'\xef\xbb\xbf{"a": 1}\r\n')
    second = parse_line(rules(), 2, b'{"a": "caf\xc3\xa9"}\r\n')

    assert isinstance(first, ReadyEvent) and first.event.data == {"a": 1}
    assert isinstance(second, ReadyEvent) and second.event.data == {"a": "café"}


def test_invalid_json_is_rejected_with_jsons_message_and_column() -> None:
    parsed = parse_line(rules(), 7, '{"a": 1,, "b": 2}\n')

    assert parsed == RejectedLine(
        7,
        "invalid JSON: Expecting property name enclosed in double quotes at column 9",
        '{"a": 1,, "b": 2}',
    )


def test_trailing_garbage_after_the_object_is_invalid_json() -> None:
    assert reason('{"a": 1} x') == "invalid JSON: Extra data at column 10"


def test_an_unterminated_string_says_where_it_starts_with_one_at() -> None:
    assert reason('{"a": "open') == "invalid JSON: Unterminated string starting at column 7"


def test_a_byte_order_mark_after_the_first_line_is_said_without_python_advice() -> None:
    parsed = parse_line(rules(), 2, '\ufeff{"a": 1}')

    assert isinstance(parsed, RejectedLine), parsed
    assert parsed.reason == (
        "invalid JSON: a byte order mark (BOM) before the JSON; only the first line may have "
        "one at column 1"
    )


def test_nan_and_infinity_are_not_json_numbers() -> None:
    assert reason('{"a": NaN}') == "invalid JSON: NaN is not a JSON number"
    assert reason('{"a": -Infinity}') == "invalid JSON: -Infinity is not a JSON number"


def test_a_line_that_is_not_utf8_is_rejected_with_the_bad_byte_and_kept_exactly() -> None:
    parsed = parse_line(rules(), 3, b'{"a": "\xff"}\n')

    assert parsed == RejectedLine(
        3, "not valid UTF-8: byte 0xff at offset 7", '{"a": "\ufffd"}', b'{"a": "\xff"}'
    )
    assert parsed.as_json() == {  # the rejects file's line: the bytes are not lost
        "line": 3,
        "reason": "not valid UTF-8: byte 0xff at offset 7",
        "raw": '{"a": "\ufffd"}',
        "raw_base64": base64.b64encode(b'{"a": "\xff"}').decode(),
    }
    assert "raw_base64" not in parse_line(rules(), 4, b"[1]\n").as_json()  # UTF-8: raw is it


@pytest.mark.parametrize(
    ("line", "kind"),
    [("[1, 2]", "a list"), ('"text"', "a string"), ("42", "a number"), ("null", "null")],
)
def test_a_line_that_is_not_an_object_is_rejected(line: str, kind: str) -> None:
    assert reason(line) == f"expected a JSON object (the event's data), got {kind}"


def test_data_that_is_json_but_not_a_valid_event_is_rejected() -> None:
    # A lone surrogate escape parses, but is not UTF-8 text: the envelope refuses it.
    assert reason('{"a": "\\ud800"}').startswith("not a valid event: ")


def test_a_key_that_is_not_valid_text_is_named_in_the_reason() -> None:
    said = reason('{"id": "\\udc00x"}', key_field="id")

    assert said.startswith("not a valid event: the key at $.id: "), said


def test_the_rejection_record_is_line_reason_and_raw() -> None:
    rejection = RejectedLine(4, "why", "raw line")

    assert rejection.as_json() == {"line": 4, "reason": "why", "raw": "raw line"}


# --- keys ---------------------------------------------------------------------------------------


def test_without_a_key_option_events_have_no_key() -> None:
    parsed = ready('{"id": "a"}')

    assert parsed.event.partitionkey is None
    assert parsed.message.key is None


def test_key_names_a_top_level_field_even_with_dots_in_its_name() -> None:
    assert ready('{"a.b": "k", "a": {"b": "no"}}', key_field="a.b").message.key == b"k"


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("$.order.id", '{"order": {"id": "k"}}'),
        ("order.id", '{"order": {"id": "k"}}'),
        ("lines[1].sku", '{"lines": [{"sku": "x"}, {"sku": "k"}]}'),
        ("$['a.b']", '{"a.b": "k"}'),
        ('$["x]y"].z', '{"x]y": {"z": "k"}}'),
    ],
)
def test_key_from_follows_dotted_and_bracketed_paths(path: str, line: str) -> None:
    assert ready(line, key_from=path).message.key == b"k"


def test_an_integer_key_is_its_decimal_text() -> None:
    assert ready('{"id": 12345678901234567890}', key_field="id").message.key == (
        b"12345678901234567890"
    )


@pytest.mark.parametrize(
    ("line", "path", "expected"),
    [
        ('{"x": 1}', "id", "missing key $.id: no field 'id' in $"),
        ('{"order": {}}', "order.id", "missing key $.order.id: no field 'id' in $.order"),
        (
            '{"order": "o"}',
            "order.id",
            "missing key $.order.id: $.order is a string, not an object",
        ),
        ('{"l": [1]}', "l[3]", "missing key $.l[3]: $.l has no index 3 (length 1)"),
        ('{"l": {"0": 1}}', "l[0]", "missing key $.l[0]: $.l is an object, not a list"),
        ('{"0": "no"}', "$[0]", "missing key $[0]: $ is an object, not a list"),
        ('{"id": null}', "id", "missing key $.id: it is null"),
        ('{"id": ""}', "id", "missing key $.id: it is an empty string"),
        ('{"id": true}', "id", "key $.id is a boolean; a key must be a string or an integer"),
        ('{"id": 1.5}', "id", "key $.id is a number; a key must be a string or an integer"),
        ('{"id": {"a": 1}}', "id", "key $.id is an object; a key must be a string or an integer"),
        ('{"id": [1]}', "id", "key $.id is a list; a key must be a string or an integer"),
    ],
)
def test_a_missing_or_unusable_key_rejects_the_line(line: str, path: str, expected: str) -> None:
    assert reason(line, key_from=path) == expected


@pytest.mark.parametrize(
    ("text", "steps"),
    [
        ("$.a", ("a",)),
        ("a", ("a",)),
        (" a.b ", ("a", "b")),
        ("$.a[0][12].b", ("a", 0, 12, "b")),
        ("$['a b']", ("a b",)),
        ("x['y.z']", ("x", "y.z")),
    ],
)
def test_key_paths_parse_to_steps(text: str, steps: tuple[str | int, ...]) -> None:
    assert parse_key_path(text) == KeyPath(steps)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("$", "names no field"),
        ("", "names no field"),
        ("$.", "a field name must follow '.'"),
        ("a..b", "a field name must follow '.'"),
        ("a[-1]", "at character 2: negative indices are not read: expected [<index>] or"),
        ("a[x]", "at character 2: expected [<index>] or ['<field>']"),
        ("lines[*].sku", "a key is one value: no wildcard, expected [<index>] or"),
        ("a[0", "'[' is never closed"),
        ("$['a", "never closed"),
        ("$['']", "an empty field name"),
        ("$a", "unexpected 'a'"),
    ],
)
def test_a_malformed_key_path_is_a_usage_error(text: str, message: str) -> None:
    with pytest.raises(ProduceOptionError, match=re.escape(message)):
        parse_key_path(text)


def test_key_paths_display_in_jsonpath_form() -> None:
    assert str(parse_key_path("order.lines[2]['unit price']")) == '$.order.lines[2]["unit price"]'


# --- request types ------------------------------------------------------------------------------


def test_a_request_type_validates_and_keys_by_its_field_and_sends_the_models_json() -> None:
    parsed = ready(json.dumps(ORDER), event_type="place_order", topic="requests.orders")

    assert parsed.event.type == "com.example.requests.place_order"
    assert parsed.message.key == b"order-1"
    assert parsed.event.data == {**ORDER, "currency": "EUR"}  # the model's default filled in


def test_a_request_type_is_also_found_by_its_cloudevents_type() -> None:
    parsed = ready(
        json.dumps({"order_id": "o-9", "reason": "changed my mind"}),
        event_type="com.example.requests.cancel_order",
        topic="requests.orders",
    )

    assert parsed.event.type == "com.example.requests.cancel_order"
    assert parsed.message.key == b"o-9"


def test_data_that_does_not_fit_the_request_type_is_rejected_with_the_models_reasons() -> None:
    line = json.dumps({"order_id": "order-1", "lines": []})

    assert reason(line, event_type="place_order", topic="requests.orders") == (
        "not a valid place_order: customer_id: Field required; "
        "lines: List should have at least 1 item after validation, not 0"
    )


@pytest.mark.parametrize("price", ["9.999999999999999999", "0.10000000000000001"])
def test_a_price_written_as_a_number_keeps_its_decimals_and_is_refused_as_the_gateway_does(
    price: str,
) -> None:
    # Read as a binary float, these went out as "10.00" and "0.10" (an outside re-check).
    line = json.dumps(ORDER).replace('"12.50"', price)

    assert "unit_price" in reason(line, event_type="place_order", topic="requests.orders")


def test_a_price_written_as_a_number_with_two_decimals_is_taken_as_written() -> None:
    line = json.dumps(ORDER).replace('"12.50"', "1.5E+1")

    parsed = ready(line, event_type="place_order", topic="requests.orders")

    assert parsed.event.data["lines"][0]["unit_price"] == "15.00"


def test_a_request_with_a_name_given_twice_is_rejected_as_the_gateway_refuses_it() -> None:
    # The gateway answers 400 to this body; a file used to send it keyed by the last order_id.
    line = json.dumps(ORDER).replace('{"order_id": ', '{"order_id": "po-5", "order_id": ', 1)

    assert reason(line, event_type="place_order", topic="requests.orders") == (
        "invalid JSON: the name 'order_id' is given twice in one object"
    )


def test_a_request_type_refuses_another_topic_unless_allowed() -> None:
    with pytest.raises(
        ProduceOptionError, match=re.escape("place_order requests travel on requests.orders")
    ):
        rules(event_type="place_order", topic="requests.customers")

    allowed = rules(event_type="place_order", topic="test.orders", allow_other_topic=True)
    assert allowed.request is not None and allowed.request.name == "place_order"


def test_a_request_type_is_keyed_only_by_its_own_key_field() -> None:
    with pytest.raises(ProduceOptionError, match="keyed by their order_id field"):
        rules(event_type="place_order", topic="requests.orders", key_field="customer_id")

    same = rules(event_type="place_order", topic="requests.orders", key_from="$.order_id")
    accepted = parse_line(same, 1, json.dumps(ORDER))
    assert isinstance(accepted, ReadyEvent), accepted
    assert accepted.event.partitionkey == "order-1"
    assert accepted.message.key == b"order-1"
    assert accepted.event.data == {**ORDER, "currency": "EUR"}  # validated as a place_order


def test_an_unknown_bare_type_name_is_refused_as_a_likely_typo() -> None:
    with pytest.raises(ProduceOptionError, match="'place_ordr' is not a request type"):
        rules(event_type="place_ordr")
    with pytest.raises(ProduceOptionError, match="is not a request type"):
        rules(event_type="com.example.requests.ship_order")


def test_any_other_type_is_the_cloudevents_type_as_given() -> None:
    parsed = ready('{"a": 1}', event_type="com.acme.invoice.paid")

    assert parsed.event.type == "com.acme.invoice.paid"


# --- options ------------------------------------------------------------------------------------


def test_extra_headers_follow_the_envelopes_headers() -> None:
    parsed = ready('{"a": 1}', headers=["tenant=acme", "trace=a=b", "empty="])

    assert parsed.message.headers[-4:] == [
        ("content-type", b"application/json"),
        ("tenant", b"acme"),
        ("trace", b"a=b"),
        ("empty", b""),
    ]


@pytest.mark.parametrize("name", ["ce_id", "CE_Type", "ce_custom", "content-type", "Content-Type"])
def test_headers_may_not_collide_with_the_envelope(name: str) -> None:
    with pytest.raises(ProduceOptionError, match="CloudEvents envelope header"):
        parse_headers([f"{name}=x"])


@pytest.mark.parametrize("pair", ["novalue", "=value", " =x"])
def test_a_header_must_be_name_equals_value(pair: str) -> None:
    with pytest.raises(ProduceOptionError, match="is not name=value"):
        parse_headers([pair])


def test_key_and_key_from_exclude_each_other() -> None:
    with pytest.raises(ProduceOptionError, match="not both"):
        rules(key_field="a", key_from="b")


def test_an_invalid_source_is_a_usage_error() -> None:
    with pytest.raises(ProduceOptionError, match="invalid --source: must be a URI-reference"):
        rules(source="not a uri")


def test_every_event_of_a_run_shares_the_correlation_id_and_has_its_own_id() -> None:
    parsed = list(parse_lines(rules(), ['{"n": 1}', '{"n": 2}', '{"n": 3}']))

    assert {p.event.correlationid for p in parsed if isinstance(p, ReadyEvent)} == {RUN}
    assert len({p.event.id for p in parsed if isinstance(p, ReadyEvent)}) == 3


# --- --strict -----------------------------------------------------------------------------------


def test_strict_first_pass_finds_every_rejection_and_builds_no_event_for_later() -> None:
    lines = ['{"id": "a"}', "oops", "", '{"x": 1}', '{"id": "b"}']

    found = list(rejections_in(rules(key_field="id"), lines))

    assert [(r.line, r.raw) for r in found] == [(2, "oops"), (4, '{"x": 1}')]
    assert list(rejections_in(rules(key_field="id"), lines)) == found  # the same again


def test_strict_first_pass_yields_each_rejection_as_it_reads_holding_none() -> None:
    endless = (f"bad line {n}" for n in itertools.count())  # /dev/urandom, say

    first = list(itertools.islice(rejections_in(rules(key_field="id"), endless), 3))

    assert [r.line for r in first] == [1, 2, 3]


def test_strict_first_pass_of_a_clean_input_is_empty() -> None:
    assert list(rejections_in(rules(key_field="id"), ['{"id": "a"}', '{"id": "b"}'])) == []


def test_strict_first_pass_rejects_an_event_too_large_for_the_producer() -> None:
    big = json.dumps({"id": "big", "pad": "x" * 1_100_000})
    lines = ['{"id": "a"}', big, '{"id": "b"}']

    found = list(rejections_in(rules(key_field="id"), lines))

    assert [(r.line, r.raw) for r in found] == [(2, big)]
    assert re.fullmatch(
        r"event too large: 1,1\d\d,\d{3} bytes with its key, headers and record overhead; "
        r"the producer's limit \(message\.max\.bytes\) is 1,000,000",
        found[0].reason,
    ), found[0].reason


def test_strict_first_pass_accepts_an_event_of_exactly_the_limit() -> None:
    parsed = ready('{"pad": ""}')
    padding = MAX_MESSAGE_BYTES - message_size(parsed.message)
    line = json.dumps({"pad": "x" * padding}, separators=(",", ":"))

    assert message_size(ready(line).message) == MAX_MESSAGE_BYTES
    assert list(rejections_in(rules(), [line])) == []
    assert next(rejections_in(rules(), [line], max_bytes=MAX_MESSAGE_BYTES - 1)).line == 1


def test_message_size_is_librdkafkas_max_wire_size() -> None:
    # 36 bytes of widest record overhead, the key, the value, and each header's name and value
    # with their zigzag varint lengths (1 byte up to 63, 2 bytes from 64).
    message = KafkaMessage(b"key", b"v" * 10, [("ce_id", b"i" * 64), ("h", b"")])

    assert message_size(message) == 36 + 3 + 10 + (1 + 5 + 2 + 64) + (1 + 1 + 1 + 0)
    assert message_size(KafkaMessage(None, None, [])) == 36


def test_an_event_that_fits_is_not_too_large() -> None:
    assert too_large(ready('{"id": "a"}')) is None


def test_a_refusal_at_send_time_is_a_rejection_of_the_line_with_its_raw_text() -> None:
    small = parse_line(rules(), 3, b'{"id": "a"}\r\n')
    big_line = json.dumps({"pad": "x" * 1_000_000})
    big = parse_line(rules(), 4, big_line + "\n")
    assert isinstance(small, ReadyEvent) and isinstance(big, ReadyEvent)

    assert refused(small, "Local: Unknown partition") == RejectedLine(
        3, "refused by the Kafka client: Local: Unknown partition", '{"id": "a"}'
    )
    rejection = refused(big, "Broker: Message size too large")
    assert (rejection.line, rejection.raw) == (4, big_line)
    assert rejection.reason.startswith(
        "refused by the Kafka client: Broker: Message size too large (1,000,"
    )
    assert rejection.reason.endswith("the producer's limit (message.max.bytes) is 1,000,000)")


# --- the fast path ------------------------------------------------------------------------------

RULES_OF_THE_FAST_PATH = {
    "no key": {},
    "key field": {"key_field": "id"},
    "key path": {"key_from": "$.order.id"},
    "extra headers": {"key_field": "id", "headers": ["tenant=acme", "empty="]},
}

KEYED_LINES = [
    b'{"id": "k-1", "order": {"id": "o-1"}, "n": 1.5, "note": "caf\xc3\xa9"}',
    b'{"id": 12, "order": {"id": 7}}',
    b'{"id": "", "order": {"id": null}}',
    b'{"id": true, "order": []}',
    b'{"id": "\\ud800", "order": {"id": "\\u00e9"}}',
    b'{"id": "k", "order": {"id": "o"}, "x": 1e-7}',
]


def _same_as_parse_line(rules: LineRules, number: int, line: bytes) -> bool:
    """Whether the fast path took the line; fails if parse_line makes another message of it."""
    encoder = line_encoder(rules)
    assert encoder is not None
    parts = encoder(line)
    if parts is None:
        return False
    parsed = parse_line(rules, number, line)
    assert isinstance(parsed, ReadyEvent), (line, parsed)
    key, value, headers = parts
    expected = parsed.message
    assert (key, value) == (expected.key, expected.value), line
    assert [name for name, _ in headers] == [name for name, _ in expected.headers]
    varying = {"ce_id", "ce_time"}
    assert [h for h in headers if h[0] not in varying] == [
        h for h in expected.headers if h[0] not in varying
    ]
    event = decode(value, headers, key)  # a valid event, with its own id and time
    assert event.id != parsed.event.id and event.time is not None
    return True


@pytest.mark.parametrize("options", RULES_OF_THE_FAST_PATH.values(), ids=RULES_OF_THE_FAST_PATH)
def test_the_fast_path_makes_the_message_parse_line_makes_or_leaves_the_line_to_it(options):
    from tests.unit.pipeline.envelope.test_json_data import EDGE_LINES, _mutated
    from tests.unit.pipeline.test_envelope import FAST_PATH_ERRORS

    run = rules(**options)
    lines = [*KEYED_LINES, *EDGE_LINES, *(value for value, _, _ in FAST_PATH_ERRORS.values())]
    generator = random.Random(16)
    lines += [_mutated(generator, generator.choice(KEYED_LINES)) for _ in range(3_000)]

    taken = [line for number, line in enumerate(lines, 1) if _same_as_parse_line(run, number, line)]

    assert KEYED_LINES[0] in taken
    assert (KEYED_LINES[1] in taken) is ("key_field" not in options and "key_from" not in options)
    assert len(taken) > 50  # the fuzzing reaches lines the fast path takes


def test_a_request_type_has_no_fast_path() -> None:
    assert line_encoder(rules(event_type="place_order", topic="requests.orders")) is None


def test_strict_first_pass_finds_the_same_rejections_in_lines_read_as_bytes() -> None:
    big = json.dumps({"id": "big", "pad": "x" * 1_100_000})
    lines = ['{"id": "a"}', "oops", "", '{"x": 1}', big, '{"id": "b"}', '{"id": "c", "x": 1e-7}']
    as_bytes = [line.encode() + b"\n" for line in lines]

    found = list(rejections_in(rules(key_field="id"), as_bytes))

    assert found == list(rejections_in(rules(key_field="id"), lines))
    assert [r.line for r in found] == [2, 4, 5]


def test_strict_first_pass_of_bytes_accepts_an_event_of_exactly_the_limit() -> None:
    parsed = ready('{"pad": ""}')
    padding = MAX_MESSAGE_BYTES - message_size(parsed.message)
    line = json.dumps({"pad": "x" * padding}, separators=(",", ":")).encode()

    assert list(rejections_in(rules(), [line])) == []
    assert next(rejections_in(rules(), [line], max_bytes=MAX_MESSAGE_BYTES - 1)).line == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"event_type": ""}, "--type needs a type (it was empty)"),
        ({"event_type": "  "}, "--type needs a type (it was empty)"),
        ({"source": ""}, "--source needs a source (it was empty)"),
    ],
)
def test_an_empty_type_or_source_is_a_usage_error(options: dict[str, str], message: str) -> None:
    # An empty --type became the default type without a word.
    with pytest.raises(ProduceOptionError, match=re.escape(message)):
        line_rules(topic="t", correlation_id="c", **options)  # type: ignore[arg-type]
