"""``pipeline demo``: the product end to end on the local stack, with a summary.

1. start (or reuse) Kafka and Elasticsearch;
2. apply the topic catalogue;
3. start the request gateway (in this process, on a free local port);
4. send the demo's traffic through it over HTTP, some of it deliberately bad or retried;
5. read the accepted requests back from Kafka, from the offsets where the run began, and check
   that each arrived exactly once;
6. print the gateway's answers, the produce rate, latency and per-partition counts;
7. run the orders service over those requests (some poisoned on purpose, some re-sent), with
   the outbox relay and the log shipper (pipeline/cli/demo_services.py), and print what it
   processed, skipped as duplicates and dead-lettered (read once it is idle, after the sagas),
   the outbox backlog draining to zero, and the commands to look at this run's dead letters
   and the error log lines;
8. meanwhile the order service starts a CreateOrder saga for each new order, run by the saga
   orchestrator with inventory, payments and shipping (pipeline/cli/demo_sagas.py), some
   failing on purpose (out of stock, a declined card, a shipment answered too late, refunds
   that fail before they succeed): live progress, then the sagas by outcome, the invariants
   (each held or violated) and what to try next. A violated invariant exits 1.

Ctrl-C (exit code 130) or SIGTERM (143) stops the demo at any step: the gateway, the clients
and the child processes it started are stopped (the stack, once up, keeps running; the services
in ``demo_services.STOP_ORDER``, the outbox relay after them), then one line says where it was;
interrupted while the services ran, the lines after it say what the run left unfinished in the
database (its sagas not ended, its outbox rows not published) and how that gets finished.
"""

from __future__ import annotations

import asyncio
import os
import statistics
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.cli.console import stderr_console, stdout_console
from pipeline.cli.interrupts import exit_on_interrupt
from pipeline.cli.plurals import counted
from pipeline.settings import PipelineSettings, StackSettings

if TYPE_CHECKING:
    from pipeline.cli.demo_sagas import LeftOver, SagaReport
    from pipeline.cli.demo_services import ProcessingReport
    from pipeline.envelope import Event
    from pipeline.kafka.producer import EventProducer
    from producers.demo_traffic import DemoRequest, TrafficReport

_out = stdout_console()
_err = stderr_console()


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_err,
        transient=True,
        disable=not _err.is_terminal,  # no bar, cursor codes or blank line in a pipe or file
    )


async def _through_gateway(
    settings: PipelineSettings,
    producer: EventProducer,
    requests: list[DemoRequest],
    on_progress: Callable[[int], None],
) -> TrafficReport:
    # The demo is one client sending as fast as it can: lift its rate limit, keep the rest.
    from aiohttp import web

    from producers.demo_traffic import send_requests
    from producers.gateway import create_app

    gateway_settings = settings.gateway.model_copy(update={"rate_per_s": 1e9, "burst": 10**9})
    runner = web.AppRunner(create_app(gateway_settings, producer))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        return await send_requests(f"http://127.0.0.1:{port}", requests, on_progress=on_progress)
    finally:
        await runner.cleanup()


class _Step:
    """What the demo is doing now, for the line an interrupt prints."""

    def __init__(self) -> None:
        self.now = "starting the stack"
        #: What the run left unfinished, as lines said after the first (services interrupted).
        self.left: list[str] = []

    def interrupted(self) -> str:
        if self.now == "starting the stack":
            return "interrupted while starting the stack: what this run had started is stopped"
        return "\n".join(
            [
                f"interrupted while {self.now}: the demo's processes are stopped, "
                "the stack keeps running",
                *self.left,
            ]
        )

    def services_left(self, left: LeftOver | str, database_hint: str) -> None:
        """What the interrupted services left (or why it could not be read), for the lines
        after the first."""
        from pipeline.cli.demo_sagas import left_over_lines

        if isinstance(left, str):
            self.left = [f"what this run left unfinished could not be read: {left}"]
        else:
            self.left = left_over_lines(left, database_hint)


def demo(
    ctx: typer.Context,
    requests: int = typer.Option(
        1_000,
        "--requests",
        "-n",
        min=1,
        help="How many requests to send through the gateway (most of them orders, each a saga).",
    ),
) -> None:
    """Start the stack, apply the topics, send requests through the gateway, read them back.

    Then run the orders service and the sagas over them and report. Ctrl-C (exit code 130) or
    SIGTERM (143) stops the demo and every process it started; the stack keeps running.
    """
    settings = ctx.obj
    assert isinstance(settings, PipelineSettings)
    step = _Step()
    with exit_on_interrupt(step.interrupted):
        _demo(settings, requests, step)


def _demo(settings: PipelineSettings, requests: int, step: _Step) -> None:
    from pipeline.ids import new_event_id
    from pipeline.kafka.clients import build_admin, build_consumer
    from pipeline.kafka.producer import build_event_producer
    from pipeline.kafka.readback import end_offsets, read_from
    from pipeline.stack.manager import StackManager
    from pipeline.topics.admin import apply_plan, describe_cluster_topics
    from pipeline.topics.catalogue import REQUESTS_CUSTOMERS, REQUESTS_ORDERS, default_catalogue
    from pipeline.topics.plan import build_plan
    from producers.demo_traffic import demo_requests

    started = StackManager(settings, console=_err).up()
    _err.print(f"stack: started {', '.join(sorted(started)) or 'nothing (already up)'}")
    step.now = "applying the topics"

    admin = build_admin(settings.kafka)
    catalogue = default_catalogue()
    plan = build_plan(catalogue, describe_cluster_topics(admin, catalogue.names))
    apply_plan(admin, plan, bootstrap=settings.kafka.bootstrap_servers)
    _err.print(
        f"topics: {counted(len(plan.changes), 'change')} applied, "
        f"{len(catalogue.names)} in catalogue"
    )

    step.now = "sending requests through the gateway"
    run_id = new_event_id()
    run_started = datetime.now(UTC)
    traffic = list(demo_requests(requests, run=run_id[-12:], poison_share=0.01))
    consumer = build_consumer(settings.kafka, group_id=f"pipeline-demo-{run_id}")
    try:
        start = [
            *end_offsets(consumer, REQUESTS_ORDERS),
            *end_offsets(consumer, REQUESTS_CUSTOMERS),
        ]
        with (
            build_event_producer(settings.kafka, settings.producer) as producer,
            _progress() as bar,
        ):
            task = bar.add_task("requests through the gateway", total=len(traffic))
            report = asyncio.run(
                _through_gateway(settings, producer, traffic, lambda n: bar.advance(task, n))
            )
        step.now = "reading the requests back from Kafka"
        with _progress() as bar:
            task = bar.add_task("reading back from Kafka", total=len(report.accepted))
            readback = read_from(
                consumer,
                start,
                set(report.accepted),
                on_progress=lambda n: bar.advance(task, n),
            )
    finally:
        consumer.close()

    arrived = Counter(event.id for event in readback.events)
    intact = set(arrived) == set(report.accepted) and all(n == 1 for n in arrived.values())
    _print_summary(report, readback.per_partition, len(traffic), intact, len(readback.undecodable))
    if not intact or readback.timed_out or report.replays_differing:
        raise typer.Exit(1)

    step.now = "running the orders service and the sagas"

    def on_status(text: str) -> None:
        _err.print(f"[dim]{text}[/dim]")
        step.now = f"running the orders service and the sagas ({text})"

    services = _processing_stage(
        settings,
        readback.events,
        saga_prefix=f"{run_id[-12:]}-",
        on_status=on_status,
        on_interrupted=lambda left: step.services_left(left, _database_hint(settings)),
    )
    _print_processing_summary(services, run_started)
    if services.sagas is not None:
        _print_saga_summary(services.sagas, _database_hint(settings))
        if not services.sagas.held:
            raise typer.Exit(1)


def _print_summary(
    report: TrafficReport,
    per_partition: Counter[tuple[str, int]],
    sent: int,
    intact: bool,
    undecodable: int,
) -> None:
    partitions = _titled("accepted requests per partition (read back from Kafka)")
    partitions.add_column("topic")
    partitions.add_column("partition", justify="right")
    partitions.add_column("events", justify="right")
    for (topic, partition), count in sorted(per_partition.items()):
        partitions.add_row(topic, str(partition), f"{count:,}")
    _out.print(partitions)

    latencies = sorted(report.latencies_s)
    p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else 0.0
    summary = Table(title="demo summary", show_header=False)
    summary.add_column("what")
    summary.add_column("value", justify="right")
    summary.add_row("requests sent to the gateway", f"{sent:,}")
    summary.add_row("accepted (202, acknowledged by Kafka)", f"{len(report.accepted):,}")
    for code, count in sorted(report.rejections.items()):
        summary.add_row(f"rejected: {code}", f"{count:,}")
    summary.add_row("idempotent retries answered the same", f"{report.replays_matching:,}")
    summary.add_row(
        "produce rate through the gateway",
        f"{len(report.accepted) / max(report.elapsed_s, 1e-9):,.0f} requests/s",
    )
    if latencies:
        summary.add_row(
            "latency p50 / p99",
            f"{statistics.median(latencies) * 1000:.1f} / {p99 * 1000:.1f} ms",
        )
    summary.add_row("undecodable messages", f"{undecodable:,}")
    summary.add_row("every accepted request in Kafka exactly once", "yes" if intact else "NO")
    _out.print(summary)


#: Accepted requests sent a second time with their event ids, as a producer retrying after a
#: lost acknowledgement would: the orders service's inbox must skip every one.
REDELIVERED = 50


def _processing_stage(
    settings: PipelineSettings,
    accepted: list[Event],
    *,
    saga_prefix: str,
    on_status: Callable[[str], None],
    on_interrupted: Callable[[LeftOver | str], None],
) -> ProcessingReport:
    from pipeline.cli.demo_services import run_services
    from pipeline.kafka.producer import build_event_producer
    from pipeline.stack import postgres_node
    from pipeline.topics.catalogue import REQUESTS_CUSTOMERS, REQUESTS_ORDERS

    if "PIPELINE_DATABASE__URL" not in os.environ:
        # The demo's service database is the stack's PostgreSQL, unless one is configured.
        settings = settings.model_copy(
            update={"database": postgres_node.database_settings(settings.stack)}
        )
    redeliver = [
        (REQUESTS_CUSTOMERS if "register_customer" in event.type else REQUESTS_ORDERS, event)
        for event in accepted[:: max(1, len(accepted) // REDELIVERED)][:REDELIVERED]
    ]
    log_dir = settings.stack.home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    orders = sum(
        1
        for event in accepted
        if event.type.endswith(".place_order")
        and not any(line["sku"].startswith("RECALLED") for line in event.data["lines"])
    )
    with build_event_producer(settings.kafka, settings.producer) as producer:
        return run_services(
            settings,
            producer,
            redeliver,
            str(log_dir),
            on_status,
            orders=orders,
            saga_prefix=saga_prefix,
            console=_err,
            on_interrupted=on_interrupted,
        )


def _titled(title: str) -> Table:
    """A table at least as wide as its title, where the terminal allows: rich wraps a title
    into the width of a narrow table (two short columns under a long command line)."""
    return Table(title=title, min_width=len(title))


def _print_processing_summary(services: ProcessingReport, run_started: datetime) -> None:
    from pipeline.cli.demo_services import DEAD_LETTER_QUERY, PROCESSOR_NAME

    summary = _titled("orders service (pipeline process consumers.orders_service:processor)")
    summary.add_column("what")
    summary.add_column("value", justify="right")
    summary.add_row(
        "events processed: requests and saga commands (effects + outbox events committed)",
        f"{services.processed:,}",
    )
    summary.add_row(
        # More than were re-sent: events an earlier, interrupted run had handled but not
        # committed, read again and skipped.
        f"duplicates skipped by the inbox ({REDELIVERED} requests re-sent on purpose)",
        f"{services.duplicates:,}",
    )
    for reason, count in sorted(services.dead_lettered.items()):
        summary.add_row(f"dead-lettered: {reason}", f"{count:,}")
    summary.add_row("retries", f"{services.retries:,}")
    drained = " -> ".join(f"{n:,}" for n in _thin(services.backlog_seen))
    summary.add_row("outbox backlog (relay draining)", drained or "0")
    summary.add_row("dead-letter log lines in Elasticsearch", f"{services.dead_letter_log_lines:,}")
    _out.print(summary)
    _out.print(f"look at the dead letters:   {_dead_letters_command(run_started)}")
    _out.print(
        "find the error log lines:   pipeline logs search "
        f"'{DEAD_LETTER_QUERY}' --service {PROCESSOR_NAME} --since 1h"
    )
    kibana = os.environ.get("PIPELINE_KIBANA_URL")
    if kibana:
        _out.print(f"Kibana (dashboard 'Pipeline logs'): {kibana}")


def _dead_letters_command(run_started: datetime) -> str:
    """``pipeline dlq inspect`` for this run's dead letters: those since the run began (an ISO
    UTC time to the second, rounded down), not every earlier run's too."""
    since = run_started.astimezone(UTC).replace(microsecond=0)
    return f"pipeline dlq inspect requests.orders --since {since:%Y-%m-%dT%H:%M:%SZ}"


def _database_hint(settings: PipelineSettings) -> str:
    """Where the demo's data is, as a line to paste: the stack's database as the settings
    name it (port, role, database). Its password only when it is the documented default
    (docs/stack.md); a password of the user's own is never printed."""
    from pipeline.stack.postgres_node import database_url

    if "PIPELINE_DATABASE__URL" in os.environ:
        return "the demo's data is in the database PIPELINE_DATABASE__URL names, as set here"
    stack = settings.stack
    default = StackSettings.model_fields["postgres_password"].default
    documented = stack.postgres_password.get_secret_value() == default.get_secret_value()
    hint = (
        "the demo's data is in the stack's PostgreSQL: "
        f"export PIPELINE_DATABASE__URL={database_url(stack, with_password=documented)}"
    )
    if not documented:
        hint += ", with PIPELINE_DATABASE__PASSWORD set to the stack's password"
    return hint


def _print_saga_summary(sagas: SagaReport, database_hint: str) -> None:
    summary = _titled("CreateOrder sagas (pipeline process consumers.saga_orchestrator:processor)")
    summary.add_column("what")
    summary.add_column("value", justify="right")
    summary.add_row("sagas started", f"{sagas.total:,}")
    for state, count in sorted(sagas.by_state.items()):
        summary.add_row(f"  {state}", f"{count:,}")
    summary.add_row("sagas ended per second", f"{sagas.ended / max(sagas.elapsed_s, 1e-9):,.1f}")
    _out.print(summary)
    checks = Table(title="invariants")
    checks.add_column("invariant")
    checks.add_column("verdict")
    checks.add_column("detail")
    for check in sagas.invariants:
        verdict = "[green]held[/green]" if check.held else "[red]VIOLATED[/red]"
        checks.add_row(check.name, verdict, check.detail)
    _out.print(checks)
    _out.print(f"what to try next ({database_hint}):")
    stuck = sagas.examples.get("compensation_failed")
    if stuck:  # the operator's part: a compensation that kept failing
        _out.print("  pipeline saga list --state compensation_failed")
        _out.print(f"  pipeline saga retry {stuck}             # try its compensation again")
        _out.print(f'  pipeline saga resolve {stuck} --note "refunded by hand"')
    _out.print("  pipeline saga list --state compensated")
    for state in ("compensated", "completed"):
        example = sagas.examples.get(state)
        if example:
            _out.print(f"  pipeline saga show {example}              # a {state} saga's timeline")
            _out.print(f"  pipeline logs search --correlation-id {example} --since 1h")
    _out.print("  pipeline saga graph CreateOrder             # the saga as a Mermaid diagram")
    _out.print(
        "  under docker compose: Kibana at http://127.0.0.1:5601, saved search 'Saga timeline'"
    )


def _thin(values: list[int], keep: int = 6) -> list[int]:
    """A few points of a draining backlog: first, some in between, last (always 0)."""
    if len(values) <= keep:
        return values
    step = (len(values) - 1) / (keep - 1)
    return [values[round(i * step)] for i in range(keep)]
