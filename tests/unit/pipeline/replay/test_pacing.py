"""When each replayed message is due: by rate, by the recorded timestamps, or at once; and in
which order --speed sends a recording of several partitions."""

import pytest

from pipeline.errors import PipelineError
from pipeline.replay.pacing import (
    Pacing,
    RecordedOrder,
    Schedule,
    in_recorded_order,
    parse_rate,
    parse_speed,
)
from pipeline.replay.recording import RecordedMessage


def test_unpaced_every_message_is_due_at_once():
    schedule = Schedule(None)
    assert not schedule.paced
    assert [schedule.due_s(ts) for ts in (5, 1_000_000, None)] == [0.0, 0.0, 0.0]


def test_by_rate_message_n_is_due_at_n_over_the_rate():
    schedule = Schedule(Pacing(rate_per_s=4))
    assert schedule.paced
    assert [schedule.due_s(None) for _ in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_by_speed_messages_are_due_at_their_recorded_distance_divided_by_the_speed():
    schedule = Schedule(Pacing(speed=10))
    stamps = [10_000, 10_500, 12_000, 30_000]
    assert [schedule.due_s(ts) for ts in stamps] == [0.0, 0.05, 0.2, 2.0]


def test_by_speed_an_older_stamp_or_none_is_due_with_the_message_before():
    schedule = Schedule(Pacing(speed=1))
    assert schedule.due_s(None) == 0.0  # nothing to go by yet
    assert schedule.due_s(1_000) == 0.0
    assert schedule.due_s(3_000) == 2.0
    assert schedule.due_s(2_000) == 2.0  # stamped earlier: sent at once, after the last one
    assert schedule.due_s(None) == 2.0
    assert schedule.due_s(4_000) == 3.0


def test_a_slower_speed_stretches_the_recording():
    schedule = Schedule(Pacing(speed=0.5))
    assert [schedule.due_s(ts) for ts in (0, 1_000)] == [0.0, 2.0]


@pytest.mark.parametrize(
    ("pacing", "says"),
    [
        ({"rate_per_s": 1, "speed": 2}, "not both"),
        ({"rate_per_s": 0}, "--rate must be above 0"),
        ({"speed": -1}, "--speed must be above 0"),
    ],
)
def test_bad_pacing_is_refused(pacing, says):
    with pytest.raises(PipelineError, match=says):
        Pacing(**pacing)


@pytest.mark.parametrize(
    ("text", "rate"),
    [("500/s", 500), ("500", 500), ("2.5 / s", 2.5), ("1e9/s", 1e9), ("1_000", 1000)],
)
def test_rates_as_typed(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize(
    ("text", "speed"),
    [("10x", 10), ("10", 10), ("0.5X", 0.5), (".5", 0.5), ("1e3x", 1000), (" .5 x", 0.5)],
)
def test_speeds_as_typed(text, speed):
    assert parse_speed(text) == speed


@pytest.mark.parametrize(
    "text", ["fast", "0/s", "-1", "5/m", "", "inf/s", "nan", "1e999", "10/s/s"]
)
def test_a_rate_that_is_not_one_is_refused(text):
    with pytest.raises(PipelineError, match="--rate takes messages per second"):
        parse_rate(text)


@pytest.mark.parametrize("text", ["x", "0x", "ten", "10xx", "-1x", "infx", "1e999x"])
def test_a_speed_that_is_not_one_is_refused(text):
    with pytest.raises(PipelineError, match="--speed takes a factor"):
        parse_speed(text)


def _order(recorded):
    """The sending order (indexes) of ``(topic, partition, timestamp)`` given in file order."""
    order = RecordedOrder()
    for topic, partition, ts in recorded:
        order.add(topic, partition, ts)
    assert len(order) == len(recorded)
    return list(order)


def test_partitions_recorded_one_after_another_are_merged_by_timestamp():
    # What `pipeline record` writes for a topic with history: one partition, then the next.
    # 12 messages stamped 500 ms apart, cycling over 3 partitions.
    recorded = [("T", p, 500 * n) for p in range(3) for n in range(p, 12, 3)]
    order = _order(recorded)
    assert [recorded[i][2] for i in order] == [500 * n for n in range(12)]


def test_a_partition_whose_stamps_go_backwards_keeps_its_order_and_ties_go_in_file_order():
    recorded = [
        ("a", 0, 1_000),  # 0
        ("a", 0, 3_000),  # 1
        ("a", 0, 2_000),  # 2: stamped before the message before it in its partition
        ("a", 0, 4_000),  # 3
        ("a", 1, 1_500),  # 4
        ("a", 1, 2_500),  # 5
        ("a", 1, 3_500),  # 6
        ("b", 0, 3_000),  # 7: another topic's partition 0, stamped as 1 (a tie)
        ("b", 0, 3_000),  # 8
    ]
    # Only the next message of each partition is compared: 2 comes right after 1 (not before
    # it, as sorting by timestamp would put it), and 1 before 7 and 8 (the same stamp, first
    # in the file).
    assert _order(recorded) == [0, 4, 5, 1, 2, 7, 8, 6, 3]


def test_a_message_without_a_timestamp_goes_right_after_the_message_before_it_in_its_partition():
    recorded = [
        ("T", 0, None),  # 0: before any stamp of its partition: first
        ("T", 0, 1_000),  # 1
        ("T", 0, None),  # 2: with 1
        ("T", 0, 3_000),  # 3
        ("T", 1, None),  # 4: first, after 0 (file order)
        ("T", 1, 500),  # 5
        ("T", 1, 2_000),  # 6
        ("T", 1, None),  # 7: with 6
    ]
    assert _order(recorded) == [0, 4, 5, 1, 2, 6, 7, 3]
    # Even before a message of another partition stamped as the one before it, and earlier in
    # the file.
    assert _order([("T", 0, 1_000), ("T", 1, 1_000), ("T", 0, None)]) == [0, 2, 1]


def test_the_clock_starts_at_the_earliest_first_stamp_of_a_partition():
    assert RecordedOrder().start_ms is None
    assert _order([]) == []
    order = RecordedOrder()
    for topic, partition, ts in [("T", 1, None), ("T", 1, 5_000), ("T", 1, 7_000), ("T", 1, 1_000)]:
        order.add(topic, partition, ts)
    # One partition going backwards: sent as recorded, from 5000 (1000 goes at once, after
    # 7000): the replay takes 2 s at 1x.
    assert order.start_ms == 5_000
    order.add("T", 0, 2_000)
    assert order.start_ms == 2_000
    assert list(order) == [0, 4, 1, 2, 3]


def test_messages_in_memory_in_recorded_order():
    messages = [
        RecordedMessage("T", partition, n, None, f"m{ts}".encode(), (), ts)
        for n, (partition, ts) in enumerate([(0, 0), (0, 2_000), (1, 1_000), (1, 3_000)])
    ]
    assert [m.value for m in in_recorded_order(messages)] == [b"m0", b"m1000", b"m2000", b"m3000"]
