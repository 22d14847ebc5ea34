"""The pure parts of one log batch: planning, classifying bulk items, dead letters, commits."""

import json
from datetime import UTC, datetime

import pytest

from consumers.log_batch import (
    SourceRecord,
    UnshippableRecord,
    classify,
    commit_positions,
    dlq_message,
    fallback_id,
    item_reason,
    plan_batch,
)

EVENT_ID = "01900000-0000-7000-8000-000000000001"


def _doc(event_id=EVENT_ID, stamp="2024-07-15T23:59:59.999Z", **more):
    return {"@timestamp": stamp, "message": "m", "event": {"id": event_id}, **more}


#: When the test records reached Kafka: 2024-07-16T00:00:00Z (a second after _doc's stamp).
ARRIVED_MS = 1_721_088_000_000


def _record(offset, value, partition=0, topic="logs"):
    raw = value if isinstance(value, bytes | type(None)) else json.dumps(value).encode()
    return SourceRecord(
        topic, partition, offset, b"svc", raw, (("origin", b"x"),), ARRIVED_MS + offset
    )


# --- batch -> actions -------------------------------------------------------------------------


def test_a_log_document_becomes_an_index_action_with_its_event_id_and_daily_index():
    record = _record(5, _doc())
    actions, dead = plan_batch([record], alias="pipeline-logs")
    assert dead == []
    assert [a.bulk_action() for a in actions] == [
        {
            "_op_type": "index",
            "_index": "pipeline-logs-2024.07.15",
            "_id": EVENT_ID,
            "_source": record.value,
        }
    ]


def test_the_index_is_the_utc_day_of_the_records_own_timestamp():
    actions, _ = plan_batch([_record(0, _doc(stamp="2024-07-16T01:30:00+02:00"))])
    assert actions[0].index == "pipeline-logs-2024.07.15"


def test_a_timestamp_more_than_a_day_ahead_of_the_shippers_clock_indexes_by_today():
    # A host with a wrong clock would otherwise make an index per day it claims. Its records'
    # Kafka timestamps are no check: its own producer set them with the same clock.
    now = datetime(2024, 7, 16, 12, 0, tzinfo=UTC)
    within = _record(0, _doc(stamp="2024-07-17T11:00:00Z"))
    future = _record(1, _doc(stamp="2099-01-01T00:00:00Z"))
    past = _record(2, _doc(stamp="2020-01-01T00:00:00Z"))
    actions, dead = plan_batch([within, future, past], now=now)
    assert dead == []
    assert [a.index for a in actions] == [
        "pipeline-logs-2024.07.17",
        "pipeline-logs-2024.07.16",
        "pipeline-logs-2020.01.01",
    ]
    assert json.loads(actions[1].source)["@timestamp"] == "2099-01-01T00:00:00Z"
    # Without a clock to compare with: the document's own day.
    assert plan_batch([future])[0][0].index == "pipeline-logs-2099.01.01"


def test_a_record_without_event_id_gets_a_stable_id_from_its_position():
    record = _record(7, {"@timestamp": "2024-07-15T00:00:00Z", "message": "m"})
    actions, _ = plan_batch([record])
    again, _ = plan_batch([record])
    assert actions[0].id == again[0].id == fallback_id(record)
    assert actions[0].id != fallback_id(_record(8, {}))


def test_a_multi_line_json_value_is_sent_as_one_line():
    record = _record(0, json.dumps(_doc(), indent=2).encode())
    actions, _ = plan_batch([record])
    assert b"\n" not in actions[0].source
    assert json.loads(actions[0].source) == _doc()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "undecodable: the record has no value"),
        (b"{not json", "undecodable: not JSON"),
        (b"[1, 2]", "undecodable: a JSON list, not an object"),
        (b'{"message": "no time"}', "undecodable: no valid @timestamp"),
        (b'{"@timestamp": "yesterday"}', "undecodable: no valid @timestamp"),
    ],
)
def test_records_that_are_not_log_documents_are_dead_lettered_at_once(value, reason):
    actions, dead = plan_batch([_record(0, value)])
    assert actions == []
    assert dead[0].reason.startswith(reason)
    assert dead[0].kind == "undecodable"


# --- per-item classification ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "verdict"),
    [(200, "ok"), (201, "ok"), (429, "retry"), (500, "retry"), (503, "retry"), (None, "retry"),
     (400, "reject"), (404, "reject"), (409, "reject"), (413, "reject")],
)  # fmt: skip
def test_item_statuses_are_classified(status, verdict):
    assert classify(status) == verdict


def test_elasticsearchs_reason_is_one_line_with_its_causes():
    item = {
        "status": 400,
        "error": {
            "type": "document_parsing_exception",
            "reason": "[1:20] failed to parse field [process.pid] of type [long]",
            "caused_by": {"type": "illegal_argument_exception", "reason": 'For input\n"abc"'},
        },
    }
    assert item_reason(item) == (
        "document_parsing_exception: [1:20] failed to parse field [process.pid] of type [long]"
        ' / illegal_argument_exception: For input "abc"'
    )


# --- commit positions -------------------------------------------------------------------------


def test_commit_positions_stop_below_the_first_record_not_done():
    offsets = {("logs", 0): [10, 11, 12, 13], ("logs", 1): [5, 6], ("logs", 2): [8, 9]}
    done = {("logs", 0, 10), ("logs", 0, 11), ("logs", 0, 13), ("logs", 1, 5), ("logs", 1, 6),
            ("logs", 2, 9)}  # fmt: skip
    assert commit_positions(offsets, done) == {("logs", 0): 12, ("logs", 1): 7}


# --- dead letters -----------------------------------------------------------------------------


def test_a_dead_letter_keeps_the_original_bytes_and_says_why_in_headers():
    record = _record(3, _doc(), partition=2)
    unshippable = UnshippableRecord(record, "document_parsing_exception: bad", 400, "rejected",
                                    "elasticsearch.document_parsing_exception")  # fmt: skip
    message = dlq_message(unshippable, "shipper", now=datetime(2024, 7, 15, tzinfo=UTC))
    headers = dict(message.headers)
    assert (message.key, message.value) == (record.key, record.value)
    assert headers["origin"] == b"x"
    assert headers["dlq.reason"] == b"rejected"
    assert headers["dlq.error.message"] == b"document_parsing_exception: bad"
    assert headers["dlq.elasticsearch.status"] == b"400"
    assert (headers["dlq.original.topic"], headers["dlq.original.partition"],
            headers["dlq.original.offset"]) == (b"logs", b"2", b"3")  # fmt: skip
    assert headers["dlq.consumer.group"] == b"shipper"
