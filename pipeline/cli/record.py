"""``pipeline record TOPIC... --out FILE``: topics to a recording, one message a line.

The format is pipeline/replay/recording.py's (kcat's field names, binary-safe, headers as
ordered pairs); what is read, from where to where, is pipeline/replay/recorder.py's.

1. check the options (one start; the times; ``--out``: no directory, its folder there), then
   that the topics exist, then open the output and say what is recorded;
2. read and write line by line, with a progress line (count and rate) on stderr;
3. on a stop condition, Ctrl-C or SIGTERM: close the file (every line in it is complete), then
   print the summary (messages per partition, with their first and last offsets).

Status lines, progress and the summary go to stderr, so ``--out -`` writes the recording
itself to stdout.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.progress import Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from pipeline.cli.checks import group_name
from pipeline.cli.console import silence_stdout, stderr_console, stdout_refused
from pipeline.cli.interrupts import exit_code, signals_interrupt
from pipeline.errors import PipelineError
from pipeline.plurals import counted
from pipeline.replay.bounds import FromGroup, FromTime, Start, Stop, parse_time, start_of
from pipeline.settings import PipelineSettings

if TYPE_CHECKING:
    from pipeline.replay.recording import RecordedMessage

EXIT_OK = 0

#: Without a terminal, a progress line this often.
_LINE_EVERY_S = 10.0
#: On a terminal, the live rate is of the messages of the last this many seconds.
_RATE_WINDOW_S = 5.0

_err = stderr_console()


# --- progress (shared with `pipeline replay`) -------------------------------------------------


class _CountColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        done = f"{task.completed:,.0f}"
        total = "" if task.total is None else f"/{task.total:,.0f}"
        return Text(f"{done}{total} messages", style="progress.download")


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f}/s" if speed else "", style="progress.data.speed")


#: What a count shows on a terminal: a live line, a plain line every 10 s, or nothing.
OnTerminal = Literal["live", "lines", "nothing"]


class CountProgress:
    """A count of messages and their rate on stderr: a live line on a terminal, otherwise a
    plain line every 10 s. ``advance(n)`` is cheap enough to call for every batch.

    ``on_terminal`` says what a terminal gets instead of the live line: plain lines when the
    terminal shows other output too (the recording on stdout: the live line's redraws mixed
    with it), nothing when its user types the input (the redraws wiped what was typed)."""

    def __init__(
        self, verb: str, total: int | None = None, *, on_terminal: OnTerminal = "live"
    ) -> None:
        self._verb = verb
        self.count = 0
        self._began = time.monotonic()
        self._printed = self._began
        self._live: Progress | None = None
        self._task: Any = None
        self._quiet = on_terminal == "nothing" and _err.is_terminal
        if on_terminal == "live" and _err.is_terminal:
            self._live = Progress(
                TextColumn(verb),
                _CountColumn(),
                _RateColumn(),
                TimeElapsedColumn(),
                console=_err,
                transient=True,
                # The rate of the last seconds, not of the last half minute (rich's default):
                # it falls to nothing within them when messages stop coming.
                speed_estimate_period=_RATE_WINDOW_S,
            )
            self._task = self._live.add_task(verb, total=total)

    def __enter__(self) -> CountProgress:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self._live is not None:
            self._live.stop()

    def restart(self, total: int) -> None:
        """Count ``total`` from now: the rate (and a bar's elapsed time) start again, for work
        that begins after a first step not counted (a replay checks its file, then sends)."""
        self._began = self._printed = time.monotonic()
        if self._live is not None:
            self._live.reset(self._task, total=total)

    def advance(self, count: int) -> None:
        self.count += count
        if self._live is not None:
            self._live.advance(self._task, count)
            return
        if self._quiet:
            return
        now = time.monotonic()
        if now - self._printed >= _LINE_EVERY_S:
            self._printed = now
            rate = self.count / (now - self._began)
            _err.print(f"{self._verb}: {self.count:,} messages, {rate:,.0f}/s")


# --- the tally --------------------------------------------------------------------------------


@dataclass
class _PartitionTally:
    messages: int = 0
    first_offset: int = -1
    last_offset: int = -1


@dataclass
class _Tally:
    partitions: dict[tuple[str, int], _PartitionTally] = field(default_factory=dict)

    def add(self, message: RecordedMessage) -> None:
        key = (message.topic, message.partition)
        tally = self.partitions.get(key)
        if tally is None:
            tally = self.partitions[key] = _PartitionTally(first_offset=message.offset)
        tally.messages += 1
        tally.last_offset = message.offset


def _summary(out: str, tally: _Tally, count: int, elapsed_s: float) -> None:
    table = Table(title=f"recorded to {out}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("messages", f"{count:,}")
    table.add_row("elapsed", f"{elapsed_s:.2f} s")
    table.add_row("rate", f"{count / elapsed_s:,.0f} messages/s" if elapsed_s > 0 else "-")
    _err.print(table)
    if tally.partitions:
        per_partition = Table(title="per partition")
        for column in ("topic", "partition", "messages", "first offset", "last offset"):
            per_partition.add_column(column, justify="left" if column == "topic" else "right")
        for (topic, partition), found in sorted(tally.partitions.items()):
            per_partition.add_row(
                topic,
                str(partition),
                f"{found.messages:,}",
                str(found.first_offset),
                str(found.last_offset),
            )
        _err.print(per_partition)


def _describe(topics: list[str], start: Start, stop: Stop) -> str:
    """One line saying what is recorded, from where, until when."""
    if start == "beginning":
        where = "from the beginning"
    elif start == "end":
        where = "from now on"
    elif isinstance(start, FromTime):
        where = f"from {_time_text(start.timestamp_ms)}"
    else:
        assert isinstance(start, FromGroup)
        where = f"from group {start.group}'s committed offsets"
    until = []
    if stop.at_end:
        until.append("the end offsets of now")
    if stop.until_ms is not None:
        until.append(_time_text(stop.until_ms))
    if stop.max_messages is not None:
        until.append(counted(stop.max_messages, "message"))
    end = "until " + " or ".join(until) if until else "until Ctrl-C"
    return f"recording {', '.join(topics)} {where}, {end}"


def _time_text(ms: int) -> str:
    # Milliseconds when the bound has them: "until 09:00:00" of a bound at 09:00:00.200 read
    # as if nothing before 09:00:00 were cut.
    spec = "milliseconds" if ms % 1000 else "seconds"
    return datetime.fromtimestamp(ms / 1000).astimezone().isoformat(timespec=spec)


def _check_topic_names(topics: list[str]) -> None:
    """A :class:`PipelineError` for a name that can be no topic's (``''`` was looked up, and
    reported as "no topic  on Kafka")."""
    from pipeline.topic_names import kafka_name_problem

    for topic in topics:
        problem = kafka_name_problem(topic)
        if problem is not None:
            raise PipelineError(f"cannot record: {problem}")


def _require_topics(settings: PipelineSettings, topics: list[str]) -> None:
    """A :class:`PipelineError` naming the topics that do not exist (the admin client never
    creates one)."""
    bootstrap = settings.kafka.bootstrap_servers
    # Imported here, as the recorder and the recording below: `pipeline --help` stays light.
    from pipeline.kafka.clients import build_admin
    from pipeline.topics.admin import describe_cluster_topics

    found = describe_cluster_topics(build_admin(settings.kafka), topics, bootstrap=bootstrap)
    missing = [topic for topic in topics if topic not in found]
    if missing:
        raise PipelineError(
            f"no topic {', '.join(missing)} on Kafka at {bootstrap}: nothing recorded"
        )


def _check_out(out: str) -> None:
    """A :class:`PipelineError` for an ``--out`` that can be no recording's file, a directory
    or a file in a folder that is not there, before Kafka is asked anything or the recording
    announced (it was said after the line that said what was being recorded). Nothing is
    created: the file is opened once the topics are known to exist (:func:`_output`)."""
    if out == "-":
        return
    if not out:
        raise PipelineError("--out is empty: give a file, or - for stdout")
    path = Path(out)
    if out.endswith(("/", os.sep)) and not path.is_dir():
        # Path() drops the slash: "new/" was written as a file named "new".
        raise PipelineError(f"--out {out} names a folder, and a recording is a file")
    try:
        is_dir = path.is_dir()
        folder = path.absolute().parent
        folder_is_dir, folder_exists = folder.is_dir(), folder.exists()
    except OSError as error:  # a name too long: is_dir() says False only when it is not
        raise PipelineError(f"cannot write {path}: {error.strerror or error}") from None
    if is_dir:
        raise PipelineError(f"--out {path} is a directory")
    if not folder_is_dir:
        why = errno.ENOTDIR if folder_exists else errno.ENOENT
        raise PipelineError(f"cannot write {path}: {os.strerror(why)}")


@contextmanager
def _output(out: str) -> Iterator[IO[bytes]]:
    if out == "-":
        sys.stdout.flush()
        try:
            yield sys.stdout.buffer
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            raise  # the reader went away (| head): the command stops quietly
        except OSError as error:  # stdout refused (a full disk): one line, not a traceback
            raise stdout_refused(error) from None
        return
    _check_out(out)  # again: the folder may have changed while Kafka was asked
    path = Path(out)
    try:
        opened = path.open("wb")
    except OSError as error:
        raise PipelineError(f"cannot write {path}: {error.strerror}") from None
    try:
        with opened:
            yield opened
    except OSError as error:  # a full disk, say: the recording so far, whole lines only
        _cut_after_last_line(path)
        raise PipelineError(
            f"cannot write {path}: {error.strerror}; it holds the messages recorded before, "
            "as complete lines"
        ) from None


def _cut_after_last_line(path: Path) -> None:
    """Truncate ``path`` after its last newline (a write that failed may have left part of a
    line); nothing when that fails too."""
    chunk = 64 * 1024
    try:
        with path.open("r+b") as file:
            end = file.seek(0, os.SEEK_END)
            while end > 0:
                start = max(0, end - chunk)
                file.seek(start)
                newline = file.read(end - start).rfind(b"\n")
                if newline >= 0:
                    file.truncate(start + newline + 1)
                    return
                end = start
            file.truncate(0)
    except OSError:
        pass


# --- the command ------------------------------------------------------------------------------


def record(
    ctx: typer.Context,
    topics: Annotated[list[str], typer.Argument(help="The topics to record; they must exist.")],
    out: Annotated[
        str,
        typer.Option(
            "--out",
            "-o",
            help="The recording file (overwritten), or - for stdout.",
            show_default=False,
        ),
    ],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the oldest message kept.")
    ] = False,
    from_time: Annotated[
        str | None,
        typer.Option(
            "--from-time",
            help="Start at the first message stamped at or after this time: "
            "2025-12-02T14:30:00Z (local time without a zone), -15m (that long ago), "
            "or ms since the epoch.",
        ),
    ] = None,
    from_group: Annotated[
        str | None,
        typer.Option(
            "--from-group",
            help="Start where this consumer group committed (the beginning where it has not); "
            "the group is only read, never joined or committed.",
            callback=group_name,
        ),
    ] = None,
    until_end: Annotated[
        bool, typer.Option("--until-end", help="Stop at the end offsets seen at start.")
    ] = False,
    until_time: Annotated[
        str | None,
        typer.Option(
            "--until-time",
            help="Stop at the first message stamped at or after this time, and once the time "
            "has passed, at the end offsets of that moment (same forms as --from-time).",
        ),
    ] = None,
    max_messages: Annotated[
        int | None, typer.Option("--max", "-n", min=1, help="Stop after this many messages.")
    ] = None,
) -> None:
    """Record TOPIC(s) to a file: one message a line, as JSON in kcat's field names.

    Keys, values and headers are kept exactly: text as text, other bytes
    as {"base64": ...}; headers as name-value pairs in order, duplicates
    and nulls included. `pipeline replay` sends a recording back.

    Without a start option it records what arrives from now on; without a
    stop option, until Ctrl-C (or SIGTERM). With several stop options, the
    first reached ends it. Progress and the summary go to stderr.

    Exit codes:
    0 done: a stop option was reached;
    2 usage or setup error (option, topic, file, Kafka unreachable),
    or a partition could not be read to the end (also at a message whose
    header name is not UTF-8, which confluent-kafka cannot read);
    130 Ctrl-C, 143 SIGTERM (what was recorded is in the file, every line
    complete, and the summary is printed first).

    Examples:
      pipeline record requests.orders --from-beginning --until-end -o orders.jsonl
      pipeline record requests.orders saga.events --from-time -2h --until-time -1h -o 1h.jsonl
      pipeline record requests.orders --from-group orders-service --until-end -o - | head
    """
    from pipeline.replay.recorder import record_topics
    from pipeline.replay.recording import RecordingWriter

    settings = ctx.obj
    assert isinstance(settings, PipelineSettings)
    now = datetime.now().astimezone()
    start = start_of(
        beginning=from_beginning,
        time_ms=None if from_time is None else parse_time(from_time, now=now),
        group=from_group,
    )
    stop = Stop(
        at_end=until_end,
        until_ms=None if until_time is None else parse_time(until_time, now=now),
        max_messages=max_messages,
    )
    until = stop.until_ms
    if isinstance(start, FromTime) and until is not None and until <= start.timestamp_ms:
        raise PipelineError(
            f"--until-time {until_time} is not after --from-time {from_time}: nothing to record"
        )
    topics = list(dict.fromkeys(topics))
    _check_topic_names(topics)
    _check_out(out)
    _require_topics(settings, topics)
    tally = _Tally()
    interrupted: KeyboardInterrupt | None = None
    began = time.monotonic()
    with _output(out) as stream, signals_interrupt():
        # Once the file is open: a file that cannot be written is the only line.
        _err.print(_describe(topics, start, stop))
        writer = RecordingWriter(stream)
        # The recording on the terminal: a live line would be drawn into it.
        on_screen = out == "-" and sys.stdout.isatty()
        progress = CountProgress("recording", on_terminal="lines" if on_screen else "live")

        def batch_done(count: int) -> None:
            stream.flush()  # a live recording can be followed (tail -f) batch by batch
            progress.advance(count)

        messages = record_topics(
            settings.kafka, topics, start=start, stop=stop, on_progress=batch_done
        )
        try:
            with progress:
                for message in messages:
                    writer.write(message)
                    tally.add(message)
        except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM (Terminated)
            interrupted = interrupt
        except BrokenPipeError:  # --out - and the reader went away (| head): stop quietly
            silence_stdout()
            return
        finally:
            messages.close()
    _summary("stdout" if out == "-" else out, tally, writer.count, time.monotonic() - began)
    if interrupted is not None:
        _err.print("stopped" if stop.unbounded else "interrupted before the end asked for")
        raise typer.Exit(exit_code(interrupted))
