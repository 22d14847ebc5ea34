"""Where a group that starts at the end starts each partition it has no commit on."""

from __future__ import annotations

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, OFFSET_INVALID, TopicPartition

from pipeline.processing.start_position import starting_positions


def test_a_new_group_starts_every_partition_at_its_end():
    committed = [TopicPartition("a", p, OFFSET_INVALID) for p in range(3)]

    assert starting_positions(committed) == {TopicPartition("a", p): OFFSET_END for p in range(3)}


def test_partitions_added_to_a_topic_the_group_reads_start_at_their_beginning():
    committed = [
        TopicPartition("a", 0, 17),
        TopicPartition("a", 1, OFFSET_INVALID),  # added since the group started
        TopicPartition("b", 0, OFFSET_INVALID),  # a topic new to the group: its end
    ]

    assert starting_positions(committed) == {
        TopicPartition("a", 1): OFFSET_BEGINNING,
        TopicPartition("b", 0): OFFSET_END,
    }


def test_a_group_with_commits_everywhere_has_nothing_to_start():
    assert starting_positions([TopicPartition("a", 0, 0), TopicPartition("a", 1, 5)]) == {}
