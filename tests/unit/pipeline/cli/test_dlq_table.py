"""``pipeline dlq inspect``'s table stays readable at 100 columns."""

from __future__ import annotations

import dataclasses
import io
import re

import pytest
from rich.console import Console

from pipeline.cli.dlq_table import dead_letter_table
from pipeline.dead_letters.letter import Marker
from tests.unit.pipeline.cli.test_dlq import dead_letter

LETTERS = [dead_letter(number) for number in range(3)]


def _render(width: int, settled: dict[str, Marker] | None = None) -> list[str]:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(dead_letter_table("requests.orders.dlq", LETTERS, settled, width=width))
    return console.export_text().splitlines()


def _column_widths(lines: list[str]) -> list[int]:
    top = next(line for line in lines if line.startswith("┏"))
    return [len(segment) for segment in re.split("[┏┳┓]", top)[1:-1]]


@pytest.mark.parametrize(
    "settled",
    [None, {"1:1001": Marker("1:1001"), "1:1002": Marker("1:1002", "discarded", "poison")}],
    ids=["pending", "show-redriven"],
)
def test_at_100_columns_no_column_is_squeezed_and_values_stay_whole(settled):
    lines = _render(100, settled)

    assert max(len(line) for line in lines) <= 100
    assert min(_column_widths(lines)) >= 8, "\n".join(lines)
    rows = "\n".join(lines)
    for value in ("1:1001", "order-000001", "retries_exhausted", "the database is"):
        assert value in rows, rows
    # Each dead letter takes a few lines, not one line per word.
    assert len([line for line in lines if line.startswith("│")]) <= 4 * len(LETTERS), rows


def test_at_100_columns_the_caption_names_the_columns_left_out():
    text = " ".join(" ".join(_render(100)).split())

    assert "not shown at this width: group, event type, attempts" in text
    assert "(see --output ndjson)" in text
    assert "event type" not in _render(100)[2]


def test_a_wide_console_shows_every_column_and_no_caption():
    lines = _render(200)
    header = next(line for line in lines if "dlq p:offset" in line)

    for column in ("group", "event type", "error type", "attempts", "original", "dead-lettered at"):
        assert column in header
    assert not any("not shown" in line for line in lines)


def test_a_terminal_escape_in_an_error_message_is_written_out_not_sent_to_the_terminal():
    letter = dataclasses.replace(dead_letter(0), error_message="boom \x1b]0;owned\x07 after")
    console = Console(width=240, record=True, file=io.StringIO())
    console.print(dead_letter_table("requests.orders.dlq", [letter], None, width=240))
    shown = console.export_text()

    assert "\x1b" not in shown and "\x07" not in shown
    assert "boom \\x1b]0;owned\\x07 after" in shown


def test_a_bidi_control_in_an_error_message_is_written_out_not_reordering_the_line():
    # U+202E shows what follows it backwards: "exe.png" reads as "gnp.exe".
    letter = dataclasses.replace(dead_letter(0), error_message="file \u202egnp.exe rejected")
    console = Console(width=240, record=True, file=io.StringIO())
    console.print(dead_letter_table("requests.orders.dlq", [letter], None, width=240))
    shown = console.export_text()

    assert "\u202e" not in shown
    assert "file \\u202egnp.exe rejected" in shown


def test_with_show_redriven_each_letter_says_whether_it_is_pending_redriven_or_discarded():
    settled = {
        LETTERS[0].position: Marker(LETTERS[0].position),
        LETTERS[2].position: Marker(LETTERS[2].position, "discarded", "poison"),
    }
    lines = _render(200, settled)
    rows = {
        letter.position: next(line for line in lines if letter.position in line)
        for letter in LETTERS
    }

    assert "status" in next(line for line in lines if "dlq p:offset" in line)
    assert rows[LETTERS[0].position].rstrip(" │").endswith("redriven")
    assert rows[LETTERS[1].position].rstrip(" │").endswith("pending")
    assert rows[LETTERS[2].position].rstrip(" │").endswith("discarded")


def test_a_huge_key_is_shortened_not_printed_whole():
    letter = dataclasses.replace(dead_letter(0), key=b"R" * 100_000)
    console = Console(width=100, record=True, file=io.StringIO())

    console.print(dead_letter_table("requests.orders.dlq", [letter], None, width=100))

    text = console.export_text()
    assert len(text) < 5_000 and text.count("R") == 119
    assert "…" in text


def test_letters_from_another_original_topic_name_their_own_topic_not_the_captions():
    # A letter whose dlq.original.topic is another topic's: the title named requests.orders for
    # every row, and a redrive sends it to its own topic.
    letters = [
        dataclasses.replace(LETTERS[0], original_topic="requests.events", original_offset=0),
        LETTERS[1],
    ]
    console = Console(width=250, record=True, file=io.StringIO())
    console.print(dead_letter_table("requests.orders.dlq", letters, None, width=250))
    text = console.export_text()

    assert "original: requests.orders[partition]@offset" not in text
    assert "original: topic[partition]@offset" in text
    assert "requests.events[0]@0" in text
    assert "requests.orders[1]@20001" in text  # every row names its topic


def test_letters_all_from_the_topic_of_the_dead_letter_topic_keep_the_short_form():
    lines = _render(250)
    text = "\n".join(lines)

    assert "original: requests.orders[partition]@offset" in text
    assert "[1]@20001" in text and "requests.orders[1]@20001" not in text
