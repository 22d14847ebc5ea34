from __future__ import annotations

import multiprocessing
import random
import re
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.ids import event_id_time, format_uuid, new_event_id, new_event_id_bytes

UUID7_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def _make_ids(count: int) -> list[str]:
    """Runs in a child process."""
    return [new_event_id() for _ in range(count)]


def _wall_clock_ms() -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=time.time_ns() // 1_000_000)


def test_new_event_id_is_a_lowercase_hyphenated_uuid7():
    event_id = new_event_id()

    assert UUID7_TEXT.fullmatch(event_id)
    parsed = uuid.UUID(event_id)
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert str(parsed) == event_id


def test_ids_from_many_calls_strictly_increase_so_sorting_them_is_creation_order():
    ids = [new_event_id() for _ in range(50_000)]

    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_event_id_time_is_the_wall_clock_millisecond_the_id_was_made():
    before = _wall_clock_ms()
    event_id = new_event_id()
    after = _wall_clock_ms()

    stamp = event_id_time(event_id)

    assert before <= stamp <= after
    assert stamp.tzinfo is UTC
    assert stamp.microsecond % 1000 == 0


def test_a_burst_of_ids_does_not_push_their_timestamps_ahead_of_the_clock():
    # uuid6.uuid7() adds one millisecond per id made within the same millisecond, so after
    # 100,000 ids it runs ~100 s ahead; ours only uses the sub-millisecond bits for that.
    burst = [new_event_id() for _ in range(100_000)]
    after = _wall_clock_ms()

    assert event_id_time(burst[-1]) <= after
    before = _wall_clock_ms()
    assert before <= event_id_time(new_event_id()) <= _wall_clock_ms()


def test_ids_made_in_parallel_processes_never_collide():
    context = multiprocessing.get_context("fork")
    with context.Pool(4) as pool:
        batches = pool.map(_make_ids, [20_000] * 4)

    everything = [event_id for batch in batches for event_id in batch]
    assert len(set(everything)) == 80_000
    assert all(batch == sorted(batch) for batch in batches)


def test_ids_sort_by_time_across_processes():
    context = multiprocessing.get_context("fork")
    first = new_event_id()
    with context.Pool(1) as pool:
        (in_child,) = pool.apply(_make_ids, (1,))
    last = new_event_id()

    assert first < in_child < last


def test_event_id_time_reads_the_48_bit_millisecond_prefix():
    assert event_id_time("0190b6a4-3c2e-7d1a-9f3b-2c4d5e6f7a8b") == datetime(
        2024, 7, 15, 13, 45, 35, 22_000, tzinfo=UTC
    )
    assert event_id_time("00000000-0000-7000-8000-000000000000") == datetime(1970, 1, 1, tzinfo=UTC)


def test_event_id_time_accepts_uppercase_hex():
    assert event_id_time("0190B6A4-3C2E-7D1A-9F3B-2C4D5E6F7A8B") == event_id_time(
        "0190b6a4-3c2e-7d1a-9f3b-2c4d5e6f7a8b"
    )


@pytest.mark.parametrize(
    ("event_id", "message"),
    [
        (
            "not-a-uuid",
            "event id 'not-a-uuid' is not a UUID in the form xxxxxxxx-xxxx-7xxx-xxxx-xxxxxxxxxxxx",
        ),
        (
            "",
            "event id '' is not a UUID in the form xxxxxxxx-xxxx-7xxx-xxxx-xxxxxxxxxxxx",
        ),
        (
            "0190b6a43c2e7d1a9f3b2c4d5e6f7a8b",
            "event id '0190b6a43c2e7d1a9f3b2c4d5e6f7a8b' is not a UUID in the form "
            "xxxxxxxx-xxxx-7xxx-xxxx-xxxxxxxxxxxx",
        ),
        (
            "{0190b6a4-3c2e-7d1a-9f3b-2c4d5e6f7a8b}",
            "event id '{0190b6a4-3c2e-7d1a-9f3b-2c4d5e6f7a8b}' is not a UUID in the form "
            "xxxxxxxx-xxxx-7xxx-xxxx-xxxxxxxxxxxx",
        ),
        (
            "9b2f0e3c-5d1a-4c8e-9f00-123456789abc",
            "event id '9b2f0e3c-5d1a-4c8e-9f00-123456789abc' is not a UUIDv7 (version 4, "
            "variant 'specified in RFC 4122'); only UUIDv7 ids carry their creation time",
        ),
        (
            "0190b6a4-3c2e-7d1a-1f3b-2c4d5e6f7a8b",
            "event id '0190b6a4-3c2e-7d1a-1f3b-2c4d5e6f7a8b' is not a UUIDv7 (version None, "
            "variant 'reserved for NCS compatibility'); only UUIDv7 ids carry their creation time",
        ),
        (
            "ffffffff-ffff-7fff-bfff-ffffffffffff",
            "event id 'ffffffff-ffff-7fff-bfff-ffffffffffff' encodes 281474976710655 ms since "
            "1970, beyond the year 9999",
        ),
    ],
)
def test_event_id_time_rejects_what_is_not_a_uuid7(event_id, message):
    with pytest.raises(ValueError) as caught:
        event_id_time(event_id)

    assert str(caught.value) == message


def _random_bits(event_id: str) -> int:
    return uuid.UUID(event_id).int & ((1 << 62) - 1)


def test_forked_processes_never_reuse_the_random_bits_their_parent_read_ahead():
    new_event_id()  # the parent now holds random bits read ahead for later ids
    context = multiprocessing.get_context("fork")
    with context.Pool(2) as pool:
        children = pool.map(_make_ids, [100, 100])
    in_parent = [new_event_id() for _ in range(100)]

    bits = [{_random_bits(event_id) for event_id in ids} for ids in (*children, in_parent)]
    assert all(len(found) == 100 for found in bits)
    assert len(set().union(*bits)) == 300


def test_random_bits_differ_between_ids_of_one_process_over_many_batches():
    ids = [new_event_id() for _ in range(5_000)]

    assert len({_random_bits(event_id) for event_id in ids}) == 5_000


@pytest.mark.parametrize("seed", range(5))
def test_format_uuid_writes_what_str_of_uuid_writes(seed):
    generator = random.Random(seed)
    values = [0, (1 << 128) - 1, *(generator.getrandbits(128) for _ in range(2_000))]

    for value in values:
        assert format_uuid(value) == str(uuid.UUID(int=value))


def test_ids_as_bytes_are_the_same_uuid7s_in_the_same_strictly_increasing_order():
    made = [new_event_id_bytes() if n % 3 else new_event_id().encode() for n in range(30_000)]

    texts = [event_id.decode("ascii") for event_id in made]
    assert all(UUID7_TEXT.fullmatch(text) for text in texts)
    assert all(format_uuid(uuid.UUID(text).int) == text for text in texts)
    assert texts == sorted(texts) and len(set(texts)) == len(texts)
    assert event_id_time(texts[-1]) <= _wall_clock_ms()
