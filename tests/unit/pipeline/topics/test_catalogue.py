from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.topics.catalogue import default_catalogue, load_catalogue_file
from pipeline.topics.spec import CatalogueError, TopicSpec

DAY_MS = 24 * 60 * 60 * 1000

CONSUMED = [
    "requests.orders",
    "requests.customers",
    "logs",
    "saga.orders.commands",
    "saga.payments.commands",
    "saga.inventory.commands",
    "saga.shipping.commands",
    "saga.replies",
]
PRODUCED_ONLY = ["saga.events", "orders.events", "payments.events"]


def test_default_catalogue_declares_the_projects_topics_in_order() -> None:
    names = default_catalogue().names
    assert list(names) == [*CONSUMED, *PRODUCED_ONLY, *(f"{name}.dlq" for name in CONSUMED)]


def test_every_consumed_topic_has_a_dead_letter_topic_and_no_other_does() -> None:
    catalogue = default_catalogue()
    for name in CONSUMED:
        assert catalogue.dlq_of(name) is not None, name
    for name in PRODUCED_ONLY:
        assert catalogue.dlq_of(name) is None, name


@pytest.mark.parametrize(
    ("name", "partitions", "retention_days"),
    [
        ("requests.orders", 6, 7),
        ("requests.customers", 6, 7),
        ("saga.orders.commands", 6, 7),
        ("saga.payments.commands", 6, 7),
        ("saga.inventory.commands", 6, 7),
        ("saga.shipping.commands", 6, 7),
        ("saga.replies", 3, 7),
        ("saga.events", 3, 7),
        ("orders.events", 3, 7),
        ("payments.events", 3, 7),
        ("logs", 3, 3),
        ("logs.dlq", 3, 14),
        ("requests.orders.dlq", 3, 14),
    ],
)
def test_default_partitions_and_retention(name: str, partitions: int, retention_days: int) -> None:
    topic = default_catalogue()[name]
    assert topic.partitions == partitions
    assert topic.retention_ms == retention_days * DAY_MS
    assert topic.cleanup_policy == "delete"
    assert topic.description


#: Configs of one topic beside the durability ones: saga.replies is stamped by the broker.
OWN_CONFIGS = {"saga.replies": {"message.timestamp.type": "LogAppendTime"}}


def test_default_replication_factor_is_one_and_adds_no_durability_configs() -> None:
    for topic in default_catalogue():
        assert topic.replication_factor == 1
        assert topic.configs == OWN_CONFIGS.get(topic.name, {})


def test_replication_factor_applies_to_every_topic() -> None:
    catalogue = default_catalogue(replication_factor=2)
    assert {topic.replication_factor for topic in catalogue} == {2}
    assert {topic.name: topic.configs for topic in catalogue if topic.configs} == OWN_CONFIGS


def test_three_replicas_require_two_in_sync() -> None:
    for topic in default_catalogue(replication_factor=3):
        assert topic.configs == {"min.insync.replicas": "2", **OWN_CONFIGS.get(topic.name, {})}


def test_request_topics_say_how_they_are_keyed() -> None:
    assert "keyed by order id" in default_catalogue()["requests.orders"].description


VALID = """
[[topic]]
name = "shop.orders"
partitions = 6
replication_factor = 1
retention_ms = 86_400_000
cleanup_policy = "compact,delete"
description = "orders"
configs = { "min.insync.replicas" = 1, "unclean.leader.election.enable" = false }

[[topic]]
name = "shop.orders.dlq"
partitions = 1
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topics.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_catalogue_file_is_loaded_with_defaults_for_missing_fields(tmp_path: Path) -> None:
    catalogue = load_catalogue_file(write(tmp_path, VALID))
    assert list(catalogue) == [
        TopicSpec(
            name="shop.orders",
            partitions=6,
            replication_factor=1,
            retention_ms=86_400_000,
            cleanup_policy="compact,delete",
            description="orders",
            configs={"min.insync.replicas": "1", "unclean.leader.election.enable": "false"},
        ),
        TopicSpec(name="shop.orders.dlq", partitions=1),
    ]


def test_a_path_may_be_given_as_a_string(tmp_path: Path) -> None:
    assert len(load_catalogue_file(str(write(tmp_path, VALID)))) == 2


def refusal(path: Path) -> str:
    with pytest.raises(CatalogueError) as caught:
        load_catalogue_file(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message.removeprefix(f"{path}: ")


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    assert refusal(tmp_path / "nope.toml") == (
        "cannot read the catalogue file: No such file or directory"
    )


def test_a_file_that_is_not_toml_is_refused(tmp_path: Path) -> None:
    assert refusal(write(tmp_path, "[[topic]\nname = 1\n")).startswith("not valid TOML: ")


def test_a_file_without_topics_is_refused(tmp_path: Path) -> None:
    assert refusal(write(tmp_path, "")) == "no topics defined (expected [[topic]] tables)"


def test_unknown_top_level_keys_are_refused(tmp_path: Path) -> None:
    text = VALID + '\n[[topics]]\nname = "a.b"\npartitions = 1\n'
    assert refusal(write(tmp_path, text)) == (
        "unknown top-level key 'topics' (expected only [[topic]] tables)"
    )


def test_topic_must_be_tables(tmp_path: Path) -> None:
    assert refusal(write(tmp_path, 'topic = ["a.b"]\n')) == ("topic #1: expected a [[topic]] table")


def test_an_invalid_field_names_file_topic_field_and_reason(tmp_path: Path) -> None:
    text = VALID.replace("partitions = 6", "partitions = 0")
    assert refusal(write(tmp_path, text)) == (
        "topic shop.orders: field partitions: Input should be greater than or equal to 1"
    )


def test_an_invalid_name_is_explained(tmp_path: Path) -> None:
    text = '[[topic]]\nname = "Shop.orders"\npartitions = 1\n'
    assert refusal(write(tmp_path, text)) == (
        "topic Shop.orders: field name: segment 'Shop' may only hold lowercase letters, digits, "
        "'_' and '-' (names are <domain>.<kind>)"
    )


def test_a_topic_without_a_name_is_numbered(tmp_path: Path) -> None:
    text = VALID + "\n[[topic]]\npartitions = 1\n"
    assert refusal(write(tmp_path, text)) == "topic #3: field name: Field required"


def test_a_misspelt_field_is_refused(tmp_path: Path) -> None:
    text = VALID.replace("retention_ms", "retention")
    assert refusal(write(tmp_path, text)) == (
        "topic shop.orders: field retention: Extra inputs are not permitted"
    )


def test_managed_keys_in_configs_are_refused(tmp_path: Path) -> None:
    text = VALID.replace('"min.insync.replicas" = 1', '"retention.ms" = 1')
    assert refusal(write(tmp_path, text)) == (
        "topic shop.orders: field configs: 'retention.ms' is set with the retention_ms field, "
        "not in configs"
    )


def test_catalogue_rules_apply_to_files(tmp_path: Path) -> None:
    text = VALID.replace('name = "shop.orders"\n', 'name = "shop.order"\n')
    assert refusal(write(tmp_path, text)) == (
        "topic shop.orders.dlq: dead-letter topic of shop.orders, which is not in the catalogue"
    )


def test_duplicate_topics_in_a_file_are_refused(tmp_path: Path) -> None:
    text = VALID + '\n[[topic]]\nname = "shop.orders"\npartitions = 1\n'
    assert refusal(write(tmp_path, text)) == "topic shop.orders: defined more than once"
