import pytest

from pipeline.topic_names import kafka_name_problem


@pytest.mark.parametrize("name", ["", ".", "..", "bad topic!", "x" * 250, "caf\u00e9"])
def test_what_kafka_refuses_as_a_topic_name_is_said(name):
    assert "is not a Kafka topic name" in (kafka_name_problem(name) or "")


@pytest.mark.parametrize("name", ["Orders", "orders.events", "a_b-c.1", "x" * 249])
def test_what_kafka_takes_has_no_problem(name):
    assert kafka_name_problem(name) is None
