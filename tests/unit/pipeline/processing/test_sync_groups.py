"""Group commit for synchronous handlers: several events' handlers in one transaction.

:func:`~pipeline.processing.group_commit.run_calls` directly (what a group does when one of its
handlers fails), :class:`~pipeline.processing.group_commit.HandlerPace` (how large groups get),
and end to end through the broker-free driver: the same guarantees as one transaction per
event (key order, one effect per event, retries, dead letters, parked keys, duplicates).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select
from sqlalchemy.engine import Engine

from pipeline.envelope import Event, KafkaMessage, encode
from pipeline.processing import (
    Processor,
    ProcessorTestDriver,
    Record,
    Reject,
    UnitOfWork,
    group_commit,
    inbox,
    parked_keys,
)
from pipeline.processing import engine as engine_module
from pipeline.processing.attempt import AttemptResult, attempt
from pipeline.processing.engine import ProcessingEngine
from pipeline.processing.group_commit import Call, HandlerPace, run_calls
from pipeline.processing.processor import Route
from pipeline.settings import ProcessingSettings
from tests.support.driving import DriverFactory
from tests.support.driving import step_event as event

TOPIC = "requests.orders"
GROUP = "orders"

effects_metadata = MetaData()
effects = Table(
    "sync_effects",
    effects_metadata,
    Column("row", Integer, primary_key=True),
    Column("event_id", String(64), nullable=False),
    Column("key", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
)


class _NoDeadLetters:
    async def send(self, topic: str, message: KafkaMessage) -> None:
        raise AssertionError(f"nothing should be dead-lettered, got one for {topic}")


@pytest.fixture
def database(database: Engine) -> Engine:
    """The migrated database, with the test's effects table."""
    effects_metadata.create_all(database)
    return database


@pytest.fixture
def make_driver() -> Iterator[DriverFactory]:
    factory = DriverFactory(effects_metadata)
    yield factory
    factory.close()


@pytest.fixture
def per_record_attempts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The offsets of the records that took the per-record attempt."""
    offsets: list[int] = []

    def spy(record: Record, **options: Any) -> AttemptResult:
        offsets.append(record.offset)
        return attempt(record, **options)

    monkeypatch.setattr(engine_module, "attempt", spy)
    return offsets


@pytest.fixture
def group_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many events each group of synchronous handlers held (patched before the driver
    makes its engine, which binds run_calls when it is made)."""
    sizes: list[int] = []
    real = group_commit.run_calls

    def spy(database: Engine, calls: list[Call], **options: Any) -> list[AttemptResult | None]:
        sizes.append(len(calls))
        return real(database, calls, **options)

    monkeypatch.setattr(group_commit, "run_calls", spy)
    return sizes


def write_effect(event: Event, unit: UnitOfWork) -> None:
    values = {"event_id": event.id, "key": event.data["key"], "seq": event.data["seq"]}
    unit.session.execute(insert(effects).values(**values))


def effect_rows(database: Engine) -> list[tuple[str, int]]:
    with database.connect() as connection:
        rows = connection.execute(select(effects.c.key, effects.c.seq).order_by(effects.c.row))
        return [(key, seq) for key, seq in rows]


def recorded(database: Engine) -> dict[str, str]:
    table = inbox.inbox_table
    with database.connect() as connection:
        rows = connection.execute(select(table.c.event_id, table.c.outcome))
        return {event_id: outcome for event_id, outcome in rows}


def call_of(handled: Event, offset: int, handler: Callable[[Event, UnitOfWork], None]) -> Call:
    message = encode(handled)
    record = Record(TOPIC, 0, offset, message.key, message.value, list(message.headers))
    return Call(record, handled, Route(handler), handled.data)


def run(database: Engine, calls: list[Call], **options: Any) -> list[AttemptResult | None]:
    values: dict[str, Any] = {"consumer_group": GROUP, "use_inbox": True, "park_keys": True}
    values.update(options)
    return run_calls(database, calls, **values)


# --- run_calls ----------------------------------------------------------------------------------


def test_a_group_runs_every_handler_and_records_every_event_in_one_commit(
    database: Engine,
) -> None:
    events = [event(f"k{n}", 0) for n in range(4)]

    results = run(database, [call_of(e, n, write_effect) for n, e in enumerate(events)])

    assert [(r.kind, r.event_id) for r in results if r] == [("processed", e.id) for e in events]
    assert effect_rows(database) == [(f"k{n}", 0) for n in range(4)]
    assert recorded(database) == {e.id: "processed" for e in events}


def test_a_failing_handler_leaves_no_effect_and_the_others_commit_theirs_exactly_once(
    database: Engine,
) -> None:
    calls: dict[str, int] = defaultdict(int)

    def handler(handled: Event, unit: UnitOfWork) -> None:
        calls[handled.data["key"]] += 1
        write_effect(handled, unit)  # written before it fails: must be rolled back
        if handled.data["key"] == "bad":
            raise ConnectionResetError("the other service hung up")

    events = [event(key, 0) for key in ("a", "bad", "c")]

    results = run(database, [call_of(e, n, handler) for n, e in enumerate(events)])

    assert [r.kind for r in results if r] == ["processed", "failed", "processed"]
    assert isinstance(results[1] and results[1].error, ConnectionResetError)
    assert effect_rows(database) == [("a", 0), ("c", 0)]
    assert recorded(database) == {events[0].id: "processed", events[2].id: "processed"}
    # The group ran again without the failed event ("a" before it twice, "c" after it once);
    # the failed event's handler ran once.
    assert dict(calls) == {"a": 2, "bad": 1, "c": 1}


def test_a_rejecting_handler_is_a_dead_letter_and_the_others_commit(database: Engine) -> None:
    def handler(handled: Event, unit: UnitOfWork) -> None:
        write_effect(handled, unit)
        if handled.data["key"] == "no":
            raise Reject("never")

    events = [event("no", 0), event("yes", 0)]

    results = run(database, [call_of(e, n, handler) for n, e in enumerate(events)])

    assert results[0] is not None and results[0].kind == "dead_letter"
    assert results[0].failure is not None and results[0].failure.reason == "rejected"
    assert results[1] is not None and results[1].kind == "processed"
    assert effect_rows(database) == [("yes", 0)]


def test_a_write_that_breaks_a_constraint_at_flush_fails_only_its_own_event(
    database: Engine,
) -> None:
    with database.begin() as connection:
        connection.execute(insert(effects).values(row=7, event_id="-", key="taken", seq=-1))

    def handler(handled: Event, unit: UnitOfWork) -> None:
        row = 7 if handled.data["key"] == "clash" else None
        values = {"event_id": handled.id, "key": handled.data["key"], "seq": 0}
        unit.session.execute(insert(effects).values(**values, **({"row": row} if row else {})))

    events = [event("a", 0), event("clash", 0), event("b", 0)]

    results = run(database, [call_of(e, n, handler) for n, e in enumerate(events)])

    assert [r.kind for r in results if r] == ["processed", "failed", "processed"]
    assert "UNIQUE constraint failed" in str(results[1] and results[1].error)
    assert sorted(effect_rows(database)) == [("a", 0), ("b", 0), ("taken", -1)]


def test_events_recorded_before_are_duplicates_and_their_handlers_do_not_run(
    database: Engine,
) -> None:
    ran: list[str] = []

    def handler(handled: Event, unit: UnitOfWork) -> None:
        ran.append(handled.data["key"])

    done_before, fresh = event("old", 0), event("new", 0)
    run(database, [call_of(done_before, 0, handler)])
    ran.clear()

    results = run(database, [call_of(done_before, 0, handler), call_of(fresh, 1, handler)])

    assert [r.kind for r in results if r] == ["duplicate", "processed"]
    assert ran == ["new"]


def test_the_same_event_twice_in_one_group_runs_once(database: Engine) -> None:
    twice = event("k", 0)

    results = run(database, [call_of(twice, 0, write_effect), call_of(twice, 1, write_effect)])

    assert [r.kind for r in results if r] == ["processed", "duplicate"]
    assert effect_rows(database) == [("k", 0)]


def test_a_parked_keys_event_is_left_to_the_per_record_attempt(database: Engine) -> None:
    with database.begin() as connection:
        parked_keys.park_key(
            connection, consumer_group=GROUP, topic=TOPIC, key=b"stuck", event_id="e0", reason="x"
        )
    events = [event("stuck", 1), event("free", 0)]

    results = run(database, [call_of(e, n, write_effect) for n, e in enumerate(events)])

    assert results[0] is None
    assert results[1] is not None and results[1].kind == "processed"
    assert effect_rows(database) == [("free", 0)]


def test_without_the_inbox_handlers_run_and_nothing_is_recorded(database: Engine) -> None:
    events = [event("a", 0), event("b", 0)]

    results = run(
        database, [call_of(e, n, write_effect) for n, e in enumerate(events)], use_inbox=False
    )

    assert [r.kind for r in results if r] == ["processed", "processed"]
    assert effect_rows(database) == [("a", 0), ("b", 0)]
    assert recorded(database) == {}


# --- HandlerPace --------------------------------------------------------------------------------


def test_groups_hold_one_event_until_a_handler_was_timed() -> None:
    assert HandlerPace(0.010, most=32).group_size() == 1


def test_quick_handlers_are_grouped_as_many_as_fit_the_wait_and_slow_ones_alone() -> None:
    quick, slow = HandlerPace(0.010, most=32), HandlerPace(0.010, most=32)
    quick.observe(0.002)
    slow.observe(0.050)

    assert quick.group_size() == 6  # 1 + 10 ms / 2 ms
    assert quick.groups() == 6  # 32 events in groups of 6
    assert slow.group_size() == 1
    assert slow.groups() == 32


def test_a_group_holds_at_most_half_the_events_in_flight_so_two_groups_may_run() -> None:
    pace = HandlerPace(0.010, most=8)
    pace.observe(0.000_001)

    assert (pace.group_size(), pace.groups()) == (4, 2)
    assert HandlerPace(0.010, most=1).group_size() == 1


def test_a_handler_that_hangs_holds_up_its_group_not_every_other_key(database: Engine) -> None:
    # Quick handlers had made groups of every event in flight: one group ran at a time, and
    # one hanging call held up every key of the processor.
    release = threading.Event()
    finished: list[str] = []
    processor = Processor(GROUP)

    @processor.handler(TOPIC)
    def handler(event: Event, unit: UnitOfWork) -> None:
        if event.partitionkey == "hangs":
            assert release.wait(30), "the test never released the handler"
        finished.append(event.partitionkey or "")

    engine = ProcessingEngine(
        processor,
        database=database,
        dead_letters=_NoDeadLetters(),
        on_commit=lambda plan: None,
        settings=ProcessingSettings(max_in_flight=16, sync_group_wait_ms=10),
    )

    def record(offset: int, key: str) -> Record:
        message = encode(Event(source="/tests", type="Step", partitionkey=key, data={}))
        return Record(TOPIC, 0, offset, message.key, message.value, message.headers)

    others_done_while_hanging = False

    async def scenario() -> None:
        nonlocal others_done_while_hanging
        engine.assigned([(TOPIC, 0)])
        for offset in range(100):  # quick handlers: the groups grow
            await engine.submit(record(offset, f"warm-{offset}"))
        await engine.wait_idle()
        await engine.submit(record(100, "hangs"))
        await asyncio.sleep(0.05)
        for offset in range(101, 106):
            await engine.submit(record(offset, f"other-{offset}"))
        for _ in range(500):
            if sum(key.startswith("other-") for key in finished) == 5:
                others_done_while_hanging = "hangs" not in finished
                break
            await asyncio.sleep(0.01)
        release.set()
        await asyncio.wait_for(engine.wait_idle(), 30)
        await engine.close()

    asyncio.run(scenario())

    assert others_done_while_hanging


def test_one_slow_call_barely_moves_the_estimate_and_quick_ones_bring_it_down_fast() -> None:
    pace = HandlerPace(0.010, most=32)
    pace.observe(0.002)
    pace.observe(0.200)  # waited for the interpreter on a busy machine
    assert pace.mean_s is not None and pace.mean_s < 0.010

    slow = HandlerPace(0.010, most=32)
    slow.observe(0.050)
    for _ in range(20):
        slow.observe(0.002)
    assert slow.group_size() >= 5


# --- end to end through the driver --------------------------------------------------------------


def sync_processor(handler: Callable[[Event, UnitOfWork], None]) -> Processor:
    processor = Processor(GROUP)
    processor.handler(TOPIC)(handler)
    return processor


def test_each_keys_events_run_in_offset_order_and_groups_hold_several_events(
    make_driver: Callable[..., ProcessorTestDriver],
    per_record_attempts: list[int],
    group_sizes: list[int],
) -> None:
    seen: dict[str, list[int]] = defaultdict(list)

    def handler(handled: Event, unit: UnitOfWork) -> None:
        time.sleep(0.0005)
        seen[handled.data["key"]].append(handled.data["seq"])
        write_effect(handled, unit)

    driver = make_driver(sync_processor(handler), sync_group_wait_ms=50)
    keys = [f"k{n:02d}" for n in range(10)]
    for seq in range(10):
        for key in keys:
            driver.send(TOPIC, event(key, seq))

    snapshot = driver.run()

    assert snapshot.processed == 100
    assert dict(seen) == {key: list(range(10)) for key in keys}
    rows = effect_rows(driver.database)
    assert {key: [s for k, s in rows if k == key] for key in keys} == seen
    assert per_record_attempts == []
    assert sum(group_sizes) == 100 and max(group_sizes) > 1
    assert driver.committed == {(TOPIC, 0): 100}


def test_a_handler_failing_in_a_group_is_retried_alone_and_every_effect_lands_once(
    make_driver: Callable[..., ProcessorTestDriver], per_record_attempts: list[int]
) -> None:
    failures = {"bad": 1}

    def handler(handled: Event, unit: UnitOfWork) -> None:
        time.sleep(0.0005)
        write_effect(handled, unit)
        if failures.get(handled.data["key"]):
            failures[handled.data["key"]] -= 1
            raise ConnectionResetError("once")

    driver = make_driver(sync_processor(handler), sync_group_wait_ms=50)
    keys = ["a", "b", "bad", "c", "d"]
    for seq in range(3):
        for key in keys:
            driver.send(TOPIC, event(key, seq))

    snapshot = driver.run()

    assert (snapshot.processed, snapshot.retries, snapshot.dead_lettered_total) == (15, 1, 0)
    assert per_record_attempts == [2]  # only the failed event, alone, on the per-record path
    rows = effect_rows(driver.database)
    assert sorted(rows) == sorted((key, seq) for key in keys for seq in range(3))
    assert [s for k, s in rows if k == "bad"] == [0, 1, 2]


def test_a_rejected_event_parks_its_key_and_the_keys_later_events_follow_it(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    def handler(handled: Event, unit: UnitOfWork) -> None:
        if handled.data["key"] == "k1" and handled.data["seq"] == 0:
            raise Reject("no")
        write_effect(handled, unit)

    driver = make_driver(sync_processor(handler), sync_group_wait_ms=50)
    for key, seq in [("k1", 0), ("k2", 0), ("k1", 1), ("k2", 1)]:
        driver.send(TOPIC, event(key, seq))

    snapshot = driver.run()

    letters = driver.dead_letters(TOPIC)
    assert [(letter.reason, letter.original_offset) for letter in letters] == [
        ("rejected", 0),
        ("key_parked", 2),
    ]
    assert snapshot.dead_lettered == {"rejected": 1, "key_parked": 1}
    assert effect_rows(driver.database) == [("k2", 0), ("k2", 1)]


def test_retries_used_up_in_a_group_end_as_retries_exhausted(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    def handler(handled: Event, unit: UnitOfWork) -> None:
        write_effect(handled, unit)
        if handled.data["key"] == "broken":
            raise ValueError("always")

    driver = make_driver(sync_processor(handler), sync_group_wait_ms=50)
    driver.send(TOPIC, event("broken", 0))
    driver.send(TOPIC, event("fine", 0))

    snapshot = driver.run()

    [letter] = driver.dead_letters(TOPIC)
    assert (letter.reason, letter.attempts) == ("retries_exhausted", 3)
    assert snapshot.retries == 2
    assert effect_rows(driver.database) == [("fine", 0)]


def test_redelivered_events_are_duplicates_and_their_handlers_do_not_run_again(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    calls = 0

    def handler(handled: Event, unit: UnitOfWork) -> None:
        nonlocal calls
        calls += 1
        write_effect(handled, unit)

    driver = make_driver(sync_processor(handler), sync_group_wait_ms=50)
    for n in range(6):
        driver.send(TOPIC, event(f"k{n}", 0))
    driver.run()
    driver.redeliver(TOPIC)

    again = driver.run()

    assert (again.duplicates, calls) == (6, 6)
    assert len(effect_rows(driver.database)) == 6


@pytest.mark.parametrize(
    ("wait_ms", "grouped"),
    [(0, True), (50, False)],
    ids=["a wait of zero", "a handler registered ungrouped"],
)
def test_every_event_gets_a_transaction_and_a_thread_of_its_own(
    make_driver: Callable[..., ProcessorTestDriver],
    per_record_attempts: list[int],
    group_sizes: list[int],
    wait_ms: int,
    grouped: bool,
) -> None:
    # Ungrouped: a saga participant's handler may suddenly take seconds (a remote call); in a
    # group sized for its usual quick runs, other sagas' commands waited behind it and timed out.
    threads: set[int] = set()
    both_running = threading.Barrier(2, timeout=10)

    def handler(handled: Event, unit: UnitOfWork) -> None:
        threads.add(threading.get_ident())
        both_running.wait()  # only returns if the two events run at the same time
        write_effect(handled, unit)

    processor = Processor(GROUP)
    processor.handler(TOPIC, grouped=grouped)(handler)
    driver = make_driver(processor, sync_group_wait_ms=wait_ms)
    driver.send(TOPIC, event("a", 0))
    driver.send(TOPIC, event("b", 0))

    assert driver.run().processed == 2
    assert (sorted(per_record_attempts), group_sizes, len(threads)) == ([0, 1], [], 2)
