"""The shipper's loop: one batch through scripted Kafka and Elasticsearch stand-ins."""

import itertools
import json
import time
from types import SimpleNamespace

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
        self.subscribed = []

    def subscribe(self, topics, on_assign=None, on_revoke=None, on_lost=None):
        self.subscribed.append(list(topics))

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

    def list_topics(self, topic=None, timeout=0):
        partitions = {tp.partition: object() for tp in self.assigned}
        return SimpleNamespace(topics={"logs": SimpleNamespace(partitions=partitions, error=None)})

    # An empty topic, nothing read or committed: what the lag is worked out from.
    def position(self, partitions):
        return [TopicPartition(tp.topic, tp.partition, -1001) for tp in partitions]

    def committed(self, partitions, timeout=0):
        return [TopicPartition(tp.topic, tp.partition, -1001) for tp in partitions]

    def get_watermark_offsets(self, partition, timeout=0, cached=False):
        return (0, 0)


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
    a message to a topic it does not know)."""

    def __init__(self, refused, code=KafkaError.UNKNOWN_TOPIC_OR_PART):
        super().__init__()
        self.refused = refused
        self.code = code
        self.attempts = []

    def produce(self, topic, key=None, value=None, headers=None, on_delivery=None):
        self.attempts.append(value)
        if value in self.refused:
            raise KafkaException(KafkaError(self.code))
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
    # What was done after the refused record is not done again: one dead letter of each.
    assert [value for _t, _k, value, _h in producer.sent] == [b"junk", b"huge garbage"]
    assert shipper.counters.dead_lettered == 2


def test_dead_letters_written_after_a_refused_one_are_not_sent_again_while_it_is_retried(
    monkeypatch,
):
    # The review: one record that cannot be dead-lettered made the shipper send the dead
    # letters after it again on every retry (each non-JSON line 5 times in 6 s).
    _script(monkeypatch, *[[_item(201)]] * 4)
    consumer, producer = FakeConsumer(), RefusingProducer({b"stuck"})
    shipper = _shipper(consumer, producer)
    batch = [_record(0, b"stuck"), _record(1, b"junk-1"), _record(2, _doc()), _record(3, b"junk-2")]

    for _ in range(4):  # the consumer is sent back to offset 0 each time
        assert shipper.ship_batch(batch) == {}

    assert [value for _t, _k, value, _h in producer.sent] == [b"junk-1", b"junk-2"]
    assert producer.attempts.count(b"stuck") == 4
    assert shipper.counters.shipped == 1 and shipper.counters.dead_lettered == 2


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


# --- a bulk request refused whole -------------------------------------------------------------


class _RequestRefused:
    """What the bulk helper puts beside the items of a request Elasticsearch refused whole."""

    status_code = 400
    body = {
        "error": {
            "type": "action_request_validation_exception",
            "reason": "Validation Failed: 1: id is too long;",
        }
    }


def _elasticsearch_refusing_requests_with(bad_ids, monkeypatch):
    """A bulk endpoint that refuses a whole request holding any of ``bad_ids`` (as it does an
    _id over 512 bytes), and indexes every document of any other request."""
    calls = []

    def fake_bulk(es, actions, **kwargs):
        sent = list(actions)
        calls.append([a["_id"] for a in sent])
        refused = any(a["_id"] in bad_ids for a in sent)
        for _action in sent:
            if refused:
                item = {"status": 400, "error": "ApiError(400)", "exception": _RequestRefused()}
                yield False, {"index": item}
            else:
                yield True, {"index": {"status": 201}}

    monkeypatch.setattr(log_shipper, "streaming_bulk", fake_bulk)
    return calls


def test_a_request_refused_whole_dead_letters_only_the_documents_that_caused_it(monkeypatch):
    # The review: one bad _id made Elasticsearch refuse the bulk request, and the shipper
    # dead-lettered all the lines of the batch.
    calls = _elasticsearch_refusing_requests_with({"e3", "e6"}, monkeypatch)
    consumer, producer = FakeConsumer(), FakeProducer()
    shipper = _shipper(consumer, producer)
    records = [_record(n, _doc(event_id=f"e{n}")) for n in range(8)]

    assert shipper.ship_batch(records) == {("logs", 0): 8}

    assert [value for _t, _k, value, _h in producer.sent] == [records[3].value, records[6].value]
    headers = producer.sent[0][3]
    assert headers["dlq.reason"] == b"rejected"
    assert headers["dlq.error.type"] == b"elasticsearch.action_request_validation_exception"
    assert b"id is too long" in headers["dlq.error.message"]
    assert shipper.counters.shipped == 6 and shipper.counters.dead_lettered == 2
    assert len(calls) <= 1 + 2 * 2 * 3  # halves of halves, not one request per document


# --- a dead letter too large for the dead-letter topic ----------------------------------------


class SizeLimitedProducer(FakeProducer):
    """A dead-letter topic taking values of at most ``limit`` bytes: larger ones refused at once
    (``at_once``, librdkafka's own check) or in the delivery report (the broker's)."""

    def __init__(self, limit, at_once=True):
        super().__init__()
        self.limit, self.at_once = limit, at_once

    def produce(self, topic, key=None, value=None, headers=None, on_delivery=None):
        if len(value or b"") <= self.limit:
            super().produce(topic, key, value, headers, on_delivery)
        elif self.at_once:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        else:
            on_delivery(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)


@pytest.mark.parametrize("at_once", [True, False])
def test_a_dead_letter_too_large_for_its_topic_is_sent_with_its_value_cut(monkeypatch, at_once):
    _script(monkeypatch, [_item(201)])
    consumer = FakeConsumer()
    producer = SizeLimitedProducer(limit=64 * 1024, at_once=at_once)
    shipper = _shipper(consumer, producer)
    huge = b"not json " * 20_000  # 180 kB
    records = [_record(0, b"junk"), _record(1, huge), _record(2, _doc())]

    assert shipper.ship_batch(records) == {("logs", 0): 3}  # the partition moves on

    [(_t, _k, junk, _h), (_t2, key, cut, headers)] = producer.sent
    assert junk == b"junk"  # sent once: the others are not sent again
    assert key == b"svc" and cut == huge[: 16 * 1024]
    assert headers["dlq.truncated"] == b"value"
    assert headers["dlq.original.value.size"] == str(len(huge)).encode()
    assert headers["dlq.reason"] == b"undecodable"
    assert consumer.seeks == [] and shipper.counters.dead_lettered == 2


def test_a_dead_letter_too_large_even_cut_goes_with_its_headers_only(monkeypatch):
    consumer, producer = FakeConsumer(), SizeLimitedProducer(limit=0)
    shipper = _shipper(consumer, producer)
    assert shipper.ship_batch([_record(0, b"junk")]) == {("logs", 0): 1}
    [(_t, key, value, headers)] = producer.sent
    assert (key, value) == (None, None)
    assert headers["dlq.truncated"] == b"key,value,headers"
    assert "origin" not in headers and headers["dlq.original.offset"] == b"0"


# --- lag --------------------------------------------------------------------------------------


class LagConsumer(FakeConsumer):
    """Three partitions with 100 records each, all committed; partition 0 read since."""

    def position(self, partitions):
        offsets = {0: 100, 1: -1001, 2: -1001}  # OFFSET_INVALID: nothing read there yet
        return [TopicPartition(tp.topic, tp.partition, offsets[tp.partition]) for tp in partitions]

    def committed(self, partitions, timeout=0):
        return [TopicPartition(tp.topic, tp.partition, 100) for tp in partitions]

    def get_watermark_offsets(self, partition, timeout=0, cached=False):
        return (0, 100)


class NewGroupAtEndConsumer(LagConsumer):
    """A new group (nothing committed) on three partitions of 100 records each, started at
    their end; what the shipper commits is what the group has committed."""

    def __init__(self):
        super().__init__(partitions=(0, 1, 2))
        self.committed_now: dict[tuple[str, int], int] = {}

    def commit(self, offsets, asynchronous):
        super().commit(offsets, asynchronous)
        self.committed_now.update({(tp.topic, tp.partition): tp.offset for tp in offsets})

    def position(self, partitions):  # nothing new reached them: nothing read
        return [TopicPartition(tp.topic, tp.partition, -1001) for tp in partitions]

    def committed(self, partitions, timeout=0):
        return [
            TopicPartition(
                tp.topic, tp.partition, self.committed_now.get((tp.topic, tp.partition), -1001)
            )
            for tp in partitions
        ]


def test_a_new_group_started_at_the_end_commits_its_start_and_counts_no_lag():
    # --start latest: the partitions nothing new reached stayed uncommitted, their whole
    # history counted as lag for ever, and a later run without the flag read them from offset
    # 0 (their dead letters again).
    consumer = NewGroupAtEndConsumer()
    shipper = LogShipper(
        consumer, FakeEs(), FakeProducer(), LogSettings(), consumer_group="g", start_at_end=True
    )
    shipper._report = lambda line: None

    shipper._assigned_cb(consumer, consumer.assigned)
    shipper.report_metrics()

    assert consumer.committed_now == {("logs", 0): 100, ("logs", 1): 100, ("logs", 2): 100}
    assert shipper.counters.lag == 0


def test_a_group_started_at_the_beginning_commits_nothing_as_it_is_assigned():
    consumer = NewGroupAtEndConsumer()
    shipper = LogShipper(consumer, FakeEs(), FakeProducer(), LogSettings(), consumer_group="g")
    shipper._report = lambda line: None

    shipper._assigned_cb(consumer, consumer.assigned)

    assert consumer.commits == []


def test_a_caught_up_shipper_reports_no_lag():
    # The review: partitions without new records since their commit were counted from 0.
    consumer = LagConsumer(partitions=(0, 1, 2))
    reported = []
    shipper = _shipper(consumer, FakeProducer())
    shipper._report = reported.append
    shipper.report_metrics()
    assert shipper.counters.lag == 0 and "lag=0 " in reported[-1]


def test_the_lag_is_known_once_partitions_are_assigned_not_at_the_first_metrics_line(
    monkeypatch,
):
    # /metrics had no lag gauge until the first periodic metrics line, up to 30 s after start.
    consumer = LagConsumer(partitions=(0, 1, 2))
    shipper = _shipper(consumer, FakeProducer())
    monkeypatch.setattr(log_shipper, "ensure_index_template", lambda *a, **k: None)
    monkeypatch.setattr(consumer, "subscribe", lambda *a, **k: None, raising=False)
    monkeypatch.setattr(shipper, "report_metrics", lambda: None)  # no metrics line at all

    shipper.run(until_idle_s=0.05)

    assert shipper.counters.lag == 0


# --- --until-idle: caught up only when every partition is ours ---------------------------------


def _idle_run(monkeypatch, consumer, shipper):
    monkeypatch.setattr(log_shipper, "ensure_index_template", lambda *a, **k: None)
    monkeypatch.setattr(consumer, "subscribe", lambda *a, **k: None, raising=False)
    monkeypatch.setattr(shipper, "report_metrics", lambda: None)
    # (raising=False: also on a shipper without it, which never waited)
    monkeypatch.setattr(shipper, "_ownership_wait_s", lambda until_idle_s: 0.2, raising=False)


class PartlyAssignedConsumer(FakeConsumer):
    """Assigned partition 0 of a topic of three; another member of the group holds 1 and 2."""

    def list_topics(self, topic=None, timeout=0):
        partitions = {0: object(), 1: object(), 2: object()}
        return SimpleNamespace(topics={"logs": SimpleNamespace(partitions=partitions, error=None)})


def test_a_run_until_idle_does_not_say_caught_up_while_other_members_hold_partitions(
    monkeypatch,
):
    # The review: a shipper killed with -9 still owned partitions until its session timed out;
    # --until-idle exited 0, "caught up", with 4,530 records of those partitions unshipped.
    consumer = PartlyAssignedConsumer()
    shipper = _shipper(consumer, FakeProducer())
    _idle_run(monkeypatch, consumer, shipper)

    with pytest.raises(PipelineError, match=r"2 partitions of logs \(1, 2\) stayed with another"):
        shipper.run(until_idle_s=0.05)


def test_a_run_until_idle_waits_for_the_partitions_of_a_dead_member(monkeypatch):
    consumer = PartlyAssignedConsumer()
    shipper = _shipper(consumer, FakeProducer())
    _idle_run(monkeypatch, consumer, shipper)
    monkeypatch.setattr(shipper, "_ownership_wait_s", lambda until_idle_s: 5.0, raising=False)
    reported = []
    shipper._report = reported.append
    started = time.monotonic()

    def consume(**kwargs):
        time.sleep(0.01)
        if time.monotonic() - started > 0.1 and len(shipper._assigned) == 1:  # its session ended
            shipper._assigned_cb(consumer, [TopicPartition("logs", 1), TopicPartition("logs", 2)])
        return []

    monkeypatch.setattr(consumer, "consume", consume)

    shipper.run(until_idle_s=0.05)

    assert len(shipper._assigned) == 3
    assert reported[-1].startswith("caught up: every partition of logs read")


# --- a server that is not Elasticsearch; the metrics line in an outage ------------------------


def _plain_text_answer():
    """What elastic-transport raises for ``# HTTP 405 ...`` without a content type (a
    Prometheus metrics port's answer to PUT): it reads the answer as JSON, its default."""
    from elastic_transport import JsonSerializer, SerializationError

    try:
        JsonSerializer().loads(b"# HTTP 405 Method Not Allowed\n")
    except SerializationError as error:
        return error
    raise AssertionError("the answer parsed")


def test_a_server_that_is_not_elasticsearch_stops_the_shipper_with_one_line(monkeypatch):
    def metrics_port(*_args, **_kwargs):
        raise _plain_text_answer()

    monkeypatch.setattr(log_shipper, "ensure_index_template", metrics_port)
    consumer = FakeConsumer()
    config = LogSettings(outage_initial_backoff_s=0.001)
    shipper = LogShipper(
        consumer, FakeEs(), FakeProducer(), config, consumer_group="g",
        es_url="http://127.0.0.1:9110",
    )  # fmt: skip

    with pytest.raises(PipelineError) as raised:
        shipper.run()

    assert str(raised.value) == (
        "the server at http://127.0.0.1:9110 did not answer as Elasticsearch (# HTTP 405 "
        "Method Not Allowed); check PIPELINE_ELASTICSEARCH__URL (Elasticsearch's address, "
        "without a path)"
    )
    assert shipper.counters.outages == 0  # no outage to wait out


def test_an_html_error_page_at_the_url_is_said_to_be_no_elasticsearch(monkeypatch):
    from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
    from elasticsearch import ApiError

    meta = ApiResponseMeta(
        status=501, http_version="1.0", headers=HttpHeaders(), duration=0.0,
        node=NodeConfig("http", "127.0.0.1", 8000),
    )  # fmt: skip
    page = "<!DOCTYPE HTML>\n<html><body>Unsupported method ('PUT')</body></html>"

    def http_server(*_args, **_kwargs):
        raise ApiError(message=page, meta=meta, body=page)

    monkeypatch.setattr(log_shipper, "ensure_index_template", http_server)
    shipper = LogShipper(
        FakeConsumer(), FakeEs(), FakeProducer(), LogSettings(), consumer_group="g",
        es_url="http://127.0.0.1:8000",
    )  # fmt: skip

    with pytest.raises(PipelineError, match=r"^the server at http://127\.0\.0\.1:8000 did not "
                       r"answer as Elasticsearch \(501: <!DOCTYPE HTML>\)"):  # fmt: skip
        shipper.run()


def test_the_metrics_line_keeps_coming_while_elasticsearch_is_away_and_the_group_is_joined(
    monkeypatch,
):
    def unreachable(*_args, **_kwargs):
        raise TransportConnectionError("refused")

    monkeypatch.setattr(log_shipper, "ensure_index_template", unreachable)
    monkeypatch.setattr(FakeEs.cluster, "health", staticmethod(unreachable))
    consumer, lines = FakeConsumer(), []
    config = LogSettings(
        outage_initial_backoff_s=0.01, outage_max_backoff_s=0.02, metrics_interval_s=0.05
    )
    shipper = LogShipper(
        consumer, FakeEs(), FakeProducer(), config, consumer_group="g", report=lines.append
    )

    # A second of outage, a line due every 0.05 s: at least 3 even on a loaded machine (with
    # 0.4 s, one run of the unit suite beside other work saw fewer).
    with pytest.raises(PipelineError, match=r"unreachable for 1 s"):
        shipper.run(until_idle_s=1.0)

    # Subscribed while Elasticsearch was away: the group holds its partitions (paused).
    assert consumer.subscribed == [["logs"]] and consumer.paused
    counters = [line for line in lines if line.startswith("shipped=")]
    assert len(counters) >= 3, lines
    assert all("; elasticsearch unreachable for " in line for line in counters)
    assert all(line.endswith(" s, consumption paused") for line in counters)


def test_the_first_metrics_line_of_a_run_has_its_rate_too(monkeypatch):
    monkeypatch.setattr(log_shipper, "ensure_index_template", lambda *a, **k: None)
    consumer, lines = FakeConsumer(), []
    config = LogSettings(metrics_interval_s=0.02, shipper_batch_timeout_s=0.01)
    shipper = LogShipper(
        consumer, FakeEs(), FakeProducer(), config, consumer_group="g", report=lines.append
    )
    shipper._assigned = {("logs", 0)}

    shipper.run(until_idle_s=0.1)

    counters = [line for line in lines if line.startswith("shipped=")]
    assert len(counters) >= 2 and all(" rate=0.0/s" in line for line in counters), lines
