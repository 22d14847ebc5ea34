"""The shipper's pure parts, and one batch through scripted Kafka and Elasticsearch stand-ins."""

import json
from datetime import UTC, datetime

import pytest
from confluent_kafka import TopicPartition
from elastic_transport import ConnectionError as TransportConnectionError

from consumers import log_shipper
from consumers.log_shipper import (
    DeadLetter,
    LogShipper,
    SourceRecord,
    backoff_s,
    classify,
    commit_positions,
    dlq_message,
    fallback_id,
    item_reason,
    plan_batch,
)
from pipeline.settings import LogSettings

EVENT_ID = "01900000-0000-7000-8000-000000000001"


def _doc(event_id=EVENT_ID, stamp="2024-07-15T23:59:59.999Z", **more):
    return {"@timestamp": stamp, "message": "m", "event": {"id": event_id}, **more}


def _record(offset, value, partition=0, topic="logs"):
    raw = value if isinstance(value, bytes | type(None)) else json.dumps(value).encode()
    return SourceRecord(topic, partition, offset, b"svc", raw, (("origin", b"x"),), 1000 + offset)


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
    ("status", "outcome"),
    [(200, "ok"), (201, "ok"), (429, "retry"), (500, "retry"), (503, "retry"), (None, "retry"),
     (400, "reject"), (404, "reject"), (409, "reject"), (413, "reject")],
)  # fmt: skip
def test_item_statuses_are_classified(status, outcome):
    assert classify(status) == outcome


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


def test_backoff_doubles_up_to_its_limit():
    assert [backoff_s(n, 0.5, 3.0) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


# --- commit positions -------------------------------------------------------------------------


def test_commit_positions_stop_below_the_first_record_not_done():
    offsets = {("logs", 0): [10, 11, 12, 13], ("logs", 1): [5, 6], ("logs", 2): [8, 9]}
    done = {("logs", 0, 10), ("logs", 0, 11), ("logs", 0, 13), ("logs", 1, 5), ("logs", 1, 6),
            ("logs", 2, 9)}  # fmt: skip
    assert commit_positions(offsets, done) == {("logs", 0): 12, ("logs", 1): 7}


# --- dead letters -----------------------------------------------------------------------------


def test_a_dead_letter_keeps_the_original_bytes_and_says_why_in_headers():
    record = _record(3, _doc(), partition=2)
    letter = DeadLetter(record, "document_parsing_exception: bad", 400, "rejected",
                        "elasticsearch.document_parsing_exception")  # fmt: skip
    message = dlq_message(letter, "shipper", now=datetime(2024, 7, 15, tzinfo=UTC))
    headers = dict(message.headers)
    assert (message.key, message.value) == (record.key, record.value)
    assert headers["origin"] == b"x"
    assert headers["dlq.reason"] == b"rejected"
    assert headers["dlq.error.message"] == b"document_parsing_exception: bad"
    assert headers["dlq.elasticsearch.status"] == b"400"
    assert (headers["dlq.original.topic"], headers["dlq.original.partition"],
            headers["dlq.original.offset"]) == (b"logs", b"2", b"3")  # fmt: skip
    assert headers["dlq.consumer.group"] == b"shipper"


# --- one batch through stand-ins --------------------------------------------------------------


class FakeConsumer:
    def __init__(self, partitions=(0,)):
        self.assigned = [TopicPartition("logs", p) for p in partitions]
        self.commits = []
        self.paused = []
        self.resumed = []

    def assignment(self):
        return self.assigned

    def commit(self, offsets, asynchronous):
        self.commits.append({(tp.topic, tp.partition): tp.offset for tp in offsets})

    def consume(self, num_messages=1, timeout=0):
        return []

    def pause(self, partitions):
        self.paused.append(list(partitions))

    def resume(self, partitions):
        self.resumed.append(list(partitions))

    def seek(self, partition):
        pass


class FakeProducer:
    def __init__(self):
        self.sent = []

    def produce(self, topic, key=None, value=None, headers=None, on_delivery=None):
        self.sent.append((topic, key, value, dict(headers)))
        on_delivery(None, None)

    def poll(self, timeout=0):
        return 0

    def flush(self, timeout=0):
        return 0


class FakeEs:
    def options(self, **kwargs):
        return self

    class cluster:
        @staticmethod
        def health(**kwargs):
            return {"status": "green", "timed_out": False}


def _item(status, error=None):
    item = {"_id": "x", "status": status}
    if error:
        item["error"] = {"type": error, "reason": "nope"}
    return (200 <= status < 300, {"index": item})


def _shipper(consumer, producer, **settings):
    config = LogSettings(retry_initial_backoff_s=0.001, outage_initial_backoff_s=0.001, **settings)
    shipper = LogShipper(consumer, FakeEs(), producer, config, consumer_group="g")
    shipper._assigned = {(tp.topic, tp.partition) for tp in consumer.assigned}
    return shipper


def _script(monkeypatch, *answers):
    """Each bulk call gets the next answer: a list of item results, or an exception."""
    calls = []
    queue = list(answers)

    def fake_bulk(es, actions, **kwargs):
        sent = list(actions)
        calls.append([a["_id"] for a in sent])
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        assert len(answer) == len(sent)
        yield from answer

    monkeypatch.setattr(log_shipper, "streaming_bulk", fake_bulk)
    return calls


def test_429_is_retried_a_mapping_conflict_dead_lettered_and_then_all_committed(monkeypatch):
    records = [_record(n, _doc(event_id=f"e{n}")) for n in range(3)]
    calls = _script(
        monkeypatch,
        [_item(201), _item(429, "es_rejected_execution_exception"),
         _item(400, "document_parsing_exception")],
        [_item(201)],
    )  # fmt: skip
    consumer, producer = FakeConsumer(), FakeProducer()
    shipper = _shipper(consumer, producer)
    assert shipper.ship_batch(records) == {("logs", 0): 3}
    assert calls == [["e0", "e1", "e2"], ["e1"]]
    assert consumer.commits == [{("logs", 0): 3}]
    [(topic, _key, value, headers)] = producer.sent
    assert topic == "logs.dlq" and value == records[2].value
    assert headers["dlq.reason"] == b"rejected"
    assert headers["dlq.elasticsearch.status"] == b"400"
    counters = shipper.counters
    assert (counters.shipped, counters.retried, counters.dead_lettered) == (2, 1, 1)


def test_5xx_past_the_retry_limit_is_dead_lettered_as_retries_exhausted(monkeypatch):
    _script(monkeypatch, *[[_item(503, "unavailable_shards_exception")]] * 3)
    consumer, producer = FakeConsumer(), FakeProducer()
    shipper = _shipper(consumer, producer, retry_attempts=3)
    shipper.ship_batch([_record(0, _doc())])
    [(_topic, _key, _value, headers)] = producer.sent
    assert headers["dlq.reason"] == b"retries_exhausted"
    assert headers["dlq.attempts"] == b"3"
    assert consumer.commits == [{("logs", 0): 1}]


def test_elasticsearch_unreachable_pauses_probes_and_resumes_with_the_same_batch(monkeypatch):
    calls = _script(monkeypatch, TransportConnectionError("refused"), [_item(201), _item(201)])
    consumer, producer = FakeConsumer(), FakeProducer()
    shipper = _shipper(consumer, producer)
    shipper.ship_batch([_record(0, _doc(event_id="a")), _record(1, _doc(event_id="b"))])
    assert calls == [["a", "b"], ["a", "b"]]
    assert consumer.paused and consumer.resumed
    assert consumer.commits == [{("logs", 0): 2}]
    assert shipper.counters.outages == 1 and producer.sent == []


def test_stopping_during_an_outage_commits_nothing_that_was_not_acknowledged(monkeypatch):
    _script(monkeypatch, TransportConnectionError("refused"))
    consumer, producer = FakeConsumer(), FakeProducer()
    shipper = _shipper(consumer, producer)
    shipper.stop.set()
    assert shipper.ship_batch([_record(0, _doc())]) == {}
    assert consumer.commits == []


def test_undecodable_records_are_committed_once_dead_lettered(monkeypatch):
    _script(monkeypatch, [_item(201)])
    consumer, producer = FakeConsumer(), FakeProducer()
    shipper = _shipper(consumer, producer)
    shipper.ship_batch([_record(0, b"garbage"), _record(1, _doc())])
    assert consumer.commits == [{("logs", 0): 2}]
    assert producer.sent[0][3]["dlq.reason"] == b"undecodable"


def test_a_revoked_partition_is_not_committed(monkeypatch):
    _script(monkeypatch, [_item(201), _item(201)])
    consumer, producer = FakeConsumer(partitions=(0, 1)), FakeProducer()
    shipper = _shipper(consumer, producer)
    shipper._revoked_cb(consumer, [TopicPartition("logs", 1)])
    shipper.ship_batch([_record(0, _doc(event_id="a")), _record(0, _doc(event_id="b"), 1)])
    assert consumer.commits == [{("logs", 0): 1}]
