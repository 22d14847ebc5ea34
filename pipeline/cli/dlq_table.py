"""The table ``pipeline dlq inspect`` prints, fitted to the console's width.

Every column but the error message keeps its full width, so positions, keys, reasons and class
names stay whole. When they do not all fit next to a readable error message, the least needed
columns are left out, in this order: consumer group, event type, attempts, dead-lettered at,
original position, error type. The caption names what was left out; ``--output ndjson`` has
every field, and the whole of a key shortened here (past 120 characters) or of an error
message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from pipeline.cli.console import terminal_safe

if TYPE_CHECKING:
    from pipeline.dead_letters.letter import DeadLetter, Marker

#: The error message is shortened to this many characters (``--output ndjson`` has it whole).
MESSAGE_WIDTH = 60
#: The narrowest error message column worth showing.
MESSAGE_MIN_WIDTH = 24
#: A key longer than this folds onto more lines rather than widening the table.
KEY_MAX_WIDTH = 24
#: A key longer than this is shortened (a 100 KB key printed 7,000 lines).
KEY_SHOWN = 120
#: What a rich table with the default box adds per column (padding and a border), and once.
_PER_COLUMN = 3
_ONCE = 1


@dataclass(frozen=True)
class _Column:
    header: str
    cell: Callable[[DeadLetter], str]
    #: Lower is left out first at narrow widths; None is always shown.
    drop_order: int | None = None
    justify: Literal["left", "right"] = "left"
    max_width: int | None = None


def _short(text: str, width: int = MESSAGE_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _original(letter: DeadLetter, base: str | None) -> str:
    """Where the letter's original is: ``[partition]@offset`` in ``base``, else with its topic."""
    where = f"[{letter.original_partition}]@{letter.original_offset}"
    return where if letter.original_topic == base else letter.original_topic + where


def _when(dead_lettered_at: str) -> str:
    """``2024-07-15T13:45:35.123Z`` as ``2024-07-15 13:45:35`` (UTC, as the title says)."""
    return dead_lettered_at[:19].replace("T", " ")


def _status(letter: DeadLetter, settled: Mapping[str, Marker]) -> str:
    marker = settled.get(letter.position)
    return "pending" if marker is None else marker.kind


def _columns(base: str | None, settled: Mapping[str, Marker] | None) -> list[_Column]:
    columns = [
        _Column("dlq p:offset", lambda letter: letter.position),
        _Column("key", lambda letter: _short(letter.key_text, KEY_SHOWN), max_width=KEY_MAX_WIDTH),
        _Column("group", lambda letter: letter.consumer_group, drop_order=0),
        _Column("event type", lambda letter: letter.event_type or "", drop_order=1),
        _Column("reason", lambda letter: letter.reason),
        _Column("error type", lambda letter: letter.error_type.rsplit(".", 1)[-1], drop_order=5),
        _Column("error message", lambda letter: _short(letter.error_message)),
        _Column("attempts", lambda letter: str(letter.attempts), drop_order=2, justify="right"),
        _Column("original", lambda letter: _original(letter, base), drop_order=4),
        _Column("dead-lettered at", lambda letter: _when(letter.dead_lettered_at), drop_order=3),
    ]
    if settled is not None:
        columns.append(_Column("status", lambda letter: _status(letter, settled)))
    return columns


def _natural_width(column: _Column, cells: Sequence[str]) -> int:
    """The width a column needs: its longest cell, or its header's longest word (a header may
    wrap between words)."""
    width = max([len(word) for word in column.header.split()] + [len(cell) for cell in cells])
    return min(width, column.max_width) if column.max_width else width


def _fit(columns: list[_Column], widths: dict[str, int], width: int) -> list[_Column]:
    """``columns`` without the fewest droppable ones for the rest to fit in ``width`` next to
    an error message of :data:`MESSAGE_MIN_WIDTH` (all droppable ones when nothing fits)."""
    kept = list(columns)
    droppable = sorted(
        (column for column in columns if column.drop_order is not None),
        key=lambda column: column.drop_order or 0,
    )

    while droppable and not _fits(kept, widths, width):
        kept.remove(droppable.pop(0))
    return kept


def _fits(columns: list[_Column], widths: dict[str, int], width: int) -> bool:
    fixed = sum(widths[c.header] for c in columns if c.header != "error message")
    return fixed + MESSAGE_MIN_WIDTH + _PER_COLUMN * len(columns) + _ONCE <= width


def dead_letter_table(
    dlq_topic: str,
    letters: Sequence[DeadLetter],
    settled: Mapping[str, Marker] | None,
    width: int,
) -> Table:
    """The dead letters as a table at most ``width`` columns wide: the error type by its class
    name and the message shortened (``--output ndjson`` has them in full).

    ``settled`` (with ``--show-redriven``: the markers by position) adds a status column:
    pending, redriven or discarded. The original position is ``[partition]@offset`` in the
    topic the title names when every letter's ``dlq.original.topic`` is the dead-letter topic's
    base, else ``topic[partition]@offset`` on every row.
    """
    from pipeline.topics.spec import dlq_base  # the Kafka client: not for `pipeline --help`

    # The title names the original topic only when it is every letter's (dlq.original.topic
    # says; a letter may come from another topic): else each row names its own.
    base: str | None = dlq_base(dlq_topic)
    if any(letter.original_topic != base for letter in letters):
        base = None
    columns = _columns(base, settled)
    cells = {column.header: [column.cell(letter) for letter in letters] for column in columns}
    widths = {column.header: _natural_width(column, cells[column.header]) for column in columns}
    kept = _fit(columns, widths, width)
    fits = _fits(kept, widths, width)
    headers = {column.header for column in kept}
    title = f"dead letters in {dlq_topic}"
    if "original" in headers:
        title += f"; original: {base or 'topic'}[partition]@offset"
    if "dead-lettered at" in headers:
        title += "; times in UTC"
    left_out = [column.header for column in columns if column not in kept]
    caption = (
        f"not shown at this width: {', '.join(left_out)} (see --output ndjson)"
        if left_out
        else None
    )
    table = Table(title=escape(title), caption=escape(caption) if caption else None)
    for column in kept:
        flexible = column.header == "error message" or not fits
        table.add_column(
            Text(column.header),
            justify=column.justify,
            overflow="fold",
            # The error message takes the room left; the others keep their width when they fit.
            min_width=None if flexible else widths[column.header],
        )
    for number in range(len(letters)):
        # Text: no markup in data.
        table.add_row(*(Text(terminal_safe(cells[column.header][number])) for column in kept))
    return table
