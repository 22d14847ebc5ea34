"""``pipeline demo``: the product end to end on the local stack, with a summary.

1. start (or reuse) Kafka and Elasticsearch;
2. apply the topic catalogue;
3. produce a batch of order requests through the CloudEvents envelope;
4. read them back from the offsets where the batch began, decode and check every one;
5. print what was produced, consumed and matched, per partition.
"""

from __future__ import annotations

import time
from collections import Counter

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from consumers.readback import end_offsets, read_from
from pipeline.cli.console import stderr_console, stdout_console
from pipeline.clients import build_admin, build_consumer, build_producer
from pipeline.ids import new_event_id
from pipeline.settings import PipelineSettings
from pipeline.stack.manager import StackManager
from pipeline.topics.admin import apply_plan, describe_cluster_topics
from pipeline.topics.catalogue import default_catalogue, requests_topic
from pipeline.topics.plan import build_plan
from producers.demo_traffic import demo_events, produce_events

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
    )


def demo(
    ctx: typer.Context,
    events: int = typer.Option(10_000, "--events", "-n", min=1, help="How many events to send."),
) -> None:
    """Start the stack, apply the topics, send events through Kafka and read them back."""
    settings = ctx.obj
    assert isinstance(settings, PipelineSettings)
    started = StackManager(settings, console=_err).up()
    _err.print(f"stack: started {', '.join(sorted(started)) or 'nothing (already up)'}")

    admin = build_admin(settings.kafka)
    catalogue = default_catalogue()
    plan = build_plan(catalogue, describe_cluster_topics(admin, catalogue.names))
    apply_plan(admin, plan, bootstrap=settings.kafka.bootstrap_servers)
    _err.print(
        f"topics: {len(plan.changes)} change(s) applied, {len(catalogue.names)} in catalogue"
    )

    topic = requests_topic("orders")
    run_id = new_event_id()
    consumer = build_consumer(settings.kafka, group_id=f"pipeline-demo-{run_id}")
    try:
        start = end_offsets(consumer, topic)
        producer = build_producer(settings.kafka, **{"linger.ms": 5, "compression.type": "lz4"})
        with _progress() as progress:
            task = progress.add_task("producing", total=events)
            began = time.monotonic()
            produced = produce_events(
                producer,
                topic,
                demo_events(events, correlation_id=run_id),
                on_progress=lambda n: progress.advance(task, n),
            )
            produce_seconds = time.monotonic() - began
        with _progress() as progress:
            task = progress.add_task("consuming", total=produced.sent)
            began = time.monotonic()
            readback = read_from(
                consumer, start, produced.sent, on_progress=lambda n: progress.advance(task, n)
            )
            consume_seconds = time.monotonic() - began
    finally:
        consumer.close()

    ours = [event for event in readback.events if event.correlationid == run_id]
    sequences = Counter(int(event.data["sequence"]) for event in ours)
    intact = len(sequences) == events and all(count == 1 for count in sequences.values())

    table = Table(title=f"demo run {run_id}")
    table.add_column("partition", justify="right")
    table.add_column("produced", justify="right")
    table.add_column("consumed back", justify="right")
    for partition in sorted(produced.per_partition):
        table.add_row(
            str(partition),
            str(produced.per_partition[partition]),
            str(readback.per_partition[partition]),
        )
    _out.print(table)

    summary = Table(title="summary", show_header=False)
    summary.add_column("what")
    summary.add_column("value", justify="right")
    summary.add_row("topic", topic)
    summary.add_row("events produced (acknowledged)", str(produced.sent))
    summary.add_row("produce failures", str(produced.failed))
    summary.add_row("produce rate", f"{produced.sent / max(produce_seconds, 1e-9):,.0f} events/s")
    summary.add_row("events consumed back", str(len(ours)))
    summary.add_row("consume rate", f"{len(ours) / max(consume_seconds, 1e-9):,.0f} events/s")
    summary.add_row("undecodable", str(len(readback.undecodable)))
    summary.add_row("every event back exactly once", "yes" if intact else "NO")
    _out.print(summary)
    if not intact or produced.failed or readback.timed_out:
        for problem in produced.errors + readback.undecodable[:5]:
            _err.print(f"  {problem}")
        raise typer.Exit(1)
