"""The shipper's loop: one batch through scripted Kafka and Elasticsearch stand-ins."""

import itertools
import json
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from elastic_transport import ConnectionError as TransportConnectionError

from consumers import log_shipper
from consumers.log_batch import SourceRecord
from consumers.log_shipper import LogShipper, retry_policy
from pipeline.errors import PipelineError
from pipeline.settings import LogSettings

EVENT_ID = "01900000-0000-7000-8000-000000000001"


def _doc(event_id=EVENT_ID, stamp="2024-07-15T23:59:59.999Z", **more):
    return {"@timestamp": stamp, "message": "m", "event": {"id": event_id}, **more}


def _record(offset, value, partition=0, topic="logs"):
    raw = value if isinstance(value, bytes | type(None)) else json.dumps(value).encode()
    return SourceRecord(topic, partition, offset, b"svc", raw, (("origin", b"x"),), 1000 + offset)


# --- retries ----------------------------------------------------------------------------------


def test_the_retry_backoff_doubles_up_to_its_limit_without_jitter():
    policy = retry_policy(LogSettings(retry_initial_backoff_s=0.5, retry_max_backoff_s=3.0))
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_first_wait_above_the_limit_is_the_limit():
    policy = retry_policy(LogSettings(retry_initial_backoff_s=5.0, retry_max_backoff_s=3.0))
    assert [policy.delay(n) for n in (1, 2)] == [3.0, 3.0]


def test_retries_stop_after_the_configured_attempts():
    policy = retry_policy(LogSettings(retry_attempts=3))
    assert [policy.exhausted(n) for n in (1, 2, 3)] == [False, False, True]


# --- one batch through stand-ins --------------------------------------------------------------


class FakeConsumer:
    def __init__(self, partitions=(0,)):
        self.assigned = [TopicPartition("logs", p) for p in partitions]
        self.commits = []
        self.paused = []
        self.resumed = []
        self.seeks = []

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
        self.seeks.append((partition.topic, partition.partition, partition.offset))


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


def _shipper(consumer, producer, own_key=None, **settings):
    config = LogSettings(retry_initial_backoff_s=0.001, outage_initial_backoff_s=0.001, **settings)
    shipper = LogShipper(consumer, FakeEs(), producer, config, consumer_group="g", own_key=own_key)
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


def test_a_run_until_idle_gives_up_on_an_elasticsearch_that_stays_away(monkeypatch):
    def unreachable(*_args, **_kwargs):
        raise TransportConnectionError("refused")

    monkeypatch.setattr(log_shipper, "ensure_index_template", unreachable)
    monkeypatch.setattr(FakeEs.cluster, "health", staticmethod(unreachable))
    consumer, producer = FakeConsumer(), FakeProducer()
    shipper = _shipper(consumer, producer)

    with pytest.raises(PipelineError, match=r"unreachable for 0\.05 s \(the --until-idle time\)"):
        shipper.run(until_idle_s=0.05)
    assert consumer.commits == [] and shipper.counters.outages == 1


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


class RefusingProducer(FakeProducer):
    """Refuses, at once, the dead letter of every value in ``refused`` (as librdkafka refuses
    a message over its size limit)."""

    def __init__(self, refused):
        super().__init__()
        self.refused = refused

    def produce(self, topic, key=None, value=None, headers=None, on_delivery=None):
        if value in self.refused:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        super().produce(topic, key, value, headers, on_delivery)


def test_a_dead_letter_kafka_refuses_stays_uncommitted_and_is_read_again(monkeypatch, caplog):
    _script(monkeypatch, [_item(201)], [_item(201)])
    consumer, producer = FakeConsumer(), RefusingProducer({b"huge garbage"})
    shipper = _shipper(consumer, producer)
    first = [_record(0, _doc(event_id="a")), _record(1, b"huge garbage"), _record(2, b"junk")]

    assert shipper.ship_batch(first) == {("logs", 0): 1}
    assert consumer.seeks == [("logs", 0, 1)]  # the next read starts at the refused record
    assert [value for _t, _k, value, _h in producer.sent] == [b"junk"]
    assert "1 dead letter not written to logs.dlq" in caplog.text
    assert "dead-lettered logs[0]@1" not in caplog.text  # only what was written is said so
    assert "dead-lettered logs[0]@2: undecodable" in caplog.text
    [said] = [r for r in caplog.records if r.getMessage().startswith("dead-lettered")]
    assert (said.event_action, said.event_outcome) == (
        "dead_lettered",
        "failure",
    )  # Kibana's search

    producer.refused = set()  # the DLQ topic was fixed: read again from offset 1
    again = [_record(1, b"huge garbage"), _record(2, b"junk"), _record(3, _doc(event_id="d"))]
    assert shipper.ship_batch(again) == {("logs", 0): 4}
    assert consumer.seeks == [("logs", 0, 1)]
    assert consumer.commits == [{("logs", 0): 1}, {("logs", 0): 4}]


def test_a_run_until_idle_ends_with_an_error_when_dead_letters_keep_failing(monkeypatch):
    consumer, producer = FakeConsumer(), RefusingProducer({b"garbage"})
    shipper = _shipper(consumer, producer)
    monkeypatch.setattr(log_shipper, "ensure_index_template", lambda *a, **k: None)
    monkeypatch.setattr(consumer, "subscribe", lambda *a, **k: None, raising=False)
    monkeypatch.setattr(consumer, "consume", lambda **kwargs: [FakeMessage(0, b"garbage")])

    with pytest.raises(PipelineError, match=r"could not get past a record"):
        shipper.run(until_idle_s=0.05)
    assert consumer.commits == []


def test_the_shippers_own_lines_are_dead_lettered_without_a_log_line_each(monkeypatch, caplog):
    _script(monkeypatch, [_item(503, "x")], [_item(503, "x")])
    consumer, producer = FakeConsumer(), FakeProducer()
    shipper = _shipper(consumer, producer, own_key=b"svc", retry_attempts=2)

    shipper.ship_batch([_record(0, _doc())])  # keyed b"svc": the shipper's own line

    assert len(producer.sent) == 1 and consumer.commits == [{("logs", 0): 1}]
    assert "dead-lettered" not in caplog.text


def test_the_shippers_own_lines_do_not_keep_a_run_until_idle_going(monkeypatch):
    _script(monkeypatch, *[[_item(201)]] * 1000)
    consumer, producer = FakeConsumer(), FakeProducer()
    shipper = _shipper(consumer, producer, own_key=b"svc")
    monkeypatch.setattr(log_shipper, "ensure_index_template", lambda *a, **k: None)
    monkeypatch.setattr(consumer, "subscribe", lambda *a, **k: None, raising=False)
    offsets = itertools.count()

    def consume(**kwargs):
        time.sleep(0.005)  # a line of its own in every batch, as its metrics lines come
        return [FakeMessage(next(offsets), json.dumps(_doc()).encode())]

    monkeypatch.setattr(consumer, "consume", consume)
    monkeypatch.setattr(shipper, "report_metrics", lambda: None)

    counters = shipper.run(until_idle_s=0.05)  # returns: its own metrics lines are not activity

    assert counters.shipped >= 1


class FakeMessage:
    def __init__(self, offset, value, key=b"svc"):
        self._offset, self._value, self._key = offset, value, key

    def error(self):
        return None

    def topic(self):
        return "logs"

    def partition(self):
        return 0

    def offset(self):
        return self._offset

    def key(self):
        return self._key

    def value(self):
        return self._value

    def headers(self):
        return []

    def timestamp(self):
        return (1, 1000)


def test_a_record_without_a_key_is_someone_elses_whatever_the_shippers_own_key(monkeypatch, caplog):
    _script(monkeypatch, [_item(400, "document_parsing_exception")])
    consumer, producer = FakeConsumer(), FakeProducer()
    shipper = _shipper(consumer, producer)  # no own key given
    record = SourceRecord("logs", 0, 0, None, json.dumps(_doc()).encode(), (), 1000)

    shipper.ship_batch([record])

    assert "dead-lettered logs[0]@0" in caplog.text
