"""What ``pipeline saga list`` prints (:mod:`pipeline.cli.saga_list`), rendered to a rich
console of a fixed width as a terminal of that many columns would show it."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from rich.cells import cell_len
from rich.console import Console

from pipeline.cli.saga_list import (
    ids_only,
    left_out_line,
    matching,
    more_than_shown,
    sagas_table,
)
from pipeline.sagas.store import SagaRow

#: A business key as an id: 55 characters.
LONG_ID = "order-2026-01-15-customer-8472-warehouse-eu-west-000123"
AT = datetime(2026, 1, 15, 10, 11, 12, tzinfo=UTC)


def _row(saga_id: str, status: str, *, name: str = "CreateOrder") -> SagaRow:
    return SagaRow(saga_id, name, 1, status, AT, AT, AT)


def _render(rows: list[SagaRow], width: int) -> list[str]:
    return _rendered(rows, width)[0]


def _rendered(rows: list[SagaRow], width: int) -> tuple[list[str], list[str]]:
    """The table's lines, and the columns left out."""
    out = io.StringIO()
    table, left_out = sagas_table(rows, width)
    Console(file=out, width=width, highlight=False, emoji=False).print(table)
    return out.getvalue().splitlines(), left_out


def _header(lines: list[str]) -> list[str]:
    return [
        cell.strip() for cell in next(line for line in lines if "saga id" in line).split("┃")[1:-1]
    ]


def _cells(lines: list[str], name: str) -> list[str]:
    """The cells of the column headed ``name``, one per line of the table's body."""
    return _column(lines, _header(lines).index(name))


def _column(lines: list[str], index: int) -> list[str]:
    """The cells of column ``index`` on each line of the table's body, one per line."""
    return [line.split("│")[index + 1].strip() for line in lines if line.startswith("│")]


ROWS = [_row(LONG_ID, "compensation_failed"), _row("saga-2", "compensating")]


def test_at_120_columns_a_long_id_and_its_state_are_whole_on_one_line():
    # The id was cut with an ellipsis while the dates wrapped.
    lines = _render(ROWS, 120)

    assert "…" not in "\n".join(lines)
    assert any(LONG_ID in line and "compensation_failed" in line for line in lines)
    assert "compensating" in _cells(lines, "state")
    assert max(cell_len(line) for line in lines) <= 120


def test_at_120_columns_with_a_long_id_the_columns_that_fit_are_shown_whole():
    lines, left_out = _rendered(ROWS, 120)

    assert left_out == ["next deadline", "started"]
    assert _header(lines) == ["saga id", "saga", "state", "updated"]
    assert _cells(lines, "updated")[0] == "2026-01-15 10:11:12"  # whole, not 15:1 over 5:26
    assert max(cell_len(line) for line in lines) <= 120


@pytest.mark.parametrize(
    ("width", "shown", "left_out"),
    [
        (140, ["saga", "state", "started", "updated", "next deadline"], []),
        (100, ["saga", "state", "updated"], ["next deadline", "started"]),
        (80, ["state", "updated"], ["next deadline", "started", "saga"]),
        (60, ["state"], ["next deadline", "started", "saga", "updated"]),
    ],
)
def test_columns_that_do_not_fit_whole_are_left_out_one_by_one_and_named(width, shown, left_out):
    # They wrapped: a time read "15:1" over "5:26", and at 40 columns they had no width at all.
    rows = [_row("order-8472-000123", "compensation_failed")]

    lines, out = _rendered(rows, width)

    assert out == left_out
    assert _header(lines) == ["saga id", *shown]
    assert max(cell_len(line) for line in lines) <= width
    assert len([line for line in lines if line.startswith("│")]) == 1  # one line for the saga
    assert left_out_line(out) == (
        f"not shown at this width: {', '.join(left_out)} (a wider terminal shows them)"
        if left_out
        else None
    )


def test_at_80_columns_an_id_too_long_for_the_line_folds_whole_and_no_state_is_cut():
    # "compensat…" could have been compensated, compensating or compensation_failed.
    lines = _render(ROWS, 80)

    assert "…" not in "\n".join(lines)
    ids = _cells(lines, "saga id")
    first = "".join(ids[: ids.index("saga-2")])  # the id's pieces, before the next row's
    assert first == LONG_ID
    assert _cells(lines, "state")[0] == "compensation_failed"
    assert "compensating" in _cells(lines, "state")


def test_at_80_columns_an_id_that_fits_stays_on_one_line():
    short = "order-8472-000123"
    lines = _render([_row(short, "compensation_failed")], 80)

    assert _cells(lines, "saga id")[0] == short
    assert _cells(lines, "state")[0] == "compensation_failed"


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
