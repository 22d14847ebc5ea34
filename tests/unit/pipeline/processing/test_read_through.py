"""A consumer group's read-through time: the latest sample of end offsets it has reached."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pipeline.processing.read_through import ReadThrough

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_nothing_is_known_before_a_sample_is_reached():
    tracker = ReadThrough()
    assert tracker.advance({0: 10}) is None
    tracker.sample(at(0), {0: 5, 1: 3})

    assert tracker.advance({0: 5, 1: 2}) is None  # partition 1 is one record short
    assert tracker.advance({0: 5}) is None  # partition 1 not known: not done


def test_the_time_is_that_of_the_latest_sample_every_partition_has_reached():
    tracker = ReadThrough()
    tracker.sample(at(0), {0: 5, 1: 3})
    tracker.sample(at(1), {0: 8, 1: 3})
    tracker.sample(at(2), {0: 9, 1: 7})

    assert tracker.advance({0: 8, 1: 4}) == at(1)
    assert tracker.advance({0: 8, 1: 4}) == at(1)  # stays until the next sample is reached
    assert tracker.advance({0: 9, 1: 7}) == at(2)


def test_a_time_found_never_goes_back():
    tracker = ReadThrough()
    tracker.sample(at(0), {0: 5})
    assert tracker.advance({0: 5}) == at(0)
    tracker.sample(at(1), {0: 9})

    assert tracker.advance({0: 2}) == at(0)  # an older answer changes nothing


def test_too_many_samples_waiting_drop_the_oldest_so_the_time_found_is_no_earlier():
    tracker = ReadThrough(keep=2)
    for second, end in ((0, 1), (1, 2), (2, 3)):
        tracker.sample(at(second), {0: end})

    # The sample of second 0 was dropped: reaching offset 1 is no longer enough to say so.
    assert tracker.advance({0: 1}) is None
    assert tracker.advance({0: 3}) == at(2)
