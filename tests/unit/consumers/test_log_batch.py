"""The pure parts of one log batch: planning, classifying bulk items, dead letters, commits."""

import json
from datetime import UTC, datetime

import pytest

from consumers.log_batch import (
    DLQ_VALUE_PREFIX,
    TRUNCATED_HEADER,
    VALUE_SIZE_HEADER,
    SourceRecord,
    UnshippableRecord,
    classify,
    commit_positions,
    dlq_message,
    fallback_id,
    item_error_type,
    item_reason,
    item_verdict,
    partition_lag,
    plan_batch,
    refused_runs,
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


@pytest.mark.parametrize("stamp", [1_721_001_599_999, "1721001599999"])
def test_a_timestamp_in_epoch_milliseconds_is_shipped_as_it_came(stamp):
    # Elasticsearch's default date format reads it (epoch_millis): no dead letter for it.
    actions, dead = plan_batch([_record(0, _doc(stamp=stamp))])
    assert dead == []
    assert actions[0].index == "pipeline-logs-2024.07.14"
    assert json.loads(actions[0].source)["@timestamp"] == stamp


def test_a_timestamp_more_than_a_day_ahead_of_the_shippers_clock_indexes_by_today():
    # A host with a wrong clock would otherwise make an index per day it claims. Its records'
    # Kafka timestamps are no check: its own producer set them with the same clock.
    now = datetime(2024, 7, 16, 12, 0, tzinfo=UTC)
    within = _record(0, _doc(stamp="2024-07-17T11:00:00Z"))
    future = _record(1, _doc(stamp="2099-01-01T00:00:00Z"))
    past = _record(2, _doc(stamp="2024-06-20T00:00:00Z"))
    actions, dead = plan_batch([within, future, past], now=now)
    assert dead == []
    assert [a.index for a in actions] == [
        "pipeline-logs-2024.07.17",
        "pipeline-logs-2024.07.16",
        "pipeline-logs-2024.06.20",
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
        (b"[1, 2]", "undecodable: a JSON array, not an object"),
        (b"null", "undecodable: a JSON null, not an object"),
        (b"42", "undecodable: a JSON number, not an object"),
        (b'"text"', "undecodable: a JSON string, not an object"),
        (b'{"message": "no time"}', "undecodable: no @timestamp (an ECS document has one)"),
        (b'{"@timestamp": null}', "undecodable: no @timestamp (an ECS document has one)"),
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
    [(200, "ok"), (201, "ok"), (429, "blocked"), (500, "retry"), (503, "retry"), (None, "retry"),
     (400, "reject"), (404, "reject"), (409, "reject"), (413, "reject")],
)  # fmt: skip
def test_item_statuses_are_classified(status, verdict):
    assert classify(status) == verdict


@pytest.mark.parametrize(
    ("status", "error_type", "verdict"),
    [(403, "cluster_block_exception", "blocked"),  # index.blocks.write=true
     (429, "cluster_block_exception", "blocked"),  # the flood-stage disk watermark
     (503, "cluster_block_exception", "blocked"),  # no master elected
     (429, "es_rejected_execution_exception", "blocked"),  # its write queue full
     (400, "document_parsing_exception", "reject"),  # a mapping conflict: the document's
     (403, "security_exception", "reject")],
)  # fmt: skip
def test_a_cluster_that_takes_no_writes_is_told_from_a_refused_document(
    status, error_type, verdict
):
    # The review: every record of a write-blocked index was dead-lettered (122 letters).
    item = {"status": status, "error": {"type": error_type, "reason": "r"}}
    assert classify(status, error_type) == verdict
    assert item_verdict(item) == verdict


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


# --- documents Elasticsearch could not take, or not give back ---------------------------------


@pytest.mark.parametrize("depth", [3_000, 300])
def test_a_document_nested_too_deeply_is_dead_lettered_not_a_crash(depth):
    # 3,000 levels: json's own RecursionError crashed the shipper on every restart; 300: parsed,
    # but beyond what the shipper walks or Elasticsearch is asked to take.
    deep = "[" * depth + "]" * depth
    line = f'{{"@timestamp": "2024-07-15T00:00:00Z", "message": "m", "x": {deep}}}'.encode()
    good = _record(1, _doc())

    actions, dead = plan_batch([_record(0, line), good])

    assert [a.record for a in actions] == [good]
    assert dead[0].reason.startswith("undecodable: JSON nested too deeply")
    assert dead[0].kind == "undecodable"


def test_a_cloudevent_whose_data_nests_too_deeply_is_dead_lettered():
    deep = "{" + '"a":{' * 3_000 + "}" * 3_001
    value = (
        '{"specversion": "1.0", "id": "e", "source": "/s", "type": "log", "data": ' + deep + "}"
    ).encode()
    record = SourceRecord("logs", 0, 0, b"svc", value, (), ARRIVED_MS)

    actions, dead = plan_batch([record])

    assert actions == [] and dead[0].reason.startswith("undecodable: JSON nested too deeply")


def test_an_event_id_over_512_utf8_bytes_gets_the_position_id():
    # 300 "é": 300 characters but 600 bytes; Elasticsearch refused the whole bulk request.
    long_id, at_limit = "é" * 300, "é" * 256
    actions, dead = plan_batch([_record(0, _doc(event_id=long_id)), _record(1, _doc(at_limit))])
    assert dead == []
    assert actions[0].id == fallback_id(actions[0].record)
    assert actions[1].id == at_limit
    assert json.loads(actions[0].source)["event"]["id"] == long_id  # the document keeps it


def test_a_utf8_byte_order_mark_is_dropped_from_what_is_sent():
    line = json.dumps(_doc()).encode()
    actions, dead = plan_batch([_record(0, b"\xef\xbb\xbf" + line)])
    assert dead == []
    assert actions[0].source == line


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_a_line_not_in_utf8_is_dead_lettered_not_stored_as_raw_bytes(encoding):
    # json.loads reads these (it guesses the encoding), and the raw bytes went to
    # Elasticsearch as _source, which it could then not return in any search.
    value = json.dumps(_doc()).encode(encoding)
    actions, dead = plan_batch([_record(0, value)])
    assert actions == []
    assert dead[0].reason.startswith(("undecodable: not UTF-8 JSON", "undecodable: not JSON"))


def test_lone_surrogates_are_replaced_so_that_what_is_sent_is_utf8():
    line = (
        b'{"@timestamp": "2024-07-15T00:00:00Z", "message": "a\\ud800b",'
        b' "labels": {"k\\udfff": ["\\uDBFF"]}, "ok": "\\ud83d\\ude00"}'
    )
    actions, dead = plan_batch([_record(0, line)])
    assert dead == []
    source = actions[0].source
    document = json.loads(source.decode("utf-8"))  # strict UTF-8
    source.decode("utf-8").encode("utf-8")  # and no surrogate in it
    assert document["message"] == "a\ufffdb"
    assert document["labels"] == {"k\ufffd": ["\ufffd"]}
    assert document["ok"] == "\N{GRINNING FACE}"


def test_a_line_whose_escapes_are_all_valid_is_sent_as_it_came():
    line = b'{"@timestamp": "2024-07-15T00:00:00Z", "message": "\\ud83d\\ude00 \\u00e9"}'
    assert plan_batch([_record(0, line)])[0][0].source == line


# --- far-past timestamps, levels --------------------------------------------------------------


@pytest.mark.parametrize("stamp", ["1970-01-01T00:00:00Z", "0001-01-01T00:00:00Z"])
def test_a_timestamp_far_in_the_past_indexes_by_today_and_keeps_its_timestamp(stamp):
    now = datetime(2024, 7, 16, 12, 0, tzinfo=UTC)
    actions, dead = plan_batch([_record(0, _doc(stamp=stamp))], now=now)
    assert dead == []
    assert actions[0].index == "pipeline-logs-2024.07.16"
    assert json.loads(actions[0].source)["@timestamp"] == stamp


def test_the_year_of_a_daily_index_has_four_digits():
    actions, _ = plan_batch([_record(0, _doc(stamp="0001-01-01T00:00:00Z"))])  # no clock given
    assert actions[0].index == "pipeline-logs-0001.01.01"


def test_a_timestamp_that_is_no_utc_time_is_dead_lettered():
    actions, dead = plan_batch([_record(0, _doc(stamp="0001-01-01T00:00:00+01:00"))])
    assert actions == [] and dead[0].reason.startswith("undecodable: no valid @timestamp")


def test_log_levels_are_lower_cased_nested_or_dotted():
    nested = _doc(log={"level": "ERROR", "logger": "x"})
    dotted = {**_doc(event_id="e2"), "log.level": "Warning"}
    actions, dead = plan_batch([_record(0, nested), _record(1, dotted), _record(2, _doc("e3"))])
    assert dead == []
    assert json.loads(actions[0].source)["log"] == {"level": "error", "logger": "x"}
    assert json.loads(actions[1].source)["log.level"] == "warning"
    assert actions[2].source == _record(2, _doc("e3")).value  # nothing to change: as it came


# --- a bulk request refused whole -------------------------------------------------------------


class _Refusal:
    body = {"error": {"type": "action_request_validation_exception", "reason": "id too long"}}


def _refused():
    return {"status": 400, "error": "ApiError(400, ...)", "exception": _Refusal()}


def test_the_items_of_a_request_refused_whole_are_found_in_runs():
    items = [_refused(), _refused(), {"status": 201}, _refused(), {"status": 400}, _refused()]
    items += [_refused(), _refused()]
    assert refused_runs(items) == [(0, 2), (5, 8)]  # a run of one is its culprit
    assert item_reason(_refused()) == "action_request_validation_exception: id too long"
    assert item_error_type(_refused()) == "elasticsearch.action_request_validation_exception"
    # 429 or 5xx for the whole request is retried as it is, not split.
    assert refused_runs([{"status": 503, "exception": _Refusal()}] * 2) == []


# --- a dead letter too large for its topic ----------------------------------------------------


def test_a_dead_letter_cut_down_says_what_was_cut():
    value = b"x" * (DLQ_VALUE_PREFIX * 3)
    letter = UnshippableRecord(_record(4, value), "undecodable: not JSON")
    when = datetime(2024, 7, 15, tzinfo=UTC)
    whole = dlq_message(letter, "g", when)
    cut = dlq_message(letter, "g", when, shrink=1)
    bare = dlq_message(letter, "g", when, shrink=2)

    assert whole.value == value and TRUNCATED_HEADER not in dict(whole.headers)
    assert cut.value == value[:DLQ_VALUE_PREFIX] and cut.key == b"svc"
    assert dict(cut.headers)[TRUNCATED_HEADER] == b"value"
    assert dict(cut.headers)["origin"] == b"x"
    assert (bare.key, bare.value) == (None, None)
    headers = dict(bare.headers)
    assert "origin" not in headers and headers["dlq.reason"] == b"undecodable"
    assert headers[TRUNCATED_HEADER] == b"key,value,headers"
    assert headers[VALUE_SIZE_HEADER] == str(len(value)).encode()
    assert headers["dlq.original.offset"] == b"4"
    # Refused only for the batch it was in: a short value has nothing to cut, it goes whole.
    small = UnshippableRecord(_record(5, b"junk"), "undecodable: not JSON")
    assert dlq_message(small, "g", when, shrink=1) == dlq_message(small, "g", when)


# --- lag --------------------------------------------------------------------------------------


def test_the_lag_of_a_partition_counts_from_the_position_else_the_committed_offset():
    assert partition_lag(0, 100, 90, 50) == 10
    # Nothing read since assigned (no position): from the commit, not from offset 0.
    assert partition_lag(0, 100, -1001, 100) == 0
    assert partition_lag(0, 100, -1001, -1001) == 100  # a new group reads from the start
    assert partition_lag(40, 100, -1001, -1001) == 60
