"""The demo's saga stage: the CreateOrder sagas of this run, watched until every one ended.

The order service starts one saga per new order; the orchestrator, inventory, payments and
shipping run as their own processes (``SAGA_SERVICES``). :func:`watch_sagas` shows live
progress from the saga rows (started, completed, compensated, stuck; throughput; the outbox
backlog) until no saga of the run is open, then :func:`saga_report` checks the invariants of
``consumers/saga_invariants.py``. After an interrupt, :func:`left_over` reads what the run left
unfinished (its sagas not ended, its outbox rows not published) and :func:`left_over_lines`
says it, and how it gets finished.
"""

from __future__ import annotations

import time
from contextlib import closing, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from pipeline.errors import PipelineError
from pipeline.settings import KafkaSettings
from pipeline.topics.catalogue import SAGA_REPLIES, saga_commands_topic

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from consumers.saga_invariants import Invariant

__all__ = [
    "SAGA_PROCESSES",
    "SAGA_SERVICES",
    "LeftOver",
    "SagaReport",
    "left_over",
    "left_over_lines",
    "saga_report",
    "unpublished_since",
    "watch_sagas",
]

#: The topics each saga service's consumer group reads (its lag is shown).
SAGA_GROUP_TOPICS = {
    "saga-orchestrator": [SAGA_REPLIES],
    "inventory-service": [saga_commands_topic("inventory")],
    "payment-service": [saga_commands_topic("payments")],
    "shipping-service": [saga_commands_topic("shipping")],
}

#: (process name, ``pipeline process`` spec) of every saga service the demo runs.
SAGA_SERVICES = (
    ("saga-orchestrator", "consumers.saga_orchestrator:processor"),
    ("inventory-service", "consumers.inventory_service:processor"),
    ("payment-service", "consumers.payment_service:processor"),
    ("shipping-service", "consumers.shipping_service:processor"),
)


@dataclass
class SagaReport:
    by_state: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    invariants: list[Invariant] = field(default_factory=list)
    #: One saga of each outcome, for the "what to try next" commands.
    examples: dict[str, str] = field(default_factory=dict)

    @property
    def ended(self) -> int:
        from pipeline.sagas.state import TERMINAL

        return sum(n for state, n in self.by_state.items() if state in TERMINAL)

    @property
    def total(self) -> int:
        return sum(self.by_state.values())

    @property
    def held(self) -> bool:
        return all(check.held for check in self.invariants)


class GroupLag:
    """The consumer lag of the saga services' groups (messages not yet consumed), read from
    their committed offsets without joining the groups."""

    def __init__(self, kafka: KafkaSettings) -> None:
        from pipeline.kafka.clients import build_consumer

        self._consumers = {group: build_consumer(kafka, group) for group in SAGA_GROUP_TOPICS}

    def total(self) -> int:
        from confluent_kafka import TopicPartition

        from pipeline.kafka.watermarks import read_watermarks

        lag = 0
        for group, consumer in self._consumers.items():
            for topic in SAGA_GROUP_TOPICS[group]:
                partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
                committed = consumer.committed(
                    [TopicPartition(topic, p) for p in sorted(partitions)], timeout=10
                )
                for position in committed:
                    _, high = read_watermarks(consumer, topic, position.partition, timeout_s=10)
                    lag += max(0, high - max(position.offset, 0))
        return lag

    def close(self) -> None:
        for consumer in self._consumers.values():
            consumer.close()


def _of_run(since: datetime, prefix: str) -> Any:
    """The run's sagas: started since it began, with its id prefix (another run, or another
    program on the same database, may start sagas meanwhile)."""
    import sqlalchemy as sa

    from pipeline.sagas.store import sagas_table

    columns = sagas_table.c
    return sa.and_(columns.created_at >= since, columns.saga_id.startswith(prefix, autoescape=True))


def _counts(database: Engine, since: datetime, prefix: str) -> dict[str, int]:
    import sqlalchemy as sa

    from pipeline.sagas.store import sagas_table

    with database.connect() as connection:
        rows = connection.execute(
            sa.select(sagas_table.c.status, sa.func.count())
            .where(_of_run(since, prefix))
            .group_by(sagas_table.c.status)
        ).all()
    return {status: int(count) for status, count in rows}


def _progress_table(counts: dict[str, int], elapsed_s: float, backlog: int, lag: int) -> Table:
    from pipeline.sagas.state import STUCK, TERMINAL

    table = Table(title="CreateOrder sagas of this run (live)", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    ended = sum(n for state, n in counts.items() if state in TERMINAL)
    open_ = sum(n for state, n in counts.items() if state not in TERMINAL)
    table.add_row("started", f"{sum(counts.values()):,}")
    for state in ("completed", "compensated", "resolved"):
        table.add_row(state, f"{counts.get(state, 0):,}")
    table.add_row("stuck (operator needed)", f"{sum(counts.get(s, 0) for s in STUCK):,}")
    table.add_row("still running", f"{open_ - sum(counts.get(s, 0) for s in STUCK):,}")
    table.add_row("sagas ended per second", f"{ended / max(elapsed_s, 1.0):,.1f}")
    table.add_row("outbox backlog (commands and replies not yet in Kafka)", f"{backlog:,}")
    table.add_row("consumer lag of the saga services (not yet committed)", f"{lag:,}")
    return table


def _progress_line(counts: dict[str, int], elapsed_s: float, backlog: int, lag: int) -> str:
    from pipeline.sagas.state import TERMINAL

    ended = sum(n for state, n in counts.items() if state in TERMINAL)
    parts = ", ".join(f"{state} {n:,}" for state, n in sorted(counts.items()))
    return (
        f"sagas after {elapsed_s:.0f} s: {sum(counts.values()):,} started ({parts}); "
        f"{ended / max(elapsed_s, 1.0):,.1f} ended/s; outbox backlog {backlog:,}; lag {lag:,}"
    )


def watch_sagas(
    database: Engine,
    kafka: KafkaSettings,
    *,
    since: datetime,
    prefix: str,
    expected: int,
    console: Console,
    timeout_s: float = 900.0,
    settle_s: float = 10.0,
) -> SagaReport:
    """Show progress until ``expected`` sagas started since ``since`` (their ids starting with
    ``prefix``) and none is still running (stuck ones count as settled: they wait for an
    operator)."""
    from pipeline.outbox.table import outbox_status
    from pipeline.sagas.state import STUCK, TERMINAL

    # Times and rates count from ``since`` (the services' start), not from this watch: sagas
    # ended before it began (166 ended "after 0 s" read as 164 ended/s).
    started = time.monotonic() - max(0.0, (datetime.now(UTC) - since).total_seconds())
    report = SagaReport()
    quiet_since: float | None = None
    last_line = 0.0
    # A terminal gets a live table; a pipe or a CI log a line every few seconds.
    live = Live(console=console, refresh_per_second=2) if console.is_terminal else nullcontext()
    group_lag = GroupLag(kafka)
    lag, lag_read = 0, 0.0
    with live as display, closing(group_lag):
        while True:
            elapsed = time.monotonic() - started
            counts = _counts(database, since, prefix)
            backlog = outbox_status(database).backlog
            if time.monotonic() - lag_read >= 2:  # a few Kafka requests: not every turn
                lag, lag_read = group_lag.total(), time.monotonic()
            if isinstance(display, Live):
                display.update(_progress_table(counts, elapsed, backlog, lag))
            elif time.monotonic() - last_line >= 5:
                last_line = time.monotonic()
                console.print(_progress_line(counts, elapsed, backlog, lag))
            running = sum(n for s, n in counts.items() if s not in TERMINAL and s not in STUCK)
            if sum(counts.values()) >= expected and running == 0:
                break
            # Fewer sagas than expected and nothing moving (orders refused before their saga):
            # done once the numbers stayed the same for a while.
            if running == 0 and backlog == 0:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > settle_s:
                    break
            else:
                quiet_since = None
            if elapsed > timeout_s:
                raise PipelineError(
                    f"sagas: {running:,} still running after {timeout_s:.0f} s "
                    "(see the service logs under <stack home>/logs)"
                )
            time.sleep(0.5)
    report.by_state = counts
    report.elapsed_s = time.monotonic() - started
    return report


def saga_report(
    database: Engine, report: SagaReport, *, since: datetime, prefix: str
) -> SagaReport:
    """Add the invariant checks and one example saga id per final state."""
    import sqlalchemy as sa

    from consumers.saga_invariants import check_invariants
    from pipeline.sagas.store import sagas_table

    with database.connect() as connection:
        run_ids = list(
            connection.execute(
                sa.select(sagas_table.c.saga_id).where(_of_run(since, prefix))
            ).scalars()
        )
        report.invariants = check_invariants(connection, order_ids=run_ids)
        for state in report.by_state:
            example = connection.execute(
                sa.select(sagas_table.c.saga_id)
                .where(sagas_table.c.status == state, _of_run(since, prefix))
                .order_by(sagas_table.c.updated_at.desc())
                .limit(1)
            ).scalar_one_or_none()
            if example is not None:
                report.examples[state] = example
    return report


def run_started() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class LeftOver:
    """What an interrupted run left unfinished in the database."""

    #: The run's sagas that have not ended (not completed, compensated or resolved), by state.
    sagas: dict[str, int]
    #: Outbox rows written since the run began and not published to Kafka.
    unpublished: int


def left_over(database: Engine, *, since: datetime, prefix: str) -> LeftOver:
    """The run's sagas not ended, by state, and the outbox rows written since ``since`` that
    are not published (read once every process of the run has stopped)."""
    from pipeline.sagas.state import TERMINAL

    sagas = {s: n for s, n in _counts(database, since, prefix).items() if s not in TERMINAL}
    return LeftOver(sagas=sagas, unpublished=unpublished_since(database, since))


def unpublished_since(database: Engine, since: datetime) -> int:
    """The outbox rows written since ``since`` and not published yet."""
    import sqlalchemy as sa

    from pipeline.outbox.table import outbox_table

    rows = outbox_table.c
    with database.connect() as connection:
        count = connection.execute(
            sa.select(sa.func.count()).where(rows.published_at.is_(None), rows.created_at >= since)
        ).scalar_one()
    return int(count)


#: The processes that take a saga on, as ``pipeline process`` specs: the orchestrator and its
#: participants (the orders service is one: it approves or rejects the order).
SAGA_PROCESSES = (
    "consumers.saga_orchestrator:processor",
    "consumers.orders_service:processor",
    "consumers.inventory_service:processor",
    "consumers.payment_service:processor",
    "consumers.shipping_service:processor",
)


def left_over_lines(left: LeftOver, database_hint: str) -> list[str]:
    """What an interrupted run left unfinished, and how it gets finished (docs/sagas.md,
    docs/outbox.md), as lines for the end of the demo's output."""
    from pipeline.cli.plurals import counted
    from pipeline.sagas.state import STUCK

    going = {s: n for s, n in left.sagas.items() if s not in STUCK}
    stuck = {s: n for s, n in left.sagas.items() if s in STUCK}
    if not going and not stuck and not left.unpublished:
        return [
            "nothing of this run is left unfinished: every saga it started ended and every "
            "outbox row written since it began is published"
        ]
    lines = [f"left unfinished by this run ({database_hint}):"]
    if going:
        states = ", ".join(f"{n:,} {s}" for s, n in sorted(going.items()))
        lines.append(f"  {counted(sum(going.values()), 'saga')} not ended: {states}")
    if left.unpublished:
        lines.append(
            f"  {counted(left.unpublished, 'outbox row')} written since the run began, "
            "not published to Kafka"
        )
    for state, n in sorted(stuck.items()):
        lines.append(
            f"  {counted(n, 'saga')} {state}: waiting for an operator (pipeline saga list "
            f"--state {state}; pipeline saga retry ID, or pipeline saga resolve ID --note ...)"
        )
    if going:
        lines += [
            "  the sagas go on where the saga orchestrator, its participants and an outbox "
            "relay run on this database: the next `pipeline demo` runs them all (in the same "
            "consumer groups) and they go on while it runs (it waits for its own sagas only); "
            "or run each yourself, with PIPELINE_DATABASE__URL as above:",
            "    pipeline outbox relay",
            *(f"    pipeline process {spec}" for spec in SAGA_PROCESSES),
            "  a step whose reply had not reached saga.replies by its deadline times out then, "
            "and its saga compensates; see them: pipeline saga list --state "
            + min(going, key=lambda s: (-going[s], s)),
        ]
    elif left.unpublished:
        lines.append(
            "  an outbox relay on this database publishes them: the next `pipeline demo` runs "
            "one, or pipeline outbox relay --once (with PIPELINE_DATABASE__URL as above)"
        )
    return lines
