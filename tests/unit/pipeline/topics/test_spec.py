from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline.errors import PipelineError
from pipeline.topics.spec import (
    MAX_NAME_LENGTH,
    Catalogue,
    CatalogueError,
    TopicSpec,
    dlq_base,
    dlq_name,
    is_dlq,
    name_problem,
)


def spec(name: str = "orders.events", **fields: object) -> TopicSpec:
    return TopicSpec.model_validate({"name": name, "partitions": 3, **fields})


@pytest.mark.parametrize(
    "name",
    [
        "requests.orders",
        "saga.payments.commands",
        "saga.payments.commands.dlq",
        "orders_v2.events-new",
        "logs",
        "logs.dlq",
        "a." + "b" * (MAX_NAME_LENGTH - 2),
    ],
)
def test_valid_names_are_accepted(name: str) -> None:
    assert name_problem(name) is None
    assert spec(name).name == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("orders", "at least two segments"),
        ("Requests.orders", "lowercase"),
        ("requests.orders!", "lowercase"),
        ("requests orders.x", "lowercase"),
        ("requests..orders", "empty segment"),
        (".requests.orders", "empty segment"),
        ("requests.orders.", "empty segment"),
        ("a." + "b" * (MAX_NAME_LENGTH - 1), "at most 249"),
        ("dlq", "'dlq' alone"),
        ("orders.events.dlq.dlq", "only be the last segment"),
        ("orders.dlq.events", "only be the last segment"),
    ],
)
def test_invalid_names_are_refused_with_the_reason(name: str, reason: str) -> None:
    problem = name_problem(name)
    assert problem is not None
    assert reason in problem
    with pytest.raises(ValidationError, match=reason):
        spec(name)


def test_only_allowlisted_roots_may_have_one_segment() -> None:
    assert name_problem("logs") is None
    assert name_problem("metrics") is not None


def test_dlq_helpers_derive_names_both_ways() -> None:
    assert dlq_name("requests.orders") == "requests.orders.dlq"
    assert is_dlq("requests.orders.dlq")
    assert not is_dlq("requests.orders")
    assert dlq_base("logs.dlq") == "logs"
    with pytest.raises(ValueError, match="not a dead-letter topic"):
        dlq_base("logs")


def test_defaults_are_one_replica_seven_days_delete() -> None:
    topic = spec()
    assert topic.replication_factor == 1
    assert topic.retention_ms == 7 * 24 * 60 * 60 * 1000
    assert topic.cleanup_policy == "delete"
    assert topic.configs == {}


@pytest.mark.parametrize("partitions", [0, -1])
def test_partitions_must_be_at_least_one(partitions: int) -> None:
    with pytest.raises(ValidationError, match="partitions"):
        spec(partitions=partitions)


def test_replication_factor_must_be_at_least_one() -> None:
    with pytest.raises(ValidationError, match="replication_factor"):
        spec(replication_factor=0)


def test_retention_forever_is_minus_one() -> None:
    assert spec(retention_ms=-1).retention_ms == -1


@pytest.mark.parametrize("retention_ms", [0, -2])
def test_retention_must_be_positive_or_forever(retention_ms: int) -> None:
    with pytest.raises(ValidationError, match="retention_ms must be -1"):
        spec(retention_ms=retention_ms)


@pytest.mark.parametrize("policy", ["delete", "compact", "compact,delete"])
def test_cleanup_policies_kafka_knows_are_accepted(policy: str) -> None:
    assert spec(cleanup_policy=policy).cleanup_policy == policy


def test_an_unknown_cleanup_policy_is_refused() -> None:
    with pytest.raises(ValidationError, match="cleanup_policy"):
        spec(cleanup_policy="purge")


@pytest.mark.parametrize("policy", ["compact", "compact,delete"])
def test_a_dead_letter_topic_is_never_compacted(policy: str) -> None:
    with pytest.raises(ValidationError, match="cleanup_policy must be delete"):
        spec("orders.events.dlq", cleanup_policy=policy)


@pytest.mark.parametrize(
    ("key", "field"), [("retention.ms", "retention_ms"), ("cleanup.policy", "cleanup_policy")]
)
def test_configs_must_not_repeat_the_managed_keys(key: str, field: str) -> None:
    with pytest.raises(ValidationError, match=f"set with the {field} field"):
        spec(configs={key: "1"})


@pytest.mark.parametrize("key", ["Retention.bytes", "max message bytes", "", ".x", "x."])
def test_config_keys_must_look_like_kafka_config_names(key: str) -> None:
    with pytest.raises(ValidationError, match="not a Kafka topic config name"):
        spec(configs={key: "1"})


def test_numbers_and_booleans_in_configs_become_kafka_strings() -> None:
    topic = spec(configs={"min.insync.replicas": 2, "unclean.leader.election.enable": False})
    assert topic.configs == {"min.insync.replicas": "2", "unclean.leader.election.enable": "false"}


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="partiton"):
        spec(partiton=3)


def test_a_spec_is_frozen() -> None:
    topic = spec()
    with pytest.raises(ValidationError):
        topic.partitions = 6  # type: ignore[misc]


def test_desired_configs_hold_policy_retention_and_the_other_configs() -> None:
    topic = spec(
        retention_ms=86_400_000,
        cleanup_policy="compact,delete",
        configs={"min.insync.replicas": "2"},
    )
    assert topic.desired_configs() == {
        "cleanup.policy": "compact,delete",
        "retention.ms": "86400000",
        "min.insync.replicas": "2",
    }


def test_catalogue_keeps_the_declared_order_and_looks_up_by_name() -> None:
    topics = [spec("requests.orders"), spec("logs"), spec("requests.orders.dlq")]
    catalogue = Catalogue(topics)
    assert catalogue.names == ("requests.orders", "logs", "requests.orders.dlq")
    assert list(catalogue) == topics
    assert len(catalogue) == 3
    assert "logs" in catalogue
    assert "logs.dlq" not in catalogue
    assert catalogue["logs"] == topics[1]
    assert catalogue.get("nope.nope") is None
    assert catalogue.dlq_of("requests.orders") == topics[2]
    assert catalogue.dlq_of("logs") is None
    with pytest.raises(KeyError, match="not in the catalogue"):
        catalogue["nope.nope"]


def test_catalogues_with_the_same_topics_are_equal() -> None:
    assert Catalogue([spec("a.b"), spec("c.d")]) == Catalogue([spec("a.b"), spec("c.d")])
    assert Catalogue([spec("a.b")]) != Catalogue([spec("a.b", partitions=6)])


def test_catalogue_refuses_a_name_defined_twice() -> None:
    with pytest.raises(CatalogueError, match=r"^topic orders\.events: defined more than once$"):
        Catalogue([spec("orders.events"), spec("orders.events", partitions=6)])


def test_catalogue_refuses_names_that_collide_in_kafka_metrics() -> None:
    with pytest.raises(
        CatalogueError, match=r"topic orders_events\.x: collides with orders\.events"
    ):
        Catalogue([spec("orders.events.x"), spec("orders_events.x")])


def test_catalogue_refuses_a_dead_letter_topic_without_its_base_topic() -> None:
    with pytest.raises(
        CatalogueError,
        match=r"topic requests\.orders\.dlq: dead-letter topic of requests\.orders, "
        "which is not in the catalogue",
    ):
        Catalogue([spec("requests.orders.dlq")])


def test_catalogue_error_is_a_pipeline_error() -> None:
    assert issubclass(CatalogueError, PipelineError)


def test_an_empty_catalogue_is_valid() -> None:
    assert len(Catalogue([])) == 0
