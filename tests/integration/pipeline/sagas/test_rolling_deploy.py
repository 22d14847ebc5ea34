"""A rolling deploy of a new saga version, on the real stack: two orchestrators share the replies
(one consumer group), the old one's registry without version 2, while sagas of version 2 run.

The replies of those sagas that reach the old orchestrator wait there (``NotYet``): none is
dead-lettered, no saga times out meanwhile although their deadlines pass (the group's
read-through time of the replies stays before the waiting ones), and once the old orchestrator
is replaced by one holding version 2 every saga completes, none timed out.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from confluent_kafka import TopicPartition
from sqlalchemy.orm import Session

from pipeline.database import build_engine, migrate
from pipeline.kafka.clients import build_admin, build_consumer
from pipeline.sagas import SagaRegistry, SagaTopics
from pipeline.sagas.messages import CommandInfo, reply_event
from pipeline.sagas.orchestrator import SagaOrchestrator
from pipeline.sagas.store import load_saga
from pipeline.settings import DatabaseSettings, PipelineSettings
from pipeline.topics.catalogue import SAGA_REPLIES, default_catalogue
from tests.support.processor_runs import ProcessorProcess, processor_env, produce, wait_until
from tests.support.versioned_saga_orchestrator import ROLLED, TIMEOUT_S

SPEC = "tests.support.versioned_saga_orchestrator:processor"
PARTITIONS = 4
SAGAS = 16
WAITING_LINE = "saga Rolled version 2 is not in this orchestrator's registry"
REPLIES_CONFIGS = default_catalogue()[SAGA_REPLIES].configs


def _orchestrator(
    versions: str, group: str, namespace: str, database_url: str, log: Path
) -> ProcessorProcess:
    env = processor_env(
        database_url,
        VERSIONED_ORCHESTRATOR_VERSIONS=versions,
        VERSIONED_ORCHESTRATOR_GROUP=group,
        VERSIONED_SAGA_NAMESPACE=namespace,
    )
    return ProcessorProcess(env, log, spec=SPEC)


def _members_with_partitions(settings: PipelineSettings, group: str) -> int:
    """How many members of ``group`` have partitions assigned (0 while it rebalances)."""
    admin = build_admin(settings.kafka)
    [future] = admin.describe_consumer_groups([group]).values()
    description = future.result(timeout=10)
    if str(description.state).rsplit(".", 1)[-1] != "STABLE":
        return 0
    return sum(bool(m.assignment.topic_partitions) for m in description.members)


def _messages_in(settings: PipelineSettings, topic: str) -> int:
    consumer = build_consumer(settings.kafka, f"rolling-check-{uuid.uuid4().hex}")
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        return sum(
            high - low
            for low, high in (
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                for p in metadata.partitions
            )
        )
    finally:
        consumer.close()


def test_replies_of_a_version_the_old_orchestrator_lacks_wait_for_the_rollout_and_none_times_out(
    pipeline_stack,
    pipeline_settings,
    postgres_url,
    consumer_group,
    new_topic,
    unique_name,
    tmp_path,
):
    settings = pipeline_settings
    topics = SagaTopics(unique_name("rolling-saga"))
    replies = new_topic(partitions=PARTITIONS, name=topics.replies, **REPLIES_CONFIGS)
    dead_letters = new_topic(partitions=1, name=f"{replies}.dlq")
    database = build_engine(DatabaseSettings(url=postgres_url))
    migrate(database)
    start = (consumer_group, topics.namespace, postgres_url)
    old = _orchestrator("1", *start, tmp_path / "old.log")
    new = _orchestrator("1,2", *start, tmp_path / "new.log")
    replacement: ProcessorProcess | None = None
    try:
        wait_until(
            lambda: _members_with_partitions(settings, consumer_group) == 2,
            timeout_s=120,
            what="both orchestrators to have replies partitions",
        )
        # Sagas of version 2, as a service of the new code starts them; each step's command is
        # answered at once (the participant's reply, on the saga's partition of the replies).
        starter = SagaOrchestrator(SagaRegistry([ROLLED[1], ROLLED[2]]), topics=topics)
        saga_ids = [f"rolled-{n}-{uuid.uuid4().hex[:8]}" for n in range(SAGAS)]
        answers = []
        with Session(database) as session, session.begin():
            for n, saga_id in enumerate(saga_ids):
                state = starter.start(session, "Rolled", saga_id, {"n": n})
                assert state.version == 2
                [(command_id, awaited)] = state.awaiting.items()
                info = CommandInfo(saga_id, awaited.step, awaited.kind, command_id, awaited.attempt)
                answers.append(reply_event(info, ok=True, source="/rolled-worker"))
        produce(settings, replies, answers)

        def statuses() -> dict[str, str]:
            with Session(database) as session:
                loaded = {saga_id: load_saga(session, saga_id) for saga_id in saga_ids}
            return {s: (v.state.status if v else "missing") for s, v in loaded.items()}

        # The old orchestrator's share of the replies waits; the new one's sagas complete.
        wait_until(
            lambda: WAITING_LINE in old.log() and "completed" in statuses().values(),
            timeout_s=90,
            what="the old orchestrator's replies to wait and the new one's sagas to complete",
        )
        # Past every deadline, both still running: the waiting sagas did not time out.
        time.sleep(TIMEOUT_S + 4)
        old.assert_alive()
        new.assert_alive()
        during = statuses()
        assert "running" in during.values(), during  # some replies really waited on the old one
        assert set(during.values()) <= {"running", "completed"}, during

        # The rollout: the old orchestrator stops, one holding version 2 takes its place.
        old.terminate()
        replacement = _orchestrator("1,2", *start, tmp_path / "replacement.log")
        wait_until(
            lambda: set(statuses().values()) == {"completed"},
            timeout_s=120,
            what="every saga to complete after the rollout",
        )
    finally:
        for process in (old, new, replacement):
            if process is not None and process.alive():
                process.terminate()
    with Session(database) as session:
        for saga_id in saga_ids:
            stored = load_saga(session, saga_id)
            assert stored is not None
            history = [entry.what for entry in stored.state.history]
            assert "action_timed_out" not in history, (saga_id, history)
    assert _messages_in(settings, dead_letters) == 0, "a reply was dead-lettered"
    database.dispose()
