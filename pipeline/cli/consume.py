"""``pipeline consume TOPIC``: a topic's events as NDJSON on stdout, for people and for scripts.

One JSON object per message, as :mod:`pipeline.cli.consume_message` writes it (the
CloudEvents attributes, the key and position, the data); a message that is not a valid event is
printed too, with ``error`` saying why: nothing is skipped and nothing crashes.

Where it reads:

1. without ``--group``: every partition, from the end (or ``--from-beginning``), until the
   end offsets seen at start (or for ever with ``--follow``); nothing is committed;
2. with ``--group``: subscribes as that group, from the group's committed offsets, until the
   end offsets seen at start of the partitions it is given. A partition the group has no
   offset for starts at the end (or at the beginning with ``--from-beginning``), and that
   start is committed at once, so the next run with the group goes on from there on every
   partition, not only on those it printed from. After each batch is written and flushed, the
   offsets of what was printed are committed. Printed, then committed: a crash in between
   prints those messages again next time, never skips them.

Only committed messages are printed (``read_committed``): at the end of a partition where a
transaction is still open, it waits for that transaction's outcome before stopping.

Errors while reading (a one-line ``error:`` and exit 2 when they end the run):

- a fatal error (librdkafka's ``fatal()``) always ends the run;
- an error that says the topic or a partition cannot be read (unknown topic or partition,
  topic or group authorization failed, no offset to reset to) ends the run without
  ``--follow``, since the end offsets seen at start can no longer be reached; with ``--follow``
  it is a warning (once per kind) and the read goes on, should the topic come back;
- a deleted topic often raises no error at all (librdkafka just stops fetching it), so after
  a few idle seconds the topic's metadata is checked, with the same outcome as above;
- an error that says the group cannot be joined as it is (its members use another assignment
  protocol, as a running processor's Faust consumers do; an invalid group id or session
  timeout) ends the run, ``--follow`` or not: it lasts as long as the group's other members
  (were a processor to stop meanwhile, this reader would then lock it out of its own group);
- anything else (a lost connection, a coordinator moving, a timeout) is one that librdkafka
  recovers from by itself: a warning, once per kind, and the read goes on.

stdout carries only NDJSON; status lines go to stderr. Ctrl-C or SIGTERM stops after the
summary line (exit 130 or 143); a closed pipe (``| head``) stops quietly (exit 0).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

import typer

from pipeline.cli.checks import group_name
from pipeline.cli.console import silence_stdout, stderr_console, stdout_refused
from pipeline.cli.consume_message import message_json, ndjson_line
from pipeline.cli.interrupts import HeldInterrupts, exit_code, signals_interrupt, write_whole
from pipeline.cli.plurals import counted
from pipeline.cli.produce import require_topic
from pipeline.errors import PipelineError
from pipeline.settings import PipelineSettings

if TYPE_CHECKING:
    from confluent_kafka import Consumer, KafkaError, TopicPartition


_BATCH = 500
_POLL_S = 0.5
_WATERMARK_TIMEOUT_S = 15.0
#: After this long without a message, check that the topic is still there (a deleted topic's
#: partitions just stop being fetched); while following, the check is rarer.
_IDLE_CHECK_S = 3.0
_FOLLOW_IDLE_CHECK_S = 30.0


_err = stderr_console()


@dataclass
class _Reading:
    """Where to stop, and what is done; ``assigned`` is None until the group assigns."""

    topic: str
    stops: dict[int, int]
    follow: bool
    assigned: set[int] | None = None
    #: The --group read as, if any.
    group: str | None = None
    done: set[int] = field(default_factory=set)
    printed: int = 0
    undecodable: int = 0
    #: Of those, the ones whose headers could not be read (a header name not UTF-8).
    unreadable_headers: int = 0
    warned: set[int] = field(default_factory=set)
    commit_failures: int = 0
    #: With a group: where a partition without a committed offset starts, and such starts
    #: not committed yet.
    first_offsets: dict[int, int] = field(default_factory=dict)
    unsaved_starts: dict[int, int] = field(default_factory=dict)
    #: With a group: whether positions were committed (where it starts, or what it printed).
    committed: bool = False
    from_beginning: bool = False
    #: With a group and --from-beginning: whether it was said that the group resumes.
    said_resumes: bool = False

    def finished(self) -> bool:
        if self.follow or self.assigned is None:
            return False
        return self.assigned <= self.done

    def waiting(self) -> list[int]:
        """The partitions not yet read to their end (all of the topic's before an assignment)."""
        assigned = set(self.stops) if self.assigned is None else self.assigned
        return sorted(assigned - self.done)

    def past_stop(self, partition: int, offset: int) -> bool:
        """Whether ``offset`` is at or beyond the end seen at start (marks the partition done)."""
        if self.follow:
            return False
        if offset >= self.stops.get(partition, 0):
            self.done.add(partition)
            return True
        return False


def _batches(consumer: Consumer, reading: _Reading) -> Iterator[list[Any]]:
    """Batches until done; after a while without any message, check the topic is still there."""
    every_s = _FOLLOW_IDLE_CHECK_S if reading.follow else _IDLE_CHECK_S
    idle_since = checked = time.monotonic()
    while not reading.finished():
        batch = consumer.consume(num_messages=_BATCH, timeout=_POLL_S)
        now = time.monotonic()
        if batch:
            idle_since = now
        elif now - idle_since >= every_s and now - checked >= every_s:
            checked = now
            _check_topic(consumer, reading)
        yield batch


def _check_topic(consumer: Consumer, reading: _Reading) -> None:
    """End the read (or warn, following) if the topic or a waited-for partition is gone."""
    from confluent_kafka import KafkaError, KafkaException

    from pipeline.kafka.watermarks import UNREADABLE

    try:
        metadata = consumer.list_topics(reading.topic, timeout=_WATERMARK_TIMEOUT_S)
    except KafkaException:
        return  # Kafka does not answer: librdkafka reconnects by itself, the read goes on
    found = metadata.topics.get(reading.topic)
    if found is None:
        _unreadable(reading, reading.waiting(), KafkaError.UNKNOWN_TOPIC_OR_PART, "no such topic")
        return
    if found.error is not None:
        if found.error.code() in UNREADABLE:
            _unreadable(reading, reading.waiting(), found.error.code(), found.error.str())
        return  # e.g. no leader yet: librdkafka waits for one
    missing = [partition for partition in reading.waiting() if partition not in found.partitions]
    if missing:
        _unreadable(reading, missing, KafkaError._UNKNOWN_PARTITION, "no such partition")


def _handle_error(message: Any, reading: _Reading) -> None:
    """Apply the error policy of the module docstring to one error from ``consume()``."""
    from confluent_kafka import KafkaError

    from pipeline.kafka.watermarks import UNREADABLE

    error: KafkaError = message.error()
    code = error.code()
    if code == KafkaError._PARTITION_EOF:
        reading.past_stop(message.partition(), message.offset())
        return
    if error.fatal():
        raise PipelineError(f"reading {reading.topic} failed: {error.str()}")
    if reading.group is not None and code in (
        # JoinGroup refused for as long as the group is as it is: these never clear by themselves.
        KafkaError.INCONSISTENT_GROUP_PROTOCOL,
        KafkaError.INVALID_GROUP_ID,
        KafkaError.INVALID_SESSION_TIMEOUT,
    ):
        raise PipelineError(_group_refused(reading.group, code, error.str()))
    if code in UNREADABLE:
        partition = message.partition()
        known = partition is not None and partition >= 0
        _unreadable(reading, [partition] if known else reading.waiting(), code, error.str())
        return
    if code not in reading.warned:
        reading.warned.add(code)
        _err.print(f"[yellow]warning:[/yellow] {error.str()}")


def _group_refused(group: str, code: int, why: str) -> str:
    """Why ``group`` cannot be joined, and what to do."""
    from confluent_kafka import KafkaError

    if code == KafkaError.INCONSISTENT_GROUP_PROTOCOL:
        return (
            f"cannot read as group {group}: it is in use by consumers with another assignment "
            "protocol (a running processor, say); use another --group, or none to read "
            "without a group"
        )
    if code == KafkaError.INVALID_GROUP_ID:
        return (
            f"cannot read as group {group}: Kafka refuses it as a group id ({why}); use "
            "another --group, or none to read without a group"
        )
    return (
        f"cannot read as group {group}: {why} (the consumer's session.timeout.ms is outside "
        "the broker's group.min.session.timeout.ms and group.max.session.timeout.ms); read "
        "without --group, or change one of them"
    )


def _unreadable(reading: _Reading, partitions: list[int], code: int, why: str) -> None:
    """Without --follow a PipelineError (the run cannot finish); following, a warning once."""
    where = reading.topic
    if partitions:
        numbers = ", ".join(str(partition) for partition in partitions)
        where += f" partition{'s' if len(partitions) > 1 else ''} {numbers}"
    if not reading.follow:
        raise PipelineError(
            f"cannot read {where} to the end: {why} "
            f"(stopped after printing {counted(reading.printed, 'message')})"
        )
    if code not in reading.warned:
        reading.warned.add(code)
        _err.print(f"[yellow]warning:[/yellow] {where}: {why}; still following (Ctrl-C to stop)")


def _read(
    consumer: Consumer,
    reading: _Reading,
    out: BinaryIO,
    limit: int | None,
    commit: bool,
) -> None:
    """Print messages until done, the limit, or for ever; commit what was printed if asked.

    A Ctrl-C or SIGTERM while a batch is written waits until it is written, counted and
    committed (up to :data:`~pipeline.cli.interrupts.HOLD_AT_MOST_S`, or a second signal): one
    that cut the write left a line half printed and the batch not counted."""
    with HeldInterrupts() as held:
        for batch in _batches(consumer, reading):
            with held.holding():
                if _print_batch(consumer, reading, batch, out, limit, commit):
                    return


def _print_batch(
    consumer: Consumer,
    reading: _Reading,
    batch: list[Any],
    out: BinaryIO,
    limit: int | None,
    commit: bool,
) -> bool:
    """Print and commit one batch; whether the limit is reached."""
    lines: list[bytes] = []
    # The starts of partitions new to the group go with this batch's commit.
    positions: dict[int, int] = reading.unsaved_starts if commit else {}
    reading.unsaved_starts = {}
    undecodable: list[int] = []  # the lines of messages that are not valid events
    for message in batch:
        if message.error() is not None:
            _handle_error(message, reading)
            continue
        partition, offset = message.partition(), message.offset()
        if reading.past_stop(partition, offset):
            continue
        if limit is not None and reading.printed + len(lines) >= limit:
            break
        if not reading.follow and offset + 1 >= reading.stops.get(partition, 0):
            reading.done.add(partition)
        fields = message_json(message)
        if "error" in fields:
            undecodable.append(len(lines))
            if fields["headers"] is None:
                _note_unreadable_headers(fields, reading)
        lines.append(ndjson_line(fields))
        positions[partition] = offset + 1
    if lines:
        data = b"".join(lines)
        out_so_far = [0]
        try:
            write_whole(out, data, on_written=lambda n: out_so_far.__setitem__(0, n))
        except KeyboardInterrupt:
            # The hold ran out (a reader that stopped reading): count the whole lines that
            # went out; the batch is not committed, so a group prints them again.
            whole = data.count(b"\n", 0, out_so_far[0])
            reading.printed += whole
            reading.undecodable += sum(1 for line in undecodable if line < whole)
            raise
        # Counted once written: an interrupted batch is neither printed nor committed.
        reading.printed += len(lines)
        reading.undecodable += len(undecodable)
    if commit and positions:
        if _commit(consumer, reading.topic, positions):
            reading.committed = True
        else:
            reading.commit_failures += 1
    return limit is not None and reading.printed >= limit


def _note_unreadable_headers(fields: dict[str, Any], reading: _Reading) -> None:
    """Count a message printed without its headers; say so on stderr for the first one (stdout
    is for scripts, and one line is enough to know where to look)."""
    from rich.markup import escape

    reading.unreadable_headers += 1
    if reading.unreadable_headers == 1:
        where = f"{fields['topic']}[{fields['partition']}]@{fields['offset']}"
        _err.print(
            f"[yellow]warning:[/yellow] {escape(where)}: {escape(fields['error'])}; printed with "
            '"error", "headers" null and its value in base64 (any others are only counted)'
        )


def _commit(consumer: Consumer, topic: str, positions: dict[int, int]) -> bool:
    """Commit what was printed; whether it worked."""
    from confluent_kafka import KafkaException, TopicPartition

    offsets = [TopicPartition(topic, partition, offset) for partition, offset in positions.items()]
    try:
        consumer.commit(offsets=offsets, asynchronous=False)
    except KafkaException as error:
        # Printed but not committed: the next run with this group prints these again.
        _err.print(f"[yellow]warning:[/yellow] commit failed: {error.args[0].str()}")
        return False
    return True


# --- the command ------------------------------------------------------------------------------


def consume(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="The topic to read; it must exist.")],
    from_beginning: Annotated[
        bool,
        typer.Option(
            "--from-beginning",
            help="Start at the oldest message (without --group), or where a new group starts.",
        ),
    ] = False,
    max_messages: Annotated[
        int | None,
        typer.Option("--max", "-n", min=1, help="Stop after printing this many messages."),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(
            "--group",
            "-g",
            callback=group_name,
            help="Read as this consumer group and commit what was printed; the next run with "
            "the same group goes on from there.",
        ),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Keep printing new messages until Ctrl-C."),
    ] = False,
) -> None:
    """Print TOPIC's events on stdout as NDJSON, one JSON object per message.

    Without --follow it stops at the end offsets seen when it started.
    Status lines go to stderr: stdout is pure NDJSON for scripts (| jq).
    A message that is not a CloudEvent is printed with "error"
    and its raw value in base64; so is one with a header name that is
    not UTF-8 (which confluent-kafka cannot read), with "headers" null.

    Without --follow, a topic or partition that can no longer be read
    (deleted, not authorized) ends the run with a one-line error;
    following, it is a warning. A --group that cannot be joined (in use
    by a running processor, whose consumers use another assignment
    protocol) ends it, following or not.

    Exit codes:
    0 done (also when the reader of stdout went away);
    2 usage or setup error (missing topic, Kafka unreachable),
    or the topic could not be read to the end;
    130 Ctrl-C, 143 SIGTERM (after the summary).

    Examples:
      pipeline consume requests.orders --from-beginning --max 10
      pipeline consume requests.orders --follow | jq .data
      pipeline consume requests.orders --group audit   # goes on where it stopped
    """
    from pipeline.ids import new_event_id
    from pipeline.kafka.clients import build_consumer

    settings = ctx.obj
    assert isinstance(settings, PipelineSettings)
    partitions = require_topic(settings, topic).partitions
    consumer = build_consumer(
        settings.kafka,
        group or f"pipeline-consume-{new_event_id()}",
        **{
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest" if from_beginning else "latest",
        },
    )
    reading: _Reading | None = None
    interrupted: KeyboardInterrupt | None = None
    try:
        with signals_interrupt():
            reading = _start(consumer, topic, partitions, from_beginning, group, follow)
            _read(consumer, reading, sys.stdout.buffer, max_messages, commit=group is not None)
    except BrokenPipeError:
        silence_stdout()
        return
    except OSError as error:  # stdout itself refused (a full disk): one line, not a traceback
        printed = counted(reading.printed, "message") if reading is not None else "nothing"
        raise stdout_refused(error, f" (after {printed})") from None
    except KeyboardInterrupt as interrupt:
        interrupted = interrupt
        _err.print("interrupted")
    finally:
        consumer.close()
    # Interrupted while starting, nothing was printed yet.
    _err.print(_summary(reading, group) if reading is not None else "printed 0 messages")
    if interrupted is not None:
        raise typer.Exit(exit_code(interrupted)) from None


def _summary(reading: _Reading, group: str | None) -> str:
    what = f"printed {counted(reading.printed, 'message')}"
    if reading.undecodable:
        what += f", {reading.undecodable:,} of them not valid events"
        if reading.unreadable_headers:
            what += f" ({reading.unreadable_headers:,} with headers that could not be read)"
    if group and not reading.printed and reading.committed and not reading.commit_failures:
        what += f"; group {group} starts its next run where this one stopped (committed)"
    if group and reading.printed:
        if reading.commit_failures:
            what += (
                f"; {counted(reading.commit_failures, 'commit')} for group {group} failed, "
                "so the next run with this group prints some of them again"
            )
        else:
            what += f"; committed for group {group}"
    return what


def _start_new_partitions(
    consumer: Consumer, given: list[TopicPartition], reading: _Reading
) -> None:
    """Assign ``given`` at the group's offsets; a partition without one at its first offset,
    noted to be committed with the next batch."""
    from confluent_kafka import KafkaException

    try:
        positions = consumer.committed(given, timeout=_WATERMARK_TIMEOUT_S)
    except KafkaException as error:
        # Left to auto.offset.reset (the same start), just not remembered for the next run.
        _err.print(f"[yellow]warning:[/yellow] reading the group's offsets failed: {error}")
        return
    resumed = False
    for position in positions:
        first = reading.first_offsets.get(position.partition)
        if position.offset < 0 and first is not None:
            position.offset = first
            reading.unsaved_starts[position.partition] = first
        elif position.offset >= 0:
            resumed = True
    if resumed and reading.from_beginning and not reading.said_resumes:
        reading.said_resumes = True
        _err.print(
            "(the group resumes at its committed offsets: --from-beginning applies only to "
            "partitions it never read; a new --group reads from the beginning)"
        )
    consumer.assign(positions)


def _start(
    consumer: Consumer,
    topic: str,
    partitions: int,
    from_beginning: bool,
    group: str | None,
    follow: bool,
) -> _Reading:
    from confluent_kafka import TopicPartition

    from pipeline.kafka.watermarks import read_watermarks

    marks = {
        partition: read_watermarks(consumer, topic, partition, timeout_s=_WATERMARK_TIMEOUT_S)
        for partition in range(partitions)
    }
    reading = _Reading(topic, {p: high for p, (_, high) in marks.items()}, follow)
    reading.from_beginning = from_beginning
    reading.group = group
    if group is not None:
        reading.first_offsets = {
            p: low if from_beginning else high for p, (low, high) in marks.items()
        }

        def assigned(consumer: Consumer, given: list[TopicPartition]) -> None:
            reading.assigned = (reading.assigned or set()) | {tp.partition for tp in given}
            _start_new_partitions(consumer, given, reading)

        def revoked(_consumer: Consumer, taken: list[TopicPartition]) -> None:
            # Nothing left means a rebalance is under way: wait for the next assignment.
            left = (reading.assigned or set()) - {tp.partition for tp in taken}
            reading.assigned = left or None

        consumer.subscribe([topic], on_assign=assigned, on_revoke=revoked, on_lost=revoked)
        _err.print(f"reading {topic} as group {group}" + (", following" if follow else ""))
        return reading
    starts = {p: low if from_beginning else high for p, (low, high) in marks.items()}
    reading.assigned = set(starts)
    if not follow:
        reading.done = {p for p, start in starts.items() if start >= reading.stops[p]}
    consumer.assign([TopicPartition(topic, p, offset) for p, offset in starts.items()])
    if follow:
        _err.print(f"following {topic} from the {'beginning' if from_beginning else 'end'}")
    else:
        available = sum(reading.stops[p] - start for p, start in starts.items())
        _err.print(f"reading {topic}: up to {counted(available, 'message')}")
        if not from_beginning:
            _err.print(
                "(started at the end; use --from-beginning for what is there, --follow to wait)"
            )
    return reading
