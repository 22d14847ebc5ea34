"""``pipeline dlq inspect|redrive|discard --since TIME``: only the dead letters dead-lettered at or
after TIME (a duration back from now or an ISO 8601 time, read as ``logs search --since``
reads it), by their ``dlq.dead_lettered_at`` header, or their message's Kafka timestamp
without one."""

from __future__ import annotations

import dataclasses
import json
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from pipeline.cli import dlq, dlq_discard, dlq_selection
from pipeline.cli.main import app
from pipeline.dead_letters.letter import DEAD_LETTERED_AT, DeadLetter
from pipeline.errors import PipelineError
from tests.unit.pipeline.cli.test_dlq import dead_letter

TOPIC = "requests.orders"


def at(number: int, when: str, *, key: str | None = None, reason: str = "rejected") -> DeadLetter:
    """Dead letter ``number`` (original offset 20000 + number), dead-lettered at ``when``."""
    return dataclasses.replace(
        dead_letter(number, key=key), dead_lettered_at=when, reason=reason, original_partition=0
    )


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- the time of a dead letter, and the filter (pure) -----------------------------------------


def test_a_letters_time_is_its_header_else_its_message_timestamp():
    stamp = 1_700_000_000_000  # 2023-11-14T22:13:20Z

    assert dlq_selection.dead_lettered_time(at(1, "2026-12-02T20:31:05.123Z"), stamp) == datetime(
        2026, 12, 2, 20, 31, 5, 123000, tzinfo=UTC
    )
    for header in ("", "not a time"):
        assert dlq_selection.dead_lettered_time(at(1, header), stamp) == datetime(
            2023, 11, 14, 22, 13, 20, tzinfo=UTC
        )
    assert dlq_selection.dead_lettered_time(at(1, ""), None) is None


def test_since_selects_the_letters_dead_lettered_at_or_after_it():
    letters = [
        at(1, "2026-12-02T19:59:59.999Z"),
        at(2, "2026-12-02T20:00:00.000Z"),
        at(3, "2026-12-02T21:15:00.000Z"),
        at(4, ""),  # no header: its message's timestamp, 20:30
        at(5, ""),  # no header, no timestamp: no time to select it by
    ]
    stamps = {
        letters[3].position: int(datetime(2026, 12, 2, 20, 30, tzinfo=UTC).timestamp() * 1000)
    }

    def selected(since: str) -> list[int]:
        filters = dlq_selection.Filters.of(None, None, None, None, since=since)
        return [letter.dlq_offset - 1000 for letter in letters if filters.match(letter, stamps)]

    # Without an offset, UTC (as `logs search --since` reads it); at the time itself, selected.
    assert selected("2026-12-02T20:00") == [2, 3, 4]
    assert selected("2026-12-02T20:00:00Z") == [2, 3, 4]
    assert selected("2026-12-02T21:00+01:00") == [2, 3, 4]  # 20:00 UTC
    assert selected("2026-12-02T20:30:00.001Z") == [3]
    assert selected("2026-12-03") == []
    no_since = dlq_selection.Filters.of(None, None, None, None)
    assert [letter for letter in letters if no_since.match(letter)] == letters


def test_a_duration_is_back_from_now_and_combines_with_the_other_filters():
    now = datetime.now(UTC)
    old = at(1, iso(now - timedelta(hours=3)), reason="rejected")
    recent = at(2, iso(now - timedelta(minutes=5)), reason="rejected")
    recent_other = at(3, iso(now - timedelta(minutes=5)), reason="retries_exhausted")

    filters = dlq_selection.Filters.of(None, "rejected", None, None, since="1h")

    assert [x for x in (old, recent, recent_other) if filters.match(x)] == [recent]
    assert filters.any and filters.any_but_group  # a discard's choice on its own


@pytest.mark.parametrize("text", ["yesterday", "5x", "2026-13-01", ""])
def test_a_bad_since_is_a_usage_error_naming_what_is_accepted(text):
    with pytest.raises(typer.BadParameter) as raised:
        dlq_selection.Filters.of(None, None, None, None, since=text)

    assert f"--since {text!r}: expected a duration such as 15m" in str(raised.value)


@pytest.mark.parametrize(
    "command", [["inspect"], ["redrive", "--dry-run"], ["discard", "--note", "n", "--dry-run"]]
)
def test_a_bad_since_on_the_command_line_is_one_line_and_exit_2(command):
    result = CliRunner().invoke(app, ["dlq", command[0], TOPIC, *command[1:], "--since", "1 hr"])

    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        "error: Invalid value: --since '1 hr': expected a duration such as 15m, 2h, 1d, 1h30m "
        "or an ISO 8601 time such as 2024-07-15T12:00:00Z "
        f"(see pipeline dlq {command[0]} -h)"
    ]
    assert "Traceback" not in result.output


def test_every_dlq_command_says_what_since_reads():
    group = typer.main.get_command(dlq.app)
    for name in ("inspect", "redrive", "discard"):
        command = group.commands[name]
        (since,) = [param for param in command.params if "--since" in param.opts]
        assert since.metavar == "TIME"
        assert since.help.startswith("Only dead letters dead-lettered at or after TIME"), name
        assert "read as UTC unless it has an offset" in since.help
        assert "dlq.dead_lettered_at header" in since.help
        assert "Kafka message timestamp" in since.help
    assert "pipeline dlq inspect requests.orders --since 1h" in group.commands["inspect"].help


# --- the commands -----------------------------------------------------------------------------


EARLIER = "2026-12-02T08:00:00.000Z"
LATER = "2026-12-02T20:00:00.000Z"
SINCE = "2026-12-02T12:00"


@pytest.fixture
def two_runs(monkeypatch):
    """Key a dead-lettered in an earlier run and again (its parked follower) in a later one;
    key b and c in the later run only."""
    letters = [
        at(1, EARLIER, key="a"),
        at(2, LATER, key="a", reason="key_parked"),
        at(3, LATER, key="b"),
        at(4, LATER, key="c", reason="retries_exhausted"),
        at(5, EARLIER, key="d"),
    ]
    read = dlq_selection.ReadBack(letters, {}, letters)
    for module in (dlq, dlq_selection, dlq_discard):
        monkeypatch.setattr(module, "read_back", lambda *_args: read, raising=False)
        monkeypatch.setattr(module, "require_topics", lambda *_args: None, raising=False)
    return letters


def test_inspect_since_shows_only_the_later_dead_letters(two_runs):
    result = CliRunner().invoke(app, ["dlq", "inspect", TOPIC, "--since", SINCE, "-o", "ndjson"])

    assert result.exit_code == 0, result.output
    shown = [json.loads(line)["key"] for line in result.stdout.splitlines()]
    assert shown == ["a", "b", "c"]
    assert "3 dead letters shown of 5 pending in requests.orders.dlq" in result.stderr


def test_a_redrive_since_leaving_a_keys_earlier_letter_behind_is_refused(two_runs):
    refused = CliRunner().invoke(app, ["dlq", "redrive", TOPIC, "--since", SINCE, "--yes"])
    narrowed = CliRunner().invoke(
        app, ["dlq", "redrive", TOPIC, "--since", SINCE, "--key", "b", "--dry-run"]
    )

    assert isinstance(refused.exception, PipelineError), refused.output  # exit code 2
    assert str(refused.exception).startswith(
        "1 earlier dead letter of the selected keys does not match"
    )
    assert narrowed.exit_code == 0, narrowed.output
    assert "1 dead letter of 1 key to redrive" in " ".join(narrowed.stderr.split())


def test_a_redrive_since_takes_a_keys_later_letters_whenever_dead_lettered(monkeypatch):
    # Key k: its first letter after --since, a later one of it (in original order) stamped
    # before it (another host's clock): still the first's follower, not left pending behind it.
    first, tail = at(1, LATER, key="k"), at(2, "2026-12-02T11:59:00.000Z", key="k")
    other = at(3, EARLIER, key="x")
    read = dlq_selection.ReadBack([first, tail, other], {}, [first, tail, other])
    monkeypatch.setattr(dlq_selection, "read_back", lambda *_args: read)
    filters = dlq_selection.Filters.of(None, None, None, None, since=SINCE)

    selection = dlq_selection.select_letters(None, "requests.orders.dlq", filters, None)

    assert selection.letters == [first, tail]
    assert selection.matched == 1 and selection.earlier_left == []


def test_a_redrive_since_starts_a_key_at_its_first_letter_matching_every_filter(monkeypatch):
    # Key k, in original order: a rejected letter before --since; a key_parked one after it; a
    # rejected one stamped before it (another host's clock); a rejected one after it. With
    # --reason rejected --since the key starts at the last: the first two do not match both,
    # and neither does the third, though it passes --reason and comes after a letter that
    # passes --since.
    early = at(1, EARLIER, key="k")
    parked = at(2, LATER, key="k", reason="key_parked")
    skewed = at(3, "2026-12-02T11:59:00.000Z", key="k")
    late = at(4, LATER, key="k")
    letters = [early, parked, skewed, late]
    read = dlq_selection.ReadBack(letters, {}, letters)
    monkeypatch.setattr(dlq_selection, "read_back", lambda *_args: read)
    filters = dlq_selection.Filters.of(None, "rejected", None, None, since=SINCE)

    selection = dlq_selection.select_letters(None, "requests.orders.dlq", filters, None)

    assert selection.letters == [late]
    assert selection.earlier_left == [early, parked, skewed]


def test_a_discard_since_is_a_choice_and_selects_only_the_later_letters(two_runs):
    args = ["dlq", "discard", TOPIC, "--note", "n", "--dry-run", "--keep-keys-parked"]

    result = CliRunner().invoke(app, [*args, "--since", SINCE, "--reason", "rejected"])
    alone = CliRunner().invoke(app, [*args, "--since", SINCE])

    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    assert "1 dead letter to discard from requests.orders.dlq (5 pending)" in said, said
    assert alone.exit_code == 0, alone.output
    assert "3 dead letters to discard" in " ".join(alone.stderr.split())


# --- a letter without the header: its message's Kafka timestamp -------------------------------


def test_inspect_since_reads_a_letter_without_the_header_by_its_message_timestamp(monkeypatch):
    from confluent_kafka import TIMESTAMP_CREATE_TIME

    import pipeline.dead_letters.redrive as redrive_module
    from pipeline.envelope import KafkaMessage
    from tests.unit.pipeline.dead_letters.test_redrive import (
        FakeConsumer,
        FakeMessage,
        a_dead_letter_message,
    )

    now = datetime.now(UTC)

    def without_time(offset: int) -> KafkaMessage:
        message = a_dead_letter_message(offset)
        headers = [(name, data) for name, data in message.headers if name != DEAD_LETTERED_AT]
        return dataclasses.replace(message, headers=headers)

    stamps = {  # the messages' timestamps: offsets 0 and 1 two hours ago, 2 and 3 two minutes ago
        0: now - timedelta(hours=2),
        1: now - timedelta(hours=2),
        2: now - timedelta(minutes=2),
        3: now - timedelta(minutes=2),
    }
    messages = [
        without_time(0),  # old by its timestamp
        a_dead_letter_message(1),  # its header (now) wins over its old timestamp
        without_time(2),  # recent by its timestamp
        dataclasses.replace(  # its header (old) wins over its recent timestamp
            a_dead_letter_message(3),
            headers=[
                (name, iso(now - timedelta(hours=5)).encode() if name == DEAD_LETTERED_AT else data)
                for name, data in a_dead_letter_message(3).headers
            ],
        ),
    ]

    class Stamped(FakeMessage):
        def timestamp(self) -> tuple[int, int]:
            return TIMESTAMP_CREATE_TIME, int(stamps[self.offset()].timestamp() * 1000)

    class Consumer(FakeConsumer):
        def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
            return [
                Stamped(m.partition(), m.offset(), m._message)
                for m in super().consume(num_messages, timeout)
            ]

    @contextmanager
    def consumer(*_args, **_kwargs):
        yield Consumer({0: messages}, ends={0: 4})

    monkeypatch.setattr(redrive_module, "open_dead_letter_consumer", consumer)
    monkeypatch.setattr(dlq, "require_topics", lambda *_args: None)

    result = CliRunner().invoke(app, ["dlq", "inspect", TOPIC, "--since", "1h", "-o", "ndjson"])

    assert result.exit_code == 0, result.output
    assert [json.loads(line)["dlq_offset"] for line in result.stdout.splitlines()] == [1, 2]
