"""A reply that reached ``saga.replies`` before its step's deadline wins over the timeout, however
late the orchestrator reads it: here the orchestrator was down from before the reply came until
after the deadline, and when it starts, the reply waits behind a backlog while its deadline task
runs."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from pipeline.database import build_engine, migrate
from pipeline.kafka.clients import build_admin
from pipeline.kafka.groups import commit_group_at_end
from pipeline.sagas.messages import CommandInfo, reply_event
from pipeline.sagas.store import load_saga
from pipeline.settings import DatabaseSettings
from pipeline.topics.admin import apply_plan, describe_cluster_topics
from pipeline.topics.catalogue import SAGA_REPLIES, default_catalogue
from pipeline.topics.plan import build_plan
from tests.support.processor_runs import REPO_ROOT, ProcessorProcess, produce, wait_until
from tests.support.timed_saga_orchestrator import TIMEOUT_S, orchestrator

SPEC = "tests.support.timed_saga_orchestrator:processor"
#: Replies ahead of the one that matters, on its partition.
BACKLOG = 300


def test_a_reply_that_came_while_the_orchestrator_was_down_wins_over_the_timeout_due_meanwhile(
    pipeline_stack, pipeline_settings, postgres_url, consumer_group, tmp_path
):
    settings = pipeline_settings
    admin = build_admin(settings.kafka)
    catalogue = default_catalogue()
    apply_plan(admin, build_plan(catalogue, describe_cluster_topics(admin, catalogue.names)))
    # saga.replies is shared with other tests: this group reads only what comes from now on.
    commit_group_at_end(settings.kafka, consumer_group, [SAGA_REPLIES])
    database = build_engine(DatabaseSettings(url=postgres_url))
    migrate(database)
    saga_id = f"timed-{uuid.uuid4().hex}"
    with Session(database) as session, session.begin():
        state = orchestrator.start(session, "Timed", saga_id, {"n": 1})
    [(command_id, awaited)] = state.awaiting.items()

    # The participant answers at once (its relay writes the reply to saga.replies), behind a
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
    produce(settings, SAGA_REPLIES, [*backlog, reply_event(info, ok=True, source="/timed-worker")])
    assert datetime.now(UTC) < awaited.deadline, "the reply must come before the deadline"
    # ... while the orchestrator is down until well past the deadline.
    time.sleep(TIMEOUT_S + 2)

    env = {
        **os.environ,
        "PIPELINE_DATABASE__URL": postgres_url,
        "PIPELINE_LOGS__CONSOLE": "text",
        "TIMED_ORCHESTRATOR_GROUP": consumer_group,
        "PYTHONPATH": os.pathsep.join(
            part for part in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if part
        ),
    }
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
