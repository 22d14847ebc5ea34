"""--rewrite-ids: a fresh ce_id, everything else as recorded."""

import json

from pipeline.ids import event_id_time
from pipeline.replay.rewrite import rewrite_event_id, rewrite_ids


def test_only_the_ce_id_value_changes_order_and_other_headers_kept():
    headers = (
        ("ce_specversion", b"1.0"),
        ("ce_id", b"old"),
        ("ce_causationid", b"old"),
        ("trace", None),
        ("trace", b"\xff"),
    )
    rewritten, found = rewrite_event_id(headers, lambda: "new")
    assert found
    assert rewritten == (
        ("ce_specversion", b"1.0"),
        ("ce_id", b"new"),
        ("ce_causationid", b"old"),
        ("trace", None),
        ("trace", b"\xff"),
    )


def test_every_message_gets_its_own_fresh_event_id():
    headers = (("ce_id", b"old"),)
    first, _ = rewrite_event_id(headers)
    second, _ = rewrite_event_id(headers)
    assert first[0][1] != second[0][1] != b"old"
    event_id_time(first[0][1].decode())  # a real event id (UUIDv7), which carries its time


def test_headers_without_an_event_id_come_back_as_they_are():
    headers = (("content-type", b"application/json"),)
    assert rewrite_event_id(headers, lambda: "new") == (headers, False)


def _counting_ids():
    numbers = iter(range(1, 100))
    return lambda: f"fresh-{next(numbers)}"


def test_a_structured_event_gets_a_fresh_id_in_its_value_and_keeps_the_rest():
    value = (
        b'{"specversion": "1.0", "id": "struct-1", "source": "/s", "type": "t", "data": {"id": 7}}'
    )
    headers = (("content-type", b"application/cloudevents+json; charset=utf-8"),)

    new_headers, new_value = rewrite_ids(headers, value, _counting_ids())

    assert new_headers == headers
    assert json.loads(new_value) == {
        "specversion": "1.0",
        "id": "fresh-1",
        "source": "/s",
        "type": "t",
        "data": {"id": 7},  # the data's own id is not the event's
    }


def test_a_classic_sdk_structured_event_without_headers_gets_a_fresh_id_too():
    value = '{"specversion":"1.0","id":"s-2","source":"/s","type":"t"}'

    _, new_value = rewrite_ids((), value, _counting_ids())

    assert json.loads(new_value)["id"] == "fresh-1"


def test_a_binary_event_keeps_its_value_and_anything_else_comes_back_as_it_is():
    binary = (("ce_id", b"b-1"), ("ce_specversion", b"1.0"))
    value = b'{"specversion": "1.0", "id": "data-not-event"}'
    headers, kept = rewrite_ids(binary, value, _counting_ids())
    assert dict(headers)["ce_id"] == b"fresh-1" and kept is value

    plain = (("ce_specversion", b"1.0"),)  # binary mode without ce_id: nothing to rewrite
    assert rewrite_ids(plain, value, _counting_ids()) == (plain, value)
    assert rewrite_ids((), b"not json", _counting_ids()) == ((), b"not json")


def test_only_the_text_of_a_structured_event_s_id_changes_numbers_and_spacing_kept():
    value = (
        b'{"specversion": "1.0",  "id" : "struct-1", "data": {"amount": '
        b'3.14159265358979323846264, "big": 1e400, "p": 1e2, "s": "\xc3\xa9", "id": "x"}}'
    )
    headers = (("content-type", b"application/cloudevents+json"),)

    _, new_value = rewrite_ids(headers, value, _counting_ids())

    assert new_value == value.replace(b'"struct-1"', b'"fresh-1"')
