"""One contender of bench/processing.py, run in a subprocess of its own.

``python bench/processing_worker.py KIND --topic T --group G --count N --sleep-ms S --out PATH
[--handler async|sync] [--loop uvloop|asyncio]``

Kinds:

- ``runtime``: our processor runtime exactly as ``pipeline process`` runs it
  (:func:`pipeline.processing.faust.app.run_processor`: migrate, check topics, Faust worker), with
  the
  settings from the environment (``PIPELINE_PROCESSING__*``, ``PIPELINE_DATABASE__*``) and one
  handler: ``--handler async`` awaits ``asyncio.sleep`` (on the event loop), ``--handler sync``
  calls ``time.sleep`` (in a worker thread);
- ``faust``: a plain Faust agent, one event at a time, ``await asyncio.sleep`` per event, on
  the ``--loop`` given;
- ``poll``: a plain confluent-kafka poll loop, ``time.sleep`` per event, an asynchronous commit
  every 100 events.

Every contender decodes the envelope (:func:`pipeline.envelope.decode`) and hands the
:class:`Event` to the same recording "handler", so the comparison is of the machinery around
it. The recorder notes the time of the first handler call and of the end of the last one
(``time.monotonic``), the process CPU time over that window, and each event's ``(key, seq)``
in the order the handler saw them; after ``count`` events it writes the JSON to ``--out`` and
ends the process at once. With ``--segments K`` the JSON also holds the same figures for each
of K consecutive equal parts of the run (by events handled).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from pipeline.envelope import Event, decode

_BEGAN = time.monotonic()


class Recorder:
    """Counts handled events; thread-safe (the runtime calls it from its worker threads)."""

    def __init__(self, count: int, out: Path, segments: int = 1) -> None:
        self.count = count
        self.out = out
        #: ``--segments K``: the run is also cut into K equal parts by events handled, each
        #: timed on its own (the quick profile's rounds: one start instead of K).
        self.segment_size = count // segments
        #: (monotonic time, process CPU time) at the end of each segment's last event.
        self.segment_ends: list[tuple[float, float]] = []
        self.handled = 0
        self.first: float | None = None
        self.last = 0.0
        self.cpu_first = 0.0
        self.cpu_last = 0.0
        self.seen: list[tuple[str, int]] = []
        self.done = threading.Event()
        self._lock = threading.Lock()

    def started(self) -> float:
        now = time.monotonic()
        if self.first is None:
            with self._lock:
                if self.first is None:
                    self.first = now
                    self.cpu_first = time.process_time()
                    _start_profile()
        return now

    def finished(self, event: Event) -> None:
        key = event.partitionkey or ""
        seq = int(event.data["seq"])
        with self._lock:
            if self.handled >= self.count:
                return
            self.seen.append((key, seq))
            self.handled += 1
            self.last = time.monotonic()
            if self.handled % self.segment_size == 0:
                self.segment_ends.append((self.last, time.process_time()))
            if self.handled == self.count:
                self.cpu_last = time.process_time()
                self._write()
                self.done.set()

    def _write(self) -> None:
        assert self.first is not None
        # Order per key: each key's events must come as seq 0, 1, 2, ... (a repeat or a gap is
        # a violation too, so a redelivery or a retried handler call would show).
        expected: dict[str, int] = {}
        violations = 0
        for key, seq in self.seen:
            if seq != expected.get(key, 0):
                violations += 1
            expected[key] = seq + 1
        elapsed = self.last - self.first
        report = {
            "handled": self.handled,
            "elapsed_s": elapsed,
            "events_per_s": (self.handled - 1) / elapsed if elapsed > 0 else 0.0,
            "cpu_ms_per_event": 1000 * (self.cpu_last - self.cpu_first) / self.handled,
            "order_violations": violations,
            "keys": len(expected),
            "startup_s": self.first - _BEGAN,
            "segments": self._segments(),
        }
        self.out.write_text(json.dumps(report))

    def _segments(self) -> list[dict[str, float]]:
        """Each segment's events/s and CPU ms per event; the first one's time runs from its
        first handler call (as the whole run's does), the others' from the end of the segment
        before."""
        assert self.first is not None
        size = self.segment_size
        starts = [(self.first, self.cpu_first), *self.segment_ends[:-1]]
        return [
            {
                "events_per_s": (size - (1 if n == 0 else 0)) / (end - start)
                if end > start
                else 0.0,
                "cpu_ms_per_event": 1000 * (cpu_end - cpu_start) / size,
            }
            for n, ((start, cpu_start), (end, cpu_end)) in enumerate(
                zip(starts, self.segment_ends, strict=True)
            )
        ]


#: A profile of the measured window (every thread), when bench/processing.py --profile asks.
_PROFILE = os.environ.get("PROCESSING_BENCH_PROFILE")


def _start_profile() -> None:
    if _PROFILE:
        import yappi  # a profiling aid, not a dependency: only with --profile

        yappi.set_clock_type("cpu")
        yappi.start(builtins=True, profile_threads=True)


def _save_profile() -> None:
    if _PROFILE:
        import yappi

        yappi.stop()
        yappi.get_func_stats().save(_PROFILE, type="pstat")


def _stop_when_done(recorder: Recorder) -> None:
    # The figures are written; a graceful shutdown (drain, final commit, leaving the group)
    # would only add seconds to every round, and each round has a fresh group.
    def wait() -> None:
        recorder.done.wait()
        _save_profile()
        os._exit(0)

    threading.Thread(target=wait, daemon=True, name="bench-stop").start()


def run_runtime(args: argparse.Namespace, recorder: Recorder) -> None:
    from pipeline.processing import Processor, UnitOfWork
    from pipeline.processing.faust.app import run_processor
    from pipeline.settings import PipelineSettings

    settings = PipelineSettings()
    processor = Processor(args.group)
    sleep_s = args.sleep_ms / 1000

    if args.handler == "async":

        @processor.handler(args.topic)
        async def handle_async(event: Event, unit: UnitOfWork) -> None:
            recorder.started()
            if sleep_s:
                await asyncio.sleep(sleep_s)
            recorder.finished(event)

    else:

        @processor.handler(args.topic)
        def handle(event: Event, unit: UnitOfWork) -> None:
            recorder.started()
            if sleep_s:
                time.sleep(sleep_s)
            recorder.finished(event)

    _stop_when_done(recorder)
    run_processor(processor, settings, loglevel="warn")


def run_faust(args: argparse.Namespace, recorder: Recorder) -> None:
    import faust

    from pipeline.processing.faust.app import use_event_loop
    from pipeline.settings import PipelineSettings

    use_event_loop(args.loop)

    kafka = PipelineSettings().kafka
    app = faust.App(
        args.group,
        broker=[f"kafka://{server.strip()}" for server in kafka.bootstrap_servers.split(",")],
        autodiscover=False,
        web_enabled=False,
        store="memory://",
        # Faust's default datadir is "<app id>-data" in the working directory: keep it
        # beside the worker's output, in the run's scratch directory.
        datadir=str(Path(args.out).parent / f"{args.group}-data"),
        topic_disable_leader=True,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
    )
    topic = app.topic(args.topic, key_serializer="raw", value_serializer="raw")
    sleep_s = args.sleep_ms / 1000

    @app.agent(topic)
    async def plain(stream: Any) -> None:
        async for faust_event in stream.events():
            message = faust_event.message
            headers = message.headers or []
            if isinstance(headers, dict):
                headers = list(headers.items())
            event = decode(message.value, headers, message.key)
            recorder.started()
            if sleep_s:
                await asyncio.sleep(sleep_s)
            recorder.finished(event)

    _stop_when_done(recorder)
    worker = faust.Worker(app, loglevel="warn", quiet=True, override_logging=False)
    with contextlib.suppress(SystemExit):
        worker.execute_from_commandline()


def run_poll(args: argparse.Namespace, recorder: Recorder) -> None:
    from pipeline.kafka.clients import build_consumer
    from pipeline.settings import PipelineSettings

    consumer = build_consumer(PipelineSettings().kafka, args.group)
    consumer.subscribe([args.topic])
    sleep_s = args.sleep_ms / 1000
    try:
        while not recorder.done.is_set():
            message = consumer.poll(1.0)
            if message is None or message.error():
                continue
            event = decode(message.value(), message.headers(), message.key())
            recorder.started()
            if sleep_s:
                time.sleep(sleep_s)
            recorder.finished(event)
            if recorder.handled % 100 == 0:
                consumer.commit(asynchronous=True)
    finally:
        consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["runtime", "faust", "poll"])
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--sleep-ms", type=float, default=0.0)
    parser.add_argument(
        "--handler", choices=["async", "sync"], default="sync", help="runtime: the handler's kind"
    )
    parser.add_argument(
        "--loop", choices=["uvloop", "asyncio"], default="asyncio", help="faust: the event loop"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--segments", type=int, default=1, help="also time the run in this many equal parts"
    )
    args = parser.parse_args()
    if args.segments < 1 or args.count % args.segments:
        parser.error("--segments must be at least 1 and divide --count")
    recorder = Recorder(args.count, args.out, args.segments)
    {"runtime": run_runtime, "faust": run_faust, "poll": run_poll}[args.kind](args, recorder)


if __name__ == "__main__":
    main()
