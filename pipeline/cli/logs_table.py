"""The table ``pipeline logs search`` prints, fitted to the console's width.

The time, level and service keep their full width; the logger (from 120 columns), the message
and the correlation id (when a line has one) fold. When they do not all fit next to a readable
message (:data:`MESSAGE_MIN_WIDTH`), the least needed columns are left out, in this order:
logger, correlation id, service, and the caption names them (a wider terminal or
``--output ndjson`` shows them), as ``pipeline dlq inspect`` does (:mod:`pipeline.cli.dlq_table`).
Piped, the console is 160 columns wide (:mod:`pipeline.cli.console`): room for every column.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.cells import cell_len
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from pipeline.cli.console import terminal_safe
from pipeline.logs.timestamps import parse_timestamp

#: Narrower than this, the table leaves out the logger, the column least needed to read it.
LOGGER_COLUMN_WIDTH = 120
#: The narrowest message column worth showing: other columns are left out to keep it.
MESSAGE_MIN_WIDTH = 20
#: Left out first when the columns do not fit next to a readable message.
_DROP_ORDER = ("logger", "correlation id", "service")
#: Shown whole on one line (the others fold).
_WHOLE = ("time (UTC)", "level", "service")
_FOLDED_RATIOS = {"logger": 1, "message": 3, "correlation id": 1}
_COLOURS = {"error": "red", "critical": "bold red", "warning": "yellow", "debug": "dim"}

#: A longer message is cut in the table (a 200 KB one filled 3,000 terminal lines); NDJSON
#: has it whole.
_MESSAGE_CHARS = 1000
_MESSAGE_LINES = 10


def source_of(hit: Mapping[str, Any]) -> Mapping[str, Any]:
    """A hit's document; empty when it has none (an index that does not keep ``_source``)."""
    source = hit.get("_source")
    return source if isinstance(source, Mapping) else {}


def _get(document: Mapping[str, Any], dotted: str) -> Any:
    """The value at ``dotted`` in a document's source, nested (``{"log": {"level": ...}}``) or
    with dots in its keys (``{"log.level": ...}``, from a program that writes ECS flat), as
    Elasticsearch reads either."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        node = document.get(".".join(parts[:cut]))
        if node is None:
            continue
        if cut == len(parts):
            return node
        if isinstance(node, Mapping):
            found = _get(node, ".".join(parts[cut:]))
            if found is not None:
                return found
    return None


def _printable(text: str, encoding: str) -> str:
    """``text`` as ``encoding`` can write it: what it cannot (a lone surrogate, from a JSON
    ``\\ud800`` escape in a document; any non-ASCII on an ASCII terminal) backslash-escaped,
    as ``\\ud800``. Writing the text as it is raised UnicodeEncodeError for the whole table."""
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        return text.encode(encoding, "backslashreplace").decode(encoding)
    return text


def _shortened(message: str) -> str:
    """``message`` as the table shows it: cut after :data:`_MESSAGE_CHARS` characters or
    :data:`_MESSAGE_LINES` lines, with a marker saying so and where the whole text is."""
    cut = len(message) if len(message) <= _MESSAGE_CHARS else _MESSAGE_CHARS
    newlines = [n for n, char in enumerate(message[:cut]) if char == "\n"]
    if len(newlines) >= _MESSAGE_LINES:
        cut = newlines[_MESSAGE_LINES - 1]
    if cut == len(message):
        return message
    return (
        f"{message[:cut]} ... [cut: {len(message):,} characters in all; -o ndjson shows the "
        "whole text]"
    )


def _utc(stamp: Any) -> str:
    """A document's ``@timestamp`` as UTC, ``2026-12-06 11:20:00.123``, whatever offset it was
    written with (another program's ``06:20:00.123-05:00``); as it is when it is no time."""
    moment = parse_timestamp(stamp)
    if moment is None:
        return str(stamp or "")
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def _row(source: Mapping[str, Any], encoding: str) -> dict[str, str]:
    """A document's cells by column header, as text ``encoding`` can write (not markup)."""

    def text(value: Any) -> str:
        return _printable(terminal_safe(str(value or "")), encoding)

    message = _shortened(str(source.get("message", "")))
    error_type = _get(source, "error.type")
    if error_type:
        message += f" [{error_type}]"
    return {
        "time (UTC)": text(_utc(source.get("@timestamp"))),
        "level": text(_get(source, "log.level")),
        "service": text(_get(source, "service.name")),
        "logger": text(_get(source, "log.logger")),
        "message": text(message),
        "correlation id": text(_get(source, "pipeline.correlation_id")),
    }


def _natural_width(header: str, rows: list[dict[str, str]]) -> int:
    """The width a column takes unfolded: its longest line, the header's (or, for a column
    that folds, its header's longest word) included."""
    words = [header] if header in _WHOLE else header.split()
    lines = [line for row in rows for line in row[header].splitlines()]
    return max(cell_len(text) for text in [*words, *lines])


def _fits(headers: list[str], rows: list[dict[str, str]], width: int) -> bool:
    """``headers`` fit in ``width`` with a message of :data:`MESSAGE_MIN_WIDTH` or more.

    Rich narrows the widest folding column first, down to the next widest, and so on: every
    folding column needs the message's minimum (or less, when its text is shorter) for the
    message to keep it, and one more, as rich evens out widths with their padding (two spaces
    for the message between columns, one for a column at the edge). Between two columns there
    is one space of padding on either side and a border; none at the table's edges."""
    needed = 3 * (len(headers) - 1)
    for header in headers:
        natural = _natural_width(header, rows)
        needed += natural if header in _WHOLE else min(natural, MESSAGE_MIN_WIDTH + 1)
    return needed <= width


def _fit(headers: list[str], rows: list[dict[str, str]], width: int) -> list[str]:
    """``headers`` without the fewest of :data:`_DROP_ORDER` for the rest to fit in ``width``
    (all of them when nothing fits)."""
    kept = list(headers)
    for header in _DROP_ORDER:
        if _fits(kept, rows, width):
            break
        if header in kept:
            kept.remove(header)
    return kept


def search_table(
    hits: list[dict[str, Any]], width: int = LOGGER_COLUMN_WIDTH, encoding: str = "utf-8"
) -> Table:
    """The hits as a table ``width`` columns wide: the message keeps room on a narrow terminal
    (no logger column there; the other columns left out, and named, when they leave it less
    than :data:`MESSAGE_MIN_WIDTH`), and the correlation id is a column only when a line has
    one. Every cell is text ``encoding`` can write (:func:`_printable`): one odd line does not
    cost the others."""
    rows = [_row(source_of(hit), encoding) for hit in hits]
    headers = ["time (UTC)", "level", "service"]
    if width >= LOGGER_COLUMN_WIDTH:
        headers.append("logger")
    headers.append("message")
    if any(row["correlation id"] for row in rows):
        headers.append("correlation id")
    kept = _fit(headers, rows, width)
    left_out = [header for header in headers if header not in kept]
    caption = (
        Text(
            f"not shown at this width: {', '.join(left_out)} "
            "(a wider terminal or --output ndjson shows them)"
        )
        if left_out
        else None
    )
    table = Table(show_edge=False, pad_edge=False, caption=caption)
    for header in kept:
        if header in _WHOLE:
            table.add_column(header, no_wrap=True)
        else:
            table.add_column(header, overflow="fold", ratio=_FOLDED_RATIOS[header])
    for row in rows:
        table.add_row(*(_markup(header, row[header]) for header in kept))
    return table


def _markup(header: str, text: str) -> str:
    """A cell as markup: a known level in its colour, any other text as it is (``[KeyError]``
    is shown, not read as markup)."""
    if header == "level" and text in _COLOURS:
        return f"[{_COLOURS[text]}]{text}[/]"
    return escape(text)
