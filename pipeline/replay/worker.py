"""One process of a replay with several (processes.py): it reads its lines, then sends them.

The parent reads the file and hands each process the lines it owns, as they come, in batches
(:func:`batch`): ``("lines", numbers, lines, keep)``. The process reads each line whole, which
checks it, and keeps the message when ``keep`` says so (the parent keeps the memory bounded).
Then, in order, over its pipe:

1. ``("checked",)``: it answers ``("checked",)``, or ``("bad", number, why)`` for its first
   line that is not a message;
2. ``("send",)``: it sends the messages it kept, then those of ``("more", numbers, lines)``
   batches (the lines it did not keep, read again by the parent), until ``("end",)``; and
   answers ``("sent", summary)``, ``("failed", summary, failed, first_error)`` or
   ``("interrupted", summary)``;
3. ``("stop",)`` at any point ends it without sending more.

Any other failure is answered ``("error", why)``. The first SIGINT or SIGTERM interrupts it
(what it sent is flushed and counted); later ones are ignored, so that flush runs to its end.
"""

from __future__ import annotations

import gc
import signal
from array import array
from collections.abc import Iterator
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

from pipeline.replay.recording import ProducibleMessage, RecordingError, message_for_replay
from pipeline.replay.replayer import (
    ReplayFailed,
    ReplayInterrupted,
    ReplaySummary,
    replay_into_kafka,
)
from pipeline.replay.routing import ReplayError
from pipeline.settings import KafkaSettings

__all__ = ["ReplayJob", "batch", "run_replay_process"]


class ReplayJob:
    """What every process of one replay is given (the options of ``replay_into_kafka``)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        source: str,
        *,
        topic: str | None,
        preserve_partitions: bool,
        rewrite_ids: bool,
    ) -> None:
        self.kafka = kafka
        self.source = source
        self.topic = topic
        self.preserve_partitions = preserve_partitions
        self.rewrite_ids = rewrite_ids


def batch(numbers: list[int], lines: list[bytes]) -> tuple[bytes, bytes]:
    """Line numbers and their raw lines, as two strings of bytes to send over a pipe."""
    return array("q", numbers).tobytes(), b"\n".join(lines)


def _unbatch(numbers: bytes, lines: bytes) -> tuple[array[int], list[bytes]]:
    found = array("q")
    found.frombytes(numbers)
    return found, lines.split(b"\n")


class _StopOnce:
    """The first SIGINT or SIGTERM raises ``KeyboardInterrupt``; later ones are ignored."""

    def __init__(self) -> None:
        self.stopping = False

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, _signum: int, _frame: FrameType | None) -> None:
        if not self.stopping:
            self.stopping = True
            raise KeyboardInterrupt


class _Lines:
    """This process's lines: read whole as they come (checked), and kept raw when asked.

    Raw, not read: keeping a hundred thousand messages as Python objects took twice as long
    as reading them again when they are sent (fresh memory for every object, measured).
    """

    def __init__(self, job: ReplayJob, conn: Connection) -> None:
        self._job = job
        self._conn = conn
        self._kept: list[tuple[bytes, bytes]] = []
        self.bad: tuple[int, str] | None = None

    def check(self) -> str:
        """Read batches until the parent says what next; the word that ended them."""
        source = self._job.source
        keep = self._kept.append
        while True:
            word = self._conn.recv()
            if word[0] != "lines":
                return str(word[0])
            if self.bad is not None:
                continue  # past the first bad line: nothing more to check
            numbers, lines = _unbatch(word[1], word[2])
            for number, raw in zip(numbers, lines, strict=True):
                try:
                    message_for_replay(raw, source, number)
                except RecordingError as error:
                    self.bad = (number, str(error))
                    break
            if word[3]:
                keep((word[1], word[2]))

    def messages(self) -> Iterator[ProducibleMessage]:
        """The messages to send, in file order: those kept, then those of ``more`` batches."""
        source = self._job.source
        kept, self._kept = self._kept, []
        kept.reverse()
        while kept:  # each batch is let go once read
            numbers, lines = _unbatch(*kept.pop())
            for number, raw in zip(numbers, lines, strict=True):
                message = message_for_replay(raw, source, number)
                if message is not None:
                    yield message
        while True:
            word = self._conn.recv()
            if word[0] != "more":
                return
            numbers, lines = _unbatch(word[1], word[2])
            for number, raw in zip(numbers, lines, strict=True):
                message = message_for_replay(raw, source, number)
                if message is not None:
                    yield message


def run_replay_process(job: ReplayJob, index: int, conn: Connection, progress: Any) -> None:
    """The body of replay process ``index``; ``progress[index]`` counts what it queued."""
    _StopOnce().install()
    # It makes no reference cycles and keeps many messages until they are sent: the cyclic
    # collector would only scan them again and again.
    gc.disable()
    try:
        lines = _Lines(job, conn)
        word = lines.check()
        if word != "checked":
            return
        conn.send(("checked",) if lines.bad is None else ("bad", *lines.bad))
        if lines.bad is not None or conn.recv()[0] != "send":
            return

        def advance(count: int) -> None:
            progress[index] += count

        summary = replay_into_kafka(
            job.kafka,
            lines.messages(),
            topic=job.topic,
            preserve_partitions=job.preserve_partitions,
            rewrite_ids=job.rewrite_ids,
            on_progress=advance,
        )
        conn.send(("sent", summary))
    except ReplayInterrupted as interrupted:
        conn.send(("interrupted", interrupted.summary))
    except ReplayFailed as failed:
        conn.send(("failed", failed.summary, failed.failed, failed.first_error))
    except KeyboardInterrupt:  # before sending began
        conn.send(("interrupted", ReplaySummary(0, {}, 0.0)))
    except (EOFError, BrokenPipeError):
        pass  # the parent is gone: nobody to answer
    except Exception as error:  # the parent says it, in one line
        known = isinstance(error, ReplayError | RecordingError)
        conn.send(("error", str(error) if known else f"{type(error).__name__}: {error}"))
    finally:
        conn.close()
