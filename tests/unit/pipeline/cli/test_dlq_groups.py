"""``pipeline dlq`` with two consumer groups reading one topic: each dead-letters (and parks) the
same keys on its own, so a discard lets each group's park go on that group's letters only, and
``--group`` selects one group's letters (the same event has the same id in both)."""

from __future__ import annotations

import dataclasses
import io
import json

import pytest
from rich.console import Console
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from pipeline.cli import dlq, dlq_discard, dlq_selection
from pipeline.cli.dlq_table import dead_letter_table
from pipeline.cli.main import app
from pipeline.dead_letters.letter import DeadLetter
from pipeline.processing import parked_keys
from tests.unit.pipeline.cli.test_dlq import dead_letter

TOPIC = "requests.orders"
DLQ = "requests.orders.dlq"


def letter_of(group: str, key: str, number: int, *, reason: str = "rejected") -> DeadLetter:
    """Group ``group``'s dead letter of ``key``'s event ``number`` (its id is the same in
    every group's letter of it)."""
    base = dead_letter(number, key=key)
    return dataclasses.replace(
        base,
        dlq_partition=0,
        dlq_offset=base.dlq_offset + (100 if group == "B" else 0),
        original_partition=0,
        consumer_group=group,
        reason=reason,
        event_id=f"{key}-event-{number}",
    )


def park(engine: Engine, group: str, key: str, first: int, last: int) -> None:
    with engine.begin() as connection:
        parked_keys.park_key(
            connection,
            consumer_group=group,
            topic=TOPIC,
            key=key.encode(),
            event_id=f"{key}-event-{first}",
            reason="rejected: bad",
        )
        parked_keys.note_parked_dead_letter(
            connection,
            consumer_group=group,
            topic=TOPIC,
            key=key.encode(),
            event_id=f"{key}-event-{last}",
        )


def is_parked(engine: Engine, group: str, key: str) -> bool:
    with engine.connect() as connection:
        found = parked_keys.parked_key(
            connection, consumer_group=group, topic=TOPIC, key=key.encode()
        )
    return found is not None


def settle(
    capsys: pytest.CaptureFixture[str],
    engine: Engine,
    letters: list[DeadLetter],
    discarded: list[DeadLetter],
) -> str:
    gone = {letter.position for letter in discarded}
    pending = [letter for letter in letters if letter.position not in gone]
    read = dlq_selection.ReadBack(letters, {}, [*pending, *discarded])
    capsys.readouterr()
    dlq_discard._settle_keys(discarded, read, engine, DLQ)
    return " ".join(capsys.readouterr().err.split())


# --- 1. a discard lets each group's park go on that group's letters ---------------------------


def test_discarding_both_groups_letters_lets_the_park_of_the_group_in_this_database_go(
    capsys, database
):
    # Group A's database; B's letters read first. It said "not parked in this database
    # (group B)" and left A's park, none of A's letters pending.
    letters = [
        letter_of("B", "kx3", 1),
        letter_of("B", "kx3", 2, reason="key_parked"),
        letter_of("A", "kx3", 1),
        letter_of("A", "kx3", 2, reason="key_parked"),
    ]
    park(database, "A", "kx3", 1, 2)

    said = settle(capsys, database, letters, letters)

    assert not is_parked(database, "A", "kx3"), said
    assert f"key kx3 of {TOPIC}: let go (group A)" in said
    assert f"key kx3 of {TOPIC}: not parked in this database (group B)" in said


def test_another_groups_pending_letters_do_not_hold_the_key_parked(capsys, database):
    # Discarding A's only letter of kx said B's 2 were still pending and holding it; A stayed
    # parked after the redrive it advised.
    a_letter = letter_of("A", "kx", 1)
    letters = [a_letter, letter_of("B", "kx", 1), letter_of("B", "kx", 2, reason="key_parked")]
    park(database, "A", "kx", 1, 1)
    park(database, "B", "kx", 1, 2)

    said = settle(capsys, database, letters, [a_letter])

    assert not is_parked(database, "A", "kx"), said
    assert is_parked(database, "B", "kx")
    assert f"key kx of {TOPIC}: let go (group A)" in said
    assert "still pending" not in said


def test_the_advice_counts_and_names_only_the_group_of_the_discarded_letter(capsys, database):
    a_first = letter_of("A", "ky", 1)
    letters = [
        a_first,
        letter_of("A", "ky", 2, reason="key_parked"),
        letter_of("B", "ky", 1),
        letter_of("B", "ky", 2, reason="key_parked"),
    ]
    park(database, "A", "ky", 1, 1)  # A's park noted only its first letter

    said = settle(capsys, database, letters, [a_first])

    assert (
        f"key ky of {TOPIC}: 1 dead letter of it still pending in group A (the first: key_parked)"
    ) in said, said
    assert f"`pipeline dlq redrive {DLQ} --key ky --group A`" in said
    with database.connect() as connection:
        found = parked_keys.parked_key(connection, consumer_group="A", topic=TOPIC, key=b"ky")
    assert found is not None and found.last_event_id == "ky-event-2"  # A's own, redriven last


# --- 2. --group -------------------------------------------------------------------------------


def test_matches_selects_the_letter_of_one_group():
    from pipeline.dead_letters.selection import matches

    a, b = letter_of("A", "k", 1), letter_of("B", "k", 1)

    assert a.event_id == b.event_id
    assert matches(a, group="A") and not matches(b, group="A")
    assert [x for x in (a, b) if matches(x, event_ids={a.event_id}, group="B")] == [b]
    assert matches(a) and matches(b)


LETTERS = [letter_of("A", "k", 1), letter_of("B", "k", 1), letter_of("B", "k", 2)]


@pytest.fixture
def two_groups(monkeypatch):
    read = dlq_selection.ReadBack(LETTERS, {}, LETTERS)
    for module in (dlq, dlq_selection, dlq_discard):
        monkeypatch.setattr(module, "read_back", lambda *_args: read, raising=False)
        monkeypatch.setattr(module, "require_topics", lambda *_args: None, raising=False)


def test_inspect_group_shows_only_that_groups_letters(two_groups):
    result = CliRunner().invoke(
        app, ["dlq", "inspect", TOPIC, "--event-id", "k-event-1", "--group", "B", "-o", "ndjson"]
    )

    assert result.exit_code == 0, result.output
    shown = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(x["consumer_group"], x["event_id"]) for x in shown] == [("B", "k-event-1")]


def test_redrive_group_selects_only_that_groups_letters(two_groups):
    result = CliRunner().invoke(app, ["dlq", "redrive", TOPIC, "--group", "A", "--dry-run"])

    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    assert "1 dead letter of 1 key to redrive" in said, said


def test_discard_group_narrows_a_filter_but_is_not_one_on_its_own(two_groups):
    args = ["dlq", "discard", TOPIC, "--note", "n", "--dry-run", "--keep-keys-parked"]

    narrowed = CliRunner().invoke(app, [*args, "--event-id", "k-event-1", "--group", "A"])
    alone = CliRunner().invoke(app, [*args, "--group", "A"])
    empty = CliRunner().invoke(app, [*args, "--key", "k", "--group", " "])

    assert narrowed.exit_code == 0, narrowed.output
    assert "1 dead letter to discard" in " ".join(narrowed.stderr.split()), narrowed.stderr
    assert alone.exit_code == 2 and "choose what to discard" in " ".join(alone.stderr.split())
    assert empty.exit_code == 2 and "--group" in empty.stderr


def test_the_inspect_table_shows_the_group_and_leaves_it_out_first_when_narrow():
    def render(width: int) -> str:
        console = Console(width=width, record=True, file=io.StringIO())
        console.print(dead_letter_table(DLQ, LETTERS, None, width=width))
        return " ".join(console.export_text().split())

    wide, narrow = render(240), render(100)

    assert "group" in wide and "not shown" not in wide
    assert "not shown at this width: group," in narrow
