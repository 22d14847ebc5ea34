"""--rewrite-ids: a fresh ce_id, everything else as recorded."""

import json

import pytest

from pipeline.envelope.binary_mode import decode
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


# --- the id the decoder reads is the one rewritten ---------------------------------------------

STRUCTURED = b'{"specversion": "1.0", "id": "orig", "source": "/s", "type": "t", "data": {"id": 7}}'


def test_every_top_level_id_of_a_value_that_names_it_twice_gets_the_fresh_id():
    # json.loads, which the decoder uses, keeps the last of duplicate members.
    value = b'{"specversion":"1.0","id":"orig-s5","source":"/s","id":"dup-s5","type":"t"}'
    headers = (("content-type", b"application/cloudevents+json"),)

    new_headers, new_value = rewrite_ids(headers, value, _counting_ids())

    assert new_headers == headers
    assert new_value == value.replace(b'"orig-s5"', b'"fresh-1"').replace(b'"dup-s5"', b'"fresh-1"')
    assert decode(new_value, list(new_headers)).id == "fresh-1"


def test_a_structured_event_with_a_ce_id_header_but_no_ce_specversion_gets_it_in_its_value():
    # The decoder reads it as structured (no ce_specversion, a cloudevents content type): the
    # id it reads is the value's; the header gets the same fresh id.
    headers = (
        ("content-type", b"application/cloudevents+json"),
        ("ce_id", b"header-id"),
        ("trace", b"t"),
    )

    new_headers, new_value = rewrite_ids(headers, STRUCTURED, _counting_ids())

    assert new_value == STRUCTURED.replace(b'"orig"', b'"fresh-1"')
    assert new_headers == (
        ("content-type", b"application/cloudevents+json"),
        ("ce_id", b"fresh-1"),
        ("trace", b"t"),
    )
    assert decode(new_value, list(new_headers)).id == "fresh-1"


BINARY = (
    ("ce_id", b"header-id"),
    ("ce_source", b"/s"),
    ("ce_type", b"t"),
    ("ce_specversion", b"1.0"),
)


@pytest.mark.parametrize(
    "headers",
    [
        (),
        (("content-type", b"application/cloudevents+json"),),
        (("Content-Type", b"application/CloudEvents+json; charset=utf-8"),),
        (("content-type", b"application/json"),),
        (("content-type", b"application/cloudevents+json"), ("ce_id", b"header-id")),
        (("content-type", b"application/cloudevents+json"), ("CE_ID", b"h"), ("ce_type", b"t")),
        (("content-type", b"application/cloudevents+json"), ("ce_traceparent", b"x")),
        BINARY,
        (*BINARY, ("content-type", b"application/cloudevents+json")),
        (("content-type", b"application/json"), *BINARY),
    ],
)
def test_the_event_the_decoder_reads_after_the_rewrite_has_a_fresh_id(headers):
    before = decode(STRUCTURED, list(headers))

    new_headers, new_value = rewrite_ids(headers, STRUCTURED, _counting_ids())

    after = decode(new_value, list(new_headers))
    assert after.id == "fresh-1" != before.id
    assert after.model_dump(exclude={"id"}) == before.model_dump(exclude={"id"})
