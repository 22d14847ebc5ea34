"""Offsets of out-of-order work: the commit position is contiguous, gaps are fine, misuse raises."""

from __future__ import annotations

import random

import pytest

from pipeline.processing.offsets import CommitPosition, OffsetTracker, PartitionOffsets


def tracker_with(*offsets: int, committed: int | None = None) -> OffsetTracker:
    tracker = OffsetTracker(committed)
    for offset in offsets:
        tracker.started(offset)
    return tracker


# --- the commit position --------------------------------------------------------------------


def test_nothing_is_committable_before_anything_is_done() -> None:
    assert OffsetTracker().committable() is None
    assert tracker_with(0, 1).committable() is None


def test_the_position_is_one_past_the_last_of_a_done_prefix() -> None:
    tracker = tracker_with(0, 1, 2)

    tracker.done(0)

    assert tracker.committable() == 1


def test_a_done_offset_above_one_in_flight_does_not_move_the_position() -> None:
    tracker = tracker_with(0, 1, 2)

    tracker.done(2)
    assert tracker.committable() is None
    tracker.done(0)
    assert tracker.committable() == 1
    tracker.done(1)
    assert tracker.committable() == 3


def test_gaps_between_started_offsets_are_skipped() -> None:
    tracker = tracker_with(5, 8, 9)

    tracker.done(5)
    assert tracker.committable() == 6
    tracker.done(9)
    assert tracker.committable() == 6
    tracker.done(8)
    assert tracker.committable() == 10


def test_the_position_is_reported_once_until_it_moves_again() -> None:
    tracker = tracker_with(0, 1)
    tracker.done(0)

    tracker.mark_committed(1)

    assert tracker.committable() is None
    assert tracker.committed == 1
    tracker.done(1)
    assert tracker.committable() == 2


def test_a_position_given_at_assignment_is_not_committed_again() -> None:
    tracker = tracker_with(3, committed=10)
    tracker.done(3)
    assert tracker.committable() is None

    tracker.started(10)
    tracker.done(10)
    assert tracker.committable() == 11


def test_a_late_acknowledgement_of_an_older_position_is_ignored() -> None:
    tracker = tracker_with(0, 1, 2)
    tracker.done(0)
    tracker.done(1)
    tracker.mark_committed(2)

    tracker.mark_committed(1)

    assert tracker.committed == 2


def test_marking_a_position_beyond_what_is_done_raises() -> None:
    tracker = tracker_with(0, 1)
    tracker.done(0)

    with pytest.raises(ValueError, match=r"position 2 is beyond what is done \(safe up to 1\)"):
        tracker.mark_committed(2)
    with pytest.raises(ValueError, match="safe up to None"):
        tracker_with(0).mark_committed(1)


# --- counts and memory ----------------------------------------------------------------------


def test_in_flight_counts_started_offsets_not_done() -> None:
    tracker = tracker_with(0, 1, 2)
    tracker.done(1)

    assert tracker.in_flight == 2


def test_the_window_holds_only_offsets_from_the_oldest_in_flight() -> None:
    tracker = tracker_with(0, 1, 2, 3)
    tracker.done(1)
    tracker.done(3)
    assert tracker.window == 4

    tracker.done(0)

    assert tracker.window == 2  # 2 (in flight) and 3 (done, above it)


def test_memory_stays_bounded_by_the_in_flight_window_not_by_the_total() -> None:
    tracker = OffsetTracker()
    largest_window = 0
    for offset in range(100_000):
        tracker.started(offset)
        largest_window = max(largest_window, tracker.window)
        if offset >= 3:
            tracker.done(offset - 3)

    assert largest_window == 4
    assert tracker.in_flight == 3
    assert tracker.committable() == 99_997


# --- misuse ---------------------------------------------------------------------------------


def test_done_for_an_offset_never_started_raises() -> None:
    with pytest.raises(ValueError, match="offset 7 is not in flight: it was never started"):
        tracker_with(5, 8).done(7)


def test_done_twice_raises_while_in_the_window_and_after_it() -> None:
    tracker = tracker_with(0, 1)
    tracker.done(1)
    with pytest.raises(ValueError, match=r"offset 1 is not in flight.*already done"):
        tracker.done(1)

    tracker.done(0)
    with pytest.raises(ValueError, match="offset 0 is not in flight"):
        tracker.done(0)


def test_offsets_must_be_started_in_increasing_order() -> None:
    tracker = tracker_with(4)

    with pytest.raises(ValueError, match="offset 4 started after offset 4"):
        tracker.started(4)
    with pytest.raises(ValueError, match="offset 3 started after offset 4"):
        tracker.started(3)


def test_offsets_must_be_non_negative_ints() -> None:
    with pytest.raises(ValueError, match="offset must be >= 0, got -1"):
        OffsetTracker().started(-1)
    with pytest.raises(TypeError, match="offset must be an int, got bool"):
        OffsetTracker().started(True)
    with pytest.raises(ValueError, match="committed position must be >= 0"):
        OffsetTracker(committed=-5)


def test_reset_forgets_everything_so_the_partition_can_start_again_lower() -> None:
    tracker = tracker_with(10, 11)
    tracker.done(10)
    tracker.mark_committed(11)

    tracker.reset()

    assert (tracker.in_flight, tracker.window, tracker.committed) == (0, 0, None)
    assert tracker.committable() is None
    tracker.started(11)
    tracker.done(11)
    assert tracker.committable() == 12


# --- several partitions ---------------------------------------------------------------------


def test_the_commit_plan_lists_every_partition_that_can_move_sorted() -> None:
    offsets = PartitionOffsets()
    for topic, partition, offset in [("b", 0, 0), ("a", 1, 4), ("a", 0, 7), ("a", 0, 8)]:
        offsets.started(topic, partition, offset)
    offsets.done("b", 0, 0)
    offsets.done("a", 1, 4)
    offsets.done("a", 0, 8)  # 7 is still in flight

    assert offsets.commit_plan() == [CommitPosition("a", 1, 5), CommitPosition("b", 0, 1)]
    assert offsets.in_flight == 1


def test_a_commit_plan_can_be_restricted_to_some_partitions() -> None:
    offsets = PartitionOffsets()
    offsets.started("t", 0, 0)
    offsets.started("t", 1, 0)
    offsets.done("t", 0, 0)
    offsets.done("t", 1, 0)

    assert offsets.commit_plan([("t", 1), ("t", 9)]) == [CommitPosition("t", 1, 1)]


def test_committed_positions_leave_the_plan() -> None:
    offsets = PartitionOffsets()
    offsets.started("t", 0, 0)
    offsets.done("t", 0, 0)

    offsets.mark_committed(offsets.commit_plan())

    assert offsets.commit_plan() == []
    assert offsets.tracker("t", 0).committed == 1


def test_a_partition_assigned_with_a_position_starts_from_it() -> None:
    offsets = PartitionOffsets()
    offsets.assign("t", 0, committed=42)

    offsets.started("t", 0, 42)
    offsets.done("t", 0, 42)

    assert offsets.commit_plan() == [CommitPosition("t", 0, 43)]


def test_done_on_a_partition_not_tracked_raises() -> None:
    with pytest.raises(ValueError, match=r"offset 3 of t\[0\] is not in flight: .* not tracked"):
        PartitionOffsets().done("t", 0, 3)


def test_a_revoked_partition_is_forgotten_and_late_acknowledgements_ignored() -> None:
    offsets = PartitionOffsets()
    offsets.started("t", 0, 0)
    offsets.done("t", 0, 0)
    plan = offsets.commit_plan()

    offsets.revoke("t", 0)
    offsets.revoke("t", 5)  # never tracked: fine
    offsets.mark_committed(plan)

    assert offsets.commit_plan() == []
    with pytest.raises(ValueError, match="not tracked"):
        offsets.done("t", 0, 0)


# --- property: random gaps, random completion order -----------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_random_completion_never_commits_past_work_not_done(seed: int) -> None:
    rng = random.Random(seed)
    tracker = OffsetTracker()
    offsets = []
    offset = rng.randrange(5)
    for _ in range(300):
        offsets.append(offset)
        offset += rng.choice([1, 1, 1, 2, 5])  # gaps, as compaction leaves them
    to_start = list(offsets)
    in_flight: list[int] = []
    done: set[int] = set()
    committed = None

    while to_start or in_flight:
        if to_start and (not in_flight or rng.random() < 0.5):
            started = to_start.pop(0)
            tracker.started(started)
            in_flight.append(started)
        else:
            finished = in_flight.pop(rng.randrange(len(in_flight)))
            tracker.done(finished)
            done.add(finished)
        position = tracker.committable()
        if position is not None:
            assert all(o in done for o in offsets if o < position)
            assert committed is None or position > committed
            if rng.random() < 0.5:
                tracker.mark_committed(position)
                committed = position
        assert tracker.in_flight == len(in_flight)

    assert tracker.committable() == offsets[-1] + 1 or committed == offsets[-1] + 1
    assert tracker.window == 0
