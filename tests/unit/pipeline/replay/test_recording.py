"""The recording format: kcat's field names, binary-safe, headers as ordered pairs."""

import json

import pytest

from pipeline.replay.recording import RecordedMessage, RecordingError, format_line, parse_line


def test_a_message_survives_a_round_trip_with_binary_bytes_duplicate_headers_and_nulls():
    message = RecordedMessage(
        topic="t",
        partition=3,
        offset=41,
        key=b"\xff\x00key",
        value=None,
        headers=(("dup", b"one"), ("bin", b"\x80\x81"), ("dup", b"two"), ("none", None)),
        timestamp_ms=1764690000123,
        timestamp_type="logappend",
    )
    line = format_line(message)
    assert parse_line(line) == message
    document = json.loads(line)
    assert list(document) == [
        "topic",
        "partition",
        "offset",
        "tstype",
        "ts",
        "key",
        "payload",
        "headers",
    ]
    assert document["key"] == {"base64": "/wBrZXk="}
    assert document["payload"] is None
    assert document["headers"] == [
        ["dup", "one"],
        ["bin", {"base64": "gIE="}],
        ["dup", "two"],
        ["none", None],
    ]


def test_utf8_text_is_kept_as_text():
    line = format_line(RecordedMessage("t", 0, 0, "clé".encode(), b'{"a": 1}'))
    assert json.loads(line)["key"] == "clé"
    assert json.loads(line)["payload"] == '{"a": 1}'


def test_a_kcat_json_line_with_flat_headers_is_read():
    kcat = (
        '{"topic":"orders","partition":1,"offset":7,"tstype":"create","ts":1700000000000,'
        '"broker":1,"headers":["ce_id","e-1","ce_type","x"],"key":"o-1","payload":"{}"}'
    )
    message = parse_line(kcat)
    assert message.headers == (("ce_id", b"e-1"), ("ce_type", b"x"))
    assert (message.topic, message.partition, message.offset) == ("orders", 1, 7)
    assert message.key == b"o-1" and message.value == b"{}"


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("not json", "not a recorded message"),
        ("[]", "not a JSON object"),
        ('{"partition": 0}', "no topic"),
        ('{"topic": "t", "key": {"base64": "%%%"}}', "key is not valid base64"),
        ('{"topic": "t", "headers": ["a"]}', "alternate names and values"),
        ('{"topic": "t", "tstype": "later"}', "tstype must be one of"),
    ],
)
def test_a_line_that_is_not_a_message_says_where_and_why(line, says):
    with pytest.raises(RecordingError, match=says) as error:
        parse_line(line, where="capture.ndjson:3")
    assert str(error.value).startswith("capture.ndjson:3: ")
