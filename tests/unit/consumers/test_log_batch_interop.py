"""Log documents sent as CloudEvents by other producers: the shipper indexes the event's data,
read as processors read it."""

import json

from consumers.log_batch import SourceRecord, plan_batch

DOC = {"@timestamp": "2024-07-15T12:00:00Z", "message": "m", "event": {"id": "log-1"}}


def _record(value: bytes, headers: tuple[tuple[str, bytes], ...]) -> SourceRecord:
    return SourceRecord("logs", 0, 3, b"svc", value, headers, 1000)


def test_a_structured_cloudevent_s_data_is_the_log_document():
    value = json.dumps(
        {"specversion": "1.0", "id": "e-1", "source": "/svc", "type": "log", "data": DOC}
    ).encode()

    actions, dead = plan_batch(
        [_record(value, (("content-type", b"application/cloudevents+json"),))]
    )

    assert dead == []
    assert [(action.id, json.loads(action.source)) for action in actions] == [("log-1", DOC)]


def test_a_binary_cloudevent_without_time_ships_its_value():
    headers = (
        ("ce_specversion", b"1.0"),
        ("ce_id", b"e-2"),
        ("ce_source", b"/svc"),
        ("ce_type", b"log"),
        ("content-type", b"application/json"),
    )

    actions, dead = plan_batch([_record(json.dumps(DOC).encode(), headers)])

    assert dead == []
    assert [json.loads(action.source) for action in actions] == [DOC]
