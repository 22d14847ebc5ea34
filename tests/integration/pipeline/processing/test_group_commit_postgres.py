"""Group commit on PostgreSQL: the array statements of the inbox, and overlapping groups."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.engine import Engine

from pipeline.database import build_engine, migrate
from pipeline.envelope import Event, encode
from pipeline.processing import UnitOfWork, inbox, parked_keys
from pipeline.processing.group_commit import Call, commit, look_up, run_calls
from pipeline.processing.processor import Route
from pipeline.processing.records import Record
from pipeline.settings import DatabaseSettings

GROUP = "orders-service"
TOPIC = "requests.orders"

effects_metadata = MetaData()
effects = Table(
    "test_group_effects",
    effects_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False),
)


@pytest.fixture
def database(postgres_url: str) -> Iterator[Engine]:
    engine = build_engine(DatabaseSettings(url=postgres_url), pool_size=4)
    migrate(engine)
    effects_metadata.create_all(engine)
    yield engine
    engine.dispose()


def event_of(n: int) -> Event:
    return Event(source="/tests", type="Placed", partitionkey=f"k{n}", data={"n": n})


def unit_of(event: Event, offset: int) -> UnitOfWork:
    message = encode(event)
    record = Record(TOPIC, 0, offset, message.key, message.value, list(message.headers), None)
    unit = UnitOfWork(_session=None, event=event, record=record, consumer_group=GROUP)
    unit.write(lambda session: session.execute(insert(effects).values(event_id=event.id)))
    return unit


def effect_count(database: Engine) -> dict[str, int]:
    with database.connect() as connection:
        rows = connection.execute(
            select(effects.c.event_id, func.count()).group_by(effects.c.event_id)
        )
        return {event_id: count for event_id, count in rows}


def test_claim_many_returns_only_new_ids_and_outcomes_of_reads_them_back(database: Engine) -> None:
    entries = [inbox.InboxEntry(f"e-{n}", TOPIC, 0, n) for n in range(5)]
    with database.begin() as connection:
        first = inbox.claim_many(connection, entries[:3], consumer_group=GROUP)
    with database.begin() as connection:
        second = inbox.claim_many(connection, entries, consumer_group=GROUP)
        seen = inbox.outcomes_of(
            connection, consumer_group=GROUP, event_ids=["e-0", "e-4", "missing"]
        )

    assert first == {"e-0", "e-1", "e-2"}
    assert second == {"e-3", "e-4"}
    assert seen == {"e-0": "processed", "e-4": "processed"}


def test_parked_among_names_the_parked_keys_of_their_own_topic(database: Engine) -> None:
    with database.begin() as connection:
        parked_keys.park_key(
            connection, consumer_group=GROUP, topic=TOPIC, key=b"a", event_id="e-1", reason="x"
        )
        parked_keys.park_key(
            connection, consumer_group=GROUP, topic="other", key=b"b", event_id="e-2", reason="x"
        )
    with database.connect() as connection:
        parked = parked_keys.parked_among(
            connection, consumer_group=GROUP, keys={(TOPIC, b"a"), (TOPIC, b"b"), (TOPIC, b"c")}
        )

    assert parked == {(TOPIC, b"a")}


def test_a_group_commits_new_events_once_and_drops_the_writes_of_duplicates(
    database: Engine,
) -> None:
    events = [event_of(n) for n in range(4)]
    first = commit(
        database, [unit_of(e, n) for n, e in enumerate(events[:2])], consumer_group=GROUP,
        use_inbox=True,
    )  # fmt: skip
    again = [unit_of(events[0], 0), unit_of(events[2], 2), unit_of(events[3], 3)]
    second = commit(database, again, consumer_group=GROUP, use_inbox=True)
    seen = look_up(
        database, [(e.id, TOPIC, f"k{n}".encode()) for n, e in enumerate(events)],
        consumer_group=GROUP, park_keys=True,
    )  # fmt: skip

    assert [o.kind for o in first] == ["processed", "processed"]
    assert [o.kind for o in second] == ["duplicate", "processed", "processed"]
    assert effect_count(database) == {e.id: 1 for e in events}
    assert all(s.outcome == "processed" and not s.parked for s in seen)


def test_a_write_that_fails_the_group_fails_only_its_own_event(database: Engine) -> None:
    events = [event_of(n) for n in range(3)]
    units = [unit_of(e, n) for n, e in enumerate(events)]
    units[1].write(lambda session: session.execute(insert(effects).values(id=1, event_id="a")))
    units[1].write(lambda session: session.execute(insert(effects).values(id=1, event_id="b")))

    outcomes = commit(database, units, consumer_group=GROUP, use_inbox=True)
    with database.connect() as connection:
        recorded = inbox.outcomes_of(
            connection, consumer_group=GROUP, event_ids=[e.id for e in events]
        )

    assert [o.kind for o in outcomes] == ["processed", "failed", "processed"]
    assert effect_count(database) == {events[0].id: 1, events[2].id: 1}
    assert set(recorded) == {events[0].id, events[2].id}


def test_overlapping_groups_committed_at_once_apply_each_event_exactly_once(
    database: Engine,
) -> None:
    # Two instances during a rebalance: the same events, in opposite orders, at the same time.
    events = [event_of(n) for n in range(40)]
    start = threading.Barrier(2)
    kinds: list[list[str]] = []

    def instance(group: list[UnitOfWork]) -> None:
        start.wait()
        outcomes = commit(database, group, consumer_group=GROUP, use_inbox=True)
        kinds.append([o.kind for o in outcomes])

    threads = [
        threading.Thread(target=instance, args=([unit_of(e, n) for n, e in enumerate(events)],)),
        threading.Thread(
            target=instance, args=([unit_of(e, n) for n, e in reversed(list(enumerate(events)))],)
        ),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert len(kinds) == 2
    assert sum(k.count("processed") for k in kinds) == len(events)
    assert sum(k.count("duplicate") for k in kinds) == len(events)
    assert effect_count(database) == {e.id: 1 for e in events}


def bare_unit_of(event: Event, offset: int) -> UnitOfWork:
    """An async handler's unit that left no writes (its group commits in one statement)."""
    message = encode(event)
    record = Record(TOPIC, 0, offset, message.key, message.value, list(message.headers), None)
    return UnitOfWork(_session=None, event=event, record=record, consumer_group=GROUP)


def test_a_group_without_writes_is_recorded_once_and_seen_as_duplicates_after(
    database: Engine,
) -> None:
    events = [event_of(n) for n in range(3)]

    first = commit(
        database, [bare_unit_of(e, n) for n, e in enumerate(events)], consumer_group=GROUP,
        use_inbox=True,
    )  # fmt: skip
    again = commit(
        database, [bare_unit_of(events[1], 1), bare_unit_of(event_of(9), 9)],
        consumer_group=GROUP, use_inbox=True,
    )  # fmt: skip
    with database.connect() as connection:
        recorded = inbox.outcomes_of(
            connection, consumer_group=GROUP, event_ids=[e.id for e in events]
        )

    assert [o.kind for o in first] == ["processed"] * 3
    assert [o.kind for o in again] == ["duplicate", "processed"]
    assert recorded == {e.id: "processed" for e in events}


def test_seen_and_parked_reads_outcomes_and_binary_keys_in_one_statement(
    database: Engine,
) -> None:
    with database.begin() as connection:
        inbox.claim_many(connection, [inbox.InboxEntry("e-1", TOPIC, 0, 1)], consumer_group=GROUP)
        parked_keys.park_key(
            connection, consumer_group=GROUP, topic=TOPIC, key=b"\x00\xff", event_id="e-0",
            reason="x",
        )  # fmt: skip

    with database.connect() as connection:
        outcomes, parked = inbox.seen_and_parked(
            connection, consumer_group=GROUP, event_ids={"e-1", "e-2"},
            keys={(TOPIC, b"\x00\xff"), (TOPIC, b"k")},
        )  # fmt: skip

    assert outcomes == {"e-1": "processed"}
    assert parked == {(TOPIC, b"\x00\xff")}


def call_of(event: Event, offset: int, handler: Any) -> Call:
    message = encode(event)
    record = Record(TOPIC, 0, offset, message.key, message.value, list(message.headers), None)
    return Call(record, event, Route(handler), event.data)


def test_synchronous_handlers_of_a_group_commit_once_and_a_failing_one_leaves_nothing(
    database: Engine,
) -> None:
    calls: list[int] = []

    def handler(event: Event, unit: UnitOfWork) -> None:
        calls.append(event.data["n"])
        unit.session.execute(insert(effects).values(event_id=event.id))
        if event.data["n"] == 1:
            raise ConnectionResetError("the other service hung up")

    events = [event_of(n) for n in range(3)]

    results = run_calls(
        database, [call_of(e, n, handler) for n, e in enumerate(events)],
        consumer_group=GROUP, use_inbox=True, park_keys=True,
    )  # fmt: skip
    again = run_calls(
        database, [call_of(events[0], 0, handler)], consumer_group=GROUP, use_inbox=True,
        park_keys=True,
    )  # fmt: skip
    with database.connect() as connection:
        recorded = inbox.outcomes_of(
            connection, consumer_group=GROUP, event_ids=[e.id for e in events]
        )

    assert [r.kind for r in results if r] == ["processed", "failed", "processed"]
    assert [r.kind for r in again if r] == ["duplicate"]
    assert effect_count(database) == {events[0].id: 1, events[2].id: 1}
    assert set(recorded) == {events[0].id, events[2].id}
    assert calls == [0, 1, 0, 2]  # the group ran again without event 1; then nothing ran


def _inbox_scans(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan] if plan.get("Relation Name") == "pipeline_inbox" else []
    for child in plan.get("Plans", []):
        found.extend(_inbox_scans(child))
    return found


def test_the_look_up_probes_the_inbox_for_each_id_asked_even_before_it_was_analyzed(
    database: Engine,
) -> None:
    """A new database's inbox has no statistics until autovacuum analyzes it; the look-up must
    not read the whole consumer group's rows meanwhile (it did: its cost grew with the inbox)."""
    with database.begin() as connection:
        connection.exec_driver_sql(
            'INSERT INTO pipeline_inbox (consumer_group, event_id, topic, "partition", '
            "\"offset\", outcome, recorded_at) SELECT %s, 'e-' || n, %s, 0, n, 'processed', "
            "now() FROM generate_series(1, 2000) AS n",
            (GROUP, TOPIC),
        )
    statement, values = inbox.seen_and_parked_statement(
        "postgresql", consumer_group=GROUP, event_ids=["e-7", "e-1999", "missing"], keys=[]
    )
    with database.connect() as connection:
        analyzed = connection.exec_driver_sql(
            "SELECT last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL "
            "FROM pg_stat_user_tables WHERE relname = 'pipeline_inbox'"
        ).scalar_one()
        [[explained]] = connection.exec_driver_sql(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, values
        ).all()
        outcomes, _ = inbox.seen_and_parked_of(connection.exec_driver_sql(statement, values), set())

    assert not analyzed, "the test needs an inbox without statistics"
    assert outcomes == {"e-7": "processed", "e-1999": "processed"}
    [scan] = _inbox_scans(explained[0]["Plan"])
    assert "event_id" in scan["Index Cond"]
    assert scan.get("Rows Removed by Filter", 0) == 0
    # At most one row read per id asked (a nested loop reports rows per loop, rounded).
    assert scan["Actual Rows"] * scan["Actual Loops"] <= 3


def _parked_scans(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan] if plan.get("Relation Name") == "pipeline_parked_keys" else []
    for child in plan.get("Plans", []):
        found.extend(_parked_scans(child))
    return found


def test_the_look_up_probes_the_parked_keys_for_each_key_asked(database: Engine) -> None:
    """Matching the group's parked keys on the key alone read all of them (the primary key has
    the topic before the key): 5.8 ms a look-up with 30,000 parked keys."""
    with database.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO pipeline_parked_keys (consumer_group, topic, key, event_id, reason, "
            "parked_at) SELECT %s, %s, convert_to('k-' || n, 'UTF8'), 'e-' || n, 'r', now() "
            "FROM generate_series(1, 3000) AS n",
            (GROUP, TOPIC),
        )
        connection.exec_driver_sql("ANALYZE pipeline_parked_keys")
    keys = {(TOPIC, b"k-7"), (TOPIC, b"k-2999"), (TOPIC, b"missing"), ("other", b"k-8")}
    statement, values = inbox.seen_and_parked_statement(
        "postgresql", consumer_group=GROUP, event_ids=["e-1"], keys=keys
    )
    with database.connect() as connection:
        [[explained]] = connection.exec_driver_sql(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, values
        ).all()
        _, parked = inbox.seen_and_parked_of(connection.exec_driver_sql(statement, values), keys)
        among = parked_keys.parked_among(connection, consumer_group=GROUP, keys=keys)

    assert parked == among == {(TOPIC, b"k-7"), (TOPIC, b"k-2999")}
    [scan] = _parked_scans(explained[0]["Plan"])
    assert scan["Node Type"].startswith("Index")
    assert "key" in scan["Index Cond"] and "topic" in scan["Index Cond"]
    assert scan["Actual Rows"] * scan["Actual Loops"] <= 4  # a row at most per key asked
