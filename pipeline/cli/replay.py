"""``pipeline replay FILE``: a recording (ours or ``kcat -C -J``'s) back into Kafka.

1. check the options (pacing, processes, a topic Kafka takes) and read the whole file once:
   every line but a blank one must be a message (a bad line stops the replay before anything
   is sent), and the target topics must exist with the partitions needed
   (``--preserve-partitions``). Reading stdin (``-``), this is done as the messages come
   instead, in one process;
2. send, with a progress line (count and rate, since the sending started) on stderr: a file
   with several processes, each owning whole partitions (pipeline/replay/processes.py), stdin
   with one (pipeline/replay/replayer.py);
3. flush, so every message sent is acknowledged or failed, then print the summary: always,
   also after Ctrl-C (or SIGTERM) or a failure. It gives the time sending (and its rate) and,
   for a file, the whole time with the check before it (and that rate): docs/replay.md.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from pipeline.cli.checks import topic_name
from pipeline.cli.console import stderr_console, typed_at_the_terminal
from pipeline.cli.interrupts import exit_code, signals_interrupt
from pipeline.cli.plurals import counted
from pipeline.cli.record import CountProgress
from pipeline.errors import PipelineError
from pipeline.replay.pacing import Pacing, parse_rate, parse_speed
from pipeline.settings import PipelineSettings

if TYPE_CHECKING:  # the rest is imported in the command: `pipeline --help` stays light
    from pipeline.replay.replayer import ReplaySummary
    from pipeline.replay.routing import RecordingSurvey

EXIT_OK = 0
EXIT_DELIVERY_FAILED = 3

_err = stderr_console()


def _plan(
    found: RecordingSurvey | None,
    source: str,
    pacing: Pacing,
    topic: str | None,
    processes: int = 1,
) -> str:
    """One line saying what is sent where, how fast, and by how many processes."""
    what = "messages" if found is None else counted(found.messages, "message")
    if topic is not None:
        into = f"into {topic}"
    elif found is not None:
        into = "into " + ", ".join(sorted(found.partitions_needed))
    else:
        into = "into their recorded topics"
    if pacing.rate_per_s is not None:
        pace = f"at {pacing.rate_per_s:g}/s"
    elif pacing.speed is not None:
        pace = f"at {pacing.speed:g}x the recorded pace"
        if found is not None and found.paced_s:
            # From the first message's timestamp to the latest, as the schedule paces it (a
            # message stamped earlier than the ones sent goes at once): not the whole span.
            took = found.paced_s / pacing.speed
            pace += (
                f" (about {took:,.1f} s: {found.paced_s:,.1f} s from the first message's "
                "timestamp to the latest)"
            )
    else:
        pace = "as fast as possible"
    by = f", {counted(processes, 'process', 'processes')}" if processes > 1 else ""
    return f"replaying {what} from {source} {into}, {pace}{by}"


#: The summary's rows of time: the sending, and (a file) the whole command with the check.
SENDING = "sending"
IN_ALL = "in all (reading and checking the file first)"


def _time_and_rate(sent: int, seconds: float) -> str:
    """``1.17 s, 256,994 messages/s``: a time and the rate of ``sent`` messages over it."""
    if seconds <= 0:
        return "not started"
    took = f"{seconds:,.2f} s"
    return f"{took}, {sent / seconds:,.0f} messages/s" if sent else took


def _summary_rows(summary: ReplaySummary, in_all_s: float | None) -> list[tuple[str, str]]:
    """The rows of the summary: what was acknowledged; the time sending (the library's
    ``elapsed_s``: from the first message sent to the last acknowledged or failed) and its
    rate; with ``in_all_s`` (a file: checked whole before anything is sent), the whole time
    from the command's start, the check included, and that rate."""
    rows = [
        ("sent (acknowledged)", f"{summary.sent:,}"),
        (SENDING, _time_and_rate(summary.sent, summary.elapsed_s)),
    ]
    if in_all_s is not None:  # not stdin, whose lines are checked as they come, and sent
        rows.append((IN_ALL, _time_and_rate(summary.sent, in_all_s)))
    return rows


def _summary(summary: ReplaySummary, in_all_s: float | None) -> None:
    table = Table(title="replayed", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for what, value in _summary_rows(summary, in_all_s):
        table.add_row(what, value)
    _err.print(table)
    if summary.per_topic:
        per_topic = Table(title="sent per topic")
        per_topic.add_column("topic")
        per_topic.add_column("messages", justify="right")
        for name, count in sorted(summary.per_topic.items()):
            per_topic.add_row(name, f"{count:,}")
        _err.print(per_topic)


def replay(
    ctx: typer.Context,
    file: Annotated[
        str,
        typer.Argument(
            help="The recording (from `pipeline record`, or `kcat -C -J`); - for stdin."
        ),
    ],
    topic: Annotated[
        str | None,
        typer.Option(
            "--topic",
            "-t",
            help="Send every message to this topic instead.",
            callback=topic_name,
        ),
    ] = None,
    preserve_partitions: Annotated[
        bool,
        typer.Option(
            "--preserve-partitions",
            help="Send each message to its recorded partition (the target needs as many). "
            "Default: by key, with murmur2 like every Kafka client; a message without a "
            "key to its recorded partition (modulo the target's count), in order.",
        ),
    ] = False,
    rate: Annotated[
        str | None,
        typer.Option("--rate", help="Send this many messages per second, e.g. 500/s."),
    ] = None,
    speed: Annotated[
        str | None,
        typer.Option(
            "--speed",
            help="Send at the recorded pace (by the timestamps) times this, e.g. 10x or 0.5x; "
            "a file's partitions are merged by timestamp, stdin goes in the order it comes.",
        ),
    ] = None,
    rewrite_ids: Annotated[
        bool,
        typer.Option(
            "--rewrite-ids",
            help="Give every event a fresh id (its ce_id header, or a structured event's id in its "
            "value); everything else is kept.",
        ),
    ] = False,
    processes: Annotated[
        int | None,
        typer.Option(
            "--processes",
            "-j",
            min=1,
            max=64,  # pipeline.replay.processes.MAX_PROCESSES (not imported for --help)
            help="Send with this many processes (at most 64), each owning whole partitions. "
            "Default: as many as cores, at most the target's partitions; one for stdin, a "
            "pipe, --rate and --speed.",
        ),
    ] = None,
) -> None:
    """Send a recording back to Kafka: keys, values and headers as recorded,
    in the recorded order per partition.

    Messages go to their recorded topics (or --topic), placed by key
    (or --preserve-partitions), as fast as possible (or --rate, --speed),
    with an idempotent producer; a file by several processes at once
    (--processes), each sending whole partitions in order. The whole
    file is checked before anything is sent. Progress and the summary
    go to stderr.

    Exit codes:
    0 every message sent and acknowledged;
    2 usage or setup error (option, file, a line that is not a message,
    a topic missing or with too few partitions, Kafka unreachable);
    3 some messages were not delivered;
    130 Ctrl-C, 143 SIGTERM (what was sent is acknowledged or failed, and
    counted in the summary).

    Examples:
      pipeline replay orders.jsonl      # back into the recorded topics
      pipeline replay orders.jsonl --topic test.orders --rewrite-ids
      pipeline replay 1h.jsonl --speed 10x --preserve-partitions
      kcat -b 127.0.0.1:9092 -C -J -e -t requests.orders | pipeline replay - --rate 500/s
    """
    from pipeline.replay.processes import replay_recording
    from pipeline.replay.recording import LinePlace, bounded_lines, parse_lines_for_replay
    from pipeline.replay.replayer import (
        ReplayFailed,
        ReplayInterrupted,
        ReplayStopped,
        replay_into_kafka,
    )

    began = time.monotonic()  # the summary's "in all" (a file: the check, then the sending)
    settings = ctx.obj
    assert isinstance(settings, PipelineSettings)
    pacing = Pacing(
        rate_per_s=None if rate is None else parse_rate(rate),
        speed=None if speed is None else parse_speed(speed),
    )
    paced = pacing.rate_per_s is not None or pacing.speed is not None
    if processes is not None and processes > 1 and (file == "-" or paced):
        why = "stdin is" if file == "-" else "--rate and --speed are"
        raise PipelineError(f"--processes: {why} replayed by one process")
    typed = False
    if file == "-":
        _err.print(_plan(None, "stdin", pacing, topic))
        typed = typed_at_the_terminal(reads_stdin=True)
    progress = CountProgress("replaying", on_terminal="nothing" if typed else "live")
    checked: list[RecordingSurvey] = []

    def in_all() -> float | None:
        """The time since the command started, the check included; None for stdin, checked
        line by line as it is sent (its one time is the sending's)."""
        return None if file == "-" else time.monotonic() - began

    def on_checked(found: RecordingSurvey, count: int) -> None:
        checked.append(found)
        if found.messages:
            # A process sends whole partitions, a message goes to one: more processes than
            # messages have nothing to send, and are not said to (a recording of 1 message
            # with 2 started is sent by 1).
            _err.print(_plan(found, file, pacing, topic, min(count, found.messages)))
            # The check is done: the rate counts from now, the clock of the summary's sending
            # rate (the check of the whole file would slow it). Stdin, checked as it is sent,
            # counts from the command's start.
            progress.restart(found.messages)
        else:
            _err.print(f"{file} holds no message: nothing to replay")

    try:
        with progress, signals_interrupt():
            if file == "-":
                place = LinePlace("stdin")  # a message refused is named by its line
                summary = replay_into_kafka(
                    settings.kafka,
                    parse_lines_for_replay(
                        bounded_lines(sys.stdin.buffer, "stdin"), source="stdin", place=place
                    ),
                    topic=topic,
                    preserve_partitions=preserve_partitions,
                    rewrite_ids=rewrite_ids,
                    pacing=pacing,
                    on_progress=progress.advance,
                    place=place,
                )
            else:
                summary = replay_recording(
                    settings.kafka,
                    Path(file),
                    processes=processes,
                    topic=topic,
                    preserve_partitions=preserve_partitions,
                    rewrite_ids=rewrite_ids,
                    pacing=pacing,
                    on_checked=on_checked,
                    on_progress=progress.advance,
                )
                if not checked[0].messages:
                    return
    except ReplayInterrupted as interrupted:
        if typed:  # the terminal echoed ^C after what was being typed: a line of its own
            _err.print()
        _summary(interrupted.summary, in_all())
        _err.print("interrupted")
        raise typer.Exit(exit_code(interrupted.interrupt)) from None
    except ReplayStopped as stopped:  # part way through stdin: say what went before the error
        _summary(stopped.summary, in_all())
        raise stopped.error from None
    except ReplayFailed as failed:
        _summary(failed.summary, in_all())
        _err.print(f"[red]error:[/red] {escape(str(failed))}", highlight=False)
        raise typer.Exit(EXIT_DELIVERY_FAILED) from None
    _summary(summary, in_all())
