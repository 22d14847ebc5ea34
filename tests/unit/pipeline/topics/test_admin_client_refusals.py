"""A request the Kafka client cannot encode (a partition count or replication factor past
librdkafka's limits, a text that is not UTF-8) is one line naming its topic, not a traceback:
confluent-kafka refuses a whole admin call with a ValueError for it, before sending anything,
and the plan's other requests are still sent."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from pipeline.errors import PipelineError
from pipeline.topics.admin import apply_plan
from pipeline.topics.plan import CreateTopic, IncreasePartitions, Plan, SetConfig
from pipeline.topics.spec import TopicSpec

#: confluent-kafka's words (Admin.c), for the limits of librdkafka it checks.
PARTITIONS_RANGE = "num_partitions out of expected range 1..100000 or -1 for broker default"


def done() -> Future[Any]:
    future: Future[Any] = Future()
    future.set_result(None)
    return future


class EncodingAdmin:
    """Stands in for confluent-kafka's AdminClient: as it does, it refuses a whole call with a
    ValueError for one request it cannot encode, before sending any (checked against the real
    client below); it accepts the others, and records what was sent."""

    def __init__(self, brokers: int = 1) -> None:
        self.brokers = brokers
        self.sent: list[tuple[str, str]] = []

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        return SimpleNamespace(brokers=dict.fromkeys(range(self.brokers)), topics={})

    def describe_configs(self, resources: list[Any], **kwargs: Any) -> dict[Any, Future[Any]]:
        raise AssertionError("not called when a request failed")

    def create_topics(self, new_topics: list[Any], **kwargs: Any) -> dict[str, Future[Any]]:
        for new in new_topics:
            if not 1 <= new.num_partitions <= 100_000:
                raise ValueError(f"Invalid NewTopic({new.topic}): {PARTITIONS_RANGE}")
            if not -1 <= new.replication_factor <= 10_000:
                raise ValueError(
                    f"Invalid NewTopic({new.topic}): replication_factor out of expected range "
                    "-1..10000"
                )
        self.sent += [("create", new.topic) for new in new_topics]
        return {new.topic: done() for new in new_topics}

    def create_partitions(self, new_partitions: list[Any], **kwargs: Any) -> dict[str, Future[Any]]:
        for new in new_partitions:
            if not 1 <= new.new_total_count <= 100_000:
                raise ValueError(
                    f"Invalid NewPartitions({new.topic}): new_total_cnt out of expected range "
                    "1..100000"
                )
        self.sent += [("partitions", new.topic) for new in new_partitions]
        return {new.topic: done() for new in new_partitions}

    def incremental_alter_configs(
        self, resources: list[Any], **kwargs: Any
    ) -> dict[Any, Future[Any]]:
        for resource in resources:
            for entry in resource.incremental_configs:
                entry.value.encode("utf-8")  # the client's own encoding: UnicodeEncodeError
        self.sent += [("configs", resource.name) for resource in resources]
        return {resource: done() for resource in resources}


def unchecked(name: str, **fields: Any) -> TopicSpec:
    """A spec past the catalogue's own checks (which refuse these numbers first), to reach the
    admin layer as a spec made in code without them would."""
    values: dict[str, Any] = {
        "name": name,
        "partitions": 3,
        "replication_factor": 1,
        "retention_ms": 86_400_000,
        "cleanup_policy": "delete",
        "configs": {},
        "description": "",
    }
    return TopicSpec.model_construct(**{**values, **fields})


def test_the_stand_in_refuses_what_the_real_client_refuses() -> None:
    real = AdminClient({"bootstrap.servers": "127.0.0.1:1"})
    with pytest.raises(ValueError, match=PARTITIONS_RANGE.replace(".", r"\.")):
        real.create_topics([NewTopic("rv2.x", num_partitions=100_001, replication_factor=1)])
    with pytest.raises(ValueError, match=r"replication_factor out of expected range -1\.\.10000"):
        real.create_topics([NewTopic("rv2.x", num_partitions=1, replication_factor=10_001)])
    entry = ConfigEntry(
        "compression.type", "lz4\udcff", incremental_operation=AlterConfigOpType.SET
    )
    with pytest.raises(UnicodeEncodeError):
        real.incremental_alter_configs(
            [ConfigResource(ResourceType.TOPIC, "rv2.t", incremental_configs=[entry])]
        )


@pytest.mark.parametrize("validate_only", [True, False])
def test_too_many_partitions_for_the_client_is_one_line_and_the_other_topics_are_sent(
    validate_only: bool,
) -> None:
    admin = EncodingAdmin()
    plan = Plan(
        changes=(
            CreateTopic(unchecked("rv2.ok")),
            CreateTopic(unchecked("rv2.x", partitions=100_001)),
        )
    )
    with pytest.raises(PipelineError) as refused:
        apply_plan(admin, plan, timeout_s=1, validate_only=validate_only)
    said = str(refused.value)
    assert "\n" not in said
    assert (
        f"cannot create topic rv2.x: the Kafka client refuses it (Invalid NewTopic(rv2.x): "
        f"{PARTITIONS_RANGE})"
    ) in said
    assert said.startswith(
        "Kafka would refuse part of the plan: "
        if validate_only
        else "applied only part of the plan: "
    )
    assert admin.sent == [("create", "rv2.ok")]


def test_a_replication_factor_past_the_clients_limit_is_one_line_naming_the_topic() -> None:
    # Only a cluster of more brokers than that would let it reach the client.
    admin = EncodingAdmin(brokers=20_000)
    plan = Plan(changes=(CreateTopic(unchecked("rv2.r", replication_factor=10_001)),))
    with pytest.raises(PipelineError) as refused:
        apply_plan(admin, plan, timeout_s=1)
    assert str(refused.value) == (
        "nothing of the plan was applied: cannot create topic rv2.r: the Kafka client refuses it "
        "(Invalid NewTopic(rv2.r): replication_factor out of expected range -1..10000)"
    )
    assert admin.sent == []


def test_growing_a_topic_past_the_clients_limit_is_one_line_naming_the_topic() -> None:
    admin = EncodingAdmin()
    plan = Plan(
        changes=(
            IncreasePartitions("rv2.t", 3, 100_001),
            IncreasePartitions("rv2.u", 3, 6),
        )
    )
    with pytest.raises(PipelineError) as refused:
        apply_plan(admin, plan, timeout_s=1, validate_only=True)
    assert str(refused.value) == (
        "Kafka would refuse part of the plan: cannot raise the partitions of topic rv2.t to "
        "100001: the Kafka client refuses it (Invalid NewPartitions(rv2.t): new_total_cnt out "
        "of expected range 1..100000)"
    )
    assert admin.sent == [("partitions", "rv2.u")]


def test_a_config_value_the_client_cannot_encode_is_one_line_naming_the_topic() -> None:
    admin = EncodingAdmin()
    plan = Plan(
        changes=(
            SetConfig("rv2.t", "compression.type", None, "lz4\udcff"),
            SetConfig("rv2.u", "compression.type", None, "lz4"),
        )
    )
    with pytest.raises(PipelineError) as refused:
        apply_plan(admin, plan, timeout_s=1, validate_only=True)
    said = str(refused.value)
    assert said.startswith(
        "Kafka would refuse part of the plan: cannot set compression.type of topic rv2.t: "
        "the Kafka client refuses it ("
    ), said
    assert "\n" not in said
    assert admin.sent == [("configs", "rv2.u")]


def test_requests_the_client_takes_are_sent_in_one_call() -> None:
    calls: list[list[str]] = []
    admin = EncodingAdmin()
    create = admin.create_topics

    def counted(new_topics: list[Any], **kwargs: Any) -> dict[str, Future[Any]]:
        calls.append([new.topic for new in new_topics])
        return create(new_topics, **kwargs)

    admin.create_topics = counted  # type: ignore[method-assign]
    plan = Plan(changes=(CreateTopic(unchecked("rv2.a")), CreateTopic(unchecked("rv2.b"))))
    apply_plan(admin, plan, timeout_s=1, validate_only=True)
    assert calls == [["rv2.a", "rv2.b"]]
