"""``pipeline logs search``'s table: what it shows on a narrow terminal, and text as text."""

import pytest
from rich.console import Console

from pipeline.cli.logs import _table


def hit(message, *, correlation_id=None, error_type=None):
    source = {
        "@timestamp": "2026-12-04T22:51:27.681Z",
        "log": {"level": "error", "logger": "pipeline.processing.engine"},
        "service": {"name": "orders-service"},
        "message": message,
    }
    if correlation_id:
        source["pipeline"] = {"correlation_id": correlation_id}
    if error_type:
        source["error"] = {"type": error_type}
    return {"_source": source}


def rendered(hits, width):
    console = Console(width=width, record=True)
    console.print(_table(hits, width))
    return console.export_text()


def test_a_narrow_terminal_leaves_the_logger_out_a_wide_one_shows_it():
    hits = [hit("dead-lettered")]

    assert "logger" not in rendered(hits, 80)
    assert "pipeline.processing.engine" in rendered(hits, 160)


def test_the_correlation_id_is_a_column_only_when_a_line_has_one():
    assert "correlation id" not in rendered([hit("a")], 160)
    assert "correlation id" in rendered([hit("a"), hit("b", correlation_id="o-1")], 160)


def test_a_message_in_brackets_is_shown_as_it_is_not_read_as_markup():
    text = rendered([hit("saw [bold]x[/bold]", error_type="KeyError")], 160)

    assert "saw [bold]x[/bold] [KeyError]" in text


def test_a_lone_surrogate_is_shown_escaped_and_the_other_lines_as_they_are():
    # A document whose message was the JSON escape "\ud800": UTF-8 cannot encode it as it is.
    table = _table([hit("\ud800 odd"), hit("normal é line")], 160)
    console = Console(width=160, record=True)
    console.print(table)
    text = console.export_text()

    assert "\\ud800 odd" in text
    assert "normal é line" in text
    text.encode("utf-8")  # nothing left that stdout could not write


def test_on_a_terminal_that_is_not_utf_8_what_it_cannot_show_is_escaped():
    console = Console(width=160, record=True)
    console.print(_table([hit("café")], 160, encoding="ascii"))

    assert "caf\\xe9" in console.export_text()


def test_a_terminal_escape_in_a_message_is_written_out_not_sent_to_the_terminal():
    # A log line could recolour or rewrite the terminal of whoever searched the logs.
    shown = rendered([hit("esc \x1b[31mRED\x1b[0m done \x9b2J")], 200)

    assert "\x1b" not in shown and "\x9b" not in shown
    assert "esc \\x1b[31mRED\\x1b[0m done \\x9b2J" in shown


def test_a_line_written_with_dotted_keys_shows_its_level_service_and_logger():
    flat = {
        "_source": {
            "@timestamp": "2026-12-04T22:51:27.681Z",
            "log.level": "warning",
            "log.logger": "shop.cart",
            "service.name": "cart-service",
            "message": "written flat",
        }
    }

    text = rendered([flat], 160)

    assert "warning" in text
    assert "cart-service" in text
    assert "shop.cart" in text


def test_the_time_column_is_utc_whatever_offset_a_line_was_written_with():
    # Another program's line, stored with its offset, was shown as stored: 06:20 "UTC".
    line = hit("from elsewhere")
    line["_source"]["@timestamp"] = "2026-12-06T06:20:00.123-05:00"

    text = rendered([line, hit("ours")], 160)

    assert "2026-12-06 11:20:00.123" in text
    assert "06:20" not in text
    assert "2026-12-04 22:51:27.681" in text


def test_a_long_message_is_cut_in_the_table_saying_where_the_whole_text_is():
    # A 200 KB message filled 3,000 terminal lines.
    table = _table([hit("x" * 200_000), hit("short")], 160)
    messages = next(column for column in table.columns if column.header == "message")
    long_cell, short_cell = messages._cells

    assert long_cell == "x" * 1000 + (  # markup escaped: the bracket is shown as it is
        " ... \\[cut: 200,000 characters in all; -o ndjson shows the whole text]"
    )
    assert short_cell == "short"
    assert rendered([hit("x" * 200_000)], 160).count("\n") < 30


def test_bidirectional_controls_in_a_message_are_written_out_not_sent_to_the_terminal():
    # U+202E makes a terminal show what follows reversed: a line could hide what it says.
    shown = rendered([hit("invoice \u202egnp.exe \u2066x\u2069 \u200f")], 200)

    assert not any(char in shown for char in "\u202e\u2066\u2069\u200f")
    assert "invoice \\u202egnp.exe \\u2066x\\u2069 \\u200f" in shown


def recorded(message="invoice INV-1 recorded for order o-42 total 120.00 EUR"):
    # The reviewer's lines: a 20-character service and a 36-character correlation id.
    line = hit(message, correlation_id="01a237a8-13f6-7548-b012-f1a90aae7fe9")
    line["_source"]["log"]["level"] = "info"
    line["_source"]["service"]["name"] = "rv5-invoice-recorder"
    return line


def message_width(text):
    """The message column's width in a rendered table, from its header and the rule below."""
    lines = text.splitlines()
    header = next(n for n, line in enumerate(lines) if "message" in line)
    rule = next(line for line in lines if "╇" in line)
    names = lines[header].split("┃")
    column = next(n for n, name in enumerate(names) if "message" in name)
    padding = 1 if column == len(names) - 1 else 2
    return len(rule.split("╇")[column]) - padding


@pytest.mark.parametrize("width", [56, 60, 70, 80, 100, 120, 140])
def test_on_a_narrow_terminal_the_message_keeps_a_readable_width(width):
    # At 60 columns the message column was 0 wide and the correlation id printed one
    # character a line: two lines took 87 terminal lines, and no message was shown.
    text = rendered([recorded(), recorded()], width)

    assert message_width(text) >= 20
    assert max(len(line) for line in text.splitlines()) <= width
    assert len(text.splitlines()) < 16


def test_a_narrow_terminal_leaves_out_columns_and_names_them_once():
    text = rendered([recorded(), recorded()], 60)
    words = " ".join(text.split())

    assert "invoice INV-1 recorded" in text
    assert "rv5-invoice-recorder" not in text and "01a237a8" not in text
    assert words.count("not shown at this width") == 1
    assert (
        "not shown at this width: service, correlation id "
        "(a wider terminal or --output ndjson shows them)"
    ) in words


def test_the_correlation_id_is_left_out_before_the_service():
    text = rendered([recorded()], 80)

    assert "rv5-invoice-recorder" in text
    assert "01a237a8" not in text
    assert "not shown at this width: correlation id (" in " ".join(text.split())


@pytest.mark.parametrize("width", [160, 200])  # 160: the width of a piped table
def test_a_wide_terminal_or_a_pipe_shows_every_column_and_no_note(width):
    text = rendered([recorded(), recorded()], width)

    assert "invoice INV-1 recorded for order" in text
    assert "rv5-invoice-recorder" in text
    assert "01a237a8-13f6-7548-b012-f1a90aae7fe9" in text
    assert "pipeline.processing.engine" in text
    assert "not shown" not in text
