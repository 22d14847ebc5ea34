"""``pipeline consume``'s JSON for one message from producers other than ours (no broker)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME

from pipeline.cli.consume_message import message_json
from pipeline.envelope.consumed_headers import UNKNOWN_HEADER_NAME, HeaderNameError, read_headers


@dataclass
class FakeMessage:
    _value: bytes | None
    _headers: list[tuple[str, bytes]] = field(default_factory=list)
    _key: bytes | None = None

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 7

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, 1_700_000_000_000

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers


REQUIRED = [
    ("ce_specversion", b"1.0"),
    ("ce_id", b"c-1"),
    ("ce_source", b"/console"),
    ("ce_type", b"com.example.console"),
]


def test_an_event_without_ce_time_is_printed_with_time_null():
    printed = message_json(
        FakeMessage(b'{"n":1}', [*REQUIRED, ("content-type", b"application/json")])
    )

    assert "error" not in printed
    assert (printed["id"], printed["time"], printed["data"]) == ("c-1", None, {"n": 1})


def test_a_header_value_that_is_not_utf8_is_base64_and_never_taken_for_text():
    # One message carries the byte 0xFE, the other the four characters \xfe: escaped, they
    # printed alike.
    byte = message_json(FakeMessage(b"{}", [*REQUIRED, ("x-val", b"\xfe")]))
    text = message_json(FakeMessage(b"{}", [*REQUIRED, ("x-val", b"\\xfe")]))
    not_an_event = message_json(FakeMessage(b"{}", [("x-val", b"\xfe"), ("x-ok", b"ok")]))

    assert byte["headers"] == [["x-val", {"base64": "/g=="}]]
    assert text["headers"] == [["x-val", "\\xfe"]]
    assert "error" in not_an_event
    assert not_an_event["headers"] == [["x-val", {"base64": "/g=="}], ["x-ok", "ok"]]


def test_a_structured_event_is_printed_as_the_same_event_in_binary_mode():
    structured = {
        "specversion": "1.0",
        "id": "c-1",
        "source": "/console",
        "type": "com.example.console",
        "datacontenttype": "text/plain",
        "data": "hello",
    }
    binary = message_json(FakeMessage(b"hello", [*REQUIRED, ("content-type", b"text/plain")]))

    printed = message_json(
        FakeMessage(
            json.dumps(structured).encode(), [("content-type", b"application/cloudevents+json")]
        )
    )

    assert "error" not in printed
    assert {k: v for k, v in printed.items() if k != "headers"} == {
        k: v for k, v in binary.items() if k != "headers"
    }
    assert printed["data"] == "hello"


class BadHeaderMessage(FakeMessage):
    """What confluent-kafka does with a header name that is not UTF-8: ``headers()`` raises a
    SystemError caused by the name's UnicodeDecodeError; and then nothing may touch it."""

    def __init__(self, cause: BaseException | None) -> None:
        super().__init__(b'{"a":1}', _key=b"k")
        self.cause = cause
        self.failed = False

    def __getattribute__(self, name: str) -> Any:
        if name not in ("failed", "cause", "__dict__", "__class__") and object.__getattribute__(
            self, "failed"
        ):
            raise AssertionError(f"{name} used after headers() failed")
        return object.__getattribute__(self, name)

    def headers(self) -> list[tuple[str, bytes]]:
        self.failed = True
        error = SystemError("<method 'headers'> returned a result with an exception set")
        raise error from self.cause


def test_a_header_name_that_is_not_utf8_is_printed_escaped_with_headers_null():
    name = b"x-bad\xff\xfe"
    cause = UnicodeDecodeError("utf-8", name, 5, 6, "invalid start byte")

    printed = message_json(BadHeaderMessage(cause))

    assert printed == {
        "topic": "t",
        "partition": 0,
        "offset": 7,
        "timestamp": 1_700_000_000_000,
        "key": "k",
        "error": 'header name "x-bad\\xff\\xfe": not UTF-8 text, which Kafka\'s Python client '
        "(confluent-kafka) cannot read, so none of this message's headers can be had",
        "headers": None,
        "value_base64": "eyJhIjoxfQ==",
    }


def test_a_header_name_whose_bytes_cannot_be_had_is_named_in_general_terms():
    printed = message_json(BadHeaderMessage(None))

    assert printed["error"].startswith(f"{UNKNOWN_HEADER_NAME}: not UTF-8 text")
    assert printed["headers"] is None


def test_read_headers_calls_headers_once_and_names_the_bytes():
    name = b"n\xe9"
    message = BadHeaderMessage(UnicodeDecodeError("utf-8", name, 1, 2, "invalid"))

    with pytest.raises(HeaderNameError) as raised:
        read_headers(message)

    assert raised.value.name == name
