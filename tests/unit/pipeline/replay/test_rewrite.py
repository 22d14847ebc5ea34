"""--rewrite-ids: a fresh ce_id, everything else as recorded."""

from pipeline.ids import event_id_time
from pipeline.replay.rewrite import rewrite_event_id


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
