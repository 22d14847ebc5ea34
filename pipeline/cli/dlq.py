"""``pipeline dlq inspect|redrive|discard TOPIC``: look at dead letters, send them back, or
discard those that can never succeed (:mod:`pipeline.cli.dlq_discard`).

TOPIC is the original topic (``requests.orders``) or its dead-letter topic
(``requests.orders.dlq``). The dead-letter format is :mod:`pipeline.dead_letters.letter`; reading,
selecting and redriving are :mod:`pipeline.dead_letters.redrive`.

``redrive``:

1. read the pending dead letters and select (filters, then the later dead letters of the same
   keys, so that per-key order holds); show how many; ``--dry-run`` stops here (after the
   checks the redrive makes before sending: the original topics exist, the values left out
   can be read back) and so does a "no" (without ``--yes``);
2. initialise the transactional producer of this dead-letter topic: an older redrive of the
   same topic still running is fenced and its open transaction aborted;
3. read and select again (what an older redrive committed is now seen), so each dead letter is
   redriven at most once;
4. redrive in transactions (message back + marker), with a progress bar; print the summary.

Exit codes: 0 done (also: nothing to do); 1 some dead letters were not redriven (fenced by a
newer redrive, a failed transaction) or the confirmation was declined; 2 usage or setup error
(no such dead-letter topic, Kafka unreachable); 130 Ctrl-C, 143 SIGTERM.
"""

from __future__ import annotations

import base64
import contextlib
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from pipeline.cli.console import (
    announcing_kafka,
    silence_stdout,
    stderr_console,
    stdout_console,
    stdout_refused,
)
from pipeline.cli.consume_message import header_value_json, ndjson_line
from pipeline.cli.dlq_discard import discard_command, interrupted_line
from pipeline.cli.dlq_selection import (
    ErrorTypeOption,
    EventIdOption,
    Filters,
    GroupOption,
    KeyOption,
    ReasonOption,
    SinceOption,
    TopicArgument,
    by_reason,
    describe_selection,
    describe_strays,
    read_back,
    refuse_gaps,
    require_topics,
    resolve_topics,
    select_letters,
    settings_of,
)
from pipeline.cli.dlq_table import dead_letter_table
from pipeline.cli.interrupts import confirm, exit_code, signals_witnessed
from pipeline.cli.plurals import counted
from pipeline.errors import PipelineError
from pipeline.settings import PipelineSettings

if TYPE_CHECKING:
    from pipeline.dead_letters.letter import DeadLetter, Marker
    from pipeline.dead_letters.redrive import RedriveResult
    from pipeline.kafka.producer import EventProducer

EXIT_OK = 0
EXIT_NOT_ALL = 1
EXIT_USAGE = 2

#: How long reading a dead-letter topic to its end may take.
_FLUSH_TIMEOUT_S = 10.0

app = typer.Typer(
    help="Inspect dead letters (<topic>.dlq), redrive them to their original topic, or discard "
    "those that can never succeed.",
    no_args_is_help=True,
)

_out = stdout_console()
_err = stderr_console()


class Output(StrEnum):
    table = "table"
    ndjson = "ndjson"


def _text(raw: bytes | None) -> tuple[str | None, str | None]:
    """Bytes as ``(text, None)`` when UTF-8, else ``(None, base64)``."""
    if raw is None:
        return None, None
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, base64.b64encode(raw).decode("ascii")


def letter_json(letter: DeadLetter, *, settled: Marker | None = None) -> dict[str, Any]:
    """One dead letter as the JSON object ``inspect --output ndjson`` prints (``settled``: its
    redrive or discard marker, if any)."""
    key, key_b64 = _text(letter.key)
    value, value_b64 = _text(letter.value)
    fields: dict[str, Any] = {
        "dlq_topic": letter.dlq_topic,
        "dlq_partition": letter.dlq_partition,
        "dlq_offset": letter.dlq_offset,
        "key": key,
        "event_id": letter.event_id,
        "event_type": letter.event_type,
        "reason": letter.reason,
        "error_type": letter.error_type,
        "error_message": letter.error_message,
        "stacktrace": letter.stacktrace,
        "attempts": letter.attempts,
        "original_topic": letter.original_topic,
        "original_partition": letter.original_partition,
        "original_offset": letter.original_offset,
        "original_timestamp": letter.original_timestamp_ms,
        "consumer_group": letter.consumer_group,
        "dead_lettered_at": letter.dead_lettered_at,
        "parked_by": letter.parked_by,
        "status": "pending" if settled is None else settled.kind,
        "redriven": settled is not None and settled.kind == "redriven",
        "headers": [[name, header_value_json(data)] for name, data in letter.headers],
        "value": value,
        # Set when the value was too large to keep: its size; the original is at original_*.
        "value_omitted_bytes": letter.value_omitted,
    }
    fields["discard_note"] = (
        settled.note if settled is not None and settled.kind == "discarded" else None
    )
    if key_b64 is not None:
        fields["key_base64"] = key_b64
    if value_b64 is not None:
        fields["value_base64"] = value_b64
    return fields


def _write_ndjson(documents: Iterable[dict[str, Any]]) -> None:
    """``documents`` on stdout, a line each; a reader that went away (``| head``) ends the
    command quietly, stdout refusing the bytes (a full disk) is one line, as for any command."""
    try:
        for document in documents:
            sys.stdout.buffer.write(ndjson_line(document))
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        silence_stdout()
        raise typer.Exit(0) from None
    except OSError as error:
        raise stdout_refused(error) from None


@app.command()
def inspect(
    ctx: typer.Context,
    topic: str = TopicArgument,
    error_type: str | None = ErrorTypeOption,
    reason: str | None = ReasonOption,
    key: list[str] | None = KeyOption,
    event_id: list[str] | None = EventIdOption,
    group: str | None = GroupOption,
    since: str | None = SinceOption,
    limit: int | None = typer.Option(
        None, "--limit", "-n", min=1, help="Show at most this many dead letters."
    ),
    output: Output = typer.Option(
        Output.table,
        "--output",
        "-o",
        help="table, or ndjson: one JSON object per dead letter with every field (stacktrace, "
        "headers, value).",
    ),
    show_redriven: bool = typer.Option(
        False,
        "--show-redriven",
        help="Also show dead letters already redriven or discarded, with a status column.",
    ),
) -> None:
    """Show the dead letters of TOPIC with why each was dead-lettered.

    Pending dead letters only (neither redriven nor discarded), unless --show-redriven;
    oldest first per partition. Messages of the topic that are not dead letters
    (no dlq.reason header) are counted and named by position, never shown.
    A narrow terminal's table leaves out the least needed columns and names them under it.
    With --output ndjson stdout is pure NDJSON with every field; the summary goes to stderr.

    Exit codes: 0 shown (also when there are none); 2 usage or setup error
    (no such dead-letter topic, Kafka unreachable).

    Examples:
      pipeline dlq inspect requests.orders
      pipeline dlq inspect requests.orders --since 1h
      pipeline dlq inspect requests.orders --reason schema_invalid --limit 20
      pipeline dlq inspect requests.orders --key order-17 -o ndjson | jq .stacktrace
      pipeline dlq inspect requests.orders --group orders-service
    """
    settings = settings_of(ctx)
    filters = Filters.of(error_type, reason, key, event_id, group, since)
    _, dlq_topic = resolve_topics(topic)
    with announcing_kafka(settings.kafka.bootstrap_servers):
        require_topics(settings, dlq_topic, set())
    read = read_back(settings, dlq_topic, since is not None)
    letters, settled, pending = read.letters, read.settled, read.pending
    candidates = letters if show_redriven else pending
    shown = [letter for letter in candidates if filters.match(letter, read.stamps)]
    if limit is not None:
        shown = shown[:limit]
    if output is Output.ndjson:
        _write_ndjson(letter_json(letter, settled=settled.get(letter.position)) for letter in shown)
    elif shown:
        _out.print(
            dead_letter_table(
                dlq_topic, shown, settled if show_redriven else None, width=_out.width
            )
        )
    summary = f"{counted(len(shown), 'dead letter')} shown"
    if show_redriven:  # redriven ones among them: of every dead letter, not of the pending
        summary += f" of {len(letters):,} ({len(pending):,} pending)"
    elif filters.any or limit is not None:
        summary += f" of {len(pending):,} pending"
    else:
        summary += " (pending)"
    summary += f" in {dlq_topic}"
    if shown:
        summary += f"; by reason: {by_reason(shown)}"
    kinds = Counter(
        settled[letter.position].kind for letter in letters if letter.position in settled
    )
    if kinds["redriven"]:
        summary += f"; {kinds['redriven']:,} already redriven"
    if kinds["discarded"]:
        summary += f"; {kinds['discarded']:,} discarded"
    said = _err if output is Output.ndjson else _out
    said.print(escape(summary), soft_wrap=True)
    strays = describe_strays(read.strays, dlq_topic)
    if strays is not None:
        said.print(f"[yellow]warning:[/yellow] {escape(strays)}", soft_wrap=True)


# --- redrive ----------------------------------------------------------------------------------


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("redriving"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_err,
        transient=True,
        disable=not enabled,
    )


def _summary(dlq_topic: str, result: RedriveResult, selected: int, elapsed_s: float) -> None:
    table = Table(title=f"redrive of {dlq_topic}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("redrive id (pipeline.redrive.id)", result.redrive_id)
    table.add_row("selected", f"{selected:,}")
    table.add_row("redriven", f"{len(result.redriven):,}")
    table.add_row("not redriven", f"{len(result.not_redriven):,}")
    table.add_row("transactions committed", f"{result.transactions:,}")
    table.add_row("transactions aborted and retried", f"{result.retried:,}")
    for target, count in sorted(
        Counter(letter.original_topic for letter in result.redriven).items()
    ):
        table.add_row(Text(f"sent to {target}"), f"{count:,}")
    table.add_row("elapsed", f"{elapsed_s:.2f} s")
    _err.print(table)


@app.command(name="redrive")
def redrive_command(
    ctx: typer.Context,
    topic: str = TopicArgument,
    error_type: str | None = ErrorTypeOption,
    reason: str | None = ReasonOption,
    key: list[str] | None = KeyOption,
    event_id: list[str] | None = EventIdOption,
    group: str | None = GroupOption,
    since: str | None = SinceOption,
    limit: int | None = typer.Option(
        None,
        "--limit",
        "-n",
        min=1,
        help="At most this many dead letters, whole keys only (a key that would not fit ends "
        "the selection).",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Only show what would be redriven; send nothing."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    out_of_order: bool = typer.Option(
        False,
        "--out-of-order",
        help="Redrive even when earlier dead letters of the same keys do not match and stay "
        "behind (their keys' later events are then applied before them, and the keys let go).",
    ),
) -> None:
    """Send dead letters of TOPIC back to their original topic, each at most once.

    All pending dead letters, or those that match the filters plus every later
    dead letter of the same keys (per-key order is kept; within a key they go back
    in original offset order). Each goes back with its original key, value and
    headers plus pipeline.redrive.id, pipeline.redrive.last (the last of its key
    in this run), pipeline.redrive.of and pipeline.redrive.group (the consumer
    group whose letter it is: only that group handles it, others skip it); a
    marker in the dead-letter topic, committed in the same transaction, keeps it
    from being redriven again.

    A selection that leaves earlier dead letters of its keys behind (filters
    that match a key's later letters but not its first; --since after its
    first) is refused unless --out-of-order is given: those keys' events would
    be applied out of order.
    A message of the topic that is not a dead letter (no dlq.reason header) is
    never sent: it is counted and named by position.

    A newer redrive of the same dead-letter topic fences an older one still
    running: the older stops and says so; a re-run sends what is still pending.

    Exit codes: 0 done (also: nothing to redrive); 1 some were not redriven,
    or the confirmation was declined; 2 usage or setup error; 130 Ctrl-C,
    143 SIGTERM, once it said how many were redriven so far (the open
    transaction is aborted; one being committed is finished first, and it says
    whether it was committed; a re-run sends the rest).

    Examples:
      pipeline dlq redrive requests.orders --dry-run
      pipeline dlq redrive requests.orders --since 1h --dry-run
      pipeline dlq redrive requests.orders --error-type TimeoutError --yes
      pipeline dlq redrive requests.orders --event-id EVENT_ID --event-id EVENT_ID
      pipeline dlq redrive requests.orders --key order-17 --group orders-service
    """
    settings = settings_of(ctx)
    filters = Filters.of(error_type, reason, key, event_id, group, since)
    _, dlq_topic = resolve_topics(topic)
    with announcing_kafka(settings.kafka.bootstrap_servers):
        require_topics(settings, dlq_topic, set())
    if not yes and not dry_run and not sys.stdin.isatty():
        raise PipelineError("not a terminal: confirm with --yes (or look first with --dry-run)")
    so_far = _SoFar()
    try:
        # Witnessed: a signal that lands in confluent-kafka's delivery callbacks (during a
        # commit, say) is not the SystemError the client reports instead of it.
        with signals_witnessed():
            code = _redrive(settings, dlq_topic, filters, limit, dry_run, yes, so_far, out_of_order)
        raise typer.Exit(code)
    except KeyboardInterrupt as interrupt:
        _err.print(so_far.interrupted(dlq_topic), highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(exit_code(interrupt)) from None


@dataclass
class _SoFar:
    """What an interrupted redrive had done: the letters of its committed transactions, and
    the transaction whose commit the interrupt cut into, if any (its letters, and whether it
    was committed: ``None`` when that could not be learnt)."""

    redrive_id: str | None = None
    redriven: int = 0
    cut: tuple[int, bool | None] | None = None

    def cut_into(self, letters: int, committed: bool | None) -> None:
        self.cut = (letters, committed)

    def interrupted(self, dlq_topic: str) -> str:
        if self.redrive_id is None:  # set just before the first transaction
            return "interrupted: nothing redriven"
        return interrupted_line(
            f"interrupted: {counted(self.redriven, 'dead letter')} redriven "
            f"(redrive id {self.redrive_id})",
            self.cut,
            dlq_topic,
            "a re-run sends what is still pending",
        )


def _redrive(
    settings: PipelineSettings,
    dlq_topic: str,
    filters: Filters,
    limit: int | None,
    dry_run: bool,
    yes: bool,
    so_far: _SoFar,
    out_of_order: bool = False,
) -> int:
    from pipeline.dead_letters.redrive import redrive_producer

    asked: int | None = None  # how many the person confirmed
    if dry_run or not yes:
        first = select_letters(settings, dlq_topic, filters, limit)
        describe_selection(first, dlq_topic)
        if not first.letters:
            return EXIT_OK
        if dry_run:  # what would go back, each of them, in the order they would go
            _out.print(dead_letter_table(dlq_topic, first.letters, None, width=_out.width))
            # What the redrive checks before sending anything: the topics they go back to...
            require_topics(settings, dlq_topic, {letter.original_topic for letter in first.letters})
            # ...and the originals of those sent without their value.
            _check_original_values(settings, first.letters)
            _err.print("dry run: nothing sent")
            return EXIT_OK
        refuse_gaps(first, out_of_order)
        if not confirm(f"redrive {counted(len(first.letters), 'dead letter')}?"):
            _err.print("nothing sent")
            return EXIT_NOT_ALL
        asked = len(first.letters)
    elif not out_of_order:
        # Refused before the producer fences an older redrive still running (which a refused
        # run must not stop); checked again after, on what is then selected.
        refuse_gaps(select_letters(settings, dlq_topic, filters, limit), out_of_order)
    producer = redrive_producer(settings.kafka, settings.producer, dlq_topic)
    try:
        return _redrive_with(
            producer, settings, dlq_topic, filters, limit, asked, so_far, out_of_order
        )
    finally:
        with contextlib.suppress(PipelineError):
            producer.flush(_FLUSH_TIMEOUT_S)


def _with_original_values(
    settings: PipelineSettings, letters: Sequence[DeadLetter]
) -> Sequence[DeadLetter]:
    """``letters``, those sent without their value given it back from their original message
    (or a one-line error naming the first whose original is gone)."""
    if all(letter.value_omitted is None for letter in letters):
        return letters
    from pipeline.dead_letters.originals import with_original_values
    from pipeline.dead_letters.redrive import open_dead_letter_consumer

    with open_dead_letter_consumer(settings.kafka, reset_is_error=True) as consumer:
        return with_original_values(consumer, letters)


def _check_original_values(settings: PipelineSettings, letters: Sequence[DeadLetter]) -> None:
    """For a dry run: the originals of the letters sent without their value can be read. The
    redrive would stop at the first that cannot; the dry run names every one (each on stderr,
    then one error), so they can all be discarded at once."""
    from pipeline.dead_letters.originals import with_original_values
    from pipeline.dead_letters.redrive import open_dead_letter_consumer

    without = [letter for letter in letters if letter.value_omitted is not None]
    if not without:
        return
    gone: list[str] = []
    with open_dead_letter_consumer(settings.kafka, reset_is_error=True) as consumer:
        for letter in without:
            try:
                with_original_values(consumer, [letter])
            except PipelineError as error:
                gone.append(str(error))
    if gone:
        for reason in gone[:-1]:
            _err.print(f"[red]error:[/red] {escape(reason)}")
        raise PipelineError(gone[-1] if len(gone) == 1 else f"{gone[-1]} ({len(gone)} such)")
    one = len(without) == 1
    _err.print(
        f"{counted(len(without), 'dead letter')} sent without the event's value: "
        + ("it is" if one else "each is")
        + " read back from its original message by the redrive (checked: "
        + ("it can be)" if one else "they can be)")
    )


def _redrive_with(
    producer: EventProducer,
    settings: PipelineSettings,
    dlq_topic: str,
    filters: Filters,
    limit: int | None,
    asked: int | None,
    so_far: _SoFar,
    out_of_order: bool = False,
) -> int:
    # Fence any older redrive of this topic first, then read: what it committed is seen.
    from pipeline.dead_letters.redrive import redrive, redrive_transactional_id
    from pipeline.ids import new_event_id

    producer.init_transactions()
    selection = select_letters(settings, dlq_topic, filters, limit)
    if asked is None:
        describe_selection(selection, dlq_topic)
    elif len(selection.letters) != asked:
        _err.print(
            f"[yellow]note:[/yellow] {counted(len(selection.letters), 'dead letter')} to "
            "redrive now (another redrive sent some meanwhile)"
        )
    refuse_gaps(selection, out_of_order)
    if not selection.letters:
        return EXIT_OK
    require_topics(settings, dlq_topic, {letter.original_topic for letter in selection.letters})
    letters = _with_original_values(settings, selection.letters)
    redrive_id = new_event_id()
    so_far.redrive_id = redrive_id
    began = time.monotonic()

    def committed(count: int) -> None:
        progress.advance(task, count)
        # Last: an interrupt before it (during the redraw) finds the batch not counted, and
        # says its outcome is unknown; after it, counted.
        so_far.redriven += count

    with _progress(_err.is_terminal) as progress:
        task = progress.add_task("redriving", total=len(letters))
        result = redrive(
            producer,
            letters,
            redrive_id=redrive_id,
            on_progress=committed,
            on_interrupted=so_far.cut_into,
        )
    _summary(dlq_topic, result, len(selection.letters), time.monotonic() - began)
    if result.fenced:
        _err.print(
            f"[red]fenced:[/red] a newer redrive or discard of {escape(dlq_topic)} "
            f"(transactional id {escape(redrive_transactional_id(dlq_topic))}) took over; "
            f"{len(result.redriven):,} redriven here, {len(result.not_redriven):,} not "
            f"({escape(result.error or '')}); redrives and discards of one dead-letter topic "
            "run one at a time, whatever their keys: run this again once the other one has "
            "finished (it sends only what is still pending)"
        )
        return EXIT_NOT_ALL
    if result.error is not None:
        _err.print(
            f"[red]error:[/red] {counted(len(result.not_redriven), 'dead letter')} not redriven "
            f"(a re-run sends them): {escape(result.error)}"
        )
        return EXIT_NOT_ALL
    _err.print(f"redriven {counted(len(result.redriven), 'dead letter')}; redrive id {redrive_id}")
    return EXIT_OK


# --- discard ----------------------------------------------------------------------------------

app.command(name="discard")(discard_command)
