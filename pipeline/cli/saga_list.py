"""What ``pipeline saga list`` prints: the table of sagas, fitted to the terminal so that no
saga id or state is cut; the line saying that more sagas match than are shown; the ids alone,
for scripts (``--ids-only``).

A saga id is what an operator copies into ``saga show`` or ``saga retry``, and a state is one
of several that share a prefix (``compensat…`` was compensated, compensating or
compensation_failed): those two columns are as wide as their longest value, and the others
(the saga's name, the times) wrap, then fold, to make room. Only when even that leaves too
little room (a 55-character id at 80 columns) does the id fold onto more lines, every
character of it still shown.
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

#: The columns besides the id and the state, which give way when the terminal is narrow.
_OTHERS = ("saga", "started", "updated", "next deadline")
#: The fewest characters of a column that gives way ("2026-", then "01-15" below it).
_OTHER_MIN = 4
#: What the table itself takes of a line, its six columns' borders (7) and a space either
#: side of each cell (12).
_CHROME = (2 + len(_OTHERS)) + 1 + 2 * (2 + len(_OTHERS))


def shown(text: str) -> str:
    """Data as shown: its markup escaped, and the control characters a terminal would act on
    written out (``\x1b``): a participant's refusal reason or an operator's note cannot
    recolour or retitle the terminal of whoever runs ``saga show``."""
    return escape(terminal_safe(text))


def when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def sagas_table(rows: Sequence[SagaRow], width: int) -> Table:
    """The sagas as a table for a console ``width`` columns wide: every saga id and state
    whole, on one line when there is room for it (see the module's docstring)."""
    id_width = max([cell_len("saga id"), *(cell_len(terminal_safe(row.saga_id)) for row in rows)])
    state_width = max([cell_len("state"), *(cell_len(row.status) for row in rows)])
    room = width - _CHROME - state_width - len(_OTHERS) * _OTHER_MIN
    saga_id = (
        Column("saga id", no_wrap=True, min_width=id_width)
        if id_width <= room
        else Column("saga id", overflow="fold", width=max(room, cell_len("saga id")))
    )
    table = Table(
        saga_id,
        Column("saga", overflow="fold"),
        Column("state", no_wrap=True, min_width=state_width),
        *(Column(name, overflow="fold") for name in _OTHERS[1:]),
        title="sagas",
    )
    for row in rows:
        table.add_row(
            shown(row.saga_id),
            shown(f"{row.name} v{row.version}"),
            row.status,
            when(row.created_at),
            when(row.updated_at),
            when(row.next_deadline),
        )
    return table


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
    """The sagas' ids, one a line, as they are, for a script (``| xargs pipeline saga retry``).
    An id that can be no saga's (a line break in it: a row written by hand) is quoted on its
    line instead, so that every line is one saga's."""
    from pipeline.sagas.machine import shown_saga_id

    return "".join(f"{shown_saga_id(row.saga_id)}\n" for row in rows)
