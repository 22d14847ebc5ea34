"""The log shipper against the real Kafka and Elasticsearch."""

import json

from confluent_kafka import TopicPartition

from consumers.log_shipper import LogShipper
from pipeline.kafka.clients import build_consumer, build_producer
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
