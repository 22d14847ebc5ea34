"""The stack status lines count in words: "1 node", "1 topic", "2 topics"."""

from __future__ import annotations

from pipeline.stack.health import elasticsearch_detail, kafka_detail


def test_elasticsearch_detail_says_one_node_in_the_singular():
    assert elasticsearch_detail("pipeline", "green", 1) == "cluster pipeline is green, 1 node"
    assert elasticsearch_detail("pipeline", "yellow", 3) == "cluster pipeline is yellow, 3 nodes"


def test_kafka_detail_agrees_with_the_numbers_of_brokers_and_topics():
    assert kafka_detail("abc", ["127.0.0.1:9092/1"], 1) == (
        "cluster abc, broker 127.0.0.1:9092/1, 1 topic"
    )
    assert (
        kafka_detail("abc", ["h:1/1", "h:2/2"], 12)
        == "cluster abc, brokers h:1/1, h:2/2, 12 topics"
    )
