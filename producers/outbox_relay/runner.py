"""Running a relay: from settings to a relay publishing in this thread, a background thread or
a child process."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from types import FrameType
from typing import Any

from pipeline.database import build_engine, migrate
from pipeline.gc_tuning import few_collections
from pipeline.kafka.clients import build_admin
from pipeline.kafka.producer import EventProducer, build_event_producer
from pipeline.metrics_server import serve_metrics
from pipeline.settings import PipelineSettings
from pipeline.topics.limits import batch_bytes_within
from producers.outbox_relay.relay import OutboxRelay, RelayTotals
from producers.outbox_relay.topic_checks import TopicChecks

__all__ = ["relay_subprocess", "run_relay", "running_relay"]

_log = logging.getLogger("producers.outbox_relay")


def run_relay(
    settings: PipelineSettings,
    *,
    once: bool = False,
    stop: threading.Event | None = None,
    on_start: Callable[[OutboxRelay], None] | None = None,
    handle_signals: bool = False,
) -> RelayTotals:
    """Migrate the database, build the engine and producer, and run one relay in this thread.

    Setting ``stop`` (from another thread) ends it after the current batch, as does SIGTERM or
    SIGINT with ``handle_signals`` (main thread only: the relay owns the process, whose garbage
    collector is then tuned for it, see :func:`pipeline.gc_tuning.few_collections`).
    ``on_start`` is given the relay once it exists (to read its metrics or totals).
    """
    stop = stop if stop is not None else threading.Event()
    # Three claims may be open at once on PostgreSQL (one committing its marks, one being
    # sent, the next one made meanwhile), and the status is read beside them.
    engine = build_engine(settings.database, pool_size=4)
    try:
        migrate(engine)
        # The relay needs only the failures (a flush raises them); a report for every success
        # was about a fifth of its sending thread.
        producer = build_event_producer(settings.kafka, settings.producer, failures_only=True)

        def producer_within(limit: int) -> EventProducer:
            # Batches under a topic's own max.message.bytes (see pipeline.topics.limits).
            within: dict[str, Any] = {"batch.size": batch_bytes_within(limit)}
            return build_event_producer(
                settings.kafka, settings.producer, failures_only=True, **within
            )

        relay = OutboxRelay(
            engine,
            producer,
            settings.outbox,
            delivery_timeout_s=settings.producer.delivery_timeout_ms / 1000 + 10,
            stop=stop,
            topics=TopicChecks(
                build_admin(settings.kafka), bootstrap=settings.kafka.bootstrap_servers
            ),
            producer_within=producer_within,
        )
        port = settings.outbox.metrics_port
        stop_serving = serve_metrics(relay.metrics.registry, port) if port is not None else None
        previous: dict[signal.Signals, Any] = {}
        received: list[str] = []  # the signal that stopped it, said once it has stopped
        if handle_signals:

            def on_signal(signum: int, _frame: FrameType | None) -> None:
                # Not logged here: a signal handler may run inside a logging call.
                received.append(signal.Signals(signum).name)
                stop.set()

            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, on_signal)
        try:
            if on_start is not None:
                on_start(relay)
            with producer, few_collections() if handle_signals else nullcontext():
                totals = relay.run(once=once)
            if received:
                # Its last line said nothing of why it stopped: a relay stopped by something
                # else than its operator left no trace of the signal.
                _log.info("outbox relay %s: stopped by %s", relay.name, received[0])
            return totals
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if stop_serving is not None:
                stop_serving()
    finally:
        engine.dispose()


@contextmanager
def running_relay(settings: PipelineSettings) -> Iterator[OutboxRelay]:
    """A relay running in a background thread for the block; stopped (after its current
    batch) and joined at the end. Errors of the relay's setup are raised here."""
    stop = threading.Event()
    started = threading.Event()
    holder: list[OutboxRelay] = []
    errors: list[BaseException] = []

    def on_start(relay: OutboxRelay) -> None:
        holder.append(relay)
        started.set()

    def target() -> None:
        try:
            run_relay(settings, stop=stop, on_start=on_start)
        except BaseException as error:  # handed to the caller below
            errors.append(error)
            started.set()

    thread = threading.Thread(target=target, name="outbox-relay", daemon=True)
    thread.start()
    started.wait()
    if errors:
        thread.join()
        raise errors[0]
    try:
        yield holder[0]
    finally:
        stop.set()
        thread.join()
    if errors:
        raise errors[0]


def relay_subprocess(
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    **popen: Any,
) -> subprocess.Popen[bytes]:
    """Start ``pipeline outbox relay ARGS`` as a child process (same interpreter); stop it with
    ``terminate()`` (SIGTERM: it finishes its batch and exits 0). ``env`` adds variables, such
    as ``PIPELINE_DATABASE__URL``, to this process's environment."""
    command = [
        sys.executable,
        "-c",
        "from pipeline.cli.main import run; run()",
        "outbox",
        "relay",
        *args,
    ]
    return subprocess.Popen(command, env={**os.environ, **(env or {})}, **popen)
