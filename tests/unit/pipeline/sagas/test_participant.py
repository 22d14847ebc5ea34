"""A saga participant whose commands take the group-commit path: the commands of a group read
the participant's log in one query and write their log rows and replies in one statement each,
with the same answers as one by one: a refusal rolls back only its own handler's writes, a
command sent again is answered from the log, a compensation of an action never done undoes
nothing; and the log keeps its rows for the retention, when one is set."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import BaseModel, ValidationError
from sqlalchemy.engine import Engine

from pipeline.envelope import Event
from pipeline.outbox.table import outbox_table
from pipeline.processing.group_commit import commit
from pipeline.processing.harness import PipelineHarness
from pipeline.processing.processor import Processor, UnitOfWork
from pipeline.retry import RetryPolicy
from pipeline.sagas import Call, SagaDefinition, SagaRegistry, Step
from pipeline.sagas.machine import CommandToSend
from pipeline.sagas.messages import command_event
from pipeline.sagas.orchestrator import SagaOrchestrator, orchestrator_processor
from pipeline.sagas.participant import Refuse, SagaCommand, SagaParticipant
from pipeline.sagas.step_log import StepOutcome, record_participant_outcomes, saga_steps_table
from pipeline.settings import ProcessingSettings, SagaSettings
from pipeline.topics.catalogue import SAGA_REPLIES
from tests.support.driving import handled_units

GROUP = "stock-service"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
TOPIC = "saga.stock.commands"

effects_metadata = sa.MetaData()
reservations = sa.Table(
    "reservations",
    effects_metadata,
    sa.Column("saga_id", sa.String(64), primary_key=True),
    sa.Column("n", sa.Integer, nullable=False),
)


@pytest.fixture
def database(database: Engine) -> Engine:
    effects_metadata.create_all(database)
    return database


@pytest.fixture
def processor() -> Processor:
    processor = Processor(GROUP)
    participant = SagaParticipant(processor, "stock", group_commit=True)

    @participant.command("Reserve")
    def reserve(command: SagaCommand, unit: UnitOfWork) -> dict[str, Any]:
        unit.session.execute(
            sa.insert(reservations).values(saga_id=command.saga_id, n=command.data["n"])
        )
        if command.data["n"] == 7:  # a refusal quoting what it caught, as one often does
            raise Refuse("declined: cannot reach postgresql://svc:S3cretPw6@db/x api_key=K9")
        if command.data["n"] % 2:
            raise Refuse(f"odd: {command.data['n']}")  # after its write: rolled back
        return {"reserved": command.data["n"]}

    @participant.command("Release")
    def release(command: SagaCommand, unit: UnitOfWork) -> None:
        unit.session.execute(
            sa.delete(reservations).where(reservations.c.saga_id == command.saga_id)
        )

    return processor


def command(saga_id: str, kind: str, n: int = 0) -> Event:
    call = Call("Reserve" if kind == "action" else "Release", {"n": n})
    return command_event(
        CommandToSend(uuid.uuid4().hex, saga_id, "Stock", "reserve", kind, 1, "stock", call)  # type: ignore[arg-type]
    )


def replies(database: Engine) -> list[tuple[str, bool, dict[str, Any]]]:
    """``(saga id, ok, data or reason)`` of each reply in the outbox, in its order."""
    with database.connect() as connection:
        rows = connection.execute(
            sa.select(outbox_table.c.aggregate_id, outbox_table.c.payload)
            .where(outbox_table.c.topic == SAGA_REPLIES)
            .order_by(outbox_table.c.position)
        ).all()
    found = []
    for saga_id, payload in rows:
        body = json.loads(payload)
        found.append(
            (saga_id, body["ok"], body["data"] if body["ok"] else {"reason": body["reason"]})
        )
    return found


def test_a_group_of_commands_answers_each_as_alone_and_a_refusal_undoes_only_its_own(
    database: Engine, processor: Processor
) -> None:
    events = [command("s-0", "action", 2), command("s-1", "action", 3), command("s-2", "action", 4)]

    outcomes = commit(
        database, handled_units(processor, TOPIC, events), consumer_group=GROUP, use_inbox=True
    )

    assert [o.kind for o in outcomes] == ["processed"] * 3
    with database.connect() as connection:
        kept = connection.execute(sa.select(reservations.c.saga_id).order_by("saga_id")).all()
        logged = connection.execute(
            sa.select(saga_steps_table.c.saga_id, saga_steps_table.c.ok).order_by("saga_id")
        ).all()
    assert [row.saga_id for row in kept] == ["s-0", "s-2"]
    assert [tuple(row) for row in logged] == [("s-0", True), ("s-1", False), ("s-2", True)]
    assert [(saga_id, ok) for saga_id, ok, _ in replies(database)] == [
        ("s-0", True),
        ("s-1", False),
        ("s-2", True),
    ]


def test_a_refusals_reason_is_redacted_before_it_goes_on_saga_replies(
    database: Engine, processor: Processor
) -> None:
    # It reaches the saga's row and saga.events, read by every reader of that topic.
    commit(
        database,
        handled_units(processor, TOPIC, [command("s-7", "action", 7)]),
        consumer_group=GROUP,
        use_inbox=True,
    )

    [(_, ok, body)] = replies(database)
    assert not ok and body["reason"].startswith("declined: cannot reach postgresql://svc:")
    assert "S3cretPw6" not in body["reason"] and "K9" not in body["reason"]


def test_commands_sent_again_are_answered_from_the_log_and_undo_of_nothing_is_nothing(
    database: Engine, processor: Processor
) -> None:
    commit(
        database,
        handled_units(processor, TOPIC, [command("s-0", "action", 2), command("s-1", "action", 3)]),
        consumer_group=GROUP,
        use_inbox=True,
    )
    again = [
        command("s-0", "action", 2),  # a new command id: the inbox does not know it
        command("s-1", "action", 3),
        command("s-2", "compensation"),  # its action never ran here
        command("s-0", "compensation"),  # the same saga twice in one group: one after the other
    ]

    outcomes = commit(
        database, handled_units(processor, TOPIC, again), consumer_group=GROUP, use_inbox=True
    )

    assert [o.kind for o in outcomes] == ["processed"] * 4
    assert replies(database)[2:] == [
        ("s-0", True, {"reserved": 2}),  # the first outcome, not a second reservation
        ("s-1", False, {"reason": "odd: 3"}),
        ("s-2", True, {"undone": False}),
        ("s-0", True, {}),
    ]
    with database.connect() as connection:
        left = connection.execute(sa.select(sa.func.count()).select_from(reservations)).scalar()
    assert left == 0  # s-0 released, s-1 never kept


def log_rows(database: Engine) -> list[tuple[str, str, str]]:
    table = saga_steps_table
    with database.connect() as connection:
        rows = connection.execute(
            sa.select(table.c.service, table.c.saga_id, table.c.kind).order_by(
                table.c.service, table.c.saga_id, table.c.kind
            )
        )
        return [tuple(row) for row in rows]


def fill_log(database: Engine) -> None:
    """Rows of this service handled 1, 3 and 5 hours before T0, and one of another service."""
    with database.begin() as connection:
        record_participant_outcomes(
            connection,
            [
                StepOutcome(service, saga_id, "reserve", kind, True, {}, T0 - timedelta(hours=h))
                for service, saga_id, kind, h in [
                    (GROUP, "s-1h", "action", 1),
                    (GROUP, "s-3h", "action", 3),
                    (GROUP, "s-3h", "compensation", 3),
                    (GROUP, "s-5h", "action", 5),
                    ("other", "s-5h", "action", 5),
                ]
            ],
        )


def test_the_log_deletes_its_own_rows_older_than_the_retention_every_few_minutes(
    database: Engine,
) -> None:
    fill_log(database)
    processor = Processor(GROUP)
    participant = SagaParticipant(
        processor,
        "stock",
        settings=SagaSettings(step_log_retention_s=2 * 3600, cleanup_batch_size=2),
        cleanup_every_s=120,
        clock=lambda: T0,
    )
    [task] = [task for task in processor.periodic_tasks if "old_steps" in task.name]

    task.run(database)

    assert task.every_s == 120
    assert log_rows(database) == [("other", "s-5h", "action"), (GROUP, "s-1h", "action")]
    assert participant.delete_old_steps(database) == 0  # nothing left to delete


def test_without_a_retention_the_log_keeps_every_row(database: Engine) -> None:
    fill_log(database)
    participant = SagaParticipant(Processor(GROUP), "stock", settings=SagaSettings())

    assert participant.delete_old_steps(database) == 0
    assert len(log_rows(database)) == 5


def test_a_retention_under_an_hour_is_refused() -> None:
    with pytest.raises(ValidationError, match="step_log_retention_s"):
        SagaSettings(step_log_retention_s=60)


# --- a handler that keeps failing ---------------------------------------------------------------


class Order(BaseModel):
    order_id: str


crashing_registry = SagaRegistry(
    [
        SagaDefinition(
            "HoldThenCharge",
            version=1,
            data_model=Order,
            steps=[
                Step(
                    "hold",
                    participant="warehouse",
                    action=lambda d: Call("Hold", {"order_id": d.order_id}),
                    compensation=lambda d: Call("Release", {"order_id": d.order_id}),
                    timeout_s=60,
                ),
                Step(
                    "charge",
                    participant="billing",
                    action=lambda d: Call("Charge", {"order_id": d.order_id}),
                    compensation=lambda d: Call("Refund", {"order_id": d.order_id}),
                    timeout_s=60,
                ),
            ],
        )
    ]
)


def test_a_command_whose_handler_keeps_failing_does_not_hold_up_its_compensation() -> None:
    orchestrator = SagaOrchestrator(crashing_registry)
    orders = Processor("orders")

    @orders.handler("orders.placed")
    def place(event: Event, unit: UnitOfWork) -> None:
        order_id = event.data["order_id"]
        orchestrator.start(unit.session, "HoldThenCharge", order_id, {"order_id": order_id})

    warehouse = Processor("warehouse")
    stock = SagaParticipant(warehouse, "warehouse")
    held: list[str] = []

    @stock.command("Hold")
    def hold(command: SagaCommand, unit: UnitOfWork) -> None:
        held.append(command.saga_id)

    @stock.command("Release")
    def release(command: SagaCommand, unit: UnitOfWork) -> None:
        held.remove(command.saga_id)

    billing = Processor("billing")
    payments = SagaParticipant(billing, "billing")
    refunds: list[str] = []

    @payments.command("Charge")
    def charge(command: SagaCommand, unit: UnitOfWork) -> None:
        raise RuntimeError("the card service is down")

    @payments.command("Refund")
    def refund(command: SagaCommand, unit: UnitOfWork) -> None:
        refunds.append(command.saga_id)  # never: no charge to undo, the log answers

    retries = ProcessingSettings(
        retry=RetryPolicy(max_attempts=2, initial_backoff_s=1, max_backoff_s=1, jitter=0)
    )
    processors = [orders, orchestrator_processor(orchestrator), warehouse, billing]
    with PipelineHarness(processors, clocked=[orchestrator], settings=retries) as harness:
        harness.send("orders.placed", Event(source="/t", type="Placed", data={"order_id": "o-1"}))
        harness.run_until_idle()
        harness.advance(61, step=1)  # the charge's retries, its dead letter, its timeout

        state = harness.sagas()["o-1"]
        assert state.status == "compensated", state.reason
        assert held == [] and refunds == []  # the hold released; nothing charged, none refunded
        letters = harness.dead_letters("saga.billing.commands")
        assert [letter.reason for letter in letters] == ["retries_exhausted"]  # none key_parked


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("bad name/x", "may only hold lowercase letters"),
        ("", "the name is empty"),
        ("stock!", "may only hold lowercase letters"),
        # saga.<233 characters>.commands is a Kafka name; its .dlq, 251 characters, is not.
        ("p" * 233, "251 characters long, Kafka allows at most 249"),
    ],
)
def test_a_participant_name_that_cannot_name_its_topics_is_refused(name: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        SagaParticipant(Processor("p"), name)


def test_a_participant_without_group_commit_never_shares_a_transaction_with_other_commands():
    # Its handler may be slow on a bad day; the runtime's synchronous groups are sized for
    # its usual quick runs, and other sagas' commands waited behind a slow one and timed out.
    alone = SagaParticipant(Processor("alone-service"), "alone")
    grouped = SagaParticipant(Processor("grouped-service"), "grouped", group_commit=True)

    @alone.command("Do")
    def do_alone(command: SagaCommand, unit: UnitOfWork) -> dict[str, Any]:
        return {}

    @grouped.command("Do")
    def do_grouped(command: SagaCommand, unit: UnitOfWork) -> dict[str, Any]:
        return {}

    [alone_route] = [route for _, route in alone.processor._routes.items()]
    [grouped_route] = [route for _, route in grouped.processor._routes.items()]
    assert not alone_route.is_async and alone_route.grouped is False
    assert grouped_route.is_async  # the group-commit path of its own (write_batched)


def test_a_compensation_gets_the_reply_its_action_gave_even_when_the_saga_never_saw_it(
    database: Engine,
) -> None:
    # The saga timed the action out, so its data lacks the reply; the action ran late all the
    # same, and its compensation must still find what to undo: the participant's own log has it.
    processor = Processor(GROUP)
    participant = SagaParticipant(processor, "stock", group_commit=True)
    seen: list[tuple[str, dict[str, Any] | None]] = []

    @participant.command("Reserve")
    def reserve(command: SagaCommand, unit: UnitOfWork) -> dict[str, Any]:
        seen.append((command.kind, command.action_reply))
        return {"reservation_id": f"r-{command.data['n']}"}

    @participant.command("Release")
    def release(command: SagaCommand, unit: UnitOfWork) -> None:
        seen.append((command.kind, command.action_reply))

    for event in (command("s-0", "action", 7), command("s-0", "compensation")):
        commit(
            database, handled_units(processor, TOPIC, [event]), consumer_group=GROUP, use_inbox=True
        )

    assert seen == [("action", None), ("compensation", {"reservation_id": "r-7"})]
