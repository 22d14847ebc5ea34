"""Group commit for async handlers: the look-up before a group and the commit after (forming
groups: test_grouper.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from pipeline.envelope import Event
from pipeline.outbox.table import outbox_table
from pipeline.processing import inbox, parked_keys
from pipeline.processing.group_commit import Seen, commit, commit_claims, look_up
from pipeline.processing.processor import UnitOfWork
from pipeline.processing.records import Record

GROUP = "orders"
TOPIC = "requests.orders"
OTHER_TOPIC = "requests.payments"

effects_metadata = MetaData()
effects = Table(
    "effects",
    effects_metadata,
    Column("row", Integer, primary_key=True),
    Column("name", String(64), nullable=False),
)


@pytest.fixture
def database(database: Engine) -> Engine:
    """The migrated database, with the test's effects table."""
    effects_metadata.create_all(database)
    return database


# --- look_up ------------------------------------------------------------------------------------


def claim(database: Engine, event_id: str, outcome: inbox.Outcome, group: str = GROUP) -> None:
    with database.begin() as connection:
        inbox.claim(
            connection,
            consumer_group=group,
            event_id=event_id,
            topic=TOPIC,
            partition=0,
            offset=0,
            outcome=outcome,
        )


def park(database: Engine, topic: str, key: bytes, group: str = GROUP) -> None:
    with database.begin() as connection:
        parked_keys.park_key(
            connection,
            consumer_group=group,
            topic=topic,
            key=key,
            event_id="e-parker",
            reason="rejected: no",
        )


def test_look_up_reports_the_recorded_outcome_of_each_event(database: Engine) -> None:
    claim(database, "e-done", "processed")
    claim(database, "e-dead", "dead_lettered")
    claim(database, "e-other-group", "processed", group="billing")

    seen = look_up(
        database,
        [
            ("e-new", TOPIC, b"k1"),
            ("e-done", TOPIC, b"k2"),
            ("e-dead", TOPIC, None),
            ("e-other-group", TOPIC, b"k3"),
        ],
        consumer_group=GROUP,
        park_keys=True,
    )

    assert seen == [
        Seen(None, False),
        Seen("processed", False),
        Seen("dead_lettered", False),
        Seen(None, False),
    ]


def test_look_up_reports_parked_keys_without_confusing_topics_or_groups(database: Engine) -> None:
    park(database, TOPIC, b"k1")
    park(database, OTHER_TOPIC, b"k2")
    park(database, TOPIC, b"k3", group="billing")

    seen = look_up(
        database,
        [
            ("e1", TOPIC, b"k1"),  # parked
            ("e2", OTHER_TOPIC, b"k1"),  # same key, other topic: not parked
            ("e3", TOPIC, b"k2"),  # parked only on the other topic
            ("e4", OTHER_TOPIC, b"k2"),  # parked
            ("e5", TOPIC, b"k3"),  # parked only for another group
            ("e6", TOPIC, None),  # no key: never parked
        ],
        consumer_group=GROUP,
        park_keys=True,
    )

    assert [item.parked for item in seen] == [True, False, False, True, False, False]
    assert all(item.outcome is None for item in seen)


def test_look_up_without_park_keys_reports_no_key_parked(database: Engine) -> None:
    park(database, TOPIC, b"k1")

    seen = look_up(database, [("e1", TOPIC, b"k1")], consumer_group=GROUP, park_keys=False)

    assert seen == [Seen(None, False)]


# --- commit -------------------------------------------------------------------------------------


def unit_of(event: Event, offset: int, *names: str, row: int | None = None) -> UnitOfWork:
    """An async handler's unit for ``event``, with one deferred insert per name (``row``: the
    primary key of the first, to break a constraint on purpose)."""
    unit = UnitOfWork(
        _session=None,
        event=event,
        record=Record(TOPIC, 0, offset, b"k", b"{}"),
        consumer_group=GROUP,
    )
    for index, name in enumerate(names):
        values: dict[str, object] = {"name": name}
        if row is not None and index == 0:
            values["row"] = row

        def write(session: Session, values: dict[str, object] = values) -> None:
            session.execute(insert(effects).values(**values))

        unit.write(write)
    return unit


def new_event() -> Event:
    return Event(source="/tests", type="Step", data={})


def effect_names(database: Engine) -> list[str]:
    with database.connect() as connection:
        return sorted(connection.execute(select(effects.c.name)).scalars())


def inbox_rows(database: Engine) -> list[tuple[str, int, str]]:
    table = inbox.inbox_table
    with database.connect() as connection:
        rows = connection.execute(
            select(table.c.event_id, table.c.offset, table.c.outcome).order_by(table.c.offset)
        )
        return [(event_id, offset, outcome) for event_id, offset, outcome in rows]


def test_commit_records_every_event_in_the_inbox_and_runs_their_writes(database: Engine) -> None:
    events = [new_event() for _ in range(3)]
    units = [unit_of(events[0], 0, "a"), unit_of(events[1], 1), unit_of(events[2], 2, "c1", "c2")]

    outcomes = commit(database, units, consumer_group=GROUP, use_inbox=True)

    assert [(o.kind, o.event_id) for o in outcomes] == [("processed", e.id) for e in events]
    assert inbox_rows(database) == [(e.id, n, "processed") for n, e in enumerate(events)]
    assert effect_names(database) == ["a", "c1", "c2"]


def test_an_event_already_in_the_inbox_is_a_duplicate_and_its_writes_do_not_run(
    database: Engine,
) -> None:
    seen_before, fresh = new_event(), new_event()
    claim(database, seen_before.id, "processed")

    outcomes = commit(
        database,
        [unit_of(seen_before, 0, "old"), unit_of(fresh, 1, "new")],
        consumer_group=GROUP,
        use_inbox=True,
    )

    assert [(o.kind, o.event_id) for o in outcomes] == [
        ("duplicate", seen_before.id),
        ("processed", fresh.id),
    ]
    assert effect_names(database) == ["new"]


def test_the_same_event_twice_in_one_group_is_processed_once_and_a_duplicate_once(
    database: Engine,
) -> None:
    twice = new_event()

    outcomes = commit(
        database,
        [unit_of(twice, 0, "once"), unit_of(twice, 1, "once")],
        consumer_group=GROUP,
        use_inbox=True,
    )

    assert [o.kind for o in outcomes] == ["processed", "duplicate"]
    assert effect_names(database) == ["once"]
    assert inbox_rows(database) == [(twice.id, 0, "processed")]


def test_a_failing_write_fails_only_its_own_event_and_the_others_commit_with_their_writes(
    database: Engine,
) -> None:
    with database.begin() as connection:
        connection.execute(insert(effects).values(row=99, name="taken"))
    good_before, bad, good_after = new_event(), new_event(), new_event()
    units = [
        unit_of(good_before, 0, "before"),
        unit_of(bad, 1, "clash", row=99),  # the primary key is taken: IntegrityError
        unit_of(good_after, 2, "after"),
    ]

    outcomes = commit(database, units, consumer_group=GROUP, use_inbox=True)

    assert [(o.kind, o.event_id) for o in outcomes] == [
        ("processed", good_before.id),
        ("failed", bad.id),
        ("processed", good_after.id),
    ]
    assert "UNIQUE constraint failed" in str(outcomes[1].error)
    assert effect_names(database) == ["after", "before", "taken"]
    assert inbox_rows(database) == [
        (good_before.id, 0, "processed"),
        (good_after.id, 2, "processed"),
    ]


def test_a_single_event_whose_write_fails_is_failed_with_nothing_recorded(
    database: Engine,
) -> None:
    with database.begin() as connection:
        connection.execute(insert(effects).values(row=99, name="taken"))
    bad = new_event()

    [outcome] = commit(
        database, [unit_of(bad, 0, "clash", row=99)], consumer_group=GROUP, use_inbox=True
    )

    assert (outcome.kind, outcome.event_id) == ("failed", bad.id)
    assert inbox_rows(database) == []
    assert effect_names(database) == ["taken"]


def test_commit_without_the_inbox_runs_the_writes_and_records_nothing(database: Engine) -> None:
    events = [new_event(), new_event()]

    outcomes = commit(
        database,
        [unit_of(events[0], 0, "a"), unit_of(events[1], 1, "b")],
        consumer_group=GROUP,
        use_inbox=False,
    )

    assert [o.kind for o in outcomes] == ["processed", "processed"]
    assert effect_names(database) == ["a", "b"]
    assert inbox_rows(database) == []


class BatchedInsert:
    """A batched write: inserts the names of all its items, noting each call's items; an item
    named ``"clash"`` takes the row 99."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, session: Session, items: list[str]) -> None:
        self.calls.append(list(items))
        for item in items:
            session.execute(
                insert(effects).values(name=item, **({"row": 99} if item == "clash" else {}))
            )


def batched_unit(event: Event, offset: int, batch: BatchedInsert, item: str) -> UnitOfWork:
    unit = unit_of(event, offset, f"{item}-own")
    unit.write_batched(batch, item)
    return unit


def test_the_batched_writes_of_a_group_run_once_with_every_units_item_after_their_own_writes(
    database: Engine,
) -> None:
    batch, other = BatchedInsert(), BatchedInsert()
    seen_before = new_event()
    claim(database, seen_before.id, "processed")
    events = [new_event() for _ in range(3)]
    units = [
        batched_unit(events[0], 0, batch, "a"),
        batched_unit(seen_before, 1, batch, "old"),  # a duplicate: its item is left out
        batched_unit(events[1], 2, other, "b"),
        batched_unit(events[2], 3, batch, "c"),
    ]

    outcomes = commit(database, units, consumer_group=GROUP, use_inbox=True)

    assert [o.kind for o in outcomes] == ["processed", "duplicate", "processed", "processed"]
    assert batch.calls == [["a", "c"]]
    assert other.calls == [["b"]]
    assert effect_names(database) == ["a", "a-own", "b", "b-own", "c", "c-own"]


def test_when_a_groups_batched_write_fails_each_unit_runs_it_alone_and_only_its_own_fails(
    database: Engine,
) -> None:
    with database.begin() as connection:
        connection.execute(insert(effects).values(row=99, name="taken"))
    batch = BatchedInsert()
    events = [new_event() for _ in range(3)]
    units = [
        batched_unit(events[0], 0, batch, "a"),
        batched_unit(events[1], 1, batch, "clash"),
        batched_unit(events[2], 2, batch, "c"),
    ]

    outcomes = commit(database, units, consumer_group=GROUP, use_inbox=True)

    assert [o.kind for o in outcomes] == ["processed", "failed", "processed"]
    assert batch.calls == [["a", "clash", "c"], ["a"], ["clash"], ["c"]]
    assert effect_names(database) == ["a", "a-own", "c", "c-own", "taken"]
    assert inbox_rows(database) == [(events[0].id, 0, "processed"), (events[2].id, 2, "processed")]


def test_a_units_items_join_their_batch_in_order_and_a_synchronous_units_run_at_once(
    database: Engine,
) -> None:
    batch = BatchedInsert()
    first, second = new_event(), new_event()
    units = [unit_of(first, 0), unit_of(second, 1)]
    units[0].write_batched(batch, "a1")
    units[0].write_batched(batch, "a2")
    units[1].write_batched(batch, "b1")

    commit(database, units, consumer_group=GROUP, use_inbox=True)
    with Session(database) as session, session.begin():
        synchronous = UnitOfWork(
            _session=session,
            event=new_event(),
            record=Record(TOPIC, 0, 2, b"k", b"{}"),
            consumer_group=GROUP,
        )
        synchronous.write_batched(batch, "now")
        assert batch.calls == [["a1", "a2", "b1"], ["now"]]

    assert effect_names(database) == ["a1", "a2", "b1", "now"]


def outbox_events(database: Engine) -> list[tuple[str, str]]:
    """``(aggregate id, event type)`` of each outbox row, in the outbox's order."""
    table = outbox_table
    with database.connect() as connection:
        rows = connection.execute(
            select(table.c.aggregate_id, table.c.event_type).order_by(table.c.position)
        )
        return [(aggregate_id, event_type) for aggregate_id, event_type in rows]


def emitting_unit(event: Event, offset: int, aggregate_id: str, *types: str) -> UnitOfWork:
    unit = unit_of(event, offset, f"{aggregate_id}-write")
    for event_type in types:
        unit.emit(
            Event(source="/tests", type=event_type, data={}),
            aggregate_type="order",
            aggregate_id=aggregate_id,
            topic="orders.events",
        )
    return unit


def test_the_events_an_async_group_emits_go_into_the_outbox_in_order_and_a_bad_one_alone_fails(
    database: Engine,
) -> None:
    events = [new_event() for _ in range(3)]
    units = [
        emitting_unit(events[0], 0, "o-1", "Placed", "Paid"),
        emitting_unit(events[1], 1, "o-2", "Placed"),
        emitting_unit(events[2], 2, "o-3", "Placed"),
    ]
    units[2].emit(  # its partition key disagrees with its aggregate: OutboxError
        Event(source="/tests", type="Odd", partitionkey="elsewhere", data={}),
        aggregate_type="order",
        aggregate_id="o-3",
        topic="orders.events",
    )

    outcomes = commit(database, units, consumer_group=GROUP, use_inbox=True)

    assert [o.kind for o in outcomes] == ["processed", "processed", "failed"]
    assert "partitionkey" in str(outcomes[2].error)
    assert outbox_events(database) == [("o-1", "Placed"), ("o-1", "Paid"), ("o-2", "Placed")]
    assert effect_names(database) == ["o-1-write", "o-2-write"]


def test_commit_claims_records_events_without_writes_and_finds_duplicates(
    database: Engine,
) -> None:
    seen_before, fresh, twice = new_event(), new_event(), new_event()
    claim(database, seen_before.id, "processed")
    units = [
        unit_of(seen_before, 0),
        unit_of(fresh, 1),
        unit_of(twice, 2),
        unit_of(twice, 3),
    ]

    outcomes = commit_claims(database, units, consumer_group=GROUP)

    assert [(o.kind, o.event_id) for o in outcomes] == [
        ("duplicate", seen_before.id),
        ("processed", fresh.id),
        ("processed", twice.id),
        ("duplicate", twice.id),
    ]
    assert [row for row in inbox_rows(database) if row[0] != seen_before.id] == [
        (fresh.id, 1, "processed"),
        (twice.id, 2, "processed"),
    ]


def test_when_commit_claims_fails_each_event_fails_on_its_own_with_the_error(
    database: Engine,
) -> None:
    with database.begin() as connection:
        connection.execute(inbox.inbox_table.delete())
        connection.exec_driver_sql("DROP TABLE pipeline_inbox")  # every claim now fails
    events = [new_event(), new_event()]

    outcomes = commit_claims(
        database, [unit_of(events[0], 0), unit_of(events[1], 1)], consumer_group=GROUP
    )

    assert [(o.kind, o.event_id) for o in outcomes] == [("failed", e.id) for e in events]
    assert all("no such table" in str(o.error) for o in outcomes)
