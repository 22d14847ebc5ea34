"""``async def`` handlers end to end through the broker-free test driver.

Their first attempts take the group path (look-up, handler on the loop, group commit); retries,
parked keys, redrives and bad input take the per-record path. Both must keep the guarantees of
synchronous handlers: key order, one effect per event, outbox rows in the same commit, dead
letters with the right reason.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select
from sqlalchemy.orm import Session

from pipeline.envelope import Event
from pipeline.errors import PipelineError
from pipeline.outbox.table import outbox_table
from pipeline.processing import (
    Processor,
    ProcessorTestDriver,
    Record,
    Reject,
    UnitOfWork,
    inbox,
    parked_keys,
)
from pipeline.processing import engine as engine_module
from pipeline.processing.attempt import AttemptResult, attempt
from pipeline.processing.sqlite_loop_inbox import SqliteLoopInbox
from tests.support.driving import DriverFactory
from tests.support.driving import step_event as event

TOPIC = "requests.orders"
OUT_TOPIC = "events.orders"
GROUP = "orders"

effects_metadata = MetaData()
effects = Table(
    "effects",
    effects_metadata,
    Column("row", Integer, primary_key=True),
    Column("event_id", String(64), nullable=False),
    Column("key", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
)


@pytest.fixture
def make_driver() -> Iterator[DriverFactory]:
    factory = DriverFactory(effects_metadata)
    yield factory
    factory.close()


@pytest.fixture
def per_record_attempts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The offsets of the records that took the per-record attempt (in a worker thread)."""
    offsets: list[int] = []

    def spy(record: Record, **options: Any) -> AttemptResult:
        offsets.append(record.offset)
        return attempt(record, **options)

    monkeypatch.setattr(engine_module, "attempt", spy)
    return offsets


def insert_effect(event: Event) -> Callable[[Session], object]:
    values = {"event_id": event.id, "key": event.data["key"], "seq": event.data["seq"]}
    return lambda session: session.execute(insert(effects).values(**values))


def effect_rows(driver: ProcessorTestDriver) -> list[tuple[str, int]]:
    with driver.database.connect() as connection:
        rows = connection.execute(select(effects.c.key, effects.c.seq).order_by(effects.c.row))
        return [(key, seq) for key, seq in rows]


def inbox_outcomes(driver: ProcessorTestDriver) -> dict[str, str]:
    table = inbox.inbox_table
    with driver.database.connect() as connection:
        rows = connection.execute(
            select(table.c.event_id, table.c.outcome).where(table.c.consumer_group == GROUP)
        )
        return {event_id: outcome for event_id, outcome in rows}


def outbox_rows(driver: ProcessorTestDriver) -> list[tuple[str, str, dict[str, str]]]:
    with driver.database.connect() as connection:
        rows = connection.execute(
            select(outbox_table.c.event_id, outbox_table.c.aggregate_id, outbox_table.c.headers)
        )
        return [(event_id, aggregate, dict(headers)) for event_id, aggregate, headers in rows]


def parked_count(driver: ProcessorTestDriver) -> int:
    with driver.database.connect() as connection:
        return parked_keys.count_parked(connection, consumer_group=GROUP)


class AsyncRecorder:
    """An async handler that writes its effect and notes what it handled; it rejects the
    events ``broken`` picks."""

    def __init__(self, broken: Callable[[Event], bool] = lambda event: False) -> None:
        self.broken = broken
        self.handled: list[tuple[str, int]] = []
        self.calls = 0

    async def __call__(self, event: Event, unit: UnitOfWork) -> None:
        self.calls += 1
        await asyncio.sleep(0)
        if self.broken(event):
            raise Reject(f"cannot handle {event.data['key']}#{event.data['seq']}")
        unit.write(insert_effect(event))
        self.handled.append((event.data["key"], event.data["seq"]))


def async_processor(handler: Callable[[Event, UnitOfWork], Any], **route: Any) -> Processor:
    processor = Processor(GROUP)

    async def handle(event: Event, unit: UnitOfWork) -> None:  # an ``async def`` to route
        await handler(event, unit)

    processor.handler(TOPIC, **route)(handle)
    return processor


# --- processing, order, concurrency ---------------------------------------------------------------


def test_async_handler_events_are_processed_and_recorded_in_the_inbox(
    make_driver: Callable[..., ProcessorTestDriver], per_record_attempts: list[int]
) -> None:
    handler = AsyncRecorder()
    driver = make_driver(async_processor(handler))
    sent = [event(f"k{n}", 0) for n in range(5)]
    for item in sent:
        driver.send(TOPIC, item)

    snapshot = driver.run()

    assert (snapshot.processed, snapshot.duplicates, snapshot.dead_lettered_total) == (5, 0, 0)
    assert inbox_outcomes(driver) == {item.id: "processed" for item in sent}
    assert sorted(handler.handled) == [(f"k{n}", 0) for n in range(5)]
    assert driver.committed == {(TOPIC, 0): 5}
    assert per_record_attempts == []  # all on the group path


def test_each_keys_events_run_in_offset_order_while_handlers_sleep_random_amounts(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    rng = random.Random(7)
    seen: dict[str, list[int]] = defaultdict(list)

    async def handler(event: Event, unit: UnitOfWork) -> None:
        await asyncio.sleep(rng.random() * 0.002)
        seen[event.data["key"]].append(event.data["seq"])
        unit.write(insert_effect(event))

    driver = make_driver(async_processor(handler))
    keys = [f"k{n:02d}" for n in range(10)]
    for seq in range(10):
        for key in keys:
            driver.send(TOPIC, event(key, seq))

    snapshot = driver.run()

    assert snapshot.processed == 100
    assert seen == {key: list(range(10)) for key in keys}
    rows = effect_rows(driver)
    assert {key: [s for k, s in rows if k == key] for key in keys} == seen
    assert driver.committed == {(TOPIC, 0): 100}


def test_async_handlers_of_different_keys_run_at_the_same_time(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    running = 0
    most_at_once = 0

    async def handler(event: Event, unit: UnitOfWork) -> None:
        nonlocal running, most_at_once
        running += 1
        most_at_once = max(most_at_once, running)
        await asyncio.sleep(0.001)
        running -= 1

    driver = make_driver(async_processor(handler))
    for seq in range(3):
        for n in range(8):
            driver.send(TOPIC, event(f"k{n}", seq))

    assert driver.run().processed == 24
    assert most_at_once > 1


def test_an_event_waiting_for_its_commit_gives_its_room_to_another_key_not_to_its_own(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    """With one event in flight: a's commit waits until b's handler ran (b started while a was
    committing), and a's next event starts only once a's effect is committed."""
    b_ran = threading.Event()
    waited_for_b: list[bool] = []
    saw_a0_committed: list[bool] = []
    driver: ProcessorTestDriver

    def a0_write(session: Session) -> None:
        waited_for_b.append(b_ran.wait(10))
        session.execute(insert(effects).values(event_id="a0", key="a", seq=0))

    async def handler(event: Event, unit: UnitOfWork) -> None:
        key, seq = event.data["key"], event.data["seq"]
        if (key, seq) == ("a", 0):
            unit.write(a0_write)
        elif key == "b":
            b_ran.set()
        else:
            saw_a0_committed.append(("a", 0) in effect_rows(driver))

    driver = make_driver(async_processor(handler), max_in_flight=1)
    for key, seq in (("a", 0), ("b", 0), ("a", 1)):
        driver.send(TOPIC, event(key, seq))

    assert driver.run().processed == 3
    assert waited_for_b == [True]
    assert saw_a0_committed == [True]


def test_an_event_waiting_for_a_place_is_looked_up_while_the_one_before_it_runs(
    make_driver: Callable[..., ProcessorTestDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one event in flight, b's inbox look-up is done while a's handler runs (b is its
    key's next event, waiting only for the place), so b's handler need not wait for it."""
    looked_up: list[str] = []
    real_look_up = SqliteLoopInbox.look_up

    async def spy(self: SqliteLoopInbox, items: list[tuple[str, str, bytes | None]]) -> Any:
        looked_up.extend(item[0] for item in items)
        return await real_look_up(self, items)

    monkeypatch.setattr(SqliteLoopInbox, "look_up", spy)
    a, b = event("a", 0), event("b", 0)
    looked_up_while_a_ran: list[str] = []

    async def handler(event: Event, unit: UnitOfWork) -> None:
        if event.id == a.id:
            await asyncio.sleep(0.05)
            looked_up_while_a_ran.extend(looked_up)

    driver = make_driver(async_processor(handler), max_in_flight=1)
    driver.send(TOPIC, a)
    driver.send(TOPIC, b)

    assert driver.run().processed == 2
    # (In one group: b's look-up may be queued before a's, a's task not having run yet.)
    assert sorted(looked_up_while_a_ran) == sorted([a.id, b.id])
    assert sorted(looked_up) == sorted([a.id, b.id])  # each once


def test_sqlite_claims_of_several_turns_of_handlers_are_one_group(
    make_driver: Callable[..., ProcessorTestDriver], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim on SQLite runs within one turn of the loop, so without lingering a group held
    only the events whose handlers finished in one turn: at most max_in_flight."""
    claimed: list[int] = []
    real_claim = SqliteLoopInbox.claim

    async def spy(self: SqliteLoopInbox, units: list[UnitOfWork]) -> Any:
        claimed.append(len(units))
        return await real_claim(self, units)

    monkeypatch.setattr(SqliteLoopInbox, "claim", spy)

    async def handler(event: Event, unit: UnitOfWork) -> None:
        return None

    driver = make_driver(async_processor(handler), max_in_flight=4)
    for n in range(200):
        driver.send(TOPIC, event(f"k{n % 100}", n // 100))

    assert driver.run().processed == 200
    assert sum(claimed) == 200
    # Groups of one turn each (4 events at most) would be 50: each of these took many turns'.
    assert len(claimed) < 200 // 4 // 2


def test_a_copy_queued_behind_its_first_is_a_duplicate_its_handler_never_sees(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    """The copy's look-up starts only once the first copy committed (it is its key's next
    event only then), so it finds the first recorded."""
    handler = AsyncRecorder()
    driver = make_driver(async_processor(handler), max_in_flight=1)
    first = event("k1", 0)
    for item in (first, event("k2", 0), first, event("k3", 0)):
        driver.send(TOPIC, item)

    snapshot = driver.run()

    assert (snapshot.processed, snapshot.duplicates) == (3, 1)
    assert handler.calls == 3
    assert effect_rows(driver) == [("k1", 0), ("k2", 0), ("k3", 0)]


def test_without_key_order_a_rejected_event_still_parks_its_key_for_the_later_ones(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    """ordering=none, one event in flight: each event's look-up happens when it starts, after
    the events before it ran, so k1's events after the rejected one find the key parked, and a
    copy of a handled event is a duplicate its handler never sees."""
    handler = AsyncRecorder(broken=lambda event: event.data == {"key": "k1", "seq": 1})
    driver = make_driver(async_processor(handler), max_in_flight=1, ordering="none")
    handled_first = event("k2", 0)
    for item in (
        event("k1", 0),
        event("k1", 1),
        handled_first,
        event("k1", 2),
        handled_first,
        event("k1", 3),
    ):
        driver.send(TOPIC, item)

    snapshot = driver.run()

    assert handler.handled == [("k1", 0), ("k2", 0)]
    assert snapshot.dead_lettered == {"rejected": 1, "key_parked": 2}
    assert (snapshot.duplicates, handler.calls) == (1, 3)


def test_redelivered_events_are_duplicates_and_the_handler_is_not_called_again(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    handler = AsyncRecorder()
    driver = make_driver(async_processor(handler))
    for seq in range(3):
        driver.send(TOPIC, event("k1", seq))
    driver.run()

    driver.redeliver(TOPIC, from_offset=0)
    snapshot = driver.run()

    assert handler.calls == 3
    assert (snapshot.processed, snapshot.duplicates) == (3, 3)
    assert effect_rows(driver) == [("k1", 0), ("k1", 1), ("k1", 2)]
    assert driver.committed == {(TOPIC, 0): 3}


def test_without_the_inbox_async_handlers_run_and_record_nothing(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    handler = AsyncRecorder()
    driver = make_driver(async_processor(handler), inbox=False)
    for seq in range(2):
        driver.send(TOPIC, event("k1", seq))

    assert driver.run().processed == 2
    assert effect_rows(driver) == [("k1", 0), ("k1", 1)]
    assert inbox_outcomes(driver) == {}


# --- writes and the outbox ------------------------------------------------------------------------


def test_unit_write_from_an_async_handler_lands_with_the_event(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    async def handler(event: Event, unit: UnitOfWork) -> None:
        await asyncio.sleep(0)
        values = {"event_id": event.id, "key": event.data["key"], "seq": event.data["seq"]}
        unit.write(lambda session: session.execute(insert(effects).values(**values)))
        unit.write(
            lambda session: session.execute(insert(effects).values(**{**values, "seq": 100}))
        )

    driver = make_driver(async_processor(handler))
    driver.send(TOPIC, event("k1", 0))
    driver.send(TOPIC, event("k2", 0))

    assert driver.run().processed == 2
    assert sorted(effect_rows(driver)) == [("k1", 0), ("k1", 100), ("k2", 0), ("k2", 100)]


def emit_done(unit: UnitOfWork, outgoing: Event | None = None) -> Event:
    key = unit.event.data["key"]
    done = outgoing or Event(source="/tests", type="StepDone", partitionkey=key, data={"k": key})
    return unit.emit(done, aggregate_type="order", aggregate_id=key, topic=OUT_TOPIC)


def test_unit_emit_from_an_async_handler_lands_in_the_outbox_linked_to_the_event(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    emitted: list[Event] = []

    async def handler(event: Event, unit: UnitOfWork) -> None:
        await asyncio.sleep(0)
        emitted.append(emit_done(unit))

    driver = make_driver(async_processor(handler))
    handled = event("k1", 0)
    driver.send(TOPIC, handled)

    driver.run()

    [(event_id, aggregate_id, headers)] = outbox_rows(driver)
    [linked] = emitted
    assert (event_id, aggregate_id) == (linked.id, "k1")
    assert headers["ce_causationid"] == handled.id
    assert headers["ce_correlationid"] == handled.id


def test_an_emit_commits_with_the_events_transaction_so_a_failed_commit_leaves_no_row(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    outgoing = Event(source="/tests", type="StepDone", partitionkey="k1", data={})
    calls = 0

    def fail_first(session: Session) -> None:
        if calls == 1:
            raise RuntimeError("the first commit fails after the outbox insert")

    async def handler(event: Event, unit: UnitOfWork) -> None:
        nonlocal calls
        calls += 1
        emit_done(unit, outgoing)  # the same event id on every attempt
        unit.write(fail_first)

    driver = make_driver(async_processor(handler))
    driver.send(TOPIC, event("k1", 0))

    snapshot = driver.run()

    # Had the first attempt's outbox row survived its failed commit, the retry's insert of the
    # same event id would break the outbox's unique event id and the event would dead-letter.
    assert (calls, snapshot.retries, snapshot.processed, snapshot.dead_lettered_total) == (
        2,
        1,
        1,
        0,
    )
    assert [row[0] for row in outbox_rows(driver)] == [outgoing.id]


def test_a_duplicate_emits_nothing(make_driver: Callable[..., ProcessorTestDriver]) -> None:
    calls = 0

    async def handler(event: Event, unit: UnitOfWork) -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        emit_done(unit)  # a new outgoing event id on every call

    driver = make_driver(async_processor(handler))
    twice = event("k1", 0)
    driver.send(TOPIC, twice, key=b"a")  # the same event under two keys: handled at once,
    driver.send(TOPIC, twice, key=b"b")  # one of them is the duplicate at commit
    first = driver.run()
    driver.redeliver(TOPIC, from_offset=0)
    second = driver.run()

    assert (first.processed, first.duplicates) == (1, 1)
    assert second.duplicates == 3
    assert calls == 2
    assert len(outbox_rows(driver)) == 1


# --- the session, failures and retries ------------------------------------------------------------


def test_unit_session_in_an_async_handler_raises_a_pipeline_error_naming_unit_write(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    messages: list[str] = []

    async def handler(event: Event, unit: UnitOfWork) -> None:
        with pytest.raises(PipelineError) as raised:
            unit.session  # noqa: B018 (the access is the test)
        messages.append(str(raised.value))

    driver = make_driver(async_processor(handler))
    driver.send(TOPIC, event("k1", 0))

    assert driver.run().processed == 1
    [message] = messages
    assert "async handler has no session" in message
    assert "unit.write(" in message


def test_an_async_handler_using_unit_session_is_retried_then_dead_lettered(
    make_driver: Callable[..., ProcessorTestDriver], per_record_attempts: list[int]
) -> None:
    calls = 0

    async def handler(event: Event, unit: UnitOfWork) -> None:
        nonlocal calls
        calls += 1
        unit.session.execute(insert(effects).values(event_id=event.id, key="k1", seq=0))

    driver = make_driver(async_processor(handler))
    driver.send(TOPIC, event("k1", 0))

    snapshot = driver.run()

    [letter] = driver.dead_letters(TOPIC)
    assert (letter.reason, letter.attempts) == ("retries_exhausted", 3)
    assert letter.error_type == "pipeline.errors.PipelineError"
    assert "unit.write(" in letter.error_message
    assert (calls, snapshot.retries) == (3, 2)
    assert per_record_attempts == [0, 0]  # the first attempt was on the group path
    assert effect_rows(driver) == []
    assert parked_count(driver) == 1


def test_an_async_handler_failing_twice_then_succeeding_is_applied_once(
    make_driver: Callable[..., ProcessorTestDriver], per_record_attempts: list[int]
) -> None:
    calls = 0

    async def handler(event: Event, unit: UnitOfWork) -> None:
        nonlocal calls
        calls += 1
        unit.write(insert_effect(event))  # dropped with the failed attempts
        await asyncio.sleep(0)
        if calls <= 2:
            raise ConnectionResetError(f"attempt {calls} failed")

    driver = make_driver(async_processor(handler))
    handled = event("k1", 0)
    driver.send(TOPIC, handled)

    snapshot = driver.run()

    assert calls == 3
    assert (snapshot.processed, snapshot.retries, snapshot.dead_lettered_total) == (1, 2, 0)
    assert driver.waits == pytest.approx([0.1, 0.2])
    assert per_record_attempts == [0, 0]  # the retries took the per-record attempt
    assert effect_rows(driver) == [("k1", 0)]
    assert inbox_outcomes(driver) == {handled.id: "processed"}


def test_a_write_failing_in_a_group_fails_only_its_event_and_the_others_keep_their_effects(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    bad_calls = 0

    def clash(session: Session) -> object:  # the primary key of a row written before
        return session.execute(insert(effects).values(row=1000, event_id="-", key="x", seq=-1))

    async def handler(event: Event, unit: UnitOfWork) -> None:
        nonlocal bad_calls
        unit.write(insert_effect(event))
        if event.data["key"] == "bad":
            bad_calls += 1
            if bad_calls == 1:  # only the first attempt's writes clash
                unit.write(clash)

    driver = make_driver(async_processor(handler))
    with driver.database.begin() as connection:
        connection.execute(insert(effects).values(row=1000, event_id="-", key="taken", seq=-1))
    keys = ["a", "b", "bad", "c", "d"]
    for key in keys:  # all handled at once, so they commit in one group
        driver.send(TOPIC, event(key, 0))

    snapshot = driver.run()

    assert sorted(effect_rows(driver)) == sorted([("taken", -1)] + [(key, 0) for key in keys])
    assert (snapshot.retries, bad_calls) == (1, 2)  # only the event whose write failed
    assert (snapshot.processed, snapshot.dead_lettered_total) == (5, 0)


# --- dead letters, parked keys, redrive -----------------------------------------------------------


def test_reject_parks_the_key_and_a_redrive_brings_its_events_back_once_in_order(
    make_driver: Callable[..., ProcessorTestDriver], per_record_attempts: list[int]
) -> None:
    broken = True
    handler = AsyncRecorder(broken=lambda event: broken and event.data["key"] == "k1")
    driver = make_driver(async_processor(handler))
    first = event("k1", 0)
    driver.send(TOPIC, first)
    driver.send(TOPIC, event("k1", 1))
    driver.send(TOPIC, event("k2", 0))
    driver.send(TOPIC, event("k1", 2))

    snapshot = driver.run()

    letters = driver.dead_letters(TOPIC)
    assert [(letter.reason, letter.original_offset) for letter in letters] == [
        ("rejected", 0),
        ("key_parked", 1),
        ("key_parked", 3),
    ]
    assert [letter.parked_by for letter in letters] == [None, first.id, first.id]
    assert letters[0].error_type == "pipeline.processing.processor.Reject"
    assert snapshot.dead_lettered == {"rejected": 1, "key_parked": 2}
    assert handler.handled == [("k2", 0)]
    assert handler.calls == 2  # the parked events never reached the handler
    assert parked_count(driver) == 1

    broken = False
    per_record_attempts.clear()
    redriven = driver.redrive(TOPIC, key=b"k1")
    driver.run()

    assert [record.offset for record in redriven] == [4, 5, 6]
    assert per_record_attempts == [4, 5, 6]  # a redrive takes the per-record attempt
    assert handler.handled == [("k2", 0), ("k1", 0), ("k1", 1), ("k1", 2)]
    assert effect_rows(driver) == [("k2", 0), ("k1", 0), ("k1", 1), ("k1", 2)]
    assert parked_count(driver) == 0
    assert driver.dead_letters(TOPIC) == []

    driver.send(TOPIC, event("k1", 3))  # the key is free again: the group path
    driver.redeliver(TOPIC, from_offset=0)  # and everything before is a duplicate
    final = driver.run()

    assert handler.handled[-1] == ("k1", 3)
    assert effect_rows(driver) == [("k2", 0), ("k1", 0), ("k1", 1), ("k1", 2), ("k1", 3)]
    assert final.dead_lettered_total == 3  # still the three of the first run


class PlaceOrder(BaseModel):
    order_id: str
    quantity: int


def test_data_that_does_not_fit_the_model_is_schema_invalid_and_the_async_handler_never_runs(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    models: list[Any] = []

    async def handler(event: Event, unit: UnitOfWork) -> None:
        models.append(unit.data)

    driver = make_driver(async_processor(handler, event_type="PlaceOrder", model=PlaceOrder))
    driver.send(TOPIC, event("k1", 0, type="PlaceOrder", data={"order_id": "o-1"}))
    driver.send(TOPIC, event("k2", 0, type="PlaceOrder", data={"order_id": "o-2", "quantity": 2}))

    snapshot = driver.run()

    [letter] = driver.dead_letters(TOPIC)
    assert (letter.reason, letter.key) == ("schema_invalid", b"k1")
    assert "quantity" in letter.error_message
    assert models == [PlaceOrder(order_id="o-2", quantity=2)]
    assert (snapshot.processed, snapshot.dead_lettered) == (1, {"schema_invalid": 1})


def test_a_processor_with_a_sync_and_an_async_handler_runs_both(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    processor = Processor(GROUP)
    handled: list[tuple[str, str]] = []

    @processor.handler(TOPIC, event_type="SyncStep")
    def sync_step(event: Event, unit: UnitOfWork) -> None:
        insert_effect(event)(unit.session)
        handled.append(("sync", event.data["key"]))

    @processor.handler(TOPIC, event_type="AsyncStep")
    async def async_step(event: Event, unit: UnitOfWork) -> None:
        await asyncio.sleep(0)
        unit.write(insert_effect(event))
        handled.append(("async", event.data["key"]))

    driver = make_driver(processor)
    sent = [
        event("k1", 0, type="SyncStep"),
        event("k1", 1, type="AsyncStep"),
        event("k2", 0, type="AsyncStep"),
        event("k1", 2, type="SyncStep"),
    ]
    for item in sent:
        driver.send(TOPIC, item)

    snapshot = driver.run()

    assert (snapshot.processed, snapshot.dead_lettered_total) == (4, 0)
    assert [kind for kind, key in handled if key == "k1"] == ["sync", "async", "sync"]
    assert sorted(effect_rows(driver)) == [("k1", 0), ("k1", 1), ("k1", 2), ("k2", 0)]
    assert inbox_outcomes(driver) == {item.id: "processed" for item in sent}
