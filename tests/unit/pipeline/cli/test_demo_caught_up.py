"""The demo waits until the orders service committed every request: a partition that no
request's key fell on has nothing to commit, and counts as caught up."""

from __future__ import annotations

from confluent_kafka import OFFSET_INVALID, TopicPartition

from pipeline.cli.demo_services import all_committed

TOPIC = "requests.customers"


def test_an_empty_partition_never_committed_is_caught_up_and_a_behind_one_is_not():
    ends = [TopicPartition(TOPIC, 0, 0), TopicPartition(TOPIC, 1, 5)]

    # The CI run that waited 300 s: partition 0 had no record, so its offset was never set.
    assert all_committed(
        [TopicPartition(TOPIC, 0, OFFSET_INVALID), TopicPartition(TOPIC, 1, 5)], ends
    )
    assert not all_committed(
        [TopicPartition(TOPIC, 0, OFFSET_INVALID), TopicPartition(TOPIC, 1, 4)], ends
    )
    assert not all_committed(
        [TopicPartition(TOPIC, 0, 0), TopicPartition(TOPIC, 1, OFFSET_INVALID)], ends
    )
