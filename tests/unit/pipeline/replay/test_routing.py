"""Where replayed messages go, and what a recording needs of its targets."""

import pytest

from pipeline.replay.pacing import Pacing, Schedule
from pipeline.replay.recording import RecordedMessage
from pipeline.replay.routing import (
    BY_KEY,
    ReplayError,
    problems,
    survey,
    target_partition,
    target_topic,
)


def message(topic="orders", partition=0, ts=None):
    return RecordedMessage(topic, partition, 0, b"k", b"v", timestamp_ms=ts)


def test_the_target_is_the_recorded_topic_unless_one_is_given():
    assert target_topic(message("orders"), None) == "orders"
    assert target_topic(message("orders"), "copy") == "copy"


def test_by_default_the_partitioner_places_the_message_by_its_key():
    assert target_partition(message(partition=7), preserve=False, partitions=3) == BY_KEY


def test_by_default_a_message_without_a_key_goes_to_its_recorded_partition_modulo_the_target():
    keyless = [RecordedMessage("orders", p, 0, None, b"v") for p in (0, 2, 4, 5)]
    assert [target_partition(m, preserve=False, partitions=3) for m in keyless] == [0, 2, 1, 2]


def test_preserving_partitions_keeps_the_recorded_one():
    assert target_partition(message(partition=2), preserve=True, partitions=3) == 2


def test_preserving_a_partition_the_target_lacks_is_an_error():
    with pytest.raises(ReplayError, match=r"partition 3 of orders.*has 3 partition"):
        target_partition(message(partition=3), preserve=True, partitions=3)


def test_a_target_topic_of_one_partition_is_named_in_the_singular():
    with pytest.raises(ReplayError, match=r"the target topic has 1 partition$"):
        target_partition(message(partition=1), preserve=True, partitions=1)


def test_survey_counts_and_finds_what_each_target_needs():
    found = survey([message("a", 2, 5_000), message("b", 0, 1_000), message("a", 0, None)])
    assert found.messages == 3
    assert found.partitions_needed == {"a": 3, "b": 1}
    assert (found.start_ms, found.last_ms) == (5_000, 5_000)


def test_the_paced_time_runs_from_the_first_messages_timestamp_to_the_latest():
    # As the schedule paces them: 5000 at 0 s, 7000 at 2 s, 1000 at once after it (not the
    # 6 s between the earliest and the latest timestamps).
    stamps = [None, 5_000, 7_000, 1_000]
    found = survey([message("a", 0, ts) for ts in stamps])
    schedule = Schedule(Pacing(speed=1))
    assert found.paced_s == 2.0
    assert max(schedule.due_s(ts) for ts in stamps) == found.paced_s
    assert survey([message("a", 0, 9_000), message("a", 0, 1_000)]).paced_s == 0.0


def test_survey_with_one_target_merges_the_recorded_topics():
    found = survey([message("a", 2), message("b", 4)], topic="copy")
    assert found.partitions_needed == {"copy": 5}
    assert found.paced_s == 0.0


def test_problems_name_missing_topics_and_too_few_partitions_only_when_preserving():
    found = survey([message("a", 3), message("b", 0), message("c", 1)])
    counts = {"a": 2, "c": 2}
    assert problems(found, counts, preserve=False) == ["topic b does not exist"]
    assert problems(found, counts, preserve=True) == [
        "topic a has 2 partitions and the recording needs 4 (--preserve-partitions)",
        "topic b does not exist",
    ]
    assert problems(found, {"a": 4, "b": 1, "c": 2}, preserve=True) == []


def test_preserving_partitions_refuses_a_recorded_partition_below_zero_before_sending():
    found = survey([message("a", 1), message("a", -1), message("a", -2)])
    assert problems(found, {"a": 3}, preserve=True) == [
        "the recording has partition -1 of a, and partitions are numbered from 0 "
        "(--preserve-partitions)"
    ]
    assert problems(found, {"a": 3}, preserve=False) == []  # by key, it is not used


def test_a_target_whose_messages_all_have_a_partition_below_zero_must_still_exist():
    found = survey([message("a", -1)], topic="copy")
    assert found.partitions_needed == {"copy": 0}
    assert problems(found, {}, preserve=False) == ["topic copy does not exist"]
