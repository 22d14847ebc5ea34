"""``pipeline produce TOPIC [FILE|-]``: NDJSON lines to a topic as events, every line accounted for.

1. check the options (:func:`producers.ndjson.line_rules`) and that the topic exists;
2. with ``--strict``, read the whole input once and stop if any line is rejected (nothing sent);
3. read the lines (in chunks of 1 MiB), each through the fast path
   (:func:`producers.ndjson_fast.line_encoder`) or, where that declines it, the general one
   (:func:`producers.ndjson.parse_line`): a rejected line goes to the rejects file and is never
   produced; a ready event is sent with a delivery callback that counts it (sent per partition,
   or failed); an event the Kafka client refuses at once (larger than ``message.max.bytes``,
   say) is a rejected line too, never half-sent;
4. flush, so every event sent is acknowledged or failed before the summary: always, also when
   step 3 stops on an error (a queue that stayed full, an unwritable rejects file, Kafka);
5. print the summary on stderr and exit with a code that says what happened; after an error in
   step 3 the error is the last line.

Every status message, the progress bar and the summary go to stderr.
"""

from __future__ import annotations

import shlex
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from pipeline.cli.checks import header_pairs, utf8_text
from pipeline.cli.console import announcing_kafka, stderr_console, typed_at_the_terminal
from pipeline.cli.interrupts import HeldInterrupts, Terminated, exit_code, signals_interrupt
from pipeline.cli.plurals import counted
from pipeline.cli.produce_input import SHOWN, Input, RejectsFile, default_rejects
from pipeline.errors import PipelineError
from pipeline.gc_tuning import few_collections
from pipeline.settings import PipelineSettings
from pipeline.topics.limits import batch_bytes_within, message_limit
from producers.ndjson_defaults import DEFAULT_SOURCE

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Message

    from pipeline.kafka.producer import EventProducer
    from pipeline.topics.plan import ActualTopic
    from producers.ndjson import LineRules

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2
EXIT_DELIVERY_FAILED = 3

#: How long the final flush waits beyond librdkafka's own delivery timeout.
_FLUSH_MARGIN_S = 30.0

_err = stderr_console()


def require_topic(settings: PipelineSettings, topic: str) -> ActualTopic:
    """``topic`` as it exists (partitions, configs); a :class:`PipelineError` if it does not.

    Reads the cluster metadata through the admin client, which never creates a topic.
    """
    from pipeline.kafka.clients import build_admin
    from pipeline.topic_names import kafka_name_problem
    from pipeline.topics.admin import require_topics

    problem = kafka_name_problem(topic)
    if problem is not None:
        raise PipelineError(problem)
    bootstrap = settings.kafka.bootstrap_servers
    with announcing_kafka(bootstrap):
        found = require_topics(build_admin(settings.kafka), [topic], bootstrap=bootstrap)
    return found[topic]


# --- accounting -------------------------------------------------------------------------------


@dataclass
class _Tally:
    lines: int = 0
    queued: int = 0
    failed: int = 0
    per_partition: Counter[int] = field(default_factory=Counter)
    #: Said after a failure for being too large: the topic's limit, when it has its own.
    too_large: str = ""

    @property
    def sent(self) -> int:
        return sum(self.per_partition.values())

    def report(self, line: int, error: KafkaError | None, message: Message) -> None:
        """librdkafka's delivery report of the event of ``line``."""
        if error is None:
            self.per_partition[message.partition()] += 1  # type: ignore[index]
            return
        self.failed += 1
        if self.failed <= SHOWN:
            why = error.str()
            from confluent_kafka import KafkaError  # a failure only: not on the send path

            if self.too_large and error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                why += self.too_large
            _err.print(f"[red]failed[/red] line {line}: {escape(why)}")


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} lines/s" if speed else "", style="progress.data.speed")


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("producing"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        console=_err,
        transient=True,
        disable=not enabled,
    )


# --- sending ----------------------------------------------------------------------------------


def _send_lines(
    producer: EventProducer,
    rules: LineRules,
    batches: Iterable[list[bytes]],
    tally: _Tally,
    rejects: RejectsFile,
    progress: Progress,
    total: int | None,
) -> None:
    """Send every ready line, reject the others; a rejected line is never produced.

    Each line goes through :func:`producers.ndjson.line_encoder`'s fast path, and when that
    declines it, through :func:`producers.ndjson.parse_line`, which accepts or rejects it.
    """
    from pipeline.kafka.interrupts import InterruptWitness
    from pipeline.kafka.producer import ProduceRefused
    from producers.ndjson import ReadyEvent, RejectedLine, line_encoder, parse_line, refused

    task = progress.add_task("producing", total=total)
    encode = line_encoder(rules)
    send = producer.send_encoded
    report = tally.report
    topic = rules.topic
    number = tally.lines
    queued = 0
    # A Ctrl-C inside the client comes out as the interrupt, not the error the client reports;
    # one during a batch waits until the batch is sent and counted (reading may block, so a
    # signal between batches is raised at once): "interrupted after line N" is then exact.
    with InterruptWitness(), HeldInterrupts() as held:
        try:
            for batch in batches:
                with held.holding():
                    for raw in batch:
                        number += 1
                        parts = None if encode is None else encode(raw)
                        if parts is None:
                            parsed = parse_line(rules, number, raw)
                            if parsed is None:  # blank
                                continue
                            if isinstance(parsed, RejectedLine):
                                rejects.write(parsed)
                                continue
                            message = parsed.message
                            parts = (message.key, message.value, message.headers)
                        try:
                            send(topic, *parts, partial(report, number))
                        except ProduceRefused as refusal:  # nothing of it was queued
                            again = parse_line(rules, number, raw)  # the same event, to say why
                            if isinstance(again, ReadyEvent):
                                rejects.write(refused(again, refusal.reason))
                        else:
                            queued += 1
                    progress.advance(task, len(batch))
        finally:
            tally.lines = number
            tally.queued += queued


def _summary(
    rules: LineRules,
    run_id: str,
    partitions: int,
    tally: _Tally,
    rejected: int,
    producer: EventProducer | None,
    elapsed_s: float,
    *,
    checked_only: bool = False,
) -> None:
    """The run's table; ``checked_only``: a ``--strict`` check that sent nothing (no table of
    what each partition got)."""
    title = (
        f"checked for {rules.topic} (--strict: nothing sent)"
        if checked_only
        else f"produced to {rules.topic}"
    )
    table = Table(title=title, show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("run (ce_correlationid)", run_id)
    table.add_row("type", rules.event_type)
    table.add_row("lines read", f"{tally.lines:,}")
    table.add_row("sent (acknowledged)", f"{tally.sent:,}")
    table.add_row("failed", f"{tally.failed:,}")
    unacknowledged = tally.queued - tally.sent - tally.failed
    if producer is not None and unacknowledged > 0:
        table.add_row("not acknowledged", f"{unacknowledged:,}")
    table.add_row("rejected", f"{rejected:,}")
    if producer is not None:
        table.add_row("retried (events sent again)", f"{producer.resent:,}")
        table.add_row("broker disconnects", f"{producer.stats.disconnects:,}")
        table.add_row("produce requests retried", f"{producer.stats.retries:,}")
    table.add_row("elapsed", f"{elapsed_s:.2f} s")
    table.add_row("rate", f"{tally.sent / elapsed_s:,.0f} events/s" if elapsed_s > 0 else "-")
    _err.print(table)
    if checked_only:
        return
    per_partition = Table(title="sent per partition")
    per_partition.add_column("partition", justify="right")
    per_partition.add_column("events", justify="right")
    for partition in sorted({*range(partitions), *tally.per_partition}):
        per_partition.add_row(str(partition), f"{tally.per_partition[partition]:,}")
    _err.print(per_partition)


class _CountedLines:
    """The lines of an input, counting those read (the ``--strict`` check's "lines read")."""

    def __init__(self, lines: Iterable[bytes]) -> None:
        self._lines = lines
        self.count = 0

    def __iter__(self) -> Iterator[bytes]:
        for line in self._lines:
            self.count += 1
            yield line


def _exit_code(tally: _Tally, rejected: int) -> int:
    if _undelivered(tally):
        return EXIT_DELIVERY_FAILED
    if rejected:
        return EXIT_REJECTED
    return EXIT_OK


# --- the command ------------------------------------------------------------------------------


def produce(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="The topic to produce to; it must exist.")],
    file: Annotated[
        str, typer.Argument(help="The NDJSON file, one event's data per line; - for stdin.")
    ] = "-",
    key_field: Annotated[
        str | None,
        typer.Option(
            "--key-field",
            help="The top-level field whose value is the key.",
            callback=utf8_text,
        ),
    ] = None,
    old_key_field: Annotated[
        str | None,
        # The earlier name of --key-field; --key/-k elsewhere is a key value (dlq --key).
        typer.Option("--key", hidden=True, callback=utf8_text),
    ] = None,
    key_from: Annotated[
        str | None,
        typer.Option(
            "--key-from",
            help="A path to the key inside the data: $.order.id, order.id, lines[0].sku, $['a.b'].",
            callback=utf8_text,
        ),
    ] = None,
    event_type: Annotated[
        str | None,
        typer.Option(
            "--type",
            "-t",
            help="A request type (place_order, cancel_order, register_customer, or its "
            "CloudEvents type): each line is validated against it and keyed by its key field. "
            "Anything else is the CloudEvents type as is. Default: com.example.event.",
        ),
    ] = None,
    source: Annotated[
        str, typer.Option("--source", help="The CloudEvents source (a URI-reference).")
    ] = DEFAULT_SOURCE,
    header: Annotated[
        list[str] | None,
        typer.Option(
            "--header",
            "-H",
            help="An extra Kafka header name=value (repeatable); not ce_* or content-type.",
            callback=header_pairs,
        ),
    ] = None,
    rejects: Annotated[
        Path | None,
        typer.Option(
            "--rejects",
            dir_okay=False,
            help="Where rejected lines go, one JSON object each: {line, reason, raw}. "
            "Default: FILE.rejects.ndjson, or ./produce-rejects.ndjson for stdin. Written only "
            "when a line is rejected.",
        ),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict", help="Check the whole input first; send nothing if any line is rejected."
        ),
    ] = False,
    any_topic: Annotated[
        bool,
        typer.Option(
            "--any-topic",
            help="Allow a request type to go to a topic other than its own (e.g. a test topic).",
        ),
    ] = False,
) -> None:
    """Produce NDJSON lines to TOPIC as CloudEvents, one event per line.

    A line that is not a JSON object, lacks its key or fails its request type
    is never sent: it is reported with its line number and reason,
    and written to the rejects file.
    All events of a run share one ce_correlationid, shown in the summary.
    Progress and the summary go to stderr.

    A line whose event Kafka's client refuses (larger than message.max.bytes)
    is rejected the same way.
    If sending stops on an error (Kafka unreachable, the rejects file
    cannot be written), what was already sent is still waited for
    and the summary printed; the error is the last line.

    Exit codes:
    0 every line sent;
    1 some lines rejected, every event sent was acknowledged;
    2 usage or setup error (option, topic, file, Kafka unreachable),
    also when it stopped sending part way and every event sent was acknowledged;
    3 some events failed to be delivered (or were not acknowledged in time);
    130 Ctrl-C, 143 SIGTERM (after waiting for what was sent, and the summary).

    Examples:
      pipeline produce orders.events orders.ndjson --key-field order_id
      cat requests.ndjson | pipeline produce requests.orders --type place_order
      pipeline produce audit.events lines.ndjson --key-from customer.id -H team=billing
    """
    from pipeline.ids import new_event_id
    from producers.ndjson import line_rules

    settings = ctx.obj
    assert isinstance(settings, PipelineSettings)
    if old_key_field is not None:
        if key_field is not None:
            raise typer.BadParameter("give --key-field only (--key is its earlier name)")
        key_field = old_key_field
    run_id = new_event_id()
    rules = line_rules(
        topic=topic,
        correlation_id=run_id,
        event_type=event_type,
        source=source,
        key_field=key_field,
        key_from=key_from,
        headers=header or (),
        allow_other_topic=any_topic,
    )
    data = Input(file)
    rejects_file = RejectsFile(rejects or default_rejects(data), data.mode)
    if rejects is not None:  # the default place is not required of an input with no bad line
        rejects_file.check()
    if data.is_the_file(rejects_file.path):  # a rejects line read back as input, for ever
        raise PipelineError(f"the rejects file {rejects_file.shown} is the input itself")
    found = require_topic(settings, topic)
    partitions = found.partitions
    try:
        with signals_interrupt():
            code = _produce(
                settings,
                rules,
                run_id,
                data,
                rejects_file,
                partitions,
                strict,
                message_limit(found),
            )
        raise typer.Exit(code)
    except KeyboardInterrupt as interrupt:  # a second one, while waiting for what was sent
        _err.print("interrupted")
        raise typer.Exit(exit_code(interrupt)) from None
    finally:
        rejects_file.close()


def _produce(
    settings: PipelineSettings,
    rules: LineRules,
    run_id: str,
    data: Input,
    rejects: RejectsFile,
    partitions: int,
    strict: bool,
    limit: int | None = None,
) -> int:
    from confluent_kafka import KafkaException

    from pipeline.kafka.producer import build_event_producer
    from producers.ndjson import rejections_in

    tally = _Tally()
    overrides: dict[str, Any] = {}
    if limit is not None:
        # Batches the broker takes: an event too large for the topic then fails alone, instead
        # of failing every event that shared its batch.
        overrides["batch.size"] = batch_bytes_within(limit)
        tally.too_large = (
            f" (topic {rules.topic} takes at most {limit:,} bytes: its max.message.bytes)"
        )
    typed = typed_at_the_terminal(data.path is None)
    if strict:
        data.keep()
        found = 0
        with data.lines() as lines, few_collections():
            read = _CountedLines(lines)
            for rejection in rejections_in(rules, read):
                rejects.write(rejection)  # as found: many bad lines are not held in memory
                found += 1
        if found:
            tally.lines = read.count
            _summary(rules, run_id, partitions, tally, rejects.count, None, 0.0, checked_only=True)
            _err.print(
                f"--strict: nothing sent; {counted(found, 'line')} rejected, see {rejects.shown}"
            )
            return EXIT_REJECTED
    show_progress = _err.is_terminal and not typed
    total = data.count_lines() if show_progress else None
    producer = build_event_producer(settings.kafka, settings.producer, **overrides)
    began = time.monotonic()
    interrupted: KeyboardInterrupt | None = None
    stopped: str | None = None  # why sending stopped before the end of the input
    try:
        with _progress(show_progress) as progress, data.batches() as batches, few_collections():
            _send_lines(producer, rules, batches, tally, rejects, progress, total)
    except KeyboardInterrupt as interrupt:
        interrupted = interrupt
        if typed:  # the terminal echoed ^C after what was being typed: a line of its own
            _err.print()
        _err.print(_interrupted(data, tally.lines), highlight=False, markup=False)
    except PipelineError as error:
        stopped = _stopped(tally, str(error))
    except KafkaException as error:
        stopped = _stopped(tally, f"Kafka: {error.args[0].str()}")
    except OSError as error:  # reading the input failed part way
        stopped = _stopped(tally, f"cannot read {data.shown}: {error.strerror or error}")
    finally:
        # Whatever ended the sending (even an error that is a bug), what was queued is
        # delivered or failed, and the summary says so, before this function ends.
        unacknowledged, late = wait_for_sent(partial(_flush, producer, settings))
        interrupted = interrupted or late
        elapsed = time.monotonic() - began
        producer.refresh_stats(failures=tally.failed)
        _summary(rules, run_id, partitions, tally, rejects.count, producer, elapsed)
    if interrupted is not None:
        return exit_code(interrupted)
    if rejects.count:
        _err.print(f"{counted(rejects.count, 'line')} rejected, see {rejects.shown}")
    if tally.failed:
        _err.print(f"[red]{counted(tally.failed, 'event')} failed to be delivered[/red]")
    if unacknowledged:
        _err.print(f"[red]{escape(unacknowledged)}[/red]")
    if stopped is not None:
        _err.print(f"[red]error:[/red] {escape(stopped)}")
        return EXIT_DELIVERY_FAILED if _undelivered(tally) else EXIT_USAGE
    return _exit_code(tally, rejects.count)


def _interrupted(data: Input, lines: int) -> str:
    """What an interrupted run says; for a regular file, with the command that reads the rest
    (its number without separators). Stdin, a pipe or a FIFO cannot be read again: none then."""
    said = f"interrupted after line {lines:,}; waiting for what was sent"
    if data.regular and data.path is not None:
        said += f" (the rest: tail -n +{lines + 1} {shlex.quote(str(data.path))})"
    return said


def _stopped(tally: _Tally, why: str) -> str:
    return f"stopped at line {tally.lines:,}: {why}" if tally.lines else why


def wait_for_sent(
    flush: Callable[[], str | None],
) -> tuple[str | None, KeyboardInterrupt | None]:
    """``flush()`` (what is left unacknowledged), and the interrupt that came during it, if
    any: a first Ctrl-C or SIGTERM once every line was read says so and lets the wait go on,
    as one during the reading does, so the summary still comes; a second one stops at once.

    The first is noted, not raised: Python runs a signal's handler between bytecodes, which
    may be inside a delivery callback, and a ``KeyboardInterrupt`` raised there lost the count
    of an event Kafka had acknowledged (1 event "not acknowledged" in 2 of 25 runs of an
    outside review). Inside :class:`~pipeline.kafka.interrupts.InterruptWitness`: a second
    signal that lands in a callback was a ``SystemError`` and a traceback."""
    from pipeline.kafka.interrupts import InterruptWitness, SignalsTaken

    first: list[int] = []

    def note(signum: int, _frame: FrameType | None) -> None:
        if first:
            taken.hand_over(signum)  # a second one: as without us (raises)
            return
        first.append(signum)
        _err.print("interrupted; waiting for what was sent", highlight=False, markup=False)

    taken = SignalsTaken(note)
    taken.take()
    try:
        with InterruptWitness():
            unacknowledged = flush()
    finally:
        taken.give_back()
    if not first:
        return unacknowledged, None
    return unacknowledged, Terminated() if first[0] == signal.SIGTERM else KeyboardInterrupt()


def _flush(producer: EventProducer, settings: PipelineSettings) -> str | None:
    """Wait for every queued event; what is still unacknowledged after that, if anything."""
    from pipeline.kafka.producer import FlushTimeout

    try:
        producer.flush(settings.producer.delivery_timeout_ms / 1000 + _FLUSH_MARGIN_S)
    except FlushTimeout as error:  # events left unacknowledged (callbacks count the rest)
        return str(error)
    return None


def _undelivered(tally: _Tally) -> bool:
    return bool(tally.failed) or tally.sent < tally.queued
