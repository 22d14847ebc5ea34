"""The demo's second half: the orders service, the sagas, the outbox relay and the log shipper.

1. start the log shipper (``pipeline logs ship``), the outbox relay (in a thread), the saga
   services (``demo_sagas.SAGA_SERVICES``) and ``pipeline process
   consumers.orders_service:processor``, in the reverse of :data:`STOP_ORDER` (each process
   serves Prometheus metrics on a free port);
2. re-send some accepted requests with their original event ids, as a producer retrying after
   a lost acknowledgement would: the processor's inbox must skip them;
3. wait until the processor has committed every request of this run;
4. watch the CreateOrder sagas of this run until every one ended, with live progress;
5. wait until the outbox backlog drains to zero;
6. take the orders service's figures once it is idle (:func:`final_figures`): it handles the
   sagas' commands too, so figures read before the sagas ended fell short of its own count;
7. wait until Elasticsearch holds the processor's dead-letter log lines;
8. stop everything in :data:`STOP_ORDER` (SIGTERM: they finish and commit), check the saga
   invariants and report.

The children are stopped also when the demo is interrupted (Ctrl-C, SIGTERM), in the same
order: each is sent SIGTERM and waited for; one that does not stop within 30 s, or while a
second interrupt arrives, is killed. None is left running. The relay stops after every service
has, once it has published what they committed (:func:`relay_publishing_last`); then what the
run left unfinished is read from the database and handed to ``on_interrupted``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from rich.console import Console

from pipeline.cli.child_processes import dying_with_this_process
from pipeline.cli.console import stderr_console
from pipeline.cli.demo_sagas import (
    SAGA_SERVICES,
    LeftOver,
    SagaReport,
    left_over,
    saga_report,
    unpublished_since,
    watch_sagas,
)
from pipeline.errors import PipelineError
from pipeline.ports import free_port
from pipeline.settings import PipelineSettings

if TYPE_CHECKING:
    from confluent_kafka import Consumer, TopicPartition
    from sqlalchemy.engine import Engine

    from pipeline.envelope import Event
    from pipeline.kafka.producer import EventProducer

PROCESSOR_SPEC = "consumers.orders_service:processor"
PROCESSOR_NAME = "orders-service"
DEAD_LETTER_QUERY = "event.action:dead_lettered"
RELAY_NAME = "outbox-relay"
SHIPPER_NAME = "log-shipper"

#: The demo's processes in the order they are stopped, each once the one before has stopped
#: (they start in the reverse order). First those that write outbox rows: the orders service
#: (it starts sagas), the saga orchestrator (it sends commands and fires the steps' timeouts:
#: stopped before the participants, none of its steps times out because they went away), the
#: participants; then the outbox relay, which publishes what all of them committed before it
#: stops; the log shipper last, which ships their last log lines. (The relay stopped first
#: once: the orchestrator fired a timeout 22 s later and its rows stayed in the outbox.)
STOP_ORDER = (
    PROCESSOR_NAME,
    "saga-orchestrator",
    "inventory-service",
    "payment-service",
    "shipping-service",
    RELAY_NAME,
    SHIPPER_NAME,
)

#: How long the relay goes on publishing, once every service has stopped, before it stops.
RELAY_FINAL_ROUND_S = 30.0


@dataclass
class ProcessingReport:
    processed: int = 0
    duplicates: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    #: Events being handled, and messages behind the ends of its partitions, when read.
    in_flight: int = 0
    lag: int = 0
    backlog_seen: list[int] = field(default_factory=list)
    published: int = 0
    dead_letter_log_lines: int = 0
    sagas: SagaReport | None = None

    @property
    def settled(self) -> int:
        return self.processed + self.duplicates + sum(self.dead_lettered.values())

    @property
    def counts(self) -> tuple[int, int, dict[str, int], int]:
        return self.processed, self.duplicates, self.dead_lettered, self.retries


def final_figures(scrapes: Sequence[ProcessingReport]) -> ProcessingReport | None:
    """The orders service's figures for the table, from its scrapes so far (oldest first): the
    latest, once the service is idle in it (nothing in flight, no lag) and its counts did not
    move since the scrape before; ``None`` while it may still be handling something. (The demo
    showed a scrape taken as the requests were done, before the sagas' commands: 1,828
    processed where the service said 2,613 at its stop.)"""
    if len(scrapes) < 2:
        return None
    last, before = scrapes[-1], scrapes[-2]
    if last.in_flight or last.lag or last.counts != before.counts:
        return None
    return last


def start_in_order(
    running: ExitStack, starters: Mapping[str, Callable[[], AbstractContextManager[Any]]]
) -> dict[str, Any]:
    """Enter ``starters`` (one for each name of :data:`STOP_ORDER`) into ``running`` in the
    reverse of :data:`STOP_ORDER`, so that leaving ``running`` (at the end, or by an interrupt)
    stops them in :data:`STOP_ORDER`, each once the one before has stopped. Returns what each
    gave, by name."""
    if set(starters) != set(STOP_ORDER):
        raise ValueError(f"one starter for each of {', '.join(STOP_ORDER)}")
    return {name: running.enter_context(starters[name]()) for name in reversed(STOP_ORDER)}


@contextmanager
def relay_publishing_last(
    relay: AbstractContextManager[object],
    unpublished: Callable[[], int],
    *,
    bound_s: float = RELAY_FINAL_ROUND_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[None]:
    """``relay`` running for the block; at its end (every service stopped by then, see
    :func:`start_in_order`) it goes on until ``unpublished()`` is 0 (the rows the run wrote
    are in Kafka), at most ``bound_s``, and then stops (after its current batch). Not after a
    second interrupt: that one stops it at once."""
    with relay:
        try:
            yield
        except BaseException as error:  # an interrupt, or a step that failed: the rows go too
            if not (isinstance(error, KeyboardInterrupt) and _repeated(error)):
                wait_published(unpublished, bound_s=bound_s, clock=clock, sleep=sleep)
            raise
        wait_published(unpublished, bound_s=bound_s, clock=clock, sleep=sleep)


def _repeated(interrupt: BaseException) -> bool:
    """Whether ``interrupt`` came while an earlier one was being handled (a second Ctrl-C)."""
    earlier = interrupt.__context__
    while earlier is not None:
        if isinstance(earlier, KeyboardInterrupt):
            return True
        earlier = earlier.__context__
    return False


def wait_published(
    unpublished: Callable[[], int],
    *,
    bound_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int | None:
    """Wait while a running relay publishes, until ``unpublished()`` is 0 or ``bound_s`` has
    passed; how many rows are left (``None``: the database did not answer)."""
    from sqlalchemy.exc import SQLAlchemyError

    deadline = clock() + bound_s
    while True:
        try:
            left = unpublished()
        except SQLAlchemyError:
            return None
        if left == 0 or clock() >= deadline:
            return left
        sleep(0.2)


def _pipeline_command(*args: str) -> list[str]:
    """``pipeline ARGS`` as a child of the demo that dies with it."""
    program = dying_with_this_process("from pipeline.cli.main import run; run()")
    return [sys.executable, "-c", program, *args]


@contextmanager
def _child(
    args: list[str], env: dict[str, str], log_path: str
) -> Iterator[subprocess.Popen[bytes]]:
    with open(log_path, "wb") as log:
        child = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield child
    except KeyboardInterrupt:
        _say_stopping()
        raise
    finally:
        _stop_child(child)


#: Whether the line of an interrupted demo's stop was said (once, by the innermost child).
_STOPPING_SAID: list[bool] = []


def _say_stopping() -> None:
    """At once, on Ctrl-C or SIGTERM: the stop that follows takes up to the services' drain
    timeouts, and the demo said nothing for 30 s meanwhile."""
    if not _STOPPING_SAID:
        _STOPPING_SAID.append(True)
        stderr_console().print(
            "stopping the demo's services one after another (the orders service, the saga "
            "orchestrator, inventory, payments, shipping): each finishes the events it is "
            "handling first (up to processing.drain_timeout_s); then the outbox relay "
            f"publishes what they wrote (up to {RELAY_FINAL_ROUND_S:.0f} s) and stops, the log "
            "shipper last; a second Ctrl-C stops them at once"
        )


def _stop_child(child: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if it is still running after ``timeout_s`` or a second interrupt
    comes meanwhile (which then goes on, once the child is gone)."""
    if child.poll() is not None:
        return
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout_s)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    except KeyboardInterrupt:
        child.kill()
        child.wait()
        raise


def scrape(port: int) -> ProcessingReport:
    """The processor's counters, from its Prometheus endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return parse_metrics(response.read().decode())


def parse_metrics(text: str) -> ProcessingReport:
    """The processor's counters, events in flight and lag, from its Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    report = ProcessingReport()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if family.name == "pipeline_events_in_flight":
                report.in_flight += int(sample.value)
                continue
            if family.name == "pipeline_consumer_lag":
                report.lag += int(sample.value)
                continue
            if not sample.name.endswith("_total"):
                continue
            value = int(sample.value)
            if family.name == "pipeline_events_processed":
                report.processed += value
            elif family.name == "pipeline_events_duplicate":
                report.duplicates += value
            elif family.name == "pipeline_events_dead_lettered":
                reason = sample.labels["reason"]
                report.dead_lettered[reason] = report.dead_lettered.get(reason, 0) + value
            elif family.name == "pipeline_event_retries":
                report.retries += value
    return report


def all_committed(committed: list[TopicPartition], ends: list[TopicPartition]) -> bool:
    """Whether the group's ``committed`` offsets reach every partition's end in ``ends``. A
    partition with nothing in it has nothing to commit (its committed offset stays unset,
    -1001): it is caught up, or the demo waited its whole timeout for a partition that no
    request's key happened to fall on."""
    return all(
        end.offset == 0 or done.offset >= end.offset
        for done, end in zip(committed, ends, strict=True)
    )


def _wait(
    what: str,
    done: Callable[[], bool],
    timeout_s: float,
    child: subprocess.Popen[bytes] | None = None,
    log: str = "",
) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if child is not None and child.poll() is not None:
            raise PipelineError(
                f"{what}: the child process exited with {child.returncode} (see {log})"
            )
        if time.monotonic() > deadline:
            raise PipelineError(
                f"{what}: not done after {timeout_s:.0f} s (see {log or 'the log'})"
            )
        time.sleep(0.5)


def run_services(
    settings: PipelineSettings,
    producer: EventProducer,
    redeliver: list[tuple[str, Event]],
    log_dir: str,
    on_status: Callable[[str], None],
    *,
    orders: int,
    saga_prefix: str,
    console: Console,
    on_interrupted: Callable[[LeftOver | str], None] | None = None,
) -> ProcessingReport:
    """Steps 1-8 of the module docstring; ``orders``: the new orders (sagas) expected, whose
    ids start with ``saga_prefix`` (other sagas in the database are not this run's).

    Interrupted, once everything is stopped: ``on_interrupted`` is given what the run left
    unfinished, read from the database (or why it could not be read)."""
    from pipeline.database import build_engine
    from pipeline.kafka.clients import build_consumer

    since = datetime.now(UTC)
    database = build_engine(settings.database)
    consumer = build_consumer(settings.kafka, group_id=PROCESSOR_NAME)
    try:
        return _run_services(
            settings,
            producer,
            redeliver,
            log_dir,
            on_status,
            consumer,
            database,
            since,
            orders,
            saga_prefix,
            console,
        )
    except KeyboardInterrupt:
        if on_interrupted is not None:
            on_interrupted(_left_over(database, since, saga_prefix))
        raise
    finally:
        consumer.close()
        database.dispose()


def _left_over(database: Engine, since: datetime, prefix: str) -> LeftOver | str:
    from sqlalchemy.exc import SQLAlchemyError

    from pipeline.database import error_text

    try:
        return left_over(database, since=since, prefix=prefix)
    except SQLAlchemyError as error:
        return error_text(error)


def _run_services(
    settings: PipelineSettings,
    producer: EventProducer,
    redeliver: list[tuple[str, Event]],
    log_dir: str,
    on_status: Callable[[str], None],
    consumer: Consumer,
    database: Engine,
    since: datetime,
    orders: int,
    saga_prefix: str,
    console: Console,
) -> ProcessingReport:
    from pipeline.database import migrate
    from pipeline.kafka.readback import end_offsets
    from pipeline.logs.elasticsearch import build_elasticsearch
    from pipeline.logs.schema import INDEX_ALIAS
    from pipeline.logs.search import build_query
    from pipeline.outbox.table import outbox_status
    from pipeline.topics.catalogue import REQUESTS_CUSTOMERS, REQUESTS_ORDERS
    from producers.outbox_relay import running_relay

    migrate(database)
    env = {**os.environ, "PIPELINE_PROCESSING__METRICS_LOG_INTERVAL_S": "5"}
    if settings.database.password is not None:
        env["PIPELINE_DATABASE__PASSWORD"] = settings.database.password.get_secret_value()
    env["PIPELINE_DATABASE__URL"] = settings.database.url
    es = build_elasticsearch(settings.elasticsearch)
    start = time.time()
    services = [(PROCESSOR_NAME, PROCESSOR_SPEC), *SAGA_SERVICES]
    ports = {name: free_port() for name, _ in services}
    logs = {name: os.path.join(log_dir, f"{name}.log") for name in (*ports, SHIPPER_NAME)}
    starters: dict[str, Callable[[], AbstractContextManager[Any]]] = {
        name: partial(
            _child,
            _pipeline_command("process", spec, "--metrics-port", str(ports[name])),
            env,
            logs[name],
        )
        for name, spec in services
    }
    starters[SHIPPER_NAME] = partial(
        _child, _pipeline_command("logs", "ship"), env, logs[SHIPPER_NAME]
    )
    starters[RELAY_NAME] = lambda: relay_publishing_last(
        running_relay(settings), partial(unpublished_since, database, since)
    )
    port, processor_log = ports[PROCESSOR_NAME], logs[PROCESSOR_NAME]
    with ExitStack() as running:
        started = start_in_order(running, starters)
        processor = started[PROCESSOR_NAME]
        on_status("waiting for the saga services to start")
        for name, _ in SAGA_SERVICES:
            _wait(f"{name} start", partial(_answers, ports[name]), 120, started[name], logs[name])
        on_status("waiting for the orders service to start")
        _wait("orders service start", lambda: _answers(port), 120, processor, processor_log)
        for topic, event in redeliver:
            producer.send(topic, event)
        producer.flush(30)
        on_status("orders service handling the requests")
        ends = [*end_offsets(consumer, REQUESTS_ORDERS), *end_offsets(consumer, REQUESTS_CUSTOMERS)]

        def caught_up() -> bool:
            return all_committed(consumer.committed(ends, timeout=10), ends)

        _wait("orders service", caught_up, 300, processor, processor_log)
        on_status("sagas running")
        sagas = watch_sagas(
            database,
            settings.kafka,
            since=since,
            prefix=saga_prefix,
            expected=orders,
            console=console,
        )
        sagas = saga_report(database, sagas, since=since, prefix=saga_prefix)
        on_status("outbox relay publishing")
        backlog_seen: list[int] = []

        def drained() -> bool:
            backlog = outbox_status(database).backlog
            backlog_seen.append(backlog)
            return backlog == 0

        _wait("outbox backlog", drained, 120)
        on_status("orders service finishing")
        report = _idle_figures(port, processor, processor_log, on_status)
        report.backlog_seen = backlog_seen
        report.sagas = sagas
        on_status("log shipper indexing")
        query = build_query(DEAD_LETTER_QUERY, service=PROCESSOR_NAME)
        recent = {"range": {"@timestamp": {"gte": int(start * 1000), "format": "epoch_millis"}}}
        query["bool"].setdefault("filter", []).append(recent)
        wanted = sum(report.dead_lettered.values())

        def shipped() -> bool:
            try:
                es.indices.refresh(index=INDEX_ALIAS)
                report.dead_letter_log_lines = int(
                    es.count(index=INDEX_ALIAS, query=query)["count"]
                )
            except Exception:
                return False
            return report.dead_letter_log_lines >= wanted

        _wait("log shipping", shipped, 120)
    with database.connect() as connection:
        status = outbox_status(connection)
    report.published = status.published_last_minute
    return report


def _idle_figures(
    port: int,
    processor: subprocess.Popen[bytes],
    log: str,
    on_status: Callable[[str], None],
    timeout_s: float = 60.0,
) -> ProcessingReport:
    """The orders service's figures once it is idle (:func:`final_figures`), read every
    second; after ``timeout_s`` the last read, said to be so."""
    scrapes: list[ProcessingReport] = []
    deadline = time.monotonic() + timeout_s
    while True:
        if processor.poll() is not None:
            raise PipelineError(
                f"orders service: the child process exited with {processor.returncode} (see {log})"
            )
        scrapes = [*scrapes[-1:], scrape(port)]
        final = final_figures(scrapes)
        if final is not None:
            return final
        if time.monotonic() > deadline:
            last = scrapes[-1]
            on_status(
                f"the orders service is not idle after {timeout_s:.0f} s ({last.in_flight:,} "
                f"in flight, lag {last.lag:,}): its figures below are as last read"
            )
            return last
        time.sleep(1.0)


def _answers(port: int) -> bool:
    try:
        scrape(port)
    except OSError:
        return False
    return True
