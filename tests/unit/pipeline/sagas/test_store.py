"""Saga rows on SQLite (the embedded default): a start is one insert, a known id refused; the
replies of several sagas applied together leave what each applied alone leaves, and a batch
with one stale saga saves none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from pipeline.envelope import Event
from pipeline.errors import PipelineError
from pipeline.sagas import Call, SagaDefinition, SagaRegistry, Step
from pipeline.sagas.messages import CommandInfo, reply_event
from pipeline.sagas.orchestrator import SagaOrchestrator
from pipeline.sagas.state import SagaState
from pipeline.sagas.store import (
    ConcurrentSagaUpdate,
    SagaExists,
    UnreadableSagaState,
    load_saga,
    load_sagas,
    sagas_table,
    save_sagas,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Data(BaseModel):
    n: int


REGISTRY = SagaRegistry(
    [
        SagaDefinition(
            "One",
            version=1,
            data_model=Data,
            steps=[Step("only", participant="worker", action=lambda d: Call("Do", {"n": d.n}))],
        ),
        SagaDefinition(
            "Two",
            version=1,
            data_model=Data,
            steps=[
                Step(
                    "first",
                    participant="worker",
                    action=lambda d: Call("Do", {"n": d.n}),
                    compensation=lambda d: Call("Undo", {"n": d.n}),
                ),
                Step("second", participant="worker", action=lambda d: Call("Do2", {"n": d.n})),
            ],
        ),
    ]
)


def reply_to(state: SagaState, *, ok: bool) -> Event:
    """A participant's reply to the one command ``state`` awaits."""
    [(command_id, awaited)] = state.awaiting.items()
    info = CommandInfo(state.saga_id, awaited.step, awaited.kind, command_id, awaited.attempt)
    return reply_event(info, ok=ok, source="/worker", reason=None if ok else "no")


def test_a_second_start_of_one_saga_id_is_refused_and_the_first_row_stays(
    database: Engine,
) -> None:
    with Session(database) as session, session.begin():
        SagaOrchestrator(REGISTRY, clock=lambda: T0).start(session, "One", "s-1", {"n": 1})
    later = T0 + timedelta(minutes=1)
    with pytest.raises(SagaExists), Session(database) as session, session.begin():
        SagaOrchestrator(REGISTRY, clock=lambda: later).start(session, "One", "s-1", {"n": 2})
    with Session(database) as session:
        stored = load_saga(session, "s-1")
    assert stored is not None
    assert stored.state.started_at == T0
    assert stored.state.data == {"n": 1}
    assert stored.revision == 1


def test_replies_to_several_sagas_applied_together_leave_what_each_applied_alone_leaves(
    database: Engine,
) -> None:
    orchestrator = SagaOrchestrator(REGISTRY, clock=lambda: T0)
    oks = [True, False, True]  # the second fails and is compensated
    with Session(database) as session, session.begin():
        for prefix in ("together", "alone"):
            for n in range(3):
                orchestrator.start(session, "Two", f"{prefix}-{n}", {"n": n})
    with Session(database) as session:
        started = load_sagas(session, [f"{p}-{n}" for p in ("together", "alone") for n in range(3)])
    with Session(database) as session, session.begin():
        effects = orchestrator.handle_replies(
            session, [reply_to(started[f"together-{n}"].state, ok=ok) for n, ok in enumerate(oks)]
        )
    for n, ok in enumerate(oks):
        with Session(database) as session, session.begin():
            orchestrator.handle_reply(session, reply_to(started[f"alone-{n}"].state, ok=ok))

    assert effects == ["applied"] * 3
    with Session(database) as session:
        after = load_sagas(session, [f"{p}-{n}" for p in ("together", "alone") for n in range(3)])
    for n in range(3):
        together, alone = after[f"together-{n}"], after[f"alone-{n}"]
        assert together.revision == alone.revision == 2
        assert _comparable(together.state) == _comparable(alone.state)
    assert after["together-0"].state.status == "running"
    assert after["together-1"].state.status == "compensated"  # nothing to undo: ends at once


def _comparable(state: SagaState) -> dict[str, object]:
    """A state without what differs between two sagas of the same inputs: ids."""
    dumped = state.model_dump(exclude={"saga_id"})
    dumped["awaiting"] = sorted(
        (a["step"], a["kind"], a["attempt"]) for a in dumped["awaiting"].values()
    )
    dumped["closed"] = sorted(dumped["closed"].values())
    return dumped


def test_a_reply_that_changes_nothing_applied_with_others_is_counted_and_saves_nothing(
    database: Engine,
) -> None:
    orchestrator = SagaOrchestrator(REGISTRY, clock=lambda: T0)
    with Session(database) as session, session.begin():
        for n in range(2):
            orchestrator.start(session, "Two", f"s-{n}", {"n": n})
    with Session(database) as session:
        started = load_sagas(session, ["s-0", "s-1"])
    first = reply_to(started["s-0"].state, ok=True)
    with Session(database) as session, session.begin():
        orchestrator.handle_reply(session, first)
    with Session(database) as session, session.begin():
        effects = orchestrator.handle_replies(
            session, [first, reply_to(started["s-1"].state, ok=True)]
        )

    assert effects == ["duplicate", "applied"]
    with Session(database) as session:
        after = load_sagas(session, ["s-0", "s-1"])
    assert (after["s-0"].revision, after["s-1"].revision) == (2, 2)
    duplicates = orchestrator.metrics.ignored_replies.labels("Two", "duplicate")
    assert duplicates._value.get() == 1


def test_a_batch_of_saves_with_one_stale_revision_is_refused_whole(database: Engine) -> None:
    orchestrator = SagaOrchestrator(REGISTRY, clock=lambda: T0)
    with Session(database) as session, session.begin():
        for n in range(3):
            orchestrator.start(session, "One", f"s-{n}", {"n": n})
    with Session(database) as session:
        loaded = load_sagas(session, ["s-0", "s-1", "s-2", "missing"])
    assert sorted(loaded) == ["s-0", "s-1", "s-2"]
    with Session(database) as session, session.begin():
        save_sagas(session, [(loaded["s-1"].state, loaded["s-1"].revision)])  # now revision 2

    with (
        pytest.raises(ConcurrentSagaUpdate, match="1 of 3 sagas changed"),
        Session(database) as session,
        session.begin(),
    ):
        save_sagas(session, [(stored.state, stored.revision) for stored in loaded.values()])
    with Session(database) as session:
        revisions = {
            saga_id: stored.revision
            for saga_id, stored in load_sagas(session, ["s-0", "s-1", "s-2"]).items()
        }
    assert revisions == {"s-0": 1, "s-1": 2, "s-2": 1}


def test_a_stored_state_this_version_cannot_read_names_the_saga_and_its_first_problem(
    database: Engine,
) -> None:
    # It was pydantic's ValidationError, a traceback in `pipeline saga show`.
    with Session(database) as session, session.begin():
        SagaOrchestrator(REGISTRY, clock=lambda: T0).start(session, "One", "s-1", {"n": 1})
        session.execute(
            sagas_table.update()
            .where(sagas_table.c.saga_id == "s-1")
            .values(state={"saga_id": "s-1"})
        )

    with Session(database) as session:
        with pytest.raises(UnreadableSagaState) as one:
            load_saga(session, "s-1")
        with pytest.raises(UnreadableSagaState) as many:
            load_sagas(session, ["s-1"])

    message = str(one.value)
    assert message.startswith(
        "saga s-1: its stored state is not readable by this version of the pipeline "
        "(name: Field required and "
    )
    assert message.endswith(" more)") and "\n" not in message
    assert str(many.value) == message
    assert isinstance(one.value, PipelineError)


def test_a_stored_state_that_is_no_json_at_all_is_unreadable_too(database: Engine) -> None:
    # Decoded as the row is fetched, before the state is validated: it was a JSONDecodeError
    # traceback in `pipeline saga show` and `saga resolve`.
    with Session(database) as session, session.begin():
        SagaOrchestrator(REGISTRY, clock=lambda: T0).start(session, "One", "s-1", {"n": 1})
    with database.begin() as connection:
        connection.exec_driver_sql(
            "UPDATE pipeline_sagas SET state = 'this is {not json' WHERE saga_id = 's-1'"
        )

    with Session(database) as session:
        with pytest.raises(UnreadableSagaState, match=r"^saga s-1: its stored state is not re"):
            load_saga(session, "s-1")
        with pytest.raises(UnreadableSagaState, match=r"\(not JSON: "):
            load_sagas(session, ["s-1"])


def test_a_stored_state_nested_past_the_json_decoder_is_unreadable_too(database: Engine) -> None:
    # A RecursionError traceback in `pipeline saga show` (an outside re-check).
    with Session(database) as session, session.begin():
        SagaOrchestrator(REGISTRY, clock=lambda: T0).start(session, "One", "s-1", {"n": 1})
    with database.begin() as connection:
        connection.exec_driver_sql(
            "UPDATE pipeline_sagas SET state = ? WHERE saga_id = 's-1'", ("[" * 5000,)
        )

    with (
        Session(database) as session,
        pytest.raises(UnreadableSagaState, match=r"^saga s-1: its stored state is not re"),
    ):
        load_saga(session, "s-1")


class Text(BaseModel):
    s: str
    extra: Any = None
    x: str | None = None


TEXT_REGISTRY = SagaRegistry(
    [
        SagaDefinition(
            "Text",
            version=1,
            data_model=Text,
            steps=[Step("only", participant="worker", action=lambda d: Call("Do", {"s": d.s}))],
        )
    ]
)


def nested(depth: int) -> object:
    value: object = "bottom"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [
        "caf\u00e9 \U0001f600",
        # pydantic-core's JSON writer refuses a lone surrogate (bytes decoded with
        # surrogateescape), and its parser both the surrogate's escape and nesting past 200
        # levels, all of which the json module writes and reads, as earlier versions stored them.
        "x\udc80y",
        nested(220),
    ],
    ids=["text", "lone surrogate", "nested 220 deep"],
)
def test_a_saga_state_is_stored_and_read_back_exactly(database: Engine, value: object) -> None:
    orchestrator = SagaOrchestrator(TEXT_REGISTRY, clock=lambda: T0)
    with Session(database) as session, session.begin():
        orchestrator.start(session, "Text", "s-1", {"s": "a", "extra": value})

    with Session(database) as session:
        stored = load_saga(session, "s-1")
        many = load_sagas(session, ["s-1"])
    assert stored is not None and stored.state.data == {"s": "a", "extra": value, "x": None}
    assert many["s-1"].state == stored.state


def test_a_state_stored_by_an_earlier_version_reads_as_it_did(database: Engine) -> None:
    # json.dumps's text (spaces, ASCII escapes, a lone surrogate's escape), as stored before
    # the state was written by pydantic-core.
    orchestrator = SagaOrchestrator(TEXT_REGISTRY, clock=lambda: T0)
    with Session(database) as session, session.begin():
        state = orchestrator.start(session, "Text", "s-1", {"s": "a"})
    earlier = state.model_dump(mode="json")
    earlier["data"] = {"s": "caf\u00e9", "x": "\udc80"}
    with database.begin() as connection:
        connection.execute(
            sagas_table.update().where(sagas_table.c.saga_id == "s-1").values(state=earlier)
        )
        text = connection.exec_driver_sql("SELECT state FROM pipeline_sagas").scalar_one()
    assert "\\u00e9" in text and "\\udc80" in text and '", "' in text  # json.dumps's

    with Session(database) as session:
        stored = load_saga(session, "s-1")
    assert stored is not None and stored.state.data == {"s": "caf\u00e9", "x": "\udc80"}
