"""What ``pipeline saga list`` prints: the table of sagas, fitted to the terminal so that no
saga id or state is cut; the line saying that more sagas match than are shown; the ids alone,
for scripts (``--ids-only``).

A saga id is what an operator copies into ``saga show`` or ``saga retry``, and a state is one
of several that share a prefix (``compensat…`` was compensated, compensating or
compensation_failed): those two columns are as wide as their longest value. The others (the
saga's name, the times) are shown whole or not at all: where the terminal is too narrow, they
are left out one by one (the next deadline first, then started, the saga's name, updated) and
named under the table, as ``logs search`` does (wrapped, a time read ``15:1`` over ``5:26``).
Only when even the id and the state alone do not fit (a 55-character id at 80 columns) does
the id fold onto more lines, every character of it still shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from rich.cells import cell_len
from rich.markup import escape
from rich.table import Column, Table

from pipeline.cli.console import terminal_safe
from pipeline.cli.plurals import counted

if TYPE_CHECKING:
    from pipeline.sagas.store import SagaRow

#: The columns besides the id and the state, in the order they are left out when the terminal
#: is too narrow for them whole (the one an operator needs least first).
_LEFT_OUT_FIRST = ("next deadline", "started", "saga", "updated")
#: The columns after the id, in the order they are shown.
_ORDER = ("saga", "state", "started", "updated", "next deadline")
#: The width of a time as shown (``2026-01-15 10:11:12``).
_TIME_WIDTH = 19


def _chrome(columns: int) -> int:
    """What a table of ``columns`` columns takes of a line besides its cells: a border either
    side of each and a space either side of each cell."""
    return columns + 1 + 2 * columns


def shown(text: str) -> str:
    """Data as shown: its markup escaped, and the control characters a terminal would act on
    written out (``\x1b``): a participant's refusal reason or an operator's note cannot
    recolour or retitle the terminal of whoever runs ``saga show``."""
    return escape(terminal_safe(text))


def when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def sagas_table(rows: Sequence[SagaRow], width: int) -> tuple[Table, list[str]]:
    """The sagas as a table for a console ``width`` columns wide, and the names of the columns
    left out for want of room (see the module's docstring)."""
    id_width = max([cell_len("saga id"), *(cell_len(terminal_safe(row.saga_id)) for row in rows)])
    state_width = max([cell_len("state"), *(cell_len(row.status) for row in rows)])
    widths = {
        "saga": max([cell_len("saga"), *(cell_len(_name(row)) for row in rows)]),
        "started": _TIME_WIDTH,
        "updated": _TIME_WIDTH,
        "next deadline": max(cell_len("next deadline"), _TIME_WIDTH),
    }
    others = list(widths)
    left_out: list[str] = []
    for name in _LEFT_OUT_FIRST:
        others_width = sum(widths[other] for other in others)
        if _chrome(2 + len(others)) + id_width + state_width + others_width <= width:
            break
        others.remove(name)
        left_out.append(name)
    room = width - _chrome(2 + len(others)) - state_width - sum(widths[n] for n in others)
    table = Table(
        Column("saga id", no_wrap=True, min_width=id_width)
        if id_width <= room
        else Column("saga id", overflow="fold", width=max(room, cell_len("saga id"))),
        title="sagas",
    )
    shown_columns = [name for name in _ORDER if name in others or name == "state"]
    for name in shown_columns:
        table.add_column(
            name, no_wrap=True, min_width=state_width if name == "state" else widths[name]
        )
    for row in rows:
        cells = {
            "saga": shown(_name(row)),
            "state": row.status,
            "started": when(row.created_at),
            "updated": when(row.updated_at),
            "next deadline": when(row.next_deadline),
        }
        table.add_row(shown(row.saga_id), *(cells[name] for name in shown_columns))
    return table, left_out


def left_out_line(left_out: Sequence[str]) -> str | None:
    """The line naming the columns :func:`sagas_table` left out, if any."""
    if not left_out:
        return None
    return f"not shown at this width: {', '.join(left_out)} (a wider terminal shows them)"


def _name(row: SagaRow) -> str:
    return f"{row.name} v{row.version}"


def matching(counts: Mapping[str, int], state: str | None) -> int:
    """How many sagas the filters match, from the counts by state of those of the name and
    namespace asked for (``count_by_status``)."""
    return sum(counts.values()) if state is None else counts.get(state, 0)


def more_than_shown(
    shown_count: int,
    matched: int,
    *,
    state: str | None = None,
    name: str | None = None,
    namespace: str | None = None,
) -> str | None:
    """The line saying that ``matched`` sagas match and only the ``shown_count`` most recently
    changed are shown, or ``None`` when every one is (markup escaped)."""
    if matched <= shown_count:
        return None
    noun = " ".join(shown(word) for word in (state, name, "saga") if word is not None)
    where = "" if namespace is None else f" of namespace {shown(namespace)}"
    which = (
        "the most recently changed"
        if shown_count == 1
        else (f"the {shown_count:,} most recently changed")
    )
    return f"showing {which} of {counted(matched, noun)}{where}; --max N for more"


def ids_only(rows: Sequence[SagaRow]) -> str:
    """The sagas' ids, one a line, as they are, for a script (``| xargs -r pipeline saga retry``).
    An id that can be no saga's (a line break in it: a row written by hand) is quoted on its
    line instead, so that every line is one saga's."""
    from pipeline.sagas.machine import shown_saga_id

    return "".join(f"{shown_saga_id(row.saga_id)}\n" for row in rows)
