"""The demo's second half: the orders service, the sagas, the outbox relay and the log shipper.

1. start ``pipeline logs ship``, ``pipeline process consumers.orders_service:processor`` and
   the saga services (orchestrator, inventory, payments, shipping: ``demo_sagas.SAGA_SERVICES``)
   as child processes (each serves Prometheus metrics on a free port), and the outbox relay in
   a thread;
2. re-send some accepted requests with their original event ids, as a producer retrying after
   a lost acknowledgement would: the processor's inbox must skip them;
3. wait until the processor has settled every request of this run (read from its metrics);
4. watch the CreateOrder sagas of this run until every one ended, with live progress;
5. wait until the outbox backlog drains to zero;
6. wait until Elasticsearch holds the processor's dead-letter log lines;
7. stop the children (SIGTERM: they finish and commit), check the saga invariants and report.

The children are stopped also when the demo is interrupted (Ctrl-C, SIGTERM): each is sent
SIGTERM and waited for; one that does not stop within 30 s, or while a second interrupt
arrives, is killed. None is left running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING

from rich.console import Console

from pipeline.cli.child_processes import dying_with_this_process
from pipeline.cli.console import stderr_console
from pipeline.cli.demo_sagas import SAGA_SERVICES, SagaReport, saga_report, watch_sagas
from pipeline.errors import PipelineError
from pipeline.ports import free_port
from pipeline.settings import PipelineSettings

if TYPE_CHECKING:
    from confluent_kafka import Consumer, TopicPartition

    from pipeline.envelope import Event
    from pipeline.kafka.producer import EventProducer

PROCESSOR_SPEC = "consumers.orders_service:processor"
PROCESSOR_NAME = "orders-service"
DEAD_LETTER_QUERY = "event.action:dead_lettered"


@dataclass
class ProcessingReport:
    processed: int = 0
    duplicates: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    backlog_seen: list[int] = field(default_factory=list)
    published: int = 0
    dead_letter_log_lines: int = 0
    sagas: SagaReport | None = None

    @property
    def settled(self) -> int:
        return self.processed + self.duplicates + sum(self.dead_lettered.values())


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
            "stopping the demo's services: each finishes the events it is handling first "
            "(up to processing.drain_timeout_s); a second Ctrl-C stops them at once"
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
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    report = ProcessingReport()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
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
) -> ProcessingReport:
    """Steps 1-7 of the module docstring; ``orders``: the new orders (sagas) expected, whose
    ids start with ``saga_prefix`` (other sagas in the database are not this run's)."""
    from pipeline.kafka.clients import build_consumer

    consumer = build_consumer(settings.kafka, group_id=PROCESSOR_NAME)
    try:
        return _run_services(
            settings,
            producer,
            redeliver,
            log_dir,
            on_status,
            consumer,
            orders,
            saga_prefix,
            console,
        )
    finally:
        consumer.close()


def _run_services(
    settings: PipelineSettings,
    producer: EventProducer,
    redeliver: list[tuple[str, Event]],
    log_dir: str,
    on_status: Callable[[str], None],
    consumer: Consumer,
    orders: int,
    saga_prefix: str,
    console: Console,
) -> ProcessingReport:
    from pipeline.database import build_engine, migrate
    from pipeline.kafka.readback import end_offsets
    from pipeline.logs.elasticsearch import build_elasticsearch
    from pipeline.logs.schema import INDEX_ALIAS
    from pipeline.logs.search import build_query
    from pipeline.outbox.table import outbox_status
    from pipeline.topics.catalogue import REQUESTS_CUSTOMERS, REQUESTS_ORDERS
    from producers.outbox_relay import running_relay

    database = build_engine(settings.database)
    migrate(database)
    port = free_port()
    env = {**os.environ, "PIPELINE_PROCESSING__METRICS_LOG_INTERVAL_S": "5"}
    if settings.database.password is not None:
        env["PIPELINE_DATABASE__PASSWORD"] = settings.database.password.get_secret_value()
    env["PIPELINE_DATABASE__URL"] = settings.database.url
    shipper_log = os.path.join(log_dir, "log-shipper.log")
    processor_log = os.path.join(log_dir, "orders-service.log")
    es = build_elasticsearch(settings.elasticsearch)
    start = time.time()
    since = datetime.now(UTC)
    with (
        _child(_pipeline_command("logs", "ship"), env, shipper_log),
        _child(
            _pipeline_command("process", PROCESSOR_SPEC, "--metrics-port", str(port)),
            env,
            processor_log,
        ) as processor,
        ExitStack() as saga_services,
        running_relay(settings),
    ):
        started = []
        for name, spec in SAGA_SERVICES:
            service_port = free_port()
            log = os.path.join(log_dir, f"{name}.log")
            command = _pipeline_command("process", spec, "--metrics-port", str(service_port))
            child = saga_services.enter_context(_child(command, env, log))
            started.append((name, service_port, child, log))
        on_status("waiting for the saga services to start")
        for name, service_port, child, log in started:
            _wait(f"{name} start", partial(_answers, service_port), 120, child, log)
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
        report = scrape(port)
        on_status("sagas running")
        sagas = watch_sagas(
            database,
            settings.kafka,
            since=since,
            prefix=saga_prefix,
            expected=orders,
            console=console,
        )
        report.sagas = saga_report(database, sagas, since=since, prefix=saga_prefix)
        on_status("outbox relay publishing")

        def drained() -> bool:
            backlog = outbox_status(database).backlog
            report.backlog_seen.append(backlog)
            return backlog == 0

        _wait("outbox backlog", drained, 120)
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
    database.dispose()
    return report


def _answers(port: int) -> bool:
    try:
        scrape(port)
    except OSError:
        return False
    return True
