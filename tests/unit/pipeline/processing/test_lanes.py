"""Key-ordered dispatch: one at a time per key in offset order, concurrency across keys, stalls."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import pytest

from pipeline.processing.lanes import KeyLanes, Lane, Unkeyed, Work
from pipeline.processing.offsets import PartitionOffsets


def work(offset: int, key: str | None = "a", partition: int = 0, topic: str = "t") -> Work[None]:
    return Work(topic, partition, offset, key, None)


def lanes(max_in_flight: int = 10, **options: Any) -> KeyLanes[None]:
    return KeyLanes(max_in_flight, **options)


# --- ordering and concurrency ---------------------------------------------------------------


def test_work_of_one_key_runs_one_after_another_in_offset_order() -> None:
    dispatch = lanes()
    a0, a1, a2 = work(0), work(1), work(2)

    assert dispatch.submit(a0) == [a0]
    assert dispatch.submit(a1) == []
    assert dispatch.submit(a2) == []
    assert dispatch.complete(a0) == [a1]
    assert dispatch.complete(a1) == [a2]
    assert dispatch.complete(a2) == []


def test_work_of_different_keys_runs_concurrently_up_to_the_limit() -> None:
    dispatch = lanes(2)
    a0, b1, c2 = work(0, "a"), work(1, "b"), work(2, "c")

    assert dispatch.submit(a0) == [a0]
    assert dispatch.submit(b1) == [b1]
    assert dispatch.submit(c2) == []
    assert (dispatch.in_flight, dispatch.pending) == (2, 1)
    assert dispatch.complete(b1) == [c2]


def test_room_goes_to_the_work_that_became_ready_first() -> None:
    dispatch = lanes(1)
    a0, b1, a2 = work(0, "a"), work(1, "b"), work(2, "a")
    for item in (a0, b1, a2):
        dispatch.submit(item)

    assert dispatch.complete(a0) == [b1]  # b1 waited for room before a2 was a lane head
    assert dispatch.complete(b1) == [a2]


def test_a_lane_head_waits_its_turn_behind_work_that_was_ready_earlier() -> None:
    dispatch = lanes(2)
    a0, a1, b2, c3 = work(0, "a"), work(1, "a"), work(2, "b"), work(3, "c")
    for item in (a0, a1, b2, c3):
        dispatch.submit(item)

    assert dispatch.complete(a0) == [c3]
    assert dispatch.complete(b2) == [a1]


def test_the_same_key_on_other_partitions_or_topics_is_another_lane() -> None:
    dispatch = lanes()
    here, other_partition, other_topic = work(0), work(0, partition=1), work(0, topic="u")

    assert dispatch.submit(here) == [here]
    assert dispatch.submit(other_partition) == [other_partition]
    assert dispatch.submit(other_topic) == [other_topic]


def test_pending_counts_work_waiting_behind_its_lane_or_for_room() -> None:
    dispatch = lanes(1)
    for offset, key in enumerate(["a", "a", "b"]):
        dispatch.submit(work(offset, key))

    assert (dispatch.in_flight, dispatch.pending) == (1, 2)


# --- keyless work ---------------------------------------------------------------------------


def test_keyless_work_is_ordered_per_partition_by_default() -> None:
    dispatch = lanes()
    n0, n1, other = work(0, None), work(1, None), work(0, None, partition=1)

    assert dispatch.submit(n0) == [n0]
    assert dispatch.submit(n1) == []
    assert dispatch.submit(other) == [other]
    assert dispatch.complete(n0) == [n1]


def test_keyless_work_runs_freely_when_unordered() -> None:
    dispatch = lanes(unkeyed="unordered")
    n0, n1 = work(0, None), work(1, None)

    assert dispatch.submit(n0) == [n0]
    assert dispatch.submit(n1) == [n1]
    assert dispatch.complete(n1) == []
    assert dispatch.complete(n0) == []
    assert (dispatch.in_flight, dispatch.pending) == (0, 0)


# --- failures -------------------------------------------------------------------------------


def test_a_failure_stalls_its_key_by_default_and_other_keys_go_on() -> None:
    dispatch = lanes(1)
    a0, a1, b2 = work(0, "a"), work(1, "a"), work(2, "b")
    for item in (a0, a1, b2):
        dispatch.submit(item)

    assert dispatch.fail(a0) == [b2]
    assert dispatch.stalled == {Lane("t", 0, "a")}
    assert dispatch.complete(b2) == []
    assert dispatch.pending == 1


def test_releasing_a_stalled_key_lets_its_next_work_run() -> None:
    dispatch = lanes()
    a0, a1 = work(0), work(1)
    dispatch.submit(a0)
    dispatch.submit(a1)
    dispatch.fail(a0, "stall_key")

    assert dispatch.release(a0.lane) == [a1]
    assert dispatch.stalled == frozenset()


def test_a_stall_holds_work_submitted_after_the_failure_too() -> None:
    dispatch = lanes()
    a0, a1 = work(0), work(1)
    dispatch.submit(a0)
    dispatch.fail(a0)

    assert dispatch.submit(a1) == []
    assert dispatch.release(a0.lane) == [a1]


def test_skip_key_continue_lets_the_rest_of_the_key_run() -> None:
    dispatch = lanes()
    a0, a1 = work(0), work(1)
    dispatch.submit(a0)
    dispatch.submit(a1)

    assert dispatch.fail(a0, "skip_key_continue") == [a1]
    assert dispatch.stalled == frozenset()


def test_a_failed_unordered_keyless_work_stalls_nothing() -> None:
    dispatch = lanes(unkeyed="unordered")
    n0 = work(0, None)
    dispatch.submit(n0)

    assert dispatch.fail(n0, "stall_key") == []
    assert dispatch.stalled == frozenset()


def test_releasing_a_lane_that_is_not_stalled_raises() -> None:
    with pytest.raises(ValueError, match=r"Lane\(topic='t', partition=0, key='a'\) is not stalled"):
        lanes().release(Lane("t", 0, "a"))


def test_an_unknown_policy_raises() -> None:
    dispatch = lanes()
    a0 = work(0)
    dispatch.submit(a0)

    with pytest.raises(ValueError, match=r"policy must be one of .* got 'retry'"):
        dispatch.fail(a0, "retry")  # type: ignore[arg-type]
    assert dispatch.in_flight == 1


# --- set aside: the handler done, the commit not yet -----------------------------------------


def test_work_set_aside_gives_its_room_to_another_key_but_holds_its_own() -> None:
    dispatch = lanes(1)
    a0, a1, b2 = work(0, "a"), work(1, "a"), work(2, "b")
    for item in (a0, a1, b2):
        dispatch.submit(item)

    assert dispatch.set_aside(a0) == [b2]  # a1 waits for a0's commit, b2 takes the room
    assert (dispatch.in_flight, dispatch.pending) == (2, 1)
    assert dispatch.complete(b2) == []  # the room is free, but a's lane is still held
    assert dispatch.complete(a0) == [a1]
    assert (dispatch.in_flight, dispatch.pending) == (1, 0)


def test_take_waiting_names_each_lane_head_that_waits_for_room_once() -> None:
    dispatch = lanes(1, note_waiting=True)
    a0, a1, b2, c3 = work(0, "a"), work(1, "a"), work(2, "b"), work(3, "c")

    assert dispatch.submit(a0) == [a0]
    assert dispatch.take_waiting() == []  # it started: nothing waits
    for item in (a1, b2, c3):
        dispatch.submit(item)
    assert dispatch.take_waiting() == [b2, c3]  # a1 is behind a0 in its lane, not its head
    assert dispatch.take_waiting() == []  # once

    assert dispatch.complete(a0) == [b2]
    assert dispatch.take_waiting() == [a1]  # now its lane's head, waiting for room


def test_take_waiting_forgets_revoked_partitions_and_is_off_by_default() -> None:
    dispatch = lanes(1, note_waiting=True)
    a0, b0 = work(0, "a", partition=0), work(0, "b", partition=1)
    dispatch.submit(a0)
    dispatch.submit(b0)
    dispatch.forget([("t", 1)])
    assert dispatch.take_waiting() == []

    plain = lanes(1)
    plain.submit(a0)
    plain.submit(work(1, "b"))
    assert plain.take_waiting() == []


def test_take_waiting_never_names_unordered_work() -> None:
    # It is ready when submitted, before the earlier work of its key ran: not a lane's head.
    dispatch = lanes(1, note_waiting=True, unkeyed="unordered")
    for offset in range(3):
        dispatch.submit(work(offset, None))

    assert dispatch.take_waiting() == []


def test_work_set_aside_can_fail_stalling_its_key() -> None:
    dispatch = lanes(1)
    a0, a1 = work(0, "a"), work(1, "a")
    dispatch.submit(a0)
    dispatch.submit(a1)
    dispatch.set_aside(a0)

    assert dispatch.fail(a0) == []
    assert dispatch.stalled == frozenset({Lane("t", 0, "a")})


def test_work_set_aside_is_reported_by_a_drain_and_dropped_by_forget() -> None:
    dispatch = lanes(1)
    a0, b1 = work(0, "a"), work(1, "b", partition=1)
    dispatch.submit(a0)
    dispatch.submit(b1)
    dispatch.set_aside(a0)

    assert dispatch.drain([("t", 0)]) == [a0]
    assert dispatch.forget([("t", 0)]) == []
    assert (dispatch.in_flight, dispatch.pending) == (1, 0)  # b1 only
    with pytest.raises(ValueError, match="is not running"):
        dispatch.complete(a0)


def test_work_set_aside_takes_its_place_back_at_once_when_there_is_room() -> None:
    dispatch = lanes(2)
    a0 = work(0, "a")
    dispatch.submit(a0)
    dispatch.set_aside(a0)

    assert dispatch.reclaim(a0) is True
    assert not dispatch.is_aside(a0)
    assert dispatch.complete(a0) == []


def test_work_set_aside_waits_for_its_place_back_ahead_of_new_work() -> None:
    dispatch = lanes(1)
    a0, b1, c2 = work(0, "a"), work(1, "b"), work(2, "c")
    dispatch.submit(a0)
    dispatch.set_aside(a0)  # b1 may start in its place
    dispatch.submit(b1)
    dispatch.submit(c2)  # waits for room

    assert dispatch.reclaim(a0) is False
    assert dispatch.take_reclaimed() == []
    assert dispatch.complete(b1) == []  # the room goes back to a0, not to c2
    assert dispatch.take_reclaimed() == [a0]
    assert dispatch.take_reclaimed() == []
    assert dispatch.complete(a0) == [c2]


def test_placed_counts_each_work_given_a_place_once() -> None:
    dispatch = lanes(1)
    a0, b1, c2 = work(0, "a"), work(1, "b"), work(2, "c")
    counts = [dispatch.placed]
    dispatch.submit(a0)
    dispatch.set_aside(a0)
    dispatch.submit(b1)  # starts in a0's place
    dispatch.submit(c2)  # waits for room
    counts.append(dispatch.placed)
    dispatch.reclaim(a0)
    dispatch.complete(b1)  # the place goes back to a0: not counted again
    counts.append(dispatch.placed)
    dispatch.complete(a0)  # c2 starts
    counts.append(dispatch.placed)

    assert counts == [0, 2, 2, 3]


def test_work_waiting_for_its_place_back_is_dropped_by_forget() -> None:
    dispatch = lanes(1)
    a0, b1 = work(0, "a"), work(1, "b", partition=1)
    dispatch.submit(a0)
    dispatch.set_aside(a0)
    dispatch.submit(b1)
    dispatch.reclaim(a0)

    dispatch.drain([("t", 0)])
    dispatch.forget([("t", 0)])
    assert dispatch.complete(b1) == []
    assert dispatch.take_reclaimed() == []
    assert (dispatch.in_flight, dispatch.pending) == (0, 0)


def test_only_running_work_can_be_set_aside() -> None:
    dispatch = lanes(1)
    a0, a1 = work(0, "a"), work(1, "a")
    dispatch.submit(a0)
    dispatch.submit(a1)

    with pytest.raises(ValueError, match=r"offset=1.* is not running"):
        dispatch.set_aside(a1)
    dispatch.set_aside(a0)
    with pytest.raises(ValueError, match=r"offset=0.* is not running"):
        dispatch.set_aside(a0)


# --- misuse ---------------------------------------------------------------------------------


def test_completing_work_that_is_not_running_raises() -> None:
    dispatch = lanes()
    a0, a1 = work(0), work(1)
    dispatch.submit(a0)
    dispatch.submit(a1)

    with pytest.raises(ValueError, match=r"Work\(topic='t', partition=0, offset=1, key='a'\) is"):
        dispatch.complete(a1)  # waiting, not running
    dispatch.complete(a0)
    with pytest.raises(ValueError, match=r"offset=0.* is not running"):
        dispatch.complete(a0)
    with pytest.raises(ValueError, match="is not running"):
        dispatch.fail(work(9))


def test_offsets_of_a_partition_must_be_submitted_in_increasing_order() -> None:
    dispatch = lanes()
    dispatch.submit(work(5, "a"))

    with pytest.raises(ValueError, match=r"offset 5 of t\[0\] submitted after offset 5"):
        dispatch.submit(work(5, "b"))
    with pytest.raises(ValueError, match="offset 4 of"):
        dispatch.submit(work(4, "b"))
    assert dispatch.submit(work(4, "b", partition=1)) != []  # another partition


def test_max_in_flight_is_checked_when_made() -> None:
    with pytest.raises(ValueError, match="max_in_flight must be >= 1, got 0"):
        KeyLanes(0)
    with pytest.raises(TypeError, match="max_in_flight must be an int, got float"):
        KeyLanes(2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unkeyed must be one of"):
        KeyLanes(1, unkeyed="free")  # type: ignore[arg-type]


def test_work_is_identified_without_its_payload() -> None:
    first: Work[dict[str, object]] = Work("t", 0, 1, "a", {"unhashable": ["payload"]})
    again: Work[dict[str, object]] = Work("t", 0, 1, "a", {"other": "payload"})

    assert first == again
    assert hash(first) == hash(again)
    assert "payload" not in repr(first)


# --- draining -------------------------------------------------------------------------------


def test_a_full_drain_starts_nothing_more_and_reports_what_runs() -> None:
    dispatch = lanes(2)
    a0, b1, a2, c3 = work(0, "a"), work(1, "b"), work(2, "a"), work(3, "c")
    for item in (a0, b1, a2, c3):
        dispatch.submit(item)

    assert dispatch.drain() == [a0, b1]
    assert dispatch.complete(a0) == []
    assert dispatch.complete(b1) == []
    assert (dispatch.in_flight, dispatch.pending) == (0, 2)
    with pytest.raises(RuntimeError, match=r"t\[0\] is draining"):
        dispatch.submit(work(4, "d"))


def test_draining_some_partitions_lets_the_others_go_on() -> None:
    dispatch = lanes(2)
    a0, a1, b0 = work(0, "a"), work(1, "a"), work(0, "b", partition=1)
    b1, b2 = work(1, "b", partition=1), work(2, "c", partition=1)
    for item in (a0, a1, b0, b1, b2):
        dispatch.submit(item)

    assert dispatch.drain([("t", 0)]) == [a0]
    assert dispatch.complete(a0) == [b2]  # a1 stays put, its room goes to partition 1
    assert dispatch.complete(b0) == [b1]
    with pytest.raises(RuntimeError, match="draining"):
        dispatch.submit(work(2, "a"))


def test_forgetting_partitions_drops_their_work_and_stalls() -> None:
    dispatch = lanes(1)
    a0, a1, b2 = work(0, "a"), work(1, "a"), work(2, "b")
    keep = work(0, "a", partition=1)
    for item in (a0, a1, b2, keep):
        dispatch.submit(item)
    dispatch.fail(a0)  # stalls a, starts b2
    dispatch.drain([("t", 0)])

    assert dispatch.forget([("t", 0)]) == [keep]  # b2 dropped while running: room for keep
    assert dispatch.stalled == frozenset()
    assert (dispatch.in_flight, dispatch.pending) == (1, 0)
    with pytest.raises(ValueError, match="is not running"):
        dispatch.complete(b2)  # abandoned: its completion is no longer counted


def test_a_forgotten_partition_can_be_submitted_to_again_from_a_lower_offset() -> None:
    dispatch = lanes()
    dispatch.submit(work(7))
    dispatch.drain([("t", 0)])
    dispatch.forget([("t", 0)])

    again = work(3)
    assert dispatch.submit(again) == [again]


def test_forgetting_running_work_starts_what_waited_for_its_room() -> None:
    dispatch = lanes(1)
    x0, a0, a1 = work(0, "x", partition=1), work(0, "a"), work(1, "a")
    for item in (x0, a0, a1):
        dispatch.submit(item)

    assert dispatch.forget([("t", 1)]) == [a0]
    assert dispatch.complete(a0) == [a1]


# --- property: many events over few keys, completed in random order -------------------------


@pytest.mark.parametrize("seed", range(25))
def test_random_runs_keep_key_order_the_limit_and_a_safe_commit(seed: int) -> None:
    """(a) per lane, finishing order is offset order; (b) never more than max_in_flight run
    (work set aside not counted), one at a time per lane (counted); (c) the commit position
    never passes work not done; (d) everything finishes, at last+1."""
    rng = random.Random(seed)
    max_in_flight = rng.randint(1, 6)
    unkeyed: Unkeyed = "per_partition" if rng.random() < 0.5 else "unordered"
    dispatch: KeyLanes[None] = KeyLanes(max_in_flight, unkeyed=unkeyed)
    offsets = PartitionOffsets()
    partitions = [("t", 0), ("t", 1), ("u", 0)]
    keys = ["a", "b", "c", "d", None]

    queued: dict[tuple[str, int], list[Work[None]]] = {}
    for topic, partition in partitions:
        offset, items = rng.randrange(3), []
        for _ in range(rng.randint(50, 150)):
            items.append(work(offset, rng.choice(keys), partition, topic))
            offset += rng.choice([1, 1, 1, 3])  # gaps
        queued[(topic, partition)] = items
    every = [item for items in queued.values() for item in items]
    started: set[Work[None]] = set()
    running: list[Work[None]] = []
    aside: set[Work[None]] = set()  # in running too
    finished: set[Work[None]] = set()
    finish_order: dict[Lane, list[int]] = defaultdict(list)

    def run(newly: list[Work[None]]) -> None:
        for item in newly:
            assert item not in started
            started.add(item)
            running.append(item)
        assert len(running) == dispatch.in_flight  # (b)
        assert len(running) - len(aside) <= max_in_flight
        ordered = [i.lane for i in running if i.key is not None or unkeyed == "per_partition"]
        assert len(ordered) == len(set(ordered))  # one at a time per lane

    while any(queued.values()) or running or dispatch.stalled:
        choice = rng.random()
        sources = [p for p, items in queued.items() if items]
        if sources and (choice < 0.4 or not running):
            item = queued[rng.choice(sources)].pop(0)
            offsets.started(item.topic, item.partition, item.offset)
            run(dispatch.submit(item))
        elif running and choice < 0.6 and len(aside) < len(running):
            item = rng.choice([i for i in running if i not in aside])
            aside.add(item)
            run(dispatch.set_aside(item))
        elif running and choice < 0.95:
            item = running.pop(rng.randrange(len(running)))
            aside.discard(item)
            offsets.done(item.topic, item.partition, item.offset)
            finished.add(item)
            if item.key is not None or unkeyed == "per_partition":
                finish_order[item.lane].append(item.offset)
            if rng.random() < 0.1:
                run(dispatch.fail(item, rng.choice(["stall_key", "skip_key_continue"])))
            else:
                run(dispatch.complete(item))
        elif dispatch.stalled:
            run(dispatch.release(rng.choice(sorted(dispatch.stalled, key=repr))))
        else:
            continue
        for topic, partition, position in offsets.commit_plan():  # (c)
            assert all(
                item in finished
                for item in every
                if (item.topic, item.partition) == (topic, partition) and item.offset < position
            )
        if rng.random() < 0.3:
            offsets.mark_committed(offsets.commit_plan())

    for lane, order in finish_order.items():  # (a)
        assert order == sorted(order), lane
    assert finished == set(every)  # (d)
    assert (dispatch.in_flight, dispatch.pending, offsets.in_flight) == (0, 0, 0)
    offsets.mark_committed(offsets.commit_plan())
    assert [offsets.tracker(*p).committed for p in partitions] == [
        queued_last.offset + 1
        for queued_last in (
            max((i for i in every if (i.topic, i.partition) == p), key=lambda i: i.offset)
            for p in partitions
        )
    ]
    assert offsets.commit_plan() == []
