"""A redrive acts per consumer group.

Two processors (two consumer groups) read one topic and dead-letter into the shared
``<topic>.dlq``. A redriven message is handled only by the group whose dead letter it was
(``pipeline.redrive.group``); every other group skips it, as a duplicate, without passing or
letting go its own park; and each group lets its park go after its own last redriven letter.
Broker-free: two test drivers share their topics, as two groups share a Kafka topic, each with
its own committed positions and database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from pipeline.dead_letters import letter as dead_letters
from pipeline.dead_letters.letter import (
    REDRIVE_GROUP,
    DeadLetter,
    discarded_marker,
    redrive_message,
    redriven_marker,
)
from pipeline.dead_letters.selection import select_for_redrive, with_last_of_key
from pipeline.envelope import Event, encode
from pipeline.processing import (
    Processor,
    ProcessorTestDriver,
    Record,
    Reject,
    UnitOfWork,
    inbox,
    parked_keys,
)
from pipeline.processing.attempt import attempt
from tests.support.driving import driver_settings
from tests.support.driving import step_event as event

TOPIC = "requests.orders"


class Recorder:
    """A handler that notes what it handled and rejects ``kx``'s event 1 while ``broken``."""

    def __init__(self) -> None:
        self.broken = True
        self.handled: list[tuple[str, int]] = []

    def handle(self, event: Event) -> None:
        if self.broken and event.data["seq"] == 1:
            raise Reject(f"cannot handle {event.data['key']}#{event.data['seq']}")
        self.handled.append((event.data["key"], event.data["seq"]))


def processor_of(name: str, recorder: Recorder, *, is_async: bool) -> Processor:
    processor = Processor(name)
    if is_async:

        async def handle_async(event: Event, unit: UnitOfWork) -> None:
            await asyncio.sleep(0)
            recorder.handle(event)

        processor.handler(TOPIC)(handle_async)
    else:

        def handle(event: Event, unit: UnitOfWork) -> None:
            recorder.handle(event)

        processor.handler(TOPIC)(handle)
    return processor


class Group:
    def __init__(self, name: str, *, is_async: bool) -> None:
        self.name = name
        self.recorder = Recorder()
        self.driver = ProcessorTestDriver(
            processor_of(name, self.recorder, is_async=is_async), settings=driver_settings()
        )

    def parked(self) -> int:
        with self.driver.database.connect() as connection:
            return parked_keys.count_parked(connection, consumer_group=self.name)

    def pending(self) -> list[tuple[str, int]]:
        """This group's pending dead letters: reason and original offset."""
        return [
            (letter.reason, letter.original_offset)
            for letter in self.driver.dead_letters(TOPIC)
            if letter.consumer_group == self.name
        ]


@pytest.fixture(params=["sync", "async"])
def groups(request: pytest.FixtureRequest) -> Iterator[tuple[Group, Group]]:
    """Two consumer groups, ``orders`` and ``audit``, reading the same topics."""
    is_async = request.param == "async"
    orders, audit = Group("orders", is_async=is_async), Group("audit", is_async=is_async)
    audit.driver.topics = orders.driver.topics  # one Kafka
    yield orders, audit
    orders.driver.close()
    audit.driver.close()


def redrive(driver: ProcessorTestDriver, key: str) -> list[Record]:
    """What ``pipeline dlq redrive TOPIC --key KEY --yes`` sends (its selection, its messages
    and markers), appended to the drivers' lists instead of a Kafka transaction."""
    chosen = select_for_redrive(driver.dead_letters(TOPIC), key=key)
    sent = []
    for letter, last in with_last_of_key(chosen):
        message = redrive_message(letter, redrive_id="run-1", last_of_key=last)
        sent.append(driver.append(TOPIC, message, partition=letter.original_partition))
        driver.append(letter.dlq_topic, redriven_marker(letter), partition=letter.dlq_partition)
    return sent


def discard(driver: ProcessorTestDriver, letter: DeadLetter) -> None:
    marker = discarded_marker(letter, "refused for good")
    driver.append(letter.dlq_topic, marker, partition=letter.dlq_partition)


def test_a_redrive_of_one_groups_letters_is_skipped_by_another_group_and_leaves_its_park(
    groups: tuple[Group, Group],
) -> None:
    orders, audit = groups
    orders.driver.send(TOPIC, event("kx", 1))
    orders.driver.send(TOPIC, event("kx", 2))
    orders.driver.run()  # audit lags behind
    [first, tail] = orders.driver.dead_letters(TOPIC)
    assert (first.reason, tail.reason, first.consumer_group) == ("rejected", "key_parked", "orders")

    discard(orders.driver, first)  # the operator, for orders
    assert [record.offset for record in redrive(orders.driver, "kx")] == [2]
    orders.driver.run()
    audit_run = audit.driver.run()  # kx/1 rejected, kx/2 parked, then orders' redriven kx/2

    assert orders.recorder.handled == [("kx", 2)]
    assert orders.parked() == 0  # orders' own last letter let its park go
    assert audit.recorder.handled == []  # not audit's letter: its handler never ran
    assert audit.parked() == 1
    assert audit.pending() == [("rejected", 0), ("key_parked", 1)]
    assert audit_run.duplicates == 1  # skipped as none of audit's business
    assert audit_run.dead_lettered == {"rejected": 1, "key_parked": 1}

    audit.driver.send(TOPIC, event("kx", 3))  # audit's key stays parked behind its kx/1
    audit.driver.run()
    assert audit.recorder.handled == []
    assert audit.pending() == [("rejected", 0), ("key_parked", 1), ("key_parked", 3)]


def test_a_redrive_of_both_groups_letters_of_a_key_lets_each_groups_park_go(
    groups: tuple[Group, Group],
) -> None:
    orders, audit = groups
    orders.driver.send(TOPIC, event("kx", 1))
    orders.driver.send(TOPIC, event("kx", 2))
    orders.driver.run()
    audit.driver.run()
    assert (orders.parked(), audit.parked()) == (1, 1)
    assert orders.pending() == audit.pending() == [("rejected", 0), ("key_parked", 1)]

    orders.recorder.broken = audit.recorder.broken = False  # fixed
    assert len(redrive(orders.driver, "kx")) == 4
    orders_run = orders.driver.run()
    audit_run = audit.driver.run()

    assert orders.recorder.handled == audit.recorder.handled == [("kx", 1), ("kx", 2)]
    assert (orders.parked(), audit.parked()) == (0, 0)
    assert orders.driver.dead_letters(TOPIC) == []
    assert (orders_run.duplicates, audit_run.duplicates) == (2, 2)  # the other's two

    orders.driver.send(TOPIC, event("kx", 3))  # the key is free in both groups
    orders.driver.run()
    audit.driver.run()
    assert orders.recorder.handled[-1] == audit.recorder.handled[-1] == ("kx", 3)
    assert orders.driver.dead_letters(TOPIC) == []


# --- attempt() alone --------------------------------------------------------------------------


def redriven(event: Event, group: str | None) -> Record:
    """``event`` as a redrive sends it back, from a dead letter of ``group`` (``None``: a
    redrive that does not name the group, as older versions sent it)."""
    message = encode(event)
    headers = [
        *message.headers,
        (dead_letters.REDRIVE_ID, b"run-1"),
        (dead_letters.REDRIVE_LAST, b"true"),
        (dead_letters.REDRIVE_OF, b"requests.orders.dlq:0:0"),
    ]
    if group is not None:
        headers.append((REDRIVE_GROUP, group.encode()))
    return Record(TOPIC, 0, 5, message.key, message.value, headers)


def test_attempt_skips_another_groups_redrive_and_handles_one_that_names_no_group(
    database: Engine,
) -> None:
    calls: list[str] = []
    processor = Processor("audit")

    @processor.handler(TOPIC)
    def handle(event: Event, unit: UnitOfWork) -> None:
        calls.append(event.id)

    kx = event("kx", 2)
    with database.begin() as connection:
        parked_keys.park_key(
            connection,
            consumer_group="audit",
            topic=TOPIC,
            key=b"kx",
            event_id="audit-kx-1",
            reason="rejected: no",
        )
        parked_keys.note_parked_dead_letter(
            connection, consumer_group="audit", topic=TOPIC, key=b"kx", event_id=kx.id
        )

    def attempt_of(record: Record, **options: bool) -> str:
        options.setdefault("use_inbox", True)
        return attempt(
            record, processor=processor, engine=database, consumer_group="audit", **options
        ).kind

    def parked() -> parked_keys.ParkedKey | None:
        with database.connect() as connection:
            return parked_keys.parked_key(
                connection, consumer_group="audit", topic=TOPIC, key=b"kx"
            )

    def seen() -> inbox.Outcome | None:
        with database.connect() as connection:
            return inbox.outcome_of(connection, consumer_group="audit", event_id=kx.id)

    assert attempt_of(redriven(kx, "orders")) == "duplicate"
    assert attempt_of(redriven(kx, "orders"), use_inbox=False) == "duplicate"
    assert attempt_of(redriven(Event(source="/t", type="Nothing", data={}), "orders")) == (
        "duplicate"  # no handler here: not dead-lettered by this group either
    )
    assert (calls, seen()) == ([], None)
    assert parked() is not None

    assert attempt_of(redriven(kx, "audit")) == "processed"  # its own: past its park
    assert (calls, seen(), parked()) == ([kx.id], "processed", None)

    # A redrive that names no group (an older version's): every group handles it, as before.
    older = event("ky", 1)
    assert attempt_of(redriven(older, None)) == "processed"
    assert calls == [kx.id, older.id]
