"""A reply that reached ``saga.replies`` before its step's deadline wins over the timeout, however
late the orchestrator reads it: here the orchestrator was down from before the reply came until
after the deadline, and when it starts, the reply waits behind a backlog while its deadline task
runs."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from pipeline.database import build_engine, migrate
from pipeline.sagas import SagaRegistry, SagaTopics
from pipeline.sagas.messages import CommandInfo, reply_event
from pipeline.sagas.orchestrator import SagaOrchestrator
from pipeline.sagas.store import load_saga
from pipeline.settings import DatabaseSettings
from pipeline.topics.catalogue import SAGA_REPLIES, default_catalogue
from tests.support.processor_runs import ProcessorProcess, processor_env, produce, wait_until
from tests.support.timed_saga_orchestrator import TIMEOUT_S, timed

SPEC = "tests.support.timed_saga_orchestrator:processor"
#: Replies ahead of the one that matters, on its partition.
BACKLOG = 300
#: The catalogue's saga.replies configs (the broker stamps the replies).
REPLIES_CONFIGS = default_catalogue()[SAGA_REPLIES].configs


def test_a_reply_that_came_while_the_orchestrator_was_down_wins_over_the_timeout_due_meanwhile(
    pipeline_stack,
    pipeline_settings,
    postgres_url,
    consumer_group,
    new_topic,
    unique_name,
    tmp_path,
):
    settings = pipeline_settings
    # A saga system of this test's own (its topics are deleted after).
    topics = SagaTopics(unique_name("timed-saga"))
    replies = new_topic(partitions=3, name=topics.replies, **REPLIES_CONFIGS)
    new_topic(partitions=1, name=f"{replies}.dlq")
    database = build_engine(DatabaseSettings(url=postgres_url))
    migrate(database)
    saga_id = f"timed-{uuid.uuid4().hex}"
    with Session(database) as session, session.begin():
        state = SagaOrchestrator(SagaRegistry([timed]), topics=topics).start(
            session, "Timed", saga_id, {"n": 1}
        )
    [(command_id, awaited)] = state.awaiting.items()

    # The participant answers at once (its relay writes the reply to the replies), behind a
    # backlog on the same partition that takes the orchestrator a few seconds to go through
    # (replies for sagas it does not know, dead-lettered one by one) ...
    info = CommandInfo(saga_id, awaited.step, awaited.kind, command_id, awaited.attempt)
    backlog = [
        reply_event(
            CommandInfo(f"{saga_id}-ghost-{n}", awaited.step, awaited.kind, f"c{n}", 1),
            ok=True,
            source="/timed-worker",
        ).model_copy(update={"partitionkey": saga_id})
        for n in range(BACKLOG)
    ]
    produce(settings, replies, [*backlog, reply_event(info, ok=True, source="/timed-worker")])
    assert datetime.now(UTC) < awaited.deadline, "the reply must come before the deadline"
    # ... while the orchestrator is down until well past the deadline.
    time.sleep(TIMEOUT_S + 2)

    env = processor_env(
        postgres_url,
        TIMED_ORCHESTRATOR_GROUP=consumer_group,
        TIMED_SAGA_NAMESPACE=topics.namespace,
    )
    process = ProcessorProcess(env, tmp_path / "orchestrator.log", spec=SPEC)

    def ended() -> bool:
        process.assert_alive()
        with Session(database) as session:
            stored = load_saga(session, saga_id)
        return stored is not None and stored.state.is_terminal

    try:
        wait_until(ended, timeout_s=120, what=f"saga {saga_id} to end")
    finally:
        process.terminate()
    with Session(database) as session:
        stored = load_saga(session, saga_id)
    assert stored is not None
    history = [entry.what for entry in stored.state.history]
    assert stored.state.status == "completed", (history, process.tail())
    assert "action_timed_out" not in history
    database.dispose()
