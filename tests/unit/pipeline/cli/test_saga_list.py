"""What ``pipeline saga list`` prints (:mod:`pipeline.cli.saga_list`), rendered to a rich
console of a fixed width as a terminal of that many columns would show it."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from rich.cells import cell_len
from rich.console import Console

from pipeline.cli.saga_list import ids_only, matching, more_than_shown, sagas_table
from pipeline.sagas.store import SagaRow

#: A business key as an id: 55 characters.
LONG_ID = "order-2026-01-15-customer-8472-warehouse-eu-west-000123"
AT = datetime(2026, 1, 15, 10, 11, 12, tzinfo=UTC)


def _row(saga_id: str, status: str, *, name: str = "CreateOrder") -> SagaRow:
    return SagaRow(saga_id, name, 1, status, AT, AT, AT)


def _render(rows: list[SagaRow], width: int) -> list[str]:
    out = io.StringIO()
    Console(file=out, width=width, highlight=False, emoji=False).print(sagas_table(rows, width))
    return out.getvalue().splitlines()


def _column(lines: list[str], index: int) -> list[str]:
    """The cells of column ``index`` on each line of the table's body, one per line."""
    return [line.split("│")[index + 1].strip() for line in lines if line.startswith("│")]


ROWS = [_row(LONG_ID, "compensation_failed"), _row("saga-2", "compensating")]


def test_at_120_columns_a_long_id_and_its_state_are_whole_on_one_line():
    # The id was cut with an ellipsis while the dates wrapped.
    lines = _render(ROWS, 120)

    assert "…" not in "\n".join(lines)
    assert any(LONG_ID in line and "compensation_failed" in line for line in lines)
    assert "compensating" in _column(lines, 2)
    assert max(cell_len(line) for line in lines) <= 120


@pytest.mark.parametrize("width", [80, 120])
def test_the_other_columns_give_way_without_losing_a_character(width):
    lines = _render(ROWS, width)

    assert "…" not in "\n".join(lines)
    assert max(cell_len(line) for line in lines) <= width
    started = "".join(_column(lines, 3))  # the first row's date and time, folded as need be
    assert started.startswith("2026-01-1510:11:12")  # (each piece of it stripped)
    assert "CreateOrder" in "".join(_column(lines, 1))


def test_at_80_columns_an_id_too_long_for_the_line_folds_whole_and_no_state_is_cut():
    # "compensat…" could have been compensated, compensating or compensation_failed.
    lines = _render(ROWS, 80)

    assert "…" not in "\n".join(lines)
    ids = _column(lines, 0)
    first = "".join(ids[: ids.index("saga-2")])  # the id's pieces, before the next row's
    assert first == LONG_ID
    assert _column(lines, 2)[0] == "compensation_failed"
    assert "compensating" in _column(lines, 2)


def test_at_80_columns_an_id_that_fits_stays_on_one_line():
    short = "order-8472-000123"
    lines = _render([_row(short, "compensation_failed")], 80)

    assert _column(lines, 0)[0] == short
    assert _column(lines, 2)[0] == "compensation_failed"


def test_the_widths_come_from_the_ids_as_shown_not_their_markup():
    marked = "saga-[b]x[/b]-" + "y" * 30  # escaped for rich, shown as it is
    lines = _render([_row(marked, "completed")], 100)

    assert any(marked in line for line in lines)


def test_more_than_shown_says_how_many_match_and_how_to_see_more():
    counts = {"compensation_failed": 72, "completed": 9}

    line = more_than_shown(50, matching(counts, "compensation_failed"), state="compensation_failed")

    assert line == (
        "showing the 50 most recently changed of 72 compensation_failed sagas; --max N for more"
    )
    assert matching(counts, None) == 81 and matching(counts, "running") == 0


def test_more_than_shown_names_every_filter():
    line = more_than_shown(1, 3, state="running", name="Demo", namespace="trips")

    assert line == (
        "showing the most recently changed of 3 running Demo sagas of namespace trips; "
        "--max N for more"
    )


def test_nothing_to_say_when_every_match_is_shown():
    assert more_than_shown(5, 5) is None
    assert more_than_shown(0, 0, state="running") is None


def test_ids_only_is_one_id_a_line_and_nothing_else():
    rows = [_row(LONG_ID, "compensation_failed"), _row("saga-[b]x[/b]", "running")]

    assert ids_only(rows) == f"{LONG_ID}\nsaga-[b]x[/b]\n"
    assert ids_only([]) == ""


def test_ids_only_quotes_an_id_with_a_line_break_so_each_line_stays_one_saga():
    # Not an id a saga can have; a row written by hand could hold it.
    assert ids_only([_row("a\nb", "running")]) == "'a\\nb'\n"
