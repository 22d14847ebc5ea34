"""The relay's ordering rules as pure functions: lock buckets, claim plans, what may be marked
published after a batch."""

from pipeline.outbox.ordering import ClaimPlan, lock_bucket, publishable_positions
from pipeline.outbox.table import OutboxRecord


def _aggregate_in_bucket(bucket, buckets, taken=()):
    for n in range(100_000):
        name = f"agg-{n}"
        if name not in taken and lock_bucket("order", name, buckets) == bucket:
            return name
    raise AssertionError("no aggregate found for the bucket")


def test_lock_buckets_are_stable_and_in_range():
    # CRC-32 of "order\0o-1" mod 256, pinned: a per-process (salted) or changed hash fails.
    assert lock_bucket("order", "o-1", 256) == 78
    assert all(0 <= lock_bucket("order", f"o-{n}", 16) < 16 for n in range(1000))
    assert lock_bucket("order", "o-1", 1 << 20) != lock_bucket("payment", "o-1", 1 << 20)


def test_a_claim_tries_only_as_many_buckets_as_fill_a_batch_oldest_first():
    a, b, c = (_aggregate_in_bucket(n, 8) for n in (1, 2, 3))
    plan = ClaimPlan(buckets=8, batch_size=3)
    plan.add_window([(1, "order", a), (2, "order", b), (3, "order", a), (4, "order", c)])
    assert plan.to_try() == [1, 2]  # a (2 rows) + b (1 row) fill the batch of 3; c is left
    plan.granted([1, 2], [1, 2])
    assert plan.full and not plan.contended
    assert plan.positions == [1, 2, 3]


def test_a_bucket_held_elsewhere_is_skipped_with_all_its_rows_and_marks_the_claim_contended():
    a, b, c = (_aggregate_in_bucket(n, 8) for n in (1, 2, 3))
    plan = ClaimPlan(buckets=8, batch_size=3)
    plan.add_window([(1, "order", a), (2, "order", b), (3, "order", a), (4, "order", c)])
    plan.granted([1, 2], [2])  # another relay holds a's bucket
    assert plan.contended
    assert plan.positions == [2]  # none of a's rows, not even the later one
    assert plan.to_try() == [3]  # the next bucket, never a's again
    plan.granted([3], [3])
    assert plan.positions == [2, 4]


def test_a_bucket_granted_in_a_later_round_brings_its_rows_from_earlier_windows():
    a, b, c = (_aggregate_in_bucket(n, 8) for n in (1, 2, 3))
    plan = ClaimPlan(buckets=8, batch_size=2)
    plan.add_window([(1, "order", a), (2, "order", b), (3, "order", c)])
    assert plan.to_try() == [1, 2]
    plan.granted([1, 2], [2])  # a held elsewhere: one row short of a batch
    plan.add_window([(4, "order", c), (5, "order", c)])
    assert plan.to_try() == [3]  # c, first seen in the first window
    plan.granted([3], [3])
    assert plan.positions == [2, 3, 4, 5]  # c's row 3 from the first window comes with it


def _record(position, aggregate_id):
    return OutboxRecord(position, f"e{position}", "order", aggregate_id, "t", b"{}", [])


def test_after_a_failure_the_aggregates_later_rows_stay_unpublished_but_others_go():
    records = [_record(1, "x"), _record(2, "y"), _record(3, "x"), _record(4, "y")]
    acknowledged = [False, True, True, True]  # x's first row failed, its second got through
    assert publishable_positions(records, acknowledged) == [2, 4]


def test_a_fully_acknowledged_batch_is_published_entirely():
    records = [_record(n, f"a{n % 3}") for n in range(1, 10)]
    assert publishable_positions(records, [True] * 9) == list(range(1, 10))
