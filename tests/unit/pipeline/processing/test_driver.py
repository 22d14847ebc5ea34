"""The processing engine end to end through the broker-free test driver.

Key order and concurrency, effects committed with the inbox, duplicates, retries with backoff,
every dead-letter reason, parked keys and their redrive, and safe commit positions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import BaseModel, field_validator
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select

from pipeline.envelope import Event, KafkaMessage
from pipeline.processing import Processor, ProcessorTestDriver, Reject, UnitOfWork, parked_keys
from pipeline.retry import RetryPolicy
from tests.support.driving import DriverFactory
from tests.support.driving import driver_settings as settings
from tests.support.driving import step_event as event

TOPIC = "requests.orders"
GROUP = "orders"

effects_metadata = MetaData()
effects = Table(
    "effects",
    effects_metadata,
    Column("event_id", String(64), primary_key=True),
    Column("key", String(64)),
    Column("seq", Integer),
)


@pytest.fixture
def make_driver() -> Iterator[DriverFactory]:
    factory = DriverFactory(effects_metadata)
    yield factory
    factory.close()


def write_effect(event: Event, unit: UnitOfWork) -> None:
    unit.session.execute(
        insert(effects).values(event_id=event.id, key=event.data["key"], seq=event.data["seq"])
    )


def effect_rows(driver: ProcessorTestDriver) -> list[tuple[str, int]]:
    with driver.database.connect() as connection:
        rows = connection.execute(select(effects.c.key, effects.c.seq).order_by(effects.c.seq))
        return [(key, seq) for key, seq in rows]


def parked_count(driver: ProcessorTestDriver) -> int:
    with driver.database.connect() as connection:
        return parked_keys.count_parked(connection, consumer_group=GROUP)


class Recorder:
    """A handler that records what it handled, failing while ``broken`` holds for an event."""

    def __init__(self, broken: Callable[[Event], bool] = lambda event: False) -> None:
        self.broken = broken
        self.handled: list[tuple[str, int]] = []
        self.calls = 0

    def __call__(self, event: Event, unit: UnitOfWork) -> None:
        self.calls += 1
        if self.broken(event):
            raise Reject(f"cannot handle {event.data['key']}#{event.data['seq']}")
        write_effect(event, unit)
        self.handled.append((event.data["key"], event.data["seq"]))


def processor_with(handler: Callable[[Event, UnitOfWork], None], **route: Any) -> Processor:
    processor = Processor(GROUP)
    processor.handler(TOPIC, **route)(handler)
    return processor


# --- order, concurrency, atomicity ---------------------------------------------------------------


def concurrent_run(max_in_flight: int) -> tuple[dict[str, list[int]], int]:
    """20 keys x 20 events through a handler that notes (key, seq) and the most running at once."""
    lock = threading.Lock()
    running = 0
    most_at_once = 0
    seen: dict[str, list[int]] = defaultdict(list)

    def handler(event: Event, unit: UnitOfWork) -> None:
        nonlocal running, most_at_once
        with lock:
            running += 1
            most_at_once = max(most_at_once, running)
        time.sleep(0.001)  # gives other keys' handlers a chance to start meanwhile
        with lock:
            seen[event.data["key"]].append(event.data["seq"])
            running -= 1

    driver = ProcessorTestDriver(
        processor_with(handler), settings=settings(max_in_flight=max_in_flight)
    )
    keys = [f"k{index:02d}" for index in range(20)]
    for seq in range(20):
        for key in keys:
            driver.send(TOPIC, event(key, seq))
    try:
        assert driver.run().processed == 400
        assert driver.committed == {(TOPIC, 0): 400}
    finally:
        driver.close()
    return seen, most_at_once


def test_each_keys_events_run_in_offset_order_with_many_keys_in_flight() -> None:
    seen, _ = concurrent_run(max_in_flight=8)

    assert seen == {f"k{index:02d}": list(range(20)) for index in range(20)}


def test_handlers_of_different_keys_run_at_the_same_time() -> None:
    # On SQLite the inbox row is inserted after the handler, so the database's single write
    # lock is not held while handlers of other keys run.
    _, most_at_once = concurrent_run(max_in_flight=8)

    assert most_at_once > 1


def test_effects_and_the_inbox_row_commit_together_so_a_retry_writes_one_effect(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    calls = 0

    def handler(event: Event, unit: UnitOfWork) -> None:
        nonlocal calls
        calls += 1
        write_effect(event, unit)
        unit.session.flush()  # the effect is written in the transaction...
        if calls == 1:
            raise RuntimeError("transient")  # ...and rolled back with it

    driver = make_driver(processor_with(handler))
    driver.send(TOPIC, event("k1", 0))

    snapshot = driver.run()

    assert calls == 2
    assert (snapshot.processed, snapshot.retries, snapshot.dead_lettered_total) == (1, 1, 0)
    assert effect_rows(driver) == [("k1", 0)]


def test_redelivered_events_are_skipped_as_duplicates_with_no_second_effect(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    handler = Recorder()
    driver = make_driver(processor_with(handler))
    for seq in range(3):
        driver.send(TOPIC, event("k1", seq))
    driver.run()

    driver.redeliver(TOPIC, from_offset=0)
    snapshot = driver.run()

    assert handler.calls == 3
    assert (snapshot.processed, snapshot.duplicates) == (3, 3)
    assert effect_rows(driver) == [("k1", 0), ("k1", 1), ("k1", 2)]
    assert driver.committed == {(TOPIC, 0): 3}


# --- retries and dead letters --------------------------------------------------------------------


def test_rejected_event_is_dead_lettered_at_once_without_retry(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    handler = Recorder(broken=lambda event: True)
    driver = make_driver(processor_with(handler))
    sent = event("k1", 0)
    driver.send(TOPIC, sent)

    snapshot = driver.run()

    [letter] = driver.dead_letters(TOPIC)
    assert (letter.reason, letter.attempts, letter.event_id) == ("rejected", 1, sent.id)
    assert letter.error_type == "pipeline.processing.processor.Reject"
    assert letter.error_message == "cannot handle k1#0"
    assert handler.calls == 1
    assert (snapshot.retries, driver.waits) == (0, [])
    assert snapshot.dead_lettered == {"rejected": 1}
    assert effect_rows(driver) == []
    assert driver.committed == {(TOPIC, 0): 1}


def test_always_failing_handler_is_dead_lettered_after_max_attempts_with_growing_backoff(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    calls = 0

    def handler(event: Event, unit: UnitOfWork) -> None:
        nonlocal calls
        calls += 1
        raise ConnectionResetError(f"attempt {calls} failed")

    retry = RetryPolicy(
        max_attempts=4, initial_backoff_s=0.1, multiplier=2, max_backoff_s=10, jitter=0
    )
    driver = make_driver(processor_with(handler), retry=retry)
    driver.send(TOPIC, event("k1", 0))

    snapshot = driver.run()

    [letter] = driver.dead_letters(TOPIC)
    assert (letter.reason, letter.attempts) == ("retries_exhausted", 4)
    assert letter.error_type == "ConnectionResetError"
    assert letter.error_message == "attempt 4 failed"
    assert "ConnectionResetError" in letter.stacktrace
    assert calls == 4
    assert driver.waits == pytest.approx([0.1, 0.2, 0.4])
    assert snapshot.retries == 3
    assert snapshot.dead_lettered == {"retries_exhausted": 1}


def test_undecodable_bytes_are_dead_lettered_as_undecodable(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    handler = Recorder()
    driver = make_driver(processor_with(handler))
    driver.send(TOPIC, KafkaMessage(key=b"k1", value=b"\xff not json", headers=[]))

    driver.run()

    [letter] = driver.dead_letters(TOPIC)
    assert letter.reason == "undecodable"
    assert "missing" in letter.error_message  # no ce_* headers at all
    assert letter.value == b"\xff not json"
    assert handler.calls == 0
    assert driver.committed == {(TOPIC, 0): 1}


class PlaceOrder(BaseModel):
    order_id: str
    quantity: int


def test_data_that_does_not_fit_the_model_is_schema_invalid_and_the_handler_never_runs(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    models: list[Any] = []

    def handler(event: Event, unit: UnitOfWork) -> None:
        models.append(unit.data)

    processor = processor_with(handler, event_type="PlaceOrder", model=PlaceOrder)
    driver = make_driver(processor)
    driver.send(TOPIC, event("k1", 0, type="PlaceOrder", data={"order_id": "o-1"}))
    driver.send(TOPIC, event("k2", 0, type="PlaceOrder", data={"order_id": "o-2", "quantity": 2}))

    driver.run()

    [letter] = driver.dead_letters(TOPIC)
    assert (letter.reason, letter.key) == ("schema_invalid", b"k1")
    assert "quantity" in letter.error_message
    assert models == [PlaceOrder(order_id="o-2", quantity=2)]


class StrictOrder(BaseModel):
    order_id: str

    @field_validator("order_id", mode="before")
    @classmethod
    def known_prefix(cls, value: Any) -> Any:
        # A TypeError, which pydantic does not wrap in its ValidationError.
        return {"o": value}[value[:1]]


@pytest.mark.parametrize("group_wait_ms", [0, 10], ids=["per-record", "group commit"])
def test_a_validator_raising_a_type_or_key_error_is_schema_invalid_too(
    make_driver: Callable[..., ProcessorTestDriver], group_wait_ms: int
) -> None:
    # It escaped the attempt: the key and the partition's commits were held for ever.
    handled: list[str] = []

    def handler(event: Event, unit: UnitOfWork) -> None:
        handled.append(event.data["order_id"])

    processor = processor_with(handler, event_type="PlaceOrder", model=StrictOrder)
    driver = make_driver(processor, sync_group_wait_ms=group_wait_ms)
    for order_id in ("o-1", "x-2", "o-3"):
        driver.send(TOPIC, event("k", 0, type="PlaceOrder", data={"order_id": order_id}))

    driver.run()

    invalid, parked = driver.dead_letters(TOPIC)
    assert (invalid.reason, invalid.error_type) == ("schema_invalid", "KeyError")
    assert parked.reason == "key_parked"  # behind it, as behind any other dead letter
    assert handled == ["o-1"]
    assert driver.committed == {(TOPIC, 0): 3}


def test_an_event_type_without_a_handler_is_dead_lettered_as_unhandled_type(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    handler = Recorder()
    driver = make_driver(processor_with(handler, event_type="Step"))
    driver.send(TOPIC, event("k1", 0, type="Unknown"))

    driver.run()

    [letter] = driver.dead_letters(TOPIC)
    assert (letter.reason, letter.event_type) == ("unhandled_type", "Unknown")
    assert "'Unknown'" in letter.error_message
    assert handler.calls == 0


def test_dead_letter_headers_carry_the_original_position_and_attempts(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    driver = make_driver(
        processor_with(Recorder(broken=lambda event: event.data["seq"] == 1)), partitions={TOPIC: 3}
    )
    driver.send(TOPIC, event("k1", 0), partition=2)
    sent = event("k1", 1)
    record = driver.send(TOPIC, sent, partition=2)

    driver.run()

    [letter] = driver.dead_letters(TOPIC, partition=0)  # the driver's dlq has one partition
    assert (letter.original_topic, letter.original_partition, letter.original_offset) == (
        TOPIC,
        2,
        1,
    )
    assert (letter.attempts, letter.consumer_group, letter.dlq_topic) == (1, GROUP, f"{TOPIC}.dlq")
    assert (letter.key, letter.value) == (record.key, record.value)
    assert ("ce_id", sent.id.encode()) in letter.headers
    assert letter.dead_lettered_at.endswith("Z")


def test_dead_lettered_records_redelivered_are_duplicates_not_second_dead_letters(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    handler = Recorder(broken=lambda event: event.data["seq"] == 0)
    driver = make_driver(processor_with(handler))
    driver.send(TOPIC, event("k1", 0))  # rejected
    driver.send(TOPIC, event("k1", 1))  # parked behind it
    driver.send(TOPIC, KafkaMessage(key=b"k2", value=b"garbage", headers=[]))  # undecodable
    driver.run()

    driver.redeliver(TOPIC, from_offset=0)
    snapshot = driver.run()

    assert sorted(letter.reason for letter in driver.dead_letters(TOPIC)) == [
        "key_parked",
        "rejected",
        "undecodable",
    ]
    assert snapshot.dead_lettered_total == 3
    assert snapshot.duplicates == 3
    assert handler.calls == 1


# --- parked keys and redrive ---------------------------------------------------------------------


def test_a_dead_lettered_key_parks_its_later_events_while_other_keys_go_on(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    handler = Recorder(broken=lambda event: event.data == {"key": "k1", "seq": 0})
    driver = make_driver(processor_with(handler))
    first = event("k1", 0)
    driver.send(TOPIC, first)
    for seq in (1, 2):
        driver.send(TOPIC, event("k1", seq))
        driver.send(TOPIC, event("k2", seq))

    snapshot = driver.run()

    letters = driver.dead_letters(TOPIC)
    assert [(letter.reason, letter.original_offset) for letter in letters] == [
        ("rejected", 0),
        ("key_parked", 1),
        ("key_parked", 3),
    ]
    assert [letter.parked_by for letter in letters] == [None, first.id, first.id]
    assert handler.handled == [("k2", 1), ("k2", 2)]
    assert snapshot.dead_lettered == {"rejected": 1, "key_parked": 2}
    assert parked_count(driver) == 1
    assert driver.committed == {(TOPIC, 0): 5}


def test_the_letters_behind_a_parked_key_are_warnings_and_the_one_that_parked_it_an_error(
    make_driver: Callable[..., ProcessorTestDriver], caplog: pytest.LogCaptureFixture
) -> None:
    # One bad event early in a busy key's stream made an ERROR line for every later event of
    # the key (491 ERROR lines of 21 causes in an outside review).
    handler = Recorder(broken=lambda event: event.data["seq"] == 0)
    driver = make_driver(processor_with(handler))
    for seq in range(4):
        driver.send(TOPIC, event("k1", seq))
    caplog.set_level(logging.WARNING, logger="pipeline.processing")

    driver.run()

    said = [
        (record.levelname, "key_parked" in record.getMessage())
        for record in caplog.records
        if "dead-lettered" in record.getMessage()
    ]
    assert said == [("ERROR", False), ("WARNING", True), ("WARNING", True), ("WARNING", True)]


@pytest.mark.parametrize("unparked_by", ["on_dead_letter continue", "never_park_keys(topic)"])
def test_where_keys_are_not_parked_a_keys_later_events_still_run(
    make_driver: Callable[..., ProcessorTestDriver], unparked_by: str
) -> None:
    handler = Recorder(broken=lambda event: event.data == {"key": "k1", "seq": 0})
    processor = processor_with(handler)
    if unparked_by == "never_park_keys(topic)":
        processor.never_park_keys(TOPIC)  # on_dead_letter stays park_key, for other topics
        driver = make_driver(processor)
    else:
        driver = make_driver(processor, on_dead_letter="continue")
    for seq in range(3):
        driver.send(TOPIC, event("k1", seq))

    driver.run()

    assert [letter.reason for letter in driver.dead_letters(TOPIC)] == ["rejected"]
    assert handler.handled == [("k1", 1), ("k1", 2)]
    assert parked_count(driver) == 0


def park_k1(driver: ProcessorTestDriver, handler: Recorder) -> None:
    """k1#0 fails, k1#1 and k1#2 are parked behind it; k2#0 is handled."""
    for seq in range(3):
        driver.send(TOPIC, event("k1", seq))
    driver.send(TOPIC, event("k2", 0))
    driver.run()
    assert handler.handled == [("k2", 0)]
    assert parked_count(driver) == 1


def test_redrive_of_a_fixed_handler_brings_the_parked_key_back_in_order_and_unparks_it(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    broken = True
    handler = Recorder(broken=lambda event: broken and event.data["key"] == "k1")
    driver = make_driver(processor_with(handler))
    park_k1(driver, handler)

    broken = False
    redriven = driver.redrive(TOPIC)
    driver.run()
    driver.send(TOPIC, event("k1", 3))
    driver.run()

    assert [record.header("pipeline.redrive.last") for record in redriven] == [
        "false",
        "false",
        "true",
    ]
    assert handler.handled == [("k2", 0), ("k1", 0), ("k1", 1), ("k1", 2), ("k1", 3)]
    assert effect_rows(driver).count(("k1", 0)) == 1
    assert driver.dead_letters(TOPIC) == []
    assert parked_count(driver) == 0
    assert driver.redrive(TOPIC) == []  # each dead letter is redriven once


def test_redrive_of_one_key_leaves_the_other_keys_dead_letters(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    broken = True
    handler = Recorder(broken=lambda event: broken and event.data["seq"] == 0)
    driver = make_driver(processor_with(handler))
    driver.send(TOPIC, event("k1", 0))
    driver.send(TOPIC, event("k2", 0))
    driver.run()

    broken = False
    redriven = driver.redrive(TOPIC, key=b"k2")
    driver.run()

    assert [record.key for record in redriven] == [b"k2"]
    assert handler.handled == [("k2", 0)]
    assert [letter.key for letter in driver.dead_letters(TOPIC)] == [b"k1"]


def test_a_key_given_as_text_is_its_utf8_as_the_dlq_command_takes_it(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    broken = True
    handler = Recorder(broken=lambda event: broken and event.data["seq"] == 0)
    driver = make_driver(processor_with(handler))
    assert driver.send(TOPIC, event("k1", 0), key="kö").key == "kö".encode()
    driver.send(TOPIC, event("k2", 0))
    driver.run()

    broken = False
    redriven = driver.redrive(TOPIC, key="kö")
    driver.run()

    assert [record.key for record in redriven] == ["kö".encode()]
    assert [letter.key for letter in driver.dead_letters(TOPIC)] == [b"k2"]
    with pytest.raises(TypeError, match="bytes or text, not int"):
        driver.redrive(TOPIC, key=7)  # type: ignore[arg-type]


def test_run_returns_the_totals_since_the_driver_was_made(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    driver = make_driver(processor_with(Recorder()))
    driver.send(TOPIC, event("k1", 0))
    first = driver.run()
    driver.send(TOPIC, event("k1", 1))
    second = driver.run()
    assert (first.processed, second.processed) == (1, 2)


def test_a_redrive_that_fails_again_re_parks_the_key_and_keeps_its_followers_parked(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    broken = True
    handler = Recorder(broken=lambda event: broken and event.data["key"] == "k1")
    driver = make_driver(processor_with(handler))
    park_k1(driver, handler)
    first_id = driver.dead_letters(TOPIC)[0].event_id

    driver.redrive(TOPIC, redrive_id="redrive-1")
    driver.run()
    driver.send(TOPIC, event("k1", 3))
    driver.run()

    letters = driver.dead_letters(TOPIC)
    assert [(letter.reason, letter.parked_by) for letter in letters] == [
        ("rejected", None),
        ("key_parked", first_id),
        ("key_parked", first_id),
        ("key_parked", first_id),
    ]
    with driver.database.connect() as connection:
        park = parked_keys.parked_key(connection, consumer_group=GROUP, topic=TOPIC, key=b"k1")
    assert park is not None and park.redrive_id == "redrive-1"
    assert handler.handled == [("k2", 0)]

    broken = False
    driver.redrive(TOPIC)
    driver.run()

    assert handler.handled == [("k2", 0), ("k1", 0), ("k1", 1), ("k1", 2), ("k1", 3)]
    assert parked_count(driver) == 0
    assert driver.dead_letters(TOPIC) == []


# --- commit positions ----------------------------------------------------------------------------


def test_the_commit_position_never_passes_a_record_that_is_not_done(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    violations: list[tuple[int, int]] = []
    attempts: dict[str, int] = defaultdict(int)
    driver: ProcessorTestDriver

    def handler(event: Event, unit: UnitOfWork) -> None:
        # this record is not done while its handler runs: the position must not be above it
        offset = unit.record.offset
        position = driver.committed.get((TOPIC, 0), 0)
        if position > offset:
            violations.append((offset, position))
        if event.data["key"] == "slow":
            time.sleep(0.005)  # lets later records of other keys finish first
        attempts[event.id] += 1
        if event.data["seq"] == 3 and attempts[event.id] == 1:
            raise RuntimeError("retry me")  # a failed attempt is not done either

    driver = make_driver(processor_with(handler), max_in_flight=4)
    for seq in range(10):
        driver.send(TOPIC, event("slow", seq))
        for key in ("a", "b", "c"):
            driver.send(TOPIC, event(key, seq))

    snapshot = driver.run()

    assert violations == []
    assert (snapshot.processed, snapshot.retries, snapshot.dead_lettered_total) == (40, 4, 0)
    assert driver.committed == {(TOPIC, 0): 40}


def test_the_retries_wait_the_same_in_every_run(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    # The jitter was drawn from an unseeded generator: each run waited (and moved the virtual
    # clock) differently, so a test near a deadline could pass or fail by chance.
    def failing(event: Event, unit: UnitOfWork) -> None:
        raise RuntimeError("down")

    runs = []
    for _ in range(2):
        driver = make_driver(processor_with(failing), retry=RetryPolicy(max_attempts=5))
        driver.send(TOPIC, event("k", 0))
        driver.run()
        runs.append((driver.waits, driver.clock.now))

    assert len(runs[0][0]) == 4
    assert len(set(runs[0][0])) == 4  # jittered, not all alike
    assert runs[0] == runs[1]


def test_a_redrive_leaves_the_key_parked_behind_a_dead_letter_that_came_after_it_read(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    # Event 3 was still in the topic when the redrive read the dead-letter topic; it was
    # dead-lettered behind the park afterwards. The redrive's last record let the key go, and
    # event 4 was applied while 3 waited in the dead-letter topic.
    broken = {"now": True}
    applied: list[int] = []

    def handler(event: Event, unit: UnitOfWork) -> None:
        if event.data["seq"] == 1 and broken["now"]:
            raise RuntimeError("downstream broken")
        applied.append(event.data["seq"])

    driver = make_driver(processor_with(handler), sync_group_wait_ms=0)
    driver.send(TOPIC, event("k", 1))
    driver.send(TOPIC, event("k", 2))
    driver.run()
    driver.send(TOPIC, event("k", 3))  # not read yet
    broken["now"] = False
    driver.redrive(TOPIC, key=b"k")  # sends 1 and 2 back
    driver.run()
    driver.send(TOPIC, event("k", 4))
    driver.run()

    assert applied == [1, 2]  # not 4: 3 waits in the dead-letter topic
    assert [letter.reason for letter in driver.dead_letters(TOPIC)] == ["key_parked"] * 2
    driver.redrive(TOPIC, key=b"k")  # 3 and 4 go back: the key is let go after them
    driver.run()
    driver.send(TOPIC, event("k", 5))
    driver.run()
    assert applied == [1, 2, 3, 4, 5]
    assert driver.dead_letters(TOPIC) == []
