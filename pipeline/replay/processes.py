"""Replaying a recording file: checked whole first, then sent by several processes at once.

One Python process spends most of its time in confluent-kafka's ``produce`` and in reading
the lines (~7 µs of CPU a message with 7 headers, against ~2.5 µs for ``kcat -P``), so
:func:`replay_recording` can split the sending over ``processes`` processes (forked), each
owning whole partitions (shares.py): each partition's messages still go out in file order,
through one idempotent producer.

1. **check**: this process reads every line whole (the first that is not a message stops the
   replay: :class:`RecordingError`), surveys the recording, and hands each line to the process
   that owns it, which keeps it raw (up to :data:`KEEP_BYTES`; the rest is read again when
   sending). Then the target topics are checked: missing, or lacking a recorded partition, is
   a :class:`ReplayError`. Nothing is sent before.
2. ``on_checked(survey, processes)`` is called, then every process sends its messages
   (:func:`~pipeline.replay.replayer.replay_into_kafka`: the same producer, settings and
   accounting as one process), those it kept, then the rest, routed to it again.
3. this process adds up what each acknowledged: one :class:`ReplaySummary`, or one
   :class:`ReplayFailed`, :class:`ReplayInterrupted` or :class:`ReplayError` naming the first
   process that failed and why (the others are stopped, and flush what they sent): a
   :class:`ReplayStopped`, with the summary of what they acknowledged, once any had queued
   messages, as with one process.

Ctrl-C or SIGTERM reaches every process (this one passes it on): each flushes what it sent,
and the summary counts it. With ``processes=1``, or with pacing (``--rate``, ``--speed``:
one clock for the whole recording), it all runs in this process: the file is read once to
check it, then again to send it. Either way, what is sent is what was checked: the file up to
where the check read it (lines added to it since are not sent). A pipe (a shell's
``<(...)``), which cannot be read twice, is replayed by one process that keeps its messages
from the check to the sending.

With ``--speed`` the messages go in :class:`~pipeline.replay.pacing.RecordedOrder`, the
recorded partitions merged by timestamp (:mod:`pipeline.replay.by_time`).

Several processes pay off when cores are idle: they spend more CPU in all (this process reads
every line, then its owner reads it again) to send sooner. bench/replay.py measures both.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection, wait
from pathlib import Path
from types import FrameType
from typing import Any

from pipeline.gc_tuning import collector_paused
from pipeline.kafka.clients import build_admin
from pipeline.replay.by_time import Places, let_go_in, read_in_order, survey_places
from pipeline.replay.pacing import Pacing, RecordedOrder
from pipeline.replay.pipes import ChildPipes, widen
from pipeline.replay.recording import (
    LinePlace,
    ProducibleMessage,
    open_recording,
    parse_lines_for_replay,
    read_recording_for_replay,
    within,
)
from pipeline.replay.replayer import (
    ReplayFailed,
    ReplayInterrupted,
    ReplayProducer,
    ReplayStopped,
    ReplaySummary,
    replay_into_kafka,
)
from pipeline.replay.routing import RecordingSurvey, ReplayError, problems, survey
from pipeline.replay.shares import LineRouter, ProcessShares, default_processes
from pipeline.replay.tally import ReplayProgress, ReplayTally
from pipeline.replay.worker import (
    END,
    MORE,
    SEND,
    STOP,
    STOP_SIGNALS,
    Duplex,
    ReplayJob,
    run_replay_process,
)
from pipeline.settings import KafkaSettings
from pipeline.topics.admin import describe_cluster_topics

__all__ = ["KEEP_BYTES", "MAX_PROCESSES", "check_recording", "replay_recording", "within"]

#: How many bytes of its own lines a process keeps (raw) between the check and the sending;
#: past that, this process reads the rest of the file again when sending and hands it on.
KEEP_BYTES = 128 * 1024 * 1024
#: The most processes a replay runs: each owns whole partitions and a producer of its own, and
#: more than a few per core only compete for it.
MAX_PROCESSES = 64
#: How often the parent adds up the processes' progress.
_PROGRESS_EVERY_S = 0.1


def check_recording(
    kafka: KafkaSettings, path: Path, found: RecordingSurvey, *, preserve_partitions: bool
) -> dict[str, int]:
    """The partition counts of the target topics of a recording (``found``); a
    :class:`ReplayError` when some are missing or, with ``preserve_partitions``, lack a
    recorded partition."""
    return _check_targets(_PartitionCounts(kafka), path, found, preserve_partitions)


class _PartitionCounts:
    """Topics' partition counts (None: no such topic), each looked up once, through one admin
    client: a replay asks for them before, while and after reading the file."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        self._admin: Any = None
        self._known: dict[str, int | None] = {}

    def of(self, names: Iterable[str]) -> dict[str, int | None]:
        names = list(names)
        missing = [name for name in names if name not in self._known]
        if missing:
            if self._admin is None:
                self._admin = build_admin(self.kafka)
            found = describe_cluster_topics(
                self._admin, missing, bootstrap=self.kafka.bootstrap_servers
            )
            for name in missing:
                self._known[name] = found[name].partitions if name in found else None
        return {name: self._known[name] for name in names}

    def __call__(self, topic: str) -> int | None:
        return self.of([topic])[topic]


def _check_targets(
    sizes: _PartitionCounts, path: Path, found: RecordingSurvey, preserve_partitions: bool
) -> dict[str, int]:
    if not found.messages:
        return {}
    counts = {
        name: count
        for name, count in sizes.of(found.partitions_needed).items()
        if count is not None
    }
    reasons = problems(found, counts, preserve=preserve_partitions)
    if reasons:
        bootstrap = sizes.kafka.bootstrap_servers
        raise ReplayError(f"cannot replay {path} (Kafka at {bootstrap}): {'; '.join(reasons)}")
    return counts


def replay_recording(
    kafka: KafkaSettings,
    path: Path,
    *,
    processes: int | None = None,
    topic: str | None = None,
    preserve_partitions: bool = False,
    rewrite_ids: bool = False,
    pacing: Pacing | None = None,
    on_checked: Callable[[RecordingSurvey, int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ReplaySummary:
    """Check the recording at ``path`` whole, then send it with ``processes`` processes
    (default: as many as cores, at most one per target partition); see the module docstring.

    ``topic``, ``preserve_partitions``, ``rewrite_ids``, ``pacing`` and ``on_progress`` are
    :func:`~pipeline.replay.replayer.replay_into_kafka`'s. A recording without messages sends
    nothing (``on_checked`` still says so).
    """
    paced = pacing is not None and (pacing.rate_per_s is not None or pacing.speed is not None)
    sizes = _PartitionCounts(kafka)
    if processes is None:
        # A pipe (or anything but a regular file) is read once, as it comes: by one process.
        one = paced or _read_once(path)
        processes = 1 if one else _default_processes(sizes, path, topic)
    if processes < 1:
        raise ReplayError(f"a replay needs at least one process, got {processes}")
    if processes > MAX_PROCESSES:
        raise ReplayError(f"a replay runs at most {MAX_PROCESSES} processes, got {processes}")
    if paced and processes > 1:
        raise ReplayError("a paced replay (--rate, --speed) runs in one process: one clock")
    if processes > 1 and _read_once(path):
        raise ReplayError(f"{path} is not a regular file (a pipe?): it is replayed by one process")
    if processes == 1:
        return _replay_here(
            sizes, path, topic, preserve_partitions, rewrite_ids, pacing, on_checked, on_progress
        )
    options = {
        "topic": topic,
        "preserve_partitions": preserve_partitions,
        "rewrite_ids": rewrite_ids,
    }
    with _Team(sizes, path, processes, options) as team:
        try:
            found = team.check()
            counts = _check_targets(sizes, path, found, preserve_partitions)
        except KeyboardInterrupt as interrupt:  # nothing sent yet
            raise ReplayInterrupted(ReplaySummary(0, {}, 0.0), interrupt) from None
        team.catch_signals()
        if on_checked is not None:  # the processes that have something to send
            on_checked(found, max(1, team.senders))
        if not found.messages:
            return ReplaySummary(sent=0, per_topic={}, elapsed_s=0.0)
        return team.send(on_progress, counts)


def _replay_here(
    sizes: _PartitionCounts,
    path: Path,
    topic: str | None,
    preserve_partitions: bool,
    rewrite_ids: bool,
    pacing: Pacing | None,
    on_checked: Callable[[RecordingSurvey, int], None] | None,
    on_progress: Callable[[int], None] | None,
) -> ReplaySummary:
    """Everything in this process: read the file once to check it, then again to send it; a
    pipe, which cannot be read twice, is read once and its messages kept in between. (Kept
    from a file too, they made the replay slower, not faster: measured, 100,000 messages of
    550 B, 1.19-1.32 s read twice, 1.31-1.51 s read once.) With ``--speed``, in
    :class:`RecordedOrder` (see the module docstring)."""
    prepared = ReplayProducer(sizes.kafka)  # gets its producer id while the file is read
    by_time = pacing is not None and pacing.speed is not None
    kept: list[ProducibleMessage] | None = None
    places: Places | None = None
    order: RecordedOrder | None = None
    checked_bytes = 0
    try:
        if _read_once(path):
            # No reference cycles among them: the collector would only scan them, again and
            # again while the list grows.
            with collector_paused():
                kept = list(read_recording_for_replay(path))
            found = survey(kept, topic=topic)
            if by_time:
                order = RecordedOrder()
                for message in kept:
                    order.add(message.topic, message.partition, message.timestamp_ms)
        else:
            with open_recording(path) as lines:
                if by_time:
                    found, places = survey_places(lines, str(path), topic)
                    order = places.order
                else:
                    found = survey(parse_lines_for_replay(lines, source=str(path)), topic=topic)
                checked_bytes = lines.tell()  # what was checked: what is sent
        if order is not None:
            # Where --speed's clock starts: the first stamped message sent, in this order (the
            # plan's estimate of the replay's time counts from there).
            found = dataclasses.replace(found, start_ms=order.start_ms)
        counts = _check_targets(sizes, path, found, preserve_partitions)
    except KeyboardInterrupt as interrupt:  # nothing sent yet
        raise ReplayInterrupted(ReplaySummary(0, {}, 0.0), interrupt) from None
    if on_checked is not None:
        on_checked(found, 1)
    if not found.messages:
        return ReplaySummary(sent=0, per_topic={}, elapsed_s=0.0)
    messages: Iterator[ProducibleMessage]
    place: LinePlace | None = None  # the line of the message sent last, when it is read again
    if kept is not None:
        messages = _let_go(kept) if order is None else let_go_in(kept, order)
    else:
        place = LinePlace(str(path))
        if places is not None:
            messages = read_in_order(path, places, place)
        else:
            messages = _read_checked(path, checked_bytes, place)
    return replay_into_kafka(
        sizes.kafka,
        messages,
        topic=topic,
        preserve_partitions=preserve_partitions,
        rewrite_ids=rewrite_ids,
        pacing=pacing,
        on_progress=on_progress,
        partition_counts=counts,
        prepared=prepared,
        place=place,
    )


def _read_checked(path: Path, size: int, place: LinePlace) -> Iterator[ProducibleMessage]:
    """The messages of the first ``size`` bytes of the recording at ``path``: those checked,
    not lines added to the file since; ``place`` follows their lines."""
    with open_recording(path) as lines:
        yield from parse_lines_for_replay(within(lines, size), source=str(path), place=place)


def _read_once(path: Path) -> bool:
    """Whether ``path`` cannot be read twice (a pipe, a shell's ``<(...)``): not a file."""
    try:
        return not stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False  # reading it says why


def _let_go(kept: list[ProducibleMessage]) -> Iterator[ProducibleMessage]:
    """The messages of ``kept`` in order, each let go once taken (the list is emptied)."""
    kept.reverse()
    pop = kept.pop
    while kept:
        yield pop()


def _default_processes(sizes: _PartitionCounts, path: Path, topic: str | None) -> int:
    """As many as cores, at most the partitions of the target of the file's first message."""
    with open_recording(path) as lines:
        first = next(iter(parse_lines_for_replay(lines, source=str(path))), None)
    if first is None:
        return 1
    return default_processes(sizes(topic if topic is not None else first.topic) or 1)


# --- the processes ------------------------------------------------------------------------


#: Lines go to a process in batches of about this many bytes; its pipe holds several.
_BATCH_BYTES = 128 * 1024


class _Team:
    """The parent's side: it forks the processes, routes them their lines, gives the word to
    send, and adds up their answers."""

    def __init__(
        self, sizes: _PartitionCounts, path: Path, processes: int, options: dict[str, Any]
    ) -> None:
        self._path = path
        self._job = ReplayJob(sizes.kafka, str(path), **options)
        shares = ProcessShares(processes, preserve_partitions=options["preserve_partitions"])
        self._router = LineRouter(
            shares,
            topic=options["topic"],
            preserve_partitions=options["preserve_partitions"],
            partitions_of=sizes,
            source=str(path),
        )
        self._processes_count = processes
        methods = multiprocessing.get_all_start_methods()
        # fork: the processes start at once, with everything imported; spawn elsewhere.
        self._context: Any = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        self._progress: Any = self._context.RawArray("q", processes)
        self._pipes: list[ChildPipes] = []
        self._processes: list[Any] = []
        self._saved_handlers: dict[int, Any] = {}
        #: Where the lines some process did not keep begin: (line number, byte offset).
        self._resume: tuple[int, int] | None = None
        #: The bytes of the file the check read: the rest is read again up to there only.
        self._checked_bytes = 0
        #: Ctrl-C or SIGTERM while sending (:meth:`catch_signals`).
        self._interrupt: KeyboardInterrupt | None = None

    def __enter__(self) -> _Team:
        for index in range(self._processes_count):
            child_reads, parent_writes = self._context.Pipe(duplex=False)
            parent_reads, child_writes = self._context.Pipe(duplex=False)
            widen(parent_writes)
            process = self._context.Process(
                target=run_replay_process,
                args=(self._job, index, Duplex(child_reads, child_writes), self._progress),
                name=f"pipeline-replay-{index}",
                daemon=True,
            )
            # Started with SIGINT and SIGTERM blocked, so that one coming before the process
            # installed its own handlers waits for them (the mask is inherited), instead of
            # reaching the parent's handler copied into the child (seen: a traceback from
            # multiprocessing's bootstrap when a refusal stopped a process just starting).
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                process.start()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            child_reads.close()
            child_writes.close()
            self._pipes.append(ChildPipes(parent_writes, parent_reads, KEEP_BYTES))
            self._processes.append(process)
        return self

    def __exit__(self, error_type: object, *_: object) -> None:
        try:
            if error_type is not None:
                self._stop_all()
            for pipes in self._pipes:
                pipes.tell(STOP)  # a process still waiting for a word ends
            for process in self._processes:
                process.join(timeout=60)
                if process.is_alive():
                    process.kill()
                    process.join()
            for pipes in self._pipes:
                pipes.to_child.close()
                pipes.from_child.close()
        finally:
            for signum, handler in self._saved_handlers.items():
                signal.signal(signum, handler)

    def _stop_all(self) -> None:
        """Interrupt every process still running (each flushes what it sent, then answers)."""
        for process in self._processes:
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)

    def _collect(self, waiting: dict[int, Connection]) -> list[tuple[int, tuple[Any, ...]]]:
        """The answers that came within a short while, ``(index, answer)``, taken out of
        ``waiting``; a process that ended without one answers ``("error", why)``."""
        answers = []
        for ready in wait(list(waiting.values()), timeout=_PROGRESS_EVERY_S):
            index = next(i for i, waited in waiting.items() if waited is ready)
            conn = waiting[index]
            del waiting[index]
            try:
                answer = conn.recv()
            except EOFError:
                process = self._processes[index]
                process.join(timeout=5)
                answer = ("error", f"ended without a word (exit code {process.exitcode})")
            answers.append((index, answer))
        return answers

    def _waiting(self) -> dict[int, Connection]:
        return {index: pipes.from_child for index, pipes in enumerate(self._pipes)}

    def check(self) -> RecordingSurvey:
        """Read every line whole (a check: the first that is not a message stops everything,
        :class:`RecordingError`) and hand it to its process, which keeps it while it has room;
        the whole recording's survey."""
        owner_of = self._router.owner
        pipes = self._pipes
        offset = 0
        with open_recording(self._path) as lines:
            # Once per line of the file: the batching is written out here, not called.
            for number, raw in enumerate(lines, start=1):
                owner = owner_of(raw, number)
                if owner is not None:
                    mine = pipes[owner]
                    if not mine.numbers:
                        mine.start = (number, offset)
                    mine.numbers.append(number)
                    mine.lines.append(raw)
                    mine.size += len(raw)
                    if mine.size >= _BATCH_BYTES:
                        self._note_resume(mine.flush_to_keep())
                offset += len(raw)
        self._checked_bytes = offset
        for mine in pipes:
            self._note_resume(mine.flush_to_keep())
        self.senders = sum(1 for mine in pipes if mine.start[0] > 0)  # processes with lines
        return self._router.survey

    def _note_resume(self, start: tuple[int, int] | None) -> None:
        if start is not None and (self._resume is None or start[0] < self._resume[0]):
            self._resume = start

    def send(
        self, on_progress: Callable[[int], None] | None, partition_counts: dict[str, int]
    ) -> ReplaySummary:
        """Tell every process to send; route again the lines some did not keep; add up their
        progress, then their summaries.

        Ctrl-C or SIGTERM since :meth:`catch_signals` is noted, not raised, and passed
        on to the processes, which stop, flush and answer; then it is raised, as
        :class:`ReplayInterrupted` with what they had acknowledged.
        """
        if self._interrupt is not None:  # since the check: nothing sent
            raise ReplayInterrupted(ReplaySummary(0, {}, 0.0), self._interrupt)
        began = time.monotonic()
        progress = ReplayProgress(self._progress, on_progress)
        word = SEND + json.dumps(partition_counts).encode()  # the targets, checked
        for pipes in self._pipes:
            pipes.tell(word)
        self._send_the_rest(progress)
        for pipes in self._pipes:
            pipes.tell(END)
        tally = ReplayTally()
        waiting = self._waiting()
        while waiting:
            for index, answer in self._collect(waiting):
                tally.add(index, answer)
                if answer[0] in ("error", "stopped"):
                    self._stop_all()  # one failed: the others stop too
            progress.report()
        summary = tally.summary(began)
        if self._interrupt is not None:
            raise ReplayInterrupted(summary, self._interrupt)
        if tally.errors:
            error = ReplayError(tally.errors[0])
            if tally.queued:  # said after the summary of what was acknowledged
                raise ReplayStopped(summary, error)
            raise error
        if tally.interrupted:
            raise ReplayInterrupted(summary, KeyboardInterrupt())
        if tally.failed:
            raise ReplayFailed(summary, tally.failed, tally.first_failure or "unknown")
        return summary

    def catch_signals(self) -> None:
        """Until exit, SIGINT and SIGTERM are noted and passed on to the processes rather than
        raised here: an exception at any point of the loops could lose a process's answer.
        The exception noted is what the handler before would have raised (so ``pipeline
        replay`` tells Ctrl-C from SIGTERM)."""
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread has signal handlers
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._saved_handlers[signum] = signal.getsignal(signum)
            signal.signal(signum, self._note_signal)

    def _note_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._interrupt is not None:
            return
        interrupt = KeyboardInterrupt()
        before = self._saved_handlers.get(signum)
        if callable(before):
            try:
                before(signum, frame)
            except KeyboardInterrupt as raised:
                interrupt = raised
        self._interrupt = interrupt
        self._stop_all()

    def _send_the_rest(self, progress: ReplayProgress) -> None:
        """The lines past what each process kept, read again and routed to it."""
        if self._resume is None:
            return
        first, offset = self._resume
        owner_of = self._router.owner
        pipes = self._pipes
        with open_recording(self._path) as lines:
            lines.seek(offset)
            checked = within(lines, self._checked_bytes - offset)  # no line added since
            for number, raw in enumerate(checked, start=first):
                owner = owner_of(raw, number, surveying=False)
                if owner is None:
                    continue
                mine = pipes[owner]
                if mine.first_not_kept is not None and number >= mine.first_not_kept:
                    mine.numbers.append(number)
                    mine.lines.append(raw)
                    mine.size += len(raw)
                    if mine.size >= _BATCH_BYTES:
                        mine.flush(MORE)
                        progress.report()
                        if self._interrupt is not None:
                            return
        for mine in pipes:
            mine.flush(MORE)
