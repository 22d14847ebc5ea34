"""``pipeline consume``'s JSON for one message from producers other than ours (no broker)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from confluent_kafka import TIMESTAMP_CREATE_TIME

from pipeline.cli.consume import message_json


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
