"""Event ids and keys the inbox's tables cannot hold as they are, through the test driver.

CloudEvents limits neither an id's length nor its characters, and Kafka allows keys of up to a
message's size. An id the inbox cannot keep (over 255 characters, or with a NUL) is
dead-lettered as ``undecodable`` at once, and its dead letter is noted under its position, so
nothing waits on a row that can never be written; a key over 1 KiB is parked under its SHA-256
and found, redriven and let go like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import LargeBinary, MetaData, cast, select

from pipeline.envelope import Event
from pipeline.processing import (
    Processor,
    ProcessorTestDriver,
    Reject,
    UnitOfWork,
    inbox,
    parked_keys,
)
from tests.support.driving import DriverFactory

TOPIC = "requests.orders"
GROUP = "orders"


@pytest.fixture
def make_driver() -> Iterator[DriverFactory]:
    factory = DriverFactory(MetaData())
    yield factory
    factory.close()


class Handled:
    """A handler that notes each event's (key, seq), refusing while ``refuse`` holds."""

    def __init__(self, refuse: Callable[[Event], bool] = lambda event: False) -> None:
        self.refuse = refuse
        self.handled: list[tuple[str, int]] = []

    def __call__(self, event: Event, unit: UnitOfWork) -> None:
        if self.refuse(event):
            raise Reject("refused")
        self.handled.append((event.data["key"][:8], event.data["seq"]))


def processor(handler: Handled) -> Processor:
    made = Processor(GROUP)
    made.handler(TOPIC)(handler)
    return made


def step(key: str, seq: int, **fields: str) -> Event:
    return Event(
        source="/tests", type="Step", partitionkey=key, data={"key": key, "seq": seq}, **fields
    )


@pytest.mark.parametrize(
    ("event_id", "said"),
    [
        ("x" * 256, "the event id is 256 characters long; the inbox keeps ids of at most 255"),
        # Refused by the envelope itself now (control characters), before the inbox sees it.
        ("a\x00b", "must not contain control characters"),
    ],
    ids=["too-long", "nul"],
)
def test_an_id_the_inbox_cannot_keep_is_dead_lettered_and_the_partition_goes_on(
    make_driver: Callable[..., ProcessorTestDriver], event_id: str, said: str
) -> None:
    handler = Handled()
    driver = make_driver(processor(handler))
    # Made without the model's checks, as another producer may send it.
    driver.send(TOPIC, step("k1", 0).model_copy(update={"id": event_id}))
    driver.send(TOPIC, step("k2", 1))

    driver.run()

    [letter] = driver.dead_letters(TOPIC)
    assert letter.reason == "undecodable"
    assert said in letter.error_message
    assert handler.handled == [("k2", 1)]
    assert driver.committed == {(TOPIC, 0): 2}
    with driver.database.connect() as connection:
        ids = set(connection.execute(select(inbox.inbox_table.c.event_id)).scalars())
    assert f"kafka:{TOPIC}:0:0" in ids  # its dead letter, noted under its position


def test_an_id_of_255_characters_is_kept_and_deduplicated(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    handler = Handled()
    driver = make_driver(processor(handler))
    longest = step("k1", 0, id="y" * 255)
    driver.send(TOPIC, longest)
    driver.send(TOPIC, longest)

    snapshot = driver.run()

    assert handler.handled == [("k1", 0)]
    assert snapshot.duplicates == 1
    assert driver.dead_letters(TOPIC) == []


def test_a_key_over_a_kibibyte_is_parked_under_its_digest_then_redriven_and_let_go(
    make_driver: Callable[..., ProcessorTestDriver],
) -> None:
    big = "K" * 2_000 + "-1"
    other_big = "K" * 2_000 + "-2"  # the same first KiB: a key of its own all the same
    refusing = True
    handler = Handled(refuse=lambda event: refusing and event.data == {"key": big, "seq": 0})
    driver = make_driver(processor(handler))
    for seq, key in enumerate([big, big, other_big]):
        driver.send(TOPIC, step(key, 0 if seq == 0 else seq))

    driver.run()

    assert sorted(letter.reason for letter in driver.dead_letters(TOPIC)) == [
        "key_parked",
        "rejected",
    ]
    assert handler.handled == [(other_big[:8], 2)]  # the other long key was not parked
    with driver.database.connect() as connection:
        stored = connection.execute(
            select(cast(parked_keys.parked_keys_table.c.key, LargeBinary))
        ).scalar_one()
        assert len(stored) < 64 and stored == parked_keys.parked_form(big.encode())
        assert (
            parked_keys.parked_key(connection, consumer_group=GROUP, topic=TOPIC, key=big.encode())
            is not None
        )

    refusing = False
    driver.redrive(TOPIC)
    driver.run()
    driver.send(TOPIC, step(big, 3))
    driver.run()

    assert handler.handled == [(other_big[:8], 2), (big[:8], 0), (big[:8], 1), (big[:8], 3)]
    assert driver.dead_letters(TOPIC) == []
    with driver.database.connect() as connection:
        assert parked_keys.count_parked(connection, consumer_group=GROUP) == 0


def test_parked_form_keeps_short_keys_and_digests_long_ones() -> None:
    short = b"k" * parked_keys.MAX_PARKED_KEY
    long = b"k" * (parked_keys.MAX_PARKED_KEY + 1)

    assert parked_keys.parked_form(short) == short
    assert parked_keys.parked_form(long) != parked_keys.parked_form(long + b"!")
    assert len(parked_keys.parked_form(long)) == len(b"\x00sha256:") + 32
