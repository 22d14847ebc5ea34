"""One process of a replay with several (processes.py): it keeps its lines, then sends them.

The parent reads the file, checking every line, and hands each process the lines it owns in
batches (:func:`encode_batch`, one ``send_bytes`` each, no pickling: a copy less per line).
The parent's words, in order:

1. :data:`LINES_KEPT` batches, to keep (raw: the parent keeps the memory bounded);
2. :data:`SEND` (with the target topics' partition counts, checked: JSON after the word): it
   sends the messages it kept, then those of :data:`MORE` batches (the lines it
   did not keep, read again by the parent), until :data:`END`; and answers
   ``("sent", summary)``, ``("failed", summary, failed, first_error)`` or
   ``("interrupted", summary)``;
3. :data:`STOP` at any point ends it without sending anything.

An error that stops the sending part way (a message the client refuses: its line is named) is
answered ``("stopped", summary, why)``, with what was acknowledged before it; any other
failure ``("error", why)``. SIGINT or SIGTERM stops it (:class:`_Stop`):
it sends no more batches, flushes what it sent, and answers ``("interrupted", summary)``.
"""

from __future__ import annotations

import gc
import json
import signal
from array import array
from collections.abc import Iterator
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

from pipeline.replay.recording import (
    LinePlace,
    ProducibleMessage,
    RecordingError,
    parse_numbered_lines_for_replay,
)
from pipeline.replay.replayer import (
    ReplayFailed,
    ReplayInterrupted,
    ReplayProducer,
    ReplayStopped,
    ReplaySummary,
    replay_into_kafka,
)
from pipeline.replay.routing import ReplayError
from pipeline.settings import KafkaSettings

__all__ = [
    "END",
    "LINES_KEPT",
    "MORE",
    "SEND",
    "STOP",
    "Duplex",
    "ReplayJob",
    "decode_batch",
    "encode_batch",
    "run_replay_process",
]


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


#: The parent's words (the first byte of each).
LINES_KEPT = b"L"
MORE = b"M"
SEND = b"S"
END = b"E"
STOP = b"X"


def encode_batch(word: bytes, numbers: list[int], lines: list[bytes]) -> bytes:
    """A batch of raw lines (each ending with a newline, but perhaps the file's last) and their
    numbers: the word, the count, the numbers, the lines."""
    head = word + len(numbers).to_bytes(4, "little") + array("q", numbers).tobytes()
    return b"".join([head, *lines])


def decode_batch(data: bytes) -> tuple[bytes, array[int], list[bytes]]:
    """The word, line numbers and lines (without their newlines) of an :func:`encode_batch`."""
    count = int.from_bytes(data[1:5], "little")
    end = 5 + 8 * count
    numbers = array("q")
    numbers.frombytes(data[5:end])
    lines = data[end:].split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    return data[:1], numbers, lines


#: The signals that ask a replay process to stop.
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


class _Stop:
    """SIGINT and SIGTERM only ask this process to stop: it stops taking lines at the next
    batch (a millisecond of work or so), and ``replay_into_kafka`` flushes and returns as
    usual. Raising at once, as Python does, could surface inside confluent-kafka's ``produce``
    as another error (seen: a ``TypeError`` about a header key), and the count was lost."""

    def __init__(self) -> None:
        self.requested = False

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)
        # The parent starts this process with both blocked (see _Team.__enter__): a signal
        # that came while it started is delivered now, to the handler above.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    def _handle(self, _signum: int, _frame: FrameType | None) -> None:
        self.requested = True


class _Lines:
    """This process's lines, kept raw as they come (the parent read them whole: they are
    messages), until the word to send them."""

    def __init__(self, job: ReplayJob, conn: Connection, stop: _Stop) -> None:
        self._job = job
        self._conn = conn
        self._stop = stop
        self._kept: list[bytes] = []
        #: The line of the message given last (a refused message is named by it).
        self.place = LinePlace(job.source)

    def take(self) -> bytes:
        """Keep the batches to keep until the parent says what next; the word that did."""
        keep = self._kept.append
        while True:
            data = self._conn.recv_bytes()
            if data[:1] != LINES_KEPT:
                return data
            keep(data)

    def messages(self) -> Iterator[ProducibleMessage]:
        """The messages to send, in file order: those kept, then those of ``more`` batches;
        none past the batch where a stop was asked."""
        source = self._job.source
        place = self.place
        stop = self._stop
        kept, self._kept = self._kept, []
        kept.reverse()
        while kept:  # each batch is let go once read
            if stop.requested:
                return
            _, numbers, lines = decode_batch(kept.pop())
            yield from parse_numbered_lines_for_replay(
                zip(numbers, lines, strict=True), source=source, place=place
            )
        while not stop.requested:
            data = self._conn.recv_bytes()
            if data[:1] != MORE:
                return
            _, numbers, lines = decode_batch(data)
            yield from parse_numbered_lines_for_replay(
                zip(numbers, lines, strict=True), source=source, place=place
            )


def run_replay_process(job: ReplayJob, index: int, conn: Connection, progress: Any) -> None:
    """The body of replay process ``index``; ``progress[index]`` counts what it queued."""
    stop = _Stop()
    stop.install()
    # It makes no reference cycles (a message is let go once produced): the cyclic collector
    # would only run for nothing, tens of thousands of times a second's worth of allocations.
    gc.disable()
    try:
        # Made first, it gets its producer id while the parent reads the file.
        prepared = ReplayProducer(job.kafka)
        lines = _Lines(job, conn, stop)
        word = lines.take()
        if word[:1] != SEND:
            return
        # The target topics' partition counts, which the parent checked.
        partition_counts: dict[str, int] = json.loads(word[1:] or b"{}")
        if stop.requested:  # asked to stop before sending anything
            conn.send(("interrupted", ReplaySummary(0, {}, 0.0)))
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
            partition_counts=partition_counts,
            prepared=prepared,
            place=lines.place,
        )
        conn.send(("interrupted" if stop.requested else "sent", summary))
    except ReplayStopped as stopped:  # part way: what went before is counted
        conn.send(("stopped", stopped.summary, str(stopped.error)))
    except ReplayInterrupted as interrupted:  # a KeyboardInterrupt raised by other code
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


class Duplex:
    """A process's two pipe ends as one connection: ``recv`` from one, ``send`` to the other."""

    def __init__(self, reading: Connection, writing: Connection) -> None:
        self._reading = reading
        self._writing = writing

    def recv_bytes(self) -> bytes:
        return self._reading.recv_bytes()

    def send(self, answer: Any) -> None:
        self._writing.send(answer)

    def close(self) -> None:
        self._reading.close()
        self._writing.close()
