"""The inbox and the parked keys: claims, outcomes, parking, counting and the batched purge."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.engine import Connection, Engine

from pipeline.processing import inbox, parked_keys
from tests.support.parking import park, plans_of_parked_keys

GROUP = "orders"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(database: Engine) -> Engine:
    return database


def claim(connection: Connection, event_id: str, **options: Any) -> inbox.Claim:
    values: dict[str, Any] = {
        "consumer_group": GROUP,
        "event_id": event_id,
        "topic": "requests.orders",
        "partition": 0,
        "offset": 0,
    }
    values.update(options)
    return inbox.claim(connection, **values)


def inbox_ids(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        query = select(inbox.inbox_table.c.event_id).order_by(inbox.inbox_table.c.event_id)
        return list(connection.execute(query).scalars())


# --- claims -------------------------------------------------------------------------------------


def test_first_claim_of_an_event_is_new(engine: Engine) -> None:
    with engine.begin() as connection:
        assert claim(connection, "e1") == inbox.Claim(new=True)


def test_second_claim_is_a_duplicate_with_the_previous_outcome(engine: Engine) -> None:
    with engine.begin() as connection:
        claim(connection, "e1")
    with engine.begin() as connection:
        assert claim(connection, "e1") == inbox.Claim(new=False, previous="processed")


def test_duplicate_claim_reports_dead_lettered_and_keeps_it(engine: Engine) -> None:
    with engine.begin() as connection:
        claim(connection, "e1", outcome="dead_lettered")
    with engine.begin() as connection:
        assert claim(connection, "e1") == inbox.Claim(new=False, previous="dead_lettered")
        assert inbox.outcome_of(connection, consumer_group=GROUP, event_id="e1") == (
            "dead_lettered"
        )


def test_claims_are_per_consumer_group(engine: Engine) -> None:
    with engine.begin() as connection:
        claim(connection, "e1")
        assert claim(connection, "e1", consumer_group="billing").new


def test_a_rolled_back_claim_leaves_no_row(engine: Engine) -> None:
    with engine.connect() as connection, connection.begin() as transaction:
        claim(connection, "e1")
        transaction.rollback()

    with engine.begin() as connection:
        assert claim(connection, "e1").new


def test_outcome_of_an_unknown_event_is_none(engine: Engine) -> None:
    with engine.connect() as connection:
        assert inbox.outcome_of(connection, consumer_group=GROUP, event_id="nope") is None


def test_set_outcome_changes_the_recorded_outcome_and_time(engine: Engine) -> None:
    with engine.begin() as connection:
        claim(connection, "e1", outcome="dead_lettered", now=T0)
    later = T0 + timedelta(hours=1)

    with engine.begin() as connection:
        inbox.set_outcome(
            connection, consumer_group=GROUP, event_id="e1", outcome="processed", now=later
        )

    with engine.connect() as connection:
        assert inbox.outcome_of(connection, consumer_group=GROUP, event_id="e1") == "processed"
        recorded = connection.execute(select(inbox.inbox_table.c.recorded_at)).scalar_one()
    assert recorded.replace(tzinfo=UTC) == later


# --- purge --------------------------------------------------------------------------------------


def fill(engine: Engine, count: int, at: datetime, prefix: str, group: str = GROUP) -> None:
    with engine.begin() as connection:
        for index in range(count):
            claim(connection, f"{prefix}{index:02d}", consumer_group=group, offset=index, now=at)


def test_purge_deletes_only_rows_older_than_the_cut(engine: Engine) -> None:
    fill(engine, 4, T0 - timedelta(days=8), "old")
    fill(engine, 3, T0 - timedelta(days=1), "new")

    deleted = inbox.purge_inbox(engine, older_than=T0 - timedelta(days=7))

    assert deleted == 4
    assert inbox_ids(engine) == ["new00", "new01", "new02"]


def test_purge_deletes_in_batches_of_batch_size(engine: Engine) -> None:
    fill(engine, 6, T0 - timedelta(days=8), "a", group=GROUP)
    fill(engine, 4, T0 - timedelta(days=8), "b", group="billing")
    fill(engine, 2, T0, "keep")
    deleted_per_statement: list[int] = []
    commits: list[int] = []

    def after_execute(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            deleted_per_statement.append(cursor.rowcount)

    event.listen(engine, "after_cursor_execute", after_execute)
    event.listen(engine, "commit", lambda conn: commits.append(1))

    deleted = inbox.purge_inbox(engine, older_than=T0 - timedelta(days=7), batch_size=3)

    assert deleted == 10
    assert inbox_ids(engine) == ["keep00", "keep01"]
    assert sum(deleted_per_statement) == 10
    # 3 + 3 + 3 + 1 rows: four transactions, none deleting more than a batch
    assert len(commits) == 4
    assert all(0 < rows <= 3 for rows in deleted_per_statement)


def test_purge_of_an_exact_multiple_of_the_batch_size_deletes_everything(engine: Engine) -> None:
    fill(engine, 9, T0 - timedelta(days=8), "old")

    assert inbox.purge_inbox(engine, older_than=T0, batch_size=3) == 9
    assert inbox_ids(engine) == []


def test_purge_of_nothing_old_deletes_nothing(engine: Engine) -> None:
    fill(engine, 2, T0, "new")

    assert inbox.purge_inbox(engine, older_than=T0 - timedelta(seconds=1)) == 0
    assert len(inbox_ids(engine)) == 2


def test_purge_compares_instants_whatever_the_time_zone_of_the_cut(engine: Engine) -> None:
    fill(engine, 1, T0, "at-noon-utc")
    plus_two = timezone_plus_two()

    # 13:00 at +02:00 is 11:00 UTC: before the row, which must stay
    inbox.purge_inbox(engine, older_than=datetime(2024, 5, 1, 13, 0, tzinfo=plus_two))

    assert inbox_ids(engine) == ["at-noon-utc00"]


def timezone_plus_two() -> Any:
    from datetime import timezone

    return timezone(timedelta(hours=2))


def test_purge_keeps_the_parked_keys(engine: Engine) -> None:
    fill(engine, 1, T0 - timedelta(days=8), "old")
    with engine.begin() as connection:
        park(connection)

    inbox.purge_inbox(engine, older_than=T0)

    with engine.connect() as connection:
        count = connection.execute(
            select(func.count()).select_from(parked_keys.parked_keys_table)
        ).scalar_one()
    assert count == 1


# --- many at once (group commit) ----------------------------------------------------------------


def entry(event_id: str, offset: int = 0, topic: str = "requests.orders") -> inbox.InboxEntry:
    return inbox.InboxEntry(event_id=event_id, topic=topic, partition=3, offset=offset)


def inbox_rows(engine: Engine) -> list[tuple[str, str, str, int, int, str]]:
    table = inbox.inbox_table
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                table.c.consumer_group,
                table.c.event_id,
                table.c.topic,
                table.c.partition,
                table.c.offset,
                table.c.outcome,
            ).order_by(table.c.consumer_group, table.c.event_id)
        )
        return [
            (group, event_id, topic, partition, offset, outcome)
            for group, event_id, topic, partition, offset, outcome in rows
        ]


def test_claim_many_returns_the_new_ids_and_not_those_recorded_before(engine: Engine) -> None:
    with engine.begin() as connection:
        claim(connection, "e1", outcome="dead_lettered")

    with engine.begin() as connection:
        new = inbox.claim_many(
            connection,
            [entry("e1", 10), entry("e2", 11), entry("e3", 12, topic="requests.payments")],
            consumer_group=GROUP,
            now=T0,
        )

    assert new == {"e2", "e3"}
    assert inbox_rows(engine) == [
        (GROUP, "e1", "requests.orders", 0, 0, "dead_lettered"),  # left as it was
        (GROUP, "e2", "requests.orders", 3, 11, "processed"),
        (GROUP, "e3", "requests.payments", 3, 12, "processed"),
    ]


def test_claim_many_of_a_thousand_events_fits_a_sqlite_built_with_999_variables(
    engine: Engine,
) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's limit of bound variables")
    ids = [f"e{n:04d}" for n in range(1000)]

    with engine.begin() as connection:
        sqlite = connection.connection.driver_connection
        sqlite.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)  # before SQLite 3.32
        new = inbox.claim_many(
            connection, [entry(event_id, n) for n, event_id in enumerate(ids)], consumer_group=GROUP
        )

    assert new == set(ids)
    rows = inbox_rows(engine)
    assert [row[1] for row in rows] == ids
    assert rows[-1] == (GROUP, "e0999", "requests.orders", 3, 999, "processed")


def test_claim_many_is_per_consumer_group(engine: Engine) -> None:
    with engine.begin() as connection:
        claim(connection, "e1")

    with engine.begin() as connection:
        new = inbox.claim_many(connection, [entry("e1")], consumer_group="billing")

    assert new == {"e1"}


def test_claim_many_of_nothing_claims_nothing(engine: Engine) -> None:
    with engine.begin() as connection:
        assert inbox.claim_many(connection, [], consumer_group=GROUP) == set()

    assert inbox_rows(engine) == []


def test_claim_many_splits_more_rows_than_one_insert_takes_into_several_inserts(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inbox, "_ROWS_PER_INSERT", 3)
    with engine.begin() as connection:
        claim(connection, "e01")  # in the first chunk
        claim(connection, "e07")  # in the third
    inserts: list[str] = []

    def after_execute(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT"):
            inserts.append(statement)

    event.listen(engine, "after_cursor_execute", after_execute)
    ids = [f"e{n:02d}" for n in range(8)]

    with engine.begin() as connection:
        new = inbox.claim_many(
            connection, [entry(event_id, n) for n, event_id in enumerate(ids)], consumer_group=GROUP
        )

    assert new == set(ids) - {"e01", "e07"}
    assert len(inserts) == 3  # 3 + 3 + 2 rows
    assert [row[1] for row in inbox_rows(engine)] == ids


def test_a_rolled_back_claim_many_leaves_no_rows(engine: Engine) -> None:
    with engine.connect() as connection, connection.begin() as transaction:
        inbox.claim_many(connection, [entry("e1"), entry("e2")], consumer_group=GROUP)
        transaction.rollback()

    assert inbox_rows(engine) == []


def test_outcomes_of_no_ids_is_empty_without_a_query(engine: Engine) -> None:
    statements: list[str] = []
    event.listen(engine, "after_cursor_execute", lambda *args: statements.append(args[2]))

    with engine.connect() as connection:
        assert inbox.outcomes_of(connection, consumer_group=GROUP, event_ids=[]) == {}

    assert statements == []


def test_outcomes_of_gives_the_recorded_outcome_of_each_recorded_id(engine: Engine) -> None:
    with engine.begin() as connection:
        claim(connection, "e1")
        claim(connection, "e2", outcome="dead_lettered")
        claim(connection, "e3", consumer_group="billing")

    with engine.connect() as connection:
        outcomes = inbox.outcomes_of(
            connection, consumer_group=GROUP, event_ids={"e1", "e2", "e3", "never"}
        )

    assert outcomes == {"e1": "processed", "e2": "dead_lettered"}


def test_seen_and_parked_gives_both_look_ups_of_a_group_at_once(engine: Engine) -> None:
    with engine.begin() as connection:
        claim(connection, "e1")
        claim(connection, "e2", outcome="dead_lettered")
        claim(connection, "e3", consumer_group="billing")
        park(connection, b"k1")
        park(connection, b"\x00\xffk2", topic="requests.payments")  # a key that is not text
        park(connection, b"k3", consumer_group="billing")

    with engine.connect() as connection:
        outcomes, parked_keys = inbox.seen_and_parked(
            connection,
            consumer_group=GROUP,
            event_ids={"e1", "e2", "e3", "e4"},
            keys={
                ("requests.orders", b"k1"),
                ("requests.orders", b"\x00\xffk2"),  # parked on the other topic only
                ("requests.payments", b"\x00\xffk2"),
                ("requests.orders", b"k3"),  # parked for another group
            },
        )

    assert outcomes == {"e1": "processed", "e2": "dead_lettered"}
    assert parked_keys == {("requests.orders", b"k1"), ("requests.payments", b"\x00\xffk2")}


def test_seen_and_parked_probes_each_key_instead_of_reading_the_groups_parked_keys(
    engine: Engine,
) -> None:
    # Matching on the key alone read every parked key of the group: a look-up took 2.5 ms
    # with 10,000 parked keys, on the event loop.
    with engine.connect() as connection:
        plans = plans_of_parked_keys(
            connection,
            lambda: inbox.seen_and_parked(
                connection,
                consumer_group=GROUP,
                event_ids={"e1"},
                keys={("requests.orders", b"k1"), ("requests.payments", b"k2")},
            ),
        )

    assert plans and all("consumer_group=? AND topic=? AND key=?" in plan for plan in plans)


def test_seen_and_parked_of_nothing_is_empty(engine: Engine) -> None:
    with engine.connect() as connection:
        assert inbox.seen_and_parked(connection, consumer_group=GROUP, event_ids=[], keys=[]) == (
            {},
            set(),
        )


def test_claim_many_stores_the_time_as_a_single_claim_does(engine: Engine) -> None:
    # Rows written by the group statements and by claim() must compare alike (the purge).
    moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    with engine.begin() as connection:
        claim(connection, "single", now=moment)
        inbox.claim_many(
            connection, [inbox.InboxEntry("many", "t", 0, 1)], consumer_group=GROUP, now=moment
        )

    with engine.connect() as connection:
        table = inbox.inbox_table
        times = dict(connection.execute(select(table.c.event_id, table.c.recorded_at)).all())

    assert times["single"] == times["many"]
    assert inbox.purge_inbox(engine, older_than=moment + timedelta(microseconds=1)) == 2
