from __future__ import annotations

from pipeline.topics.plan import (
    ActualTopic,
    CreateTopic,
    IncreasePartitions,
    Plan,
    PlanWarning,
    SetConfig,
    build_plan,
    unapplied,
)
from pipeline.topics.spec import Catalogue, TopicSpec

WEEK_MS = "604800000"


def spec(name: str = "orders.events", **fields: object) -> TopicSpec:
    return TopicSpec.model_validate({"name": name, "partitions": 3, **fields})


def actual(
    name: str = "orders.events",
    partitions: int = 3,
    replication_factor: int = 1,
    **configs: str,
) -> ActualTopic:
    base = {"cleanup.policy": "delete", "retention.ms": WEEK_MS, "segment.bytes": "1073741824"}
    renamed = {key.replace("_", "."): value for key, value in configs.items()}
    return ActualTopic(name, partitions, replication_factor, {**base, **renamed})


def plan_for(specs: list[TopicSpec], *topics: ActualTopic) -> Plan:
    return build_plan(Catalogue(specs), {topic.name: topic for topic in topics})


def test_a_missing_topic_is_created() -> None:
    topic = spec()
    plan = plan_for([topic])
    assert plan.changes == (CreateTopic(topic),)
    assert plan.warnings == ()
    assert plan.has_changes
    assert not plan.is_empty


def test_a_matching_topic_needs_nothing() -> None:
    plan = plan_for([spec()], actual())
    assert plan == Plan()
    assert plan.is_empty
    assert not plan.has_changes


def test_more_partitions_in_the_catalogue_are_added() -> None:
    plan = plan_for([spec(partitions=6)], actual(partitions=3))
    assert plan.changes == (IncreasePartitions("orders.events", 3, 6),)
    assert plan.warnings == ()


def test_fewer_partitions_in_the_catalogue_are_a_warning_not_a_change() -> None:
    plan = plan_for([spec(partitions=2)], actual(partitions=3))
    assert plan.changes == ()
    assert not plan.has_changes
    assert not plan.is_empty
    (warning,) = plan.warnings
    assert warning.topic == "orders.events"
    assert "has 3 partitions, the catalogue says 2" in warning.problem
    assert "cannot remove partitions" in warning.problem


def test_another_replication_factor_is_a_warning_not_a_change() -> None:
    plan = plan_for([spec(replication_factor=3)], actual(replication_factor=1))
    assert plan.changes == ()
    (warning,) = plan.warnings
    assert "has replication factor 1, the catalogue says 3" in warning.problem


def test_a_different_managed_config_is_set_with_old_and_new_value() -> None:
    plan = plan_for([spec(retention_ms=86_400_000)], actual())
    assert plan.changes == (SetConfig("orders.events", "retention.ms", WEEK_MS, "86400000"),)


def test_a_managed_config_the_cluster_does_not_report_is_set_from_unset() -> None:
    plan = plan_for([spec(configs={"min.compaction.lag.ms": "1000"})], actual())
    assert plan.changes == (SetConfig("orders.events", "min.compaction.lag.ms", None, "1000"),)
    assert plan.changes[0].describe() == "min.compaction.lag.ms: (unset) -> 1000"


def test_configs_the_spec_does_not_manage_are_left_alone() -> None:
    plan = plan_for([spec()], actual(segment_bytes="1", max_message_bytes="5"))
    assert plan.is_empty


def test_a_config_set_on_the_topic_that_the_catalogue_does_not_declare_is_a_warning() -> None:
    # A config removed from the catalogue stayed on the broker, and apply said "no changes".
    topic = actual(min_insync_replicas="1", max_message_bytes="1048576")
    overridden = ActualTopic(
        topic.name,
        topic.partitions,
        topic.replication_factor,
        topic.configs,
        frozenset({"min.insync.replicas", "cleanup.policy", "retention.ms"}),
    )

    plan = plan_for([spec()], overridden)

    assert plan.changes == ()
    [warning] = plan.warnings
    assert warning.topic == "orders.events"
    assert warning.problem.startswith(
        "has min.insync.replicas=1 set on the topic, which the catalogue does not declare"
    )


def test_cleanup_policy_order_does_not_matter() -> None:
    plan = plan_for(
        [spec(cleanup_policy="compact,delete")], actual(cleanup_policy="delete,compact")
    )
    assert plan.is_empty


def test_boolean_configs_compare_without_case() -> None:
    topic = spec(configs={"unclean.leader.election.enable": "false"})
    plan = plan_for([topic], actual(unclean_leader_election_enable="False"))
    assert plan.is_empty


def test_topics_outside_the_catalogue_are_ignored() -> None:
    plan = plan_for([spec()], actual(), actual("other.topic", partitions=1))
    assert plan.is_empty


def test_changes_are_ordered_creations_then_partitions_then_configs() -> None:
    specs = [
        spec("a.configs", retention_ms=1000),
        spec("b.partitions", partitions=4),
        spec("c.created"),
        spec("d.both", partitions=5, cleanup_policy="compact"),
    ]
    plan = plan_for(
        specs,
        actual("a.configs"),
        actual("b.partitions"),
        actual("d.both"),
    )
    assert plan.changes == (
        CreateTopic(specs[2]),
        IncreasePartitions("b.partitions", 3, 4),
        IncreasePartitions("d.both", 3, 5),
        SetConfig("a.configs", "retention.ms", WEEK_MS, "1000"),
        SetConfig("d.both", "cleanup.policy", "delete", "compact"),
    )
    assert plan.creations == (CreateTopic(specs[2]),)
    assert [change.topic for change in plan.partition_increases] == ["b.partitions", "d.both"]
    assert [change.topic for change in plan.config_changes] == ["a.configs", "d.both"]


def test_a_topic_can_have_changes_and_warnings_at_once() -> None:
    plan = plan_for([spec(partitions=2, retention_ms=1000)], actual(partitions=3))
    assert plan.changes == (SetConfig("orders.events", "retention.ms", WEEK_MS, "1000"),)
    assert [warning.topic for warning in plan.warnings] == ["orders.events"]


def test_changes_describe_themselves_for_people() -> None:
    topic = spec(partitions=6, retention_ms=1000, cleanup_policy="compact,delete")
    assert CreateTopic(topic).describe() == (
        "create: 6 partitions, replication 1, retention.ms=1000, cleanup.policy=compact,delete"
    )
    assert CreateTopic(topic).topic == "orders.events"
    assert CreateTopic(spec(partitions=1)).describe().startswith("create: 1 partition, ")
    assert (
        CreateTopic(spec(configs={"max.message.bytes": "2000000"}))
        .describe()
        .endswith(", cleanup.policy=delete, max.message.bytes=2000000")
    )
    assert IncreasePartitions("t.x", 3, 6).describe() == (
        "partitions: 3 -> 6 (keys map to other partitions from now on)"
    )
    assert SetConfig("t.x", "retention.ms", "1", "2").describe() == "retention.ms: 1 -> 2"
    assert PlanWarning("t.x", "is odd").describe() == "is odd"


def test_an_empty_catalogue_plans_nothing() -> None:
    assert build_plan(Catalogue([]), {"a.b": actual("a.b")}).is_empty


def test_unapplied_lists_the_changes_the_cluster_does_not_show_yet() -> None:
    specs = [spec("a.new"), spec("b.grow", partitions=6), spec("c.conf", retention_ms=1000)]
    plan = plan_for(specs, actual("b.grow"), actual("c.conf"))
    assert unapplied(plan, {}) == plan.changes
    assert unapplied(plan, {"b.grow": actual("b.grow", partitions=6)}) == (
        CreateTopic(specs[0]),
        SetConfig("c.conf", "retention.ms", WEEK_MS, "1000"),
    )
    done = {
        "a.new": actual("a.new"),
        "b.grow": actual("b.grow", partitions=6),
        "c.conf": actual("c.conf", retention_ms="1000"),
    }
    assert unapplied(plan, done) == ()
