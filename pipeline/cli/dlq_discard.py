"""``pipeline dlq discard TOPIC``: settle dead letters that can never succeed, without sending them.

1. read the pending dead letters and select those that match the filters (at least one filter:
   discarding a whole topic at once is not offered), oldest first, ``--limit`` of them; show
   them;
2. unless ``--keep-keys-parked``, check that the parked keys of the processors' database
   (``PIPELINE_DATABASE__URL``) can be read, before anything is written; ``--dry-run`` stops
   here (after the check, so it fails as the discard would) and so does a "no" (without
   ``--yes``);
3. initialise the transactional producer of the dead-letter topic (the redrive's: a discard and
   a redrive of one topic fence each other), read and select again, and write one marker per
   dead letter (``dlq.discarded``, with the ``--note``) in transactions: the letters are no
   longer pending and are never redriven;
4. for each key and consumer group of a discarded letter (each group parks its keys on its
   own): with later dead letters of the key still pending for that group, say how to redrive
   them (that lets the key go); with none, let the group's park of the key go in the database
   if the dead letter that parked it last is one of those discarded (nothing of the key was
   dead-lettered after it), so the key's next events are handled again by that group.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from pipeline.cli.console import announcing_kafka, stderr_console, stdout_console
from pipeline.cli.dlq_selection import (
    ErrorTypeOption,
    EventIdOption,
    Filters,
    GroupOption,
    KeyOption,
    ReadBack,
    ReasonOption,
    SinceOption,
    TopicArgument,
    by_reason,
    read_back,
    require_topics,
    resolve_topics,
    settings_of,
)
from pipeline.cli.dlq_table import dead_letter_table
from pipeline.cli.interrupts import confirm, exit_code, signals_witnessed
from pipeline.cli.plurals import counted
from pipeline.errors import PipelineError
from pipeline.settings import PipelineSettings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from pipeline.dead_letters.letter import DeadLetter
    from pipeline.dead_letters.redrive import DiscardResult
    from pipeline.kafka.producer import EventProducer

__all__ = ["discard_command", "interrupted_line"]

EXIT_OK = 0
EXIT_NOT_ALL = 1

_FLUSH_TIMEOUT_S = 10.0

_out = stdout_console()
_err = stderr_console()


@dataclass(frozen=True)
class _Chosen:
    read: ReadBack
    letters: list[DeadLetter]

    @property
    def pending(self) -> list[DeadLetter]:
        return self.read.pending


def _choose(
    settings: PipelineSettings,
    dlq_topic: str,
    filters: Filters,
    limit: int | None,
    among: set[str] | None = None,
) -> _Chosen:
    """The pending dead letters that match, oldest first, ``limit`` of them; ``among``: only
    those at these positions (the ones shown and confirmed: one dead-lettered since is not
    discarded unseen)."""
    read = read_back(settings, dlq_topic, filters.since is not None)
    chosen = [letter for letter in read.pending if filters.match(letter, read.stamps)]
    if among is not None:
        chosen = [letter for letter in chosen if letter.position in among]
    return _Chosen(read, chosen if limit is None else chosen[:limit])


def discard_command(
    ctx: typer.Context,
    topic: str = TopicArgument,
    error_type: str | None = ErrorTypeOption,
    reason: str | None = ReasonOption,
    key: list[str] | None = KeyOption,
    event_id: list[str] | None = EventIdOption,
    group: str | None = GroupOption,
    since: str | None = SinceOption,
    note: str = typer.Option(
        ...,
        "--note",
        help="Why they are discarded, kept with each marker (inspect --show-redriven -o ndjson "
        "shows it as discard_note).",
    ),
    limit: int | None = typer.Option(
        None, "--limit", "-n", min=1, help="At most this many dead letters, oldest first."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Only show what would be discarded; write nothing."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    keep_keys_parked: bool = typer.Option(
        False,
        "--keep-keys-parked",
        help="Do not let the keys of the discarded dead letters go in the processors' database.",
    ),
) -> None:
    """Discard dead letters of TOPIC that can never succeed: they stop being pending and are
    never redriven; nothing is sent to the original topic.

    Only those that match the filters (at least one of --event-id, --key,
    --reason, --error-type, --since; --group narrows them to one consumer
    group's), not the later dead letters of their keys. Each gets
    a marker in the dead-letter topic (dlq.discarded, with --note); inspect
    --show-redriven shows them as discarded.

    A processor keeps a dead-lettered key parked, per consumer group. When
    nothing of a discarded letter's key is pending any more for the letter's
    group, the group's park of the key is let go in the database of
    PIPELINE_DATABASE__URL (the processors' own; --keep-keys-parked leaves it),
    so its next events are handled. When later dead letters of the key are
    still pending for that group, it says how to redrive them, which lets the
    key go.

    Exit codes: 0 done (also: nothing to discard); 1 some were not discarded
    (fenced by a redrive, a failed transaction) or the confirmation was
    declined; 2 usage or setup error; 130 Ctrl-C, 143 SIGTERM, once it said
    how many were discarded so far (the open transaction is aborted; one being
    committed is finished first, and it says whether it was committed).

    Examples:
      pipeline dlq discard requests.orders --reason undecodable --note 'test garbage' --dry-run
      pipeline dlq discard requests.orders --key order-17 --note 'refunded by hand' -y
      pipeline dlq discard requests.orders --since 30m --reason undecodable --note 'bad test'
    """
    settings = settings_of(ctx)
    filters = Filters.of(error_type, reason, key, event_id, group, since)
    if not filters.any_but_group:
        raise typer.BadParameter(
            "choose what to discard with --event-id, --key, --reason, --error-type or --since "
            "(a whole dead-letter topic at once is not offered)"
        )
    why = note.strip()
    if not why:
        raise typer.BadParameter("say why they are discarded", param_hint="--note")
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
            code = _discard(
                settings, dlq_topic, filters, limit, why, dry_run, yes, keep_keys_parked, so_far
            )
        raise typer.Exit(code)
    except KeyboardInterrupt as interrupt:
        _err.print(so_far.interrupted(dlq_topic), highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(exit_code(interrupt)) from None


@dataclass
class _SoFar:
    """What an interrupted discard had done: the letters of its committed transactions, and
    the transaction whose commit the interrupt cut into, if any (its letters, and whether it
    was committed: ``None`` when that could not be learnt)."""

    begun: bool = False
    discarded: int = 0
    cut: tuple[int, bool | None] | None = None

    def committed(self, letters: int) -> None:
        self.discarded += letters

    def cut_into(self, letters: int, committed: bool | None) -> None:
        self.cut = (letters, committed)

    def interrupted(self, dlq_topic: str) -> str:
        if not self.begun:
            return "interrupted: nothing discarded"
        return interrupted_line(
            f"interrupted: {counted(self.discarded, 'dead letter')} discarded",
            self.cut,
            dlq_topic,
            "a re-run discards what is still pending",
        )


def interrupted_line(
    done: str, cut: tuple[int, bool | None] | None, dlq_topic: str, rest: str
) -> str:
    """The line an interrupted redrive or discard ends with: ``done`` (what its committed
    transactions did), then what became of the transaction it was in, then ``rest``.
    ``cut``: the transaction whose commit the interrupt cut into (its letters, and whether it
    was committed, ``None`` when that could not be learnt); without one, the transaction open
    (if any) was aborted."""
    if cut is None:
        return f"{done}; the open transaction is aborted, nothing of it is visible; {rest}"
    letters, committed = cut
    being = f"the transaction being committed ({counted(letters, 'dead letter')})"
    if committed:
        return f"{done}; {being} was committed first, and is counted; {rest}"
    if committed is False:
        return f"{done}; {being} was aborted, nothing of it is visible; {rest}"
    return (
        f"{done}; whether {being} was committed is unknown: run `pipeline dlq inspect "
        f"{dlq_topic}` to see what is still pending; {rest}"
    )


def _discard(
    settings: PipelineSettings,
    dlq_topic: str,
    filters: Filters,
    limit: int | None,
    note: str,
    dry_run: bool,
    yes: bool,
    keep_keys_parked: bool,
    so_far: _SoFar,
) -> int:
    from pipeline.dead_letters.redrive import redrive_producer

    first = _choose(settings, dlq_topic, filters, limit)
    if not first.letters:
        _err.print(f"nothing to discard in {escape(dlq_topic)} ({len(first.pending):,} pending)")
        return EXIT_OK
    _out.print(dead_letter_table(dlq_topic, first.letters, None, width=_out.width))
    _err.print(
        escape(
            f"{counted(len(first.letters), 'dead letter')} to discard from {dlq_topic} "
            f"({len(first.pending):,} pending); by reason: {by_reason(first.letters)}"
        )
    )
    engine = None
    if not keep_keys_parked and any(letter.key is not None for letter in first.letters):
        engine = _parked_keys_database(settings)  # a dry run fails as the discard would
    try:
        if dry_run:
            _err.print("dry run: nothing discarded")
            return EXIT_OK
        if not yes and not confirm(f"discard {counted(len(first.letters), 'dead letter')}?"):
            _err.print("nothing discarded")
            return EXIT_NOT_ALL
        producer = redrive_producer(settings.kafka, settings.producer, dlq_topic)
        shown = {letter.position for letter in first.letters}
        try:
            return _discard_with(
                producer, settings, dlq_topic, filters, shown, note, engine, so_far
            )
        finally:
            with contextlib.suppress(PipelineError):
                producer.flush(_FLUSH_TIMEOUT_S)
    finally:
        if engine is not None:
            engine.dispose()


def _discard_with(
    producer: EventProducer,
    settings: PipelineSettings,
    dlq_topic: str,
    filters: Filters,
    shown: set[str],
    note: str,
    engine: Engine | None,
    so_far: _SoFar,
) -> int:
    from pipeline.dead_letters.redrive import discard, redrive_transactional_id

    # Fence a redrive of this topic still running first, then read: what it committed is seen.
    producer.init_transactions()
    chosen = _choose(settings, dlq_topic, filters, None, among=shown)
    if not chosen.letters:
        _err.print(f"nothing to discard in {escape(dlq_topic)} any more (redriven meanwhile?)")
        return EXIT_OK
    began = time.monotonic()
    so_far.begun = True
    result = discard(
        producer,
        chosen.letters,
        note=note,
        on_progress=so_far.committed,
        on_interrupted=so_far.cut_into,
    )
    _summary(dlq_topic, result, len(chosen.letters), time.monotonic() - began)
    if result.fenced:
        _err.print(
            f"[red]fenced:[/red] a newer redrive or discard of {escape(dlq_topic)} "
            f"(transactional id {escape(redrive_transactional_id(dlq_topic))}) took over; "
            f"{len(result.discarded):,} discarded here, {len(result.not_discarded):,} not; "
            "redrives and discards of one dead-letter topic run one at a time, whatever their "
            "keys: run this again once the other one has finished (it discards only what is "
            "still pending)"
        )
        return EXIT_NOT_ALL
    if result.error is not None:
        _err.print(
            f"[red]error:[/red] {counted(len(result.not_discarded), 'dead letter')} not "
            f"discarded (a re-run discards them): {escape(result.error)}"
        )
        return EXIT_NOT_ALL
    _err.print(f"discarded {counted(len(result.discarded), 'dead letter')} of {escape(dlq_topic)}")
    _settle_keys(result.discarded, chosen.read, engine, dlq_topic)
    return EXIT_OK


def _summary(dlq_topic: str, result: DiscardResult, selected: int, elapsed_s: float) -> None:
    table = Table(title=f"discard in {dlq_topic}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("selected", f"{selected:,}")
    table.add_row("discarded", f"{len(result.discarded):,}")
    table.add_row("not discarded", f"{len(result.not_discarded):,}")
    table.add_row("transactions committed", f"{result.transactions:,}")
    table.add_row("transactions aborted and retried", f"{result.retried:,}")
    table.add_row("elapsed", f"{elapsed_s:.2f} s")
    _err.print(table)


# --- the keys ---------------------------------------------------------------------------------


def _parked_keys_database(settings: PipelineSettings) -> Engine:
    """The processors' database, checked readable now: before anything is discarded."""
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from pipeline.cli.process import announce_database
    from pipeline.database import build_engine, url_label
    from pipeline.processing.parked_keys import parked_keys_table

    announce_database(settings)
    engine = build_engine(settings.database, pool_size=1, must_exist=True)
    try:
        with engine.connect() as connection:
            connection.execute(select(parked_keys_table.c.key).limit(1)).all()
    except SQLAlchemyError as error:
        engine.dispose()
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise PipelineError(
            f"cannot read the parked keys in {url_label(engine.url)}: {reason} (set "
            "PIPELINE_DATABASE__URL to the processors' database, or pass --keep-keys-parked)"
        ) from None
    return engine


def _inbox_id(letter: DeadLetter) -> str:
    """The id the processors' inbox knows ``letter``'s event by (a park row names it): its
    event id, or for a message that had none it can keep, its original position
    (:func:`pipeline.processing.attempt.inbox_id`)."""
    from pipeline.processing import inbox

    if letter.event_id is not None and inbox.id_problem(letter.event_id) is None:
        return letter.event_id
    return letter.position_id


def _settle_keys(
    discarded: list[DeadLetter],
    read: ReadBack,
    engine: Engine | None,
    dlq_topic: str,
) -> None:
    """Per key and consumer group of the discarded letters (see the module docstring; each group
    parks its keys on its own, and only its own letters hold its park): with some of its dead
    letters still pending, say so (and note the last of them as the park's latest, when the
    latest noted was just discarded: their redrive then lets the key go); with none, let it go
    when the dead letter that parked it last is one no longer pending (discarded now or before,
    or redriven)."""
    from pipeline.processing.parked_keys import note_last_pending, unpark_settled

    gone = {letter.position for letter in discarded}
    of_key: dict[tuple[str, bytes, str], list[DeadLetter]] = {}
    for letter in read.letters:
        if letter.key is not None:
            of_key.setdefault(
                (letter.original_topic, letter.key, letter.consumer_group), []
            ).append(letter)
    pending = {letter.position for letter in read.pending} - gone
    done: set[tuple[str, bytes, str]] = set()
    for letter in discarded:
        if letter.key is None:
            continue
        topic, key, group, text = (
            letter.original_topic,
            letter.key,
            letter.consumer_group,
            letter.key_text,
        )
        if (topic, key, group) in done:
            continue
        done.add((topic, key, group))
        letters = sorted(
            of_key[(topic, key, group)], key=lambda d: (d.original_partition, d.original_offset)
        )
        still = [d for d in letters if d.position in pending]
        settled = {_inbox_id(d) for d in letters if d.position not in pending}
        if still:
            if engine is not None:
                with engine.begin() as connection:
                    note_last_pending(
                        connection,
                        consumer_group=group,
                        topic=topic,
                        key=key,
                        last_pending=_inbox_id(still[-1]),
                        settled=settled,
                    )
            _err.print(
                escape(
                    f"key {text} of {topic}: {counted(len(still), 'dead letter')} of it still "
                    f"pending in group {group} (the first: {still[0].reason}), which hold it "
                    "parked there; "
                    f"`pipeline dlq redrive {dlq_topic} --key {text} --group {group}` sends them "
                    "back in order and lets the key go once they succeed (or discard them too)"
                ),
                soft_wrap=True,
            )
            continue
        if engine is None:
            continue
        with engine.begin() as connection:
            outcome = unpark_settled(
                connection, consumer_group=group, topic=topic, key=key, settled=settled
            )
        said = {
            "let go": "let go",
            "not parked": "not parked in this database",
            "parked after": "stays parked behind a dead letter of it not read yet "
            "(dead-lettered just now?): look again with `pipeline dlq inspect`",
        }[outcome]
        _err.print(escape(f"key {text} of {topic}: {said} (group {group})"), soft_wrap=True)
