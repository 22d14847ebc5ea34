"""The gateway's request checks: Content-Type, body and id headers, each with its error answer."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from producers.gateway.answers import ErrorAnswer
from producers.gateway.idempotency import fingerprint
from producers.gateway.intake import (
    check_content_type,
    header_id,
    idempotency_key,
    parse_body,
    single_header,
)


def refusal(check, *args) -> ErrorAnswer:
    with pytest.raises(ErrorAnswer) as caught:
        check(*args)
    return caught.value


@pytest.mark.parametrize(
    ("content_type", "charset"),
    [
        ("application/json", None),
        ("application/json; charset=utf-8", "utf-8"),
        ("Application/JSON", "UTF8"),
        ("application/vnd.orders+json", None),
    ],
)
def test_json_content_types_in_utf8_are_accepted(content_type, charset):
    assert check_content_type(content_type, charset) == "utf-8"


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "application/xml"])
def test_other_content_types_are_415(content_type):
    answer = refusal(check_content_type, content_type, None)
    assert (answer.status, answer.code) == (415, "unsupported_media_type")
    assert "Content-Type must be application/json" in answer.message


@pytest.mark.parametrize("charset", ["us-ascii", "US-ASCII", "ascii", "ANSI_X3.4-1968", "646"])
def test_json_in_ascii_a_subset_of_utf8_is_accepted_and_read_as_ascii(charset):
    codec = check_content_type(f"application/json; charset={charset}", charset)

    assert codec == "ascii"
    assert parse_body(b'{"order_id": "o-1"}', codec) == {"order_id": "o-1"}
    answer = refusal(parse_body, '{"order_id": "é"}'.encode(), codec)
    assert (answer.status, answer.code) == (400, "invalid_json")
    assert answer.message == "the body is not ASCII, as its charset says (byte 0xc3 at offset 14)"


@pytest.mark.parametrize("charset", ["latin-1", "utf-16", "utf-8-sig", "no-such-charset"])
def test_json_in_another_charset_is_415(charset):
    answer = refusal(check_content_type, f"application/json; charset={charset}", charset)
    assert (answer.status, answer.code) == (415, "unsupported_media_type")
    assert answer.message == (f"the body must be UTF-8 (or US-ASCII) JSON, got charset {charset!r}")


def test_a_json_object_body_is_parsed():
    assert parse_body(b' {"order_id": "o-1", "n": 2} ') == {"order_id": "o-1", "n": 2}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"  ", "the body is empty: send a JSON object"),
        (b'{"a": "\xff"}', "the body is not UTF-8 (byte 0xff at offset 7)"),
        (b'{"a": 1', "the body is not valid JSON: Expecting ',' delimiter at line 1 column 8"),
        (b'{"a": NaN}', "the body is not valid JSON: NaN is not a JSON number"),
        (b'\xef\xbb\xbf{"a": 1}', "the body is not valid JSON: Unexpected UTF-8 BOM"),
        (
            b'{"a": ' + b"9" * 5000 + b"}",
            "the body is not valid JSON: a number has too many digits",
        ),
        # A proxy that reads the first order_id and the gateway the last would see two requests.
        (
            b'{"order_id": "o-1", "order_id": "o-2"}',
            "the body is not valid JSON: the name 'order_id' is given twice in one object",
        ),
        (
            b'{"lines": [{"sku": "a", "sku": "b"}]}',
            "the body is not valid JSON: the name 'sku' is given twice in one object",
        ),
    ],
)
def test_a_body_that_is_not_json_is_400_invalid_json(body, message):
    answer = refusal(parse_body, body)
    assert (answer.status, answer.code) == (400, "invalid_json")
    assert answer.message.startswith(message)


@pytest.mark.parametrize(
    ("body", "kind"),
    [(b"[1]", "an array"), (b'"x"', "a string"), (b"12", "a number"), (b"1.5", "a number"),
     (b"true", "a boolean"), (b"null", "null")],
)  # fmt: skip
def test_json_that_is_not_an_object_is_400_not_an_object(body, kind):
    answer = refusal(parse_body, body)
    assert (answer.status, answer.code) == (400, "not_an_object")
    assert answer.message == f"the body must be a JSON object, got {kind}"


def test_id_headers_are_optional_but_must_be_printable_ascii_without_spaces():
    assert header_id("X-Correlation-Id", None) is None
    assert header_id("X-Correlation-Id", "req-7") == "req-7"
    answer = refusal(header_id, "X-Correlation-Id", "has space")
    assert (answer.status, answer.code) == (400, "invalid_header")
    assert answer.details == [{"field": "X-Correlation-Id", "message": "invalid"}]


def test_an_error_answer_body_is_the_documented_json():
    answer = ErrorAnswer(409, "request_in_flight", "wait", [{"field": "Idempotency-Key"}])
    assert answer.body() == (
        b'{"error":{"code":"request_in_flight","message":"wait",'
        b'"details":[{"field":"Idempotency-Key"}]}}'
    )


@pytest.mark.parametrize(
    "content_type", ["application/cloudevents+json", "application/cloudevents-batch+json"]
)
def test_a_cloudevent_body_is_415_saying_the_gateway_makes_the_event(content_type):
    answer = refusal(check_content_type, content_type, None)
    assert (answer.status, answer.code) == (415, "unsupported_media_type")
    assert answer.message.startswith("the body is the request's data as application/json")


def test_the_idempotency_key_is_optional_and_given_at_most_once():
    assert idempotency_key([]) is None
    assert idempotency_key(["order-1-attempt"]) == "order-1-attempt"
    answer = refusal(idempotency_key, ["a", "b"])
    assert (answer.status, answer.code) == (400, "invalid_header")
    assert answer.message == "Idempotency-Key given 2 times: send it once"


def test_a_header_taken_once_is_its_one_value_and_a_repeat_is_400_not_the_first_one():
    headers = CIMultiDictProxy(
        CIMultiDict([("x-correlation-id", "a"), ("X-Correlation-Id", "b"), ("traceparent", "t")])
    )
    assert single_header(headers, "traceparent") == "t"
    assert single_header(headers, "X-Client-Id") is None
    answer = refusal(single_header, headers, "X-Correlation-Id")
    assert (answer.status, answer.code) == (400, "invalid_header")
    assert answer.message == "X-Correlation-Id given 2 times: send it once"
    assert answer.details == [{"field": "X-Correlation-Id", "message": "repeated"}]


def test_a_number_with_a_fraction_or_an_exponent_is_the_exact_decimal_written():
    # 9.999999999999999999 was read as the float 10.0, and the event said "10.00": a price
    # with more decimals than a price has went through, rounded (as a string it was refused).
    data = parse_body(
        b'{"p": 9.999999999999999999, "q": 0.10000000000000001, "e": 1e2, "m": -2.50, "n": 2}'
    )

    assert data == {
        "p": Decimal("9.999999999999999999"),
        "q": Decimal("0.10000000000000001"),
        "e": Decimal("1E+2"),
        "m": Decimal("-2.50"),
        "n": 2,
    }
    assert [type(value) for value in data.values()] == [Decimal] * 4 + [int]


@pytest.mark.parametrize(
    "body",
    [
        b'{"lines": [{"unit_price": 12.50, "quantity": 2}], "x": 0.1}',
        b'{"a": 1e400, "b": -0.0, "c": 123456789.123456789}',
        b'{"a": "12.50", "b": [1, 2.5, {"c": 3.25}]}',
    ],
)
def test_a_body_keeps_the_idempotency_fingerprint_it_had_with_floats(body):
    # A key claimed before (the shared store keeps them 24 h) must still match its retry.
    assert fingerprint("place_order", parse_body(body)) == fingerprint(
        "place_order", json.loads(body)
    )
