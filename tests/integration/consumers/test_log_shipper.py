"""The log shipper against the real Kafka and Elasticsearch."""

import json
import socket
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from elasticsearch import Elasticsearch

from consumers.log_shipper import LogShipper
from pipeline.errors import PipelineError
from pipeline.kafka.clients import build_consumer, build_producer
from pipeline.logs.schema import ensure_index_template, index_for
from pipeline.settings import LogSettings
from tests.support.logs import (
    count_documents,
    document_ids,
    log_alias,
    log_document,
    produce_documents,
)

SETTINGS = LogSettings(shipper_batch_size=200, shipper_batch_timeout_s=0.2, metrics_interval_s=5)


def _ship(settings, es, topic, dlq_topic, group, alias):
    consumer = build_consumer(settings.kafka, group)
    producer = build_producer(settings.kafka)
    try:
        shipper = LogShipper(
            consumer,
            es,
            producer,
            SETTINGS,
            topic=topic,
            dlq_topic=dlq_topic,
            alias=alias,
            consumer_group=group,
        )
        return shipper.run(until_idle_s=3), consumer.committed(
            [TopicPartition(topic, p) for p in range(3)], timeout=10
        )
    finally:
        consumer.close()


def test_every_record_is_indexed_once_by_event_id_and_a_redelivery_overwrites(
    pipeline_settings, elasticsearch_client, new_topic, consumer_group
):
    topic, dlq = new_topic(3), new_topic(1)
    documents = [log_document(n) for n in range(500)]
    produce_documents(build_producer(pipeline_settings.kafka), topic, documents)
    with log_alias(elasticsearch_client) as alias:
        counters, committed = _ship(
            pipeline_settings, elasticsearch_client, topic, dlq, consumer_group, alias
        )
        assert counters.shipped == 500 and counters.dead_lettered == 0
        assert sum(max(tp.offset, 0) for tp in committed) == 500  # committed up to the end
        ids = document_ids(elasticsearch_client, alias)
        assert sorted(ids) == sorted(d["event"]["id"] for d in documents)

        # a second group reads everything again: the same documents, overwritten
        again, _ = _ship(
            pipeline_settings, elasticsearch_client, topic, dlq, consumer_group + "-2", alias
        )
        assert again.shipped == 500
        assert count_documents(elasticsearch_client, alias) == 500


def test_a_mapping_conflict_goes_to_the_dead_letter_topic_with_the_reason(
    pipeline_settings, elasticsearch_client, new_topic, consumer_group
):
    topic, dlq = new_topic(3), new_topic(1)
    good = [log_document(n) for n in range(10)]
    bad = log_document(99, process={"pid": "not-a-number"})
    produce_documents(build_producer(pipeline_settings.kafka), topic, [*good, bad])
    producer = build_producer(pipeline_settings.kafka)
    producer.produce(topic, value=b"{oops")
    producer.flush(10)
    with log_alias(elasticsearch_client) as alias:
        counters, committed = _ship(
            pipeline_settings, elasticsearch_client, topic, dlq, consumer_group, alias
        )
        assert counters.shipped == 10 and counters.dead_lettered == 2
        assert sum(max(tp.offset, 0) for tp in committed) == 12
        assert count_documents(elasticsearch_client, alias) == 10

    reader = build_consumer(pipeline_settings.kafka, consumer_group + "-dlq")
    reader.subscribe([dlq])
    letters = []
    while len(letters) < 2:
        message = reader.poll(10)
        assert message is not None, f"only {len(letters)} dead letter(s) arrived"
        if message.error() is None:
            letters.append(message)
    reader.close()
    by_reason = {dict(m.headers())["dlq.reason"]: m for m in letters}
    rejected = by_reason[b"rejected"]
    headers = dict(rejected.headers())
    assert json.loads(rejected.value()) == bad
    assert headers["dlq.elasticsearch.status"] == b"400"
    assert b"process.pid" in headers["dlq.error.message"]
    assert headers["dlq.original.topic"] == topic.encode()
    assert b"undecodable" in by_reason
    assert by_reason[b"undecodable"].value() == b"{oops"


def _dead_letters(settings, dlq, group, count):
    reader = build_consumer(settings.kafka, group + "-dlq")
    reader.subscribe([dlq])
    letters = []
    while len(letters) < count:
        message = reader.poll(10)
        assert message is not None, f"only {len(letters)} dead letter(s) arrived"
        if message.error() is None:
            letters.append(message)
    reader.close()
    return letters


def test_lines_elasticsearch_could_not_take_or_give_back_are_indexed_or_dead_lettered_alone(
    pipeline_settings, elasticsearch_client, new_topic, consumer_group
):
    # The review's lines, in one batch with good ones: none may crash the shipper, fail the
    # whole bulk request, or make a search of the alias fail.
    topic, dlq = new_topic(1, prefix="fxl"), new_topic(1, prefix="fxl")
    good = [log_document(n) for n in range(5)]
    long_id = log_document(10, event={"id": "é" * 300})  # 600 bytes: over the _id limit
    shouting = log_document(11, log={"level": "ERROR", "logger": "foreign"})
    epoch = {**log_document(12), "@timestamp": "1970-01-01T00:00:00Z"}
    deep = b'{"@timestamp": "2024-07-15T00:00:00Z", "x": ' + b"[" * 3000 + b"]" * 3000 + b"}"
    bom = b"\xef\xbb\xbf" + json.dumps(log_document(13)).encode()
    utf16 = json.dumps(log_document(14)).encode("utf-16")
    surrogate = json.dumps(log_document(15, message="half \ud800 a pair")).encode()  # escaped
    producer = build_producer(pipeline_settings.kafka)
    produce_documents(producer, topic, [*good, long_id, shouting, epoch])
    for value in (deep, bom, utf16, surrogate):
        producer.produce(topic, value=value)
    assert producer.flush(10) == 0

    with log_alias(elasticsearch_client) as alias:
        counters, committed = _ship(
            pipeline_settings, elasticsearch_client, topic, dlq, consumer_group, alias
        )
        assert (counters.shipped, counters.dead_lettered) == (10, 2)
        assert committed[0].offset == 12

        # Every document can be read back: no raw UTF-16 or BOM bytes as _source.
        count_documents(elasticsearch_client, alias)  # refreshes
        hits = elasticsearch_client.search(index=alias, size=100)["hits"]["hits"]
        by_line = {hit["_source"]["message"]: hit for hit in hits}
        assert len(by_line) == 10
        assert by_line["line 10"]["_source"]["event"]["id"] == "é" * 300
        assert by_line["half \ufffd a pair"]["_source"]["labels"] == {"n": "15"}
        assert by_line["line 12"]["_index"] != f"{alias}-1970.01.01"  # today's, not its own
        assert by_line["line 12"]["_source"]["@timestamp"] == "1970-01-01T00:00:00Z"
        errors = elasticsearch_client.search(index=alias, q="log.level:error")["hits"]["hits"]
        assert [hit["_source"]["message"] for hit in errors] == ["line 11"]

    reasons = {
        bytes(dict(m.headers())["dlq.error.message"][:40])
        for m in _dead_letters(pipeline_settings, dlq, consumer_group, 2)
    }
    assert any(r.startswith(b"undecodable: JSON nested too deeply") for r in reasons)
    assert any(r.startswith(b"undecodable: not UTF-8 JSON") for r in reasons)


def test_a_record_too_large_to_dead_letter_whole_goes_cut_and_the_partition_moves_on(
    pipeline_settings, elasticsearch_client, new_topic, consumer_group
):
    # The logs topic takes the record; the dead-letter topic does not once the dlq.* headers
    # are added. It used to stay uncommitted for ever, the letters after it sent again and again.
    topic = new_topic(1, prefix="fxl")
    dlq = new_topic(1, prefix="fxl", **{"max.message.bytes": 40_000})
    big = b"not json " * 4_400  # 39,600 bytes
    producer = build_producer(pipeline_settings.kafka)
    for value in (b"junk-1", big, b"junk-2"):
        producer.produce(topic, value=value)
    assert producer.flush(10) == 0
    produce_documents(producer, topic, [log_document(0)])

    with log_alias(elasticsearch_client) as alias:
        counters, committed = _ship(
            pipeline_settings, elasticsearch_client, topic, dlq, consumer_group, alias
        )
    assert (counters.shipped, counters.dead_lettered) == (1, 3)
    assert committed[0].offset == 4

    letters = _dead_letters(pipeline_settings, dlq, consumer_group, 3)
    by_offset = {dict(m.headers())["dlq.original.offset"]: m for m in letters}
    assert sorted(by_offset) == [b"0", b"1", b"2"]  # each once
    cut = by_offset[b"1"]
    assert cut.value() == big[: 16 * 1024]
    assert dict(cut.headers())["dlq.truncated"] == b"value"
    assert dict(cut.headers())["dlq.original.value.size"] == str(len(big)).encode()
    assert by_offset[b"0"].value() == b"junk-1" and by_offset[b"2"].value() == b"junk-2"


def test_a_run_until_idle_does_not_call_itself_caught_up_while_another_member_holds_partitions(
    pipeline_settings, elasticsearch_client, new_topic, consumer_group
):
    # The review: with a killed shipper still in the group (until its session ended),
    # --until-idle said "caught up" and exited 0 with its partitions' records unshipped.
    topic, dlq = new_topic(3, prefix="fxl"), new_topic(1, prefix="fxl")
    produce_documents(
        build_producer(pipeline_settings.kafka), topic, [log_document(n) for n in range(30)]
    )
    settings = SETTINGS.model_copy(update={"shipper_session_timeout_ms": 6_000})
    other = build_consumer(pipeline_settings.kafka, consumer_group)  # never commits
    other.subscribe([topic])
    stop = threading.Event()

    joined = threading.Event()

    def hold() -> None:
        while not stop.is_set():
            other.poll(0.2)
            if not joined.is_set() and other.assignment():
                joined.set()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    try:
        # The other member in the group first: on a busy machine its first poll (its join) came
        # after the shipper had taken every partition and caught up (the test then failed).
        assert joined.wait(60), "the other member never got partitions"
        with log_alias(elasticsearch_client) as alias:
            consumer = build_consumer(pipeline_settings.kafka, consumer_group)
            shipper = LogShipper(
                consumer, elasticsearch_client, build_producer(pipeline_settings.kafka),
                settings, topic=topic, dlq_topic=dlq, alias=alias, consumer_group=consumer_group,
            )  # fmt: skip
            try:
                with pytest.raises(PipelineError, match=r"stayed with another member"):
                    shipper.run(until_idle_s=1)
            finally:
                consumer.close()
            stop.set()
            holder.join(10)
            other.close()  # it leaves: the next run gets every partition

            _counters, committed = _ship(
                pipeline_settings, elasticsearch_client, topic, dlq, consumer_group, alias
            )
            assert sum(max(tp.offset, 0) for tp in committed) == 30
            assert count_documents(elasticsearch_client, alias) == 30
    finally:
        stop.set()


def test_a_record_with_a_header_name_that_is_not_utf8_is_shipped_and_the_shipper_goes_on(
    pipeline_settings, elasticsearch_client, new_topic, consumer_group
):
    # confluent-kafka cannot read such a name (kcat sends them): headers() failed, and after
    # enough records for Python to specialise the call, the process died with SIGSEGV.
    topic, dlq = new_topic(1), new_topic(1)
    before = [log_document(n) for n in range(300)]
    produce_documents(build_producer(pipeline_settings.kafka), topic, before)
    odd = log_document(300)
    subprocess.run(
        [b"kcat", b"-b", pipeline_settings.kafka.bootstrap_servers.encode(), b"-P",
         b"-t", topic.encode(), b"-H", b"x-bad\xff=1"],
        input=json.dumps(odd).encode(), check=True, timeout=60,
    )  # fmt: skip
    after = [log_document(n) for n in range(301, 400)]
    produce_documents(build_producer(pipeline_settings.kafka), topic, after)
    with log_alias(elasticsearch_client) as alias:
        counters, _ = _ship(
            pipeline_settings, elasticsearch_client, topic, dlq, consumer_group, alias
        )
        assert (counters.shipped, counters.dead_lettered) == (400, 0)
        assert odd["event"]["id"] in document_ids(elasticsearch_client, alias)


def _wait_for(condition, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_write_blocked_index_is_retried_then_its_records_are_dead_lettered_and_the_rest_ship(
    pipeline_settings, elasticsearch_client, new_topic, consumer_group
):
    # An older day's index made read-only (a lifecycle's step) is so for good: waiting on it as
    # for a cluster taking no writes held every later record for ever. Its records are retried
    # as for a 5xx, then dead-lettered with Elasticsearch's reason; the others are shipped.
    # (A block of the whole cluster is waited out: tests/unit/consumers/test_log_shipper_blocks.)
    topic, dlq = new_topic(1, prefix="fxl"), new_topic(1, prefix="fxl")
    stamp = (datetime.now(UTC) - timedelta(days=1)).replace(hour=12, minute=0, second=0)
    blocked_day = [
        {**log_document(n), "@timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%S.000Z")}
        for n in range(5)
    ]
    today = [log_document(n) for n in range(5, 20)]
    produce_documents(build_producer(pipeline_settings.kafka), topic, blocked_day + today)
    settings = SETTINGS.model_copy(
        update={"retry_attempts": 2, "retry_initial_backoff_s": 0.05, "retry_max_backoff_s": 0.1}
    )
    with log_alias(elasticsearch_client) as alias:
        index = index_for(stamp, alias=alias)
        ensure_index_template(elasticsearch_client, alias=alias)
        elasticsearch_client.indices.create(index=index, settings={"index.blocks.write": True})
        consumer = build_consumer(pipeline_settings.kafka, consumer_group)
        shipper = LogShipper(
            consumer, elasticsearch_client, build_producer(pipeline_settings.kafka), settings,
            topic=topic, dlq_topic=dlq, alias=alias, consumer_group=consumer_group,
        )  # fmt: skip
        try:
            shipper.run(until_idle_s=3)
        finally:
            consumer.close()
        letters = _dead_letters(pipeline_settings, dlq, consumer_group, 5)
        shipped = sorted(document_ids(elasticsearch_client, alias))

    assert (shipper.counters.dead_lettered, shipper.counters.outages) == (5, 0)
    assert shipped == sorted(d["event"]["id"] for d in today)
    headers = dict(letters[0].headers())
    assert headers["dlq.reason"] == b"retries_exhausted"
    assert b"cluster_block_exception" in headers["dlq.error.message"]
    assert sorted(json.loads(m.value())["event"]["id"] for m in letters) == sorted(
        d["event"]["id"] for d in blocked_day
    )


def test_a_shipper_joins_its_group_while_a_stalled_elasticsearch_keeps_the_template_waiting(
    pipeline_settings, new_topic, consumer_group
):
    # The review: against an Elasticsearch that accepts and never answers, the shipper stayed
    # out of its group (and its metrics port silent) for about 60 s.
    topic, dlq = new_topic(1, prefix="fxl"), new_topic(1, prefix="fxl")
    produce_documents(
        build_producer(pipeline_settings.kafka), topic, [log_document(n) for n in range(50)]
    )
    listener = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    # Longer than a new group takes to form (its initial rebalance delay is 3 s).
    es = Elasticsearch(url, request_timeout=20, max_retries=0)
    consumer = build_consumer(pipeline_settings.kafka, consumer_group)
    shipper = LogShipper(
        consumer, es, build_producer(pipeline_settings.kafka), SETTINGS, topic=topic,
        dlq_topic=dlq, consumer_group=consumer_group, es_url=url,
    )  # fmt: skip
    failed: list[BaseException] = []

    def ship() -> None:
        try:
            shipper.run(until_idle_s=1)
        except BaseException as error:
            failed.append(error)
        finally:
            consumer.close()

    runner = threading.Thread(target=ship, daemon=True)
    runner.start()
    admin = AdminClient({"bootstrap.servers": pipeline_settings.kafka.bootstrap_servers})
    try:
        _wait_for(lambda: shipper.counters.lag == 50 or failed, 30, "the lag of the backlog")
        members = admin.describe_consumer_groups([consumer_group])[consumer_group].result(10)
        assert len(members.members) == 1  # the group exists, with the shipper in it
        assert shipper.counters.outages == 0  # all while the template's request waited
    finally:
        runner.join(60)  # the request times out: an outage past --until-idle ends the run
        listener.close()
    [error] = failed
    assert isinstance(error, PipelineError)
    assert "unreachable for 1 s (the --until-idle time)" in str(error)
