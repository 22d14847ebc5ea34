"""``pipeline topics apply`` and the admin functions against the real broker.

Each test declares its own uniquely named topics in a TOML catalogue under ``tmp_path`` and deletes
them at the end.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from typer.testing import CliRunner, Result

from pipeline.cli.main import app
from pipeline.errors import PipelineError
from pipeline.kafka.clients import build_admin
from pipeline.settings import KafkaSettings
from pipeline.topics.admin import (
    KafkaUnavailableError,
    apply_plan,
    describe_cluster_topics,
    list_cluster_topics,
)
from pipeline.topics.catalogue import load_catalogue_file
from pipeline.topics.plan import ActualTopic, IncreasePartitions, Plan, SetConfig, build_plan
from tests.support.tls_server import tls_server as serving_tls

DAY_MS = 24 * 60 * 60 * 1000


@pytest.fixture
def created(kafka_admin: AdminClient) -> Iterator[list[str]]:
    """Names of topics the test may create; whichever exist are deleted afterwards."""
    names: list[str] = []
    yield names
    if not names:
        return
    for future in kafka_admin.delete_topics(names, operation_timeout=30).values():
        try:
            future.result(timeout=30)
        except KafkaException as exception:
            if exception.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:  # never created
                raise


@pytest.fixture
def base_topic(unique_name: Callable[[str], str], created: list[str]) -> str:
    name = unique_name("topics")
    created.extend([name, f"{name}.dlq"])
    return name


def toml_value(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items()) + " }"
    return str(value)


def write_catalogue(path: Path, *topics: dict[str, Any]) -> Path:
    tables = [
        "[[topic]]\n" + "".join(f"{key} = {toml_value(value)}\n" for key, value in topic.items())
        for topic in topics
    ]
    path.write_text("\n".join(tables), encoding="utf-8")
    return path


def catalogue_file(
    tmp_path: Path, base: str, partitions: int = 2, retention_ms: int = DAY_MS, **extra: Any
) -> Path:
    return write_catalogue(
        tmp_path / "topics.toml",
        {
            "name": base,
            "partitions": partitions,
            "retention_ms": retention_ms,
            "cleanup_policy": "compact,delete",
            "description": "integration test topic",
            **extra,
        },
        {"name": f"{base}.dlq", "partitions": 1, "retention_ms": 2 * DAY_MS},
    )


def cli(*args: str) -> Result:
    # Wide enough that rich never folds the long unique topic names.
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})


def rows(output: str) -> dict[str, list[str]]:
    """The cells of each row of a rich table, by the first cell."""
    cells = [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in output.splitlines()
        if line.startswith("│")
    ]
    return {row[0]: row for row in cells}


def plan_for(admin: AdminClient, path: Path) -> Plan:
    catalogue = load_catalogue_file(path)
    return build_plan(catalogue, describe_cluster_topics(admin, catalogue.names))


def describe(admin: AdminClient, *names: str) -> dict[str, ActualTopic]:
    return describe_cluster_topics(admin, names)


def test_apply_creates_the_catalogues_topics_with_their_configs(
    tmp_path: Path, base_topic: str, kafka_admin: AdminClient
) -> None:
    path = catalogue_file(tmp_path, base_topic, configs={"max.message.bytes": 2_000_000})

    result = cli("topics", "apply", "--catalogue", str(path))

    assert result.exit_code == 0, result.output
    assert "applied 2 changes" in result.output
    topics = describe(kafka_admin, base_topic, f"{base_topic}.dlq")
    base, dlq = topics[base_topic], topics[f"{base_topic}.dlq"]
    assert (base.partitions, base.replication_factor) == (2, 1)
    assert base.configs["retention.ms"] == str(DAY_MS)
    assert base.configs["cleanup.policy"] == "compact,delete"
    assert base.configs["max.message.bytes"] == "2000000"
    assert (dlq.partitions, dlq.configs["retention.ms"]) == (1, str(2 * DAY_MS))
    assert dlq.configs["cleanup.policy"] == "delete"


def test_applying_twice_changes_nothing_the_second_time(
    tmp_path: Path, base_topic: str, kafka_admin: AdminClient
) -> None:
    path = catalogue_file(tmp_path, base_topic, configs={"min.insync.replicas": 1})
    catalogue = load_catalogue_file(path)
    apply_plan(kafka_admin, build_plan(catalogue, describe(kafka_admin, *catalogue.names)))

    second = build_plan(catalogue, describe(kafka_admin, *catalogue.names))
    result = cli("topics", "apply", "--catalogue", str(path))

    assert second.is_empty
    assert result.exit_code == 0, result.output
    assert "no changes: 2 topics match the catalogue" in result.output


def test_raising_partitions_in_the_file_adds_partitions(
    tmp_path: Path, base_topic: str, kafka_admin: AdminClient
) -> None:
    assert (
        cli("topics", "apply", "--catalogue", str(catalogue_file(tmp_path, base_topic))).exit_code
        == 0
    )
    path = catalogue_file(tmp_path, base_topic, partitions=5)

    plan = plan_for(kafka_admin, path)
    result = cli("topics", "apply", "--catalogue", str(path))

    assert plan.changes == (IncreasePartitions(base_topic, 2, 5),)
    assert result.exit_code == 0, result.output
    assert "partitions: 2 -> 5" in result.output
    assert describe(kafka_admin, base_topic)[base_topic].partitions == 5


def test_changing_retention_updates_the_config_and_leaves_the_rest(
    tmp_path: Path, base_topic: str, kafka_admin: AdminClient
) -> None:
    first = catalogue_file(tmp_path, base_topic, configs={"max.message.bytes": 2_000_000})
    assert cli("topics", "apply", "--catalogue", str(first)).exit_code == 0
    path = catalogue_file(
        tmp_path, base_topic, retention_ms=3 * DAY_MS, configs={"max.message.bytes": 2_000_000}
    )

    plan = plan_for(kafka_admin, path)
    result = cli("topics", "apply", "--catalogue", str(path))

    assert plan.changes == (SetConfig(base_topic, "retention.ms", str(DAY_MS), str(3 * DAY_MS)),)
    assert result.exit_code == 0, result.output
    configs = describe(kafka_admin, base_topic)[base_topic].configs
    assert configs["retention.ms"] == str(3 * DAY_MS)
    assert configs["max.message.bytes"] == "2000000"
    assert configs["cleanup.policy"] == "compact,delete"


def test_a_config_left_out_of_the_catalogue_is_a_warning_and_list_says_differs(
    tmp_path: Path, base_topic: str, kafka_admin: AdminClient
) -> None:
    # Removed from the file, it stayed on the broker, and apply and list said all matched.
    first = catalogue_file(
        tmp_path, base_topic, configs={"max.message.bytes": 2_000_000, "min.insync.replicas": 1}
    )
    assert cli("topics", "apply", "--catalogue", str(first)).exit_code == 0
    path = catalogue_file(tmp_path, base_topic, configs={"max.message.bytes": 2_000_000})

    applied = cli("topics", "apply", "--catalogue", str(path))
    listed = cli("topics", "list", "--catalogue", str(path))

    assert applied.exit_code == 0, applied.output
    flat = " ".join(applied.output.split())
    assert f"warning: topic {base_topic} has min.insync.replicas=1 set on the topic" in flat
    assert "differs" in listed.output, listed.output
    listed_flat = " ".join(listed.output.split())
    assert "1 topic differs from the catalogue" in listed_flat, listed.output
    assert f"{base_topic}: has min.insync.replicas=1 set on the topic" in listed_flat
    assert describe(kafka_admin, base_topic)[base_topic].configs["min.insync.replicas"] == "1"


def test_lowering_partitions_is_a_warning_and_not_applied(
    tmp_path: Path, base_topic: str, kafka_admin: AdminClient
) -> None:
    assert (
        cli(
            "topics", "apply", "--catalogue", str(catalogue_file(tmp_path, base_topic, 4))
        ).exit_code
        == 0
    )
    path = catalogue_file(tmp_path, base_topic, partitions=2)

    result = cli("topics", "apply", "--catalogue", str(path))

    assert result.exit_code == 0, result.output
    assert "no changes" in result.output
    assert f"warning: topic {base_topic} has 4 partitions, the catalogue says 2" in result.output
    assert describe(kafka_admin, base_topic)[base_topic].partitions == 4


def test_dry_run_shows_the_plan_and_changes_nothing(
    tmp_path: Path, base_topic: str, kafka_admin: AdminClient
) -> None:
    path = catalogue_file(tmp_path, base_topic)

    result = cli("topics", "apply", "--catalogue", str(path), "--dry-run")

    assert result.exit_code == 0, result.output
    assert base_topic in result.output
    assert "dry run: 2 changes not applied (Kafka accepts them)" in result.output
    assert describe(kafka_admin, base_topic, f"{base_topic}.dlq") == {}


def test_a_dry_run_has_kafka_check_the_plan_and_says_what_it_would_refuse(
    tmp_path: Path, base_topic: str, kafka_admin: AdminClient
) -> None:
    path = catalogue_file(tmp_path, base_topic, configs={"no.such.config": "1"})

    result = cli("topics", "apply", "--catalogue", str(path), "--dry-run")

    assert isinstance(result.exception, PipelineError)
    assert str(result.exception).startswith(
        f"Kafka would refuse part of the plan: cannot create topic {base_topic}: "
    )
    assert "no.such.config" in str(result.exception)
    assert describe(kafka_admin, base_topic, f"{base_topic}.dlq") == {}


def test_a_dry_run_checks_a_config_change_to_an_existing_topic_and_changes_nothing(
    tmp_path: Path, base_topic: str, kafka_admin: AdminClient
) -> None:
    path = catalogue_file(tmp_path, base_topic)
    assert cli("topics", "apply", "--catalogue", str(path)).exit_code == 0

    catalogue_file(tmp_path, base_topic, configs={"max.message.bytes": "lots"})
    refused = cli("topics", "apply", "--catalogue", str(path), "--dry-run")
    catalogue_file(tmp_path, base_topic, retention_ms=3 * DAY_MS)
    accepted = cli("topics", "apply", "--catalogue", str(path), "--dry-run")

    assert isinstance(refused.exception, PipelineError)
    assert str(refused.exception) == (
        f"Kafka would refuse the plan: cannot set max.message.bytes of topic {base_topic}: "
        "Invalid value lots for configuration max.message.bytes: Not a number of type INT"
    )
    assert accepted.exit_code == 0, accepted.output
    assert "dry run: 1 change not applied (Kafka accepts them)" in accepted.output
    configs = describe(kafka_admin, base_topic)[base_topic].configs
    assert configs["retention.ms"] == str(DAY_MS)
    assert configs["max.message.bytes"] != "lots"


def test_list_shows_the_catalogues_topics_and_which_are_missing(
    tmp_path: Path, base_topic: str, kafka_admin: AdminClient
) -> None:
    path = catalogue_file(tmp_path, base_topic)
    only_base = write_catalogue(tmp_path / "base.toml", {"name": base_topic, "partitions": 2})
    assert cli("topics", "apply", "--catalogue", str(only_base)).exit_code == 0

    result = cli("topics", "list", "--catalogue", str(path))

    assert result.exit_code == 0, result.output
    table = rows(result.output)
    assert table[f"{base_topic}.dlq"] == [f"{base_topic}.dlq", "-", "-", "-", "-", "missing"]
    # Retention and cleanup policy are still the broker's defaults, not the file's.
    assert table[base_topic] == [base_topic, "2", "1", "7d", "delete", "differs"]
    # How it differs, under the table: the file's retention and cleanup policy.
    flat = " ".join(result.output.split())
    assert "1 topic differs from the catalogue" in flat, result.output
    assert f"{base_topic}: retention.ms: " in flat, result.output
    # The command to run applies the same catalogue, not the built-in one.
    assert f"1 of 2 topics missing: run `pipeline topics apply --catalogue {path}`" in flat


def test_list_all_shows_the_brokers_topics_without_internal_ones(
    tmp_path: Path, base_topic: str, kafka_admin: AdminClient
) -> None:
    apply = cli("topics", "apply", "--catalogue", str(catalogue_file(tmp_path, base_topic)))
    assert apply.exit_code == 0, apply.output

    topics = list_cluster_topics(kafka_admin)
    result = cli("topics", "list", "--all")

    assert topics[base_topic].configs["retention.ms"] == str(DAY_MS)
    assert not [name for name in topics if name.startswith("__")]
    assert list(topics) == sorted(topics)
    assert result.exit_code == 0, result.output
    assert rows(result.output)[base_topic] == [
        base_topic,
        "2",
        "1",
        "1d",
        "compact,delete",
        "exists",
    ]


def test_a_replication_factor_above_the_brokers_is_refused_before_any_change(
    tmp_path: Path, base_topic: str, kafka_admin: AdminClient
) -> None:
    path = catalogue_file(tmp_path, base_topic, replication_factor=3)

    result = cli("topics", "apply", "--catalogue", str(path))

    assert result.exit_code != 0
    assert isinstance(result.exception, PipelineError)
    assert str(result.exception) == (
        f"cannot create topic {base_topic}: replication factor 3 is more than the 1 broker "
        "available (nothing was changed)"
    )
    assert describe(kafka_admin, base_topic, f"{base_topic}.dlq") == {}


def test_a_plan_kafka_refuses_whole_says_nothing_was_applied(
    tmp_path: Path, base_topic: str, kafka_admin: AdminClient
) -> None:
    bogus = {"partitions": 1, "retention_ms": DAY_MS, "configs": {"bogus.config": "1"}}
    path = write_catalogue(
        tmp_path / "topics.toml",
        {"name": base_topic, **bogus},
        {"name": f"{base_topic}.dlq", **bogus},
    )

    result = cli("topics", "apply", "--catalogue", str(path))

    assert result.exit_code != 0
    assert str(result.exception).startswith("nothing of the plan was applied: ")
    assert describe(kafka_admin, base_topic, f"{base_topic}.dlq") == {}


def test_an_invalid_catalogue_file_fails_before_touching_kafka(tmp_path: Path) -> None:
    path = write_catalogue(tmp_path / "bad.toml", {"name": "Bad", "partitions": 1})

    result = cli("topics", "apply", "--catalogue", str(path))

    assert result.exit_code != 0
    assert isinstance(result.exception, PipelineError)
    assert str(result.exception).startswith(f"{path}: topic Bad: field name: ")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_an_unreachable_broker_is_an_error_not_a_hang() -> None:
    bootstrap = f"127.0.0.1:{closed_port()}"
    admin = build_admin(KafkaSettings(bootstrap_servers=bootstrap))

    with pytest.raises(KafkaUnavailableError, match=rf"^Kafka at {bootstrap} does not answer"):
        describe_cluster_topics(admin, ["a.b"], bootstrap=bootstrap, timeout_s=2)


def test_a_listener_that_does_not_speak_plain_kafka_is_named_with_what_to_check(
    tmp_path: Path,
) -> None:
    # A PLAINTEXT client at a TLS (or SASL_SSL) listener was told only "does not answer ...
    # is the broker running?", though a broker runs there.
    with serving_tls(tmp_path / "tls") as (bootstrap, _ca):
        admin = build_admin(KafkaSettings(bootstrap_servers=bootstrap))
        with pytest.raises(KafkaUnavailableError) as raised:
            describe_cluster_topics(admin, ["a.b"], bootstrap=bootstrap, timeout_s=2)

    message = str(raised.value)
    assert message.startswith(f"Kafka at {bootstrap} does not answer (")
    assert f"something listens at {bootstrap}" in message
    assert "PIPELINE_KAFKA__SECURITY_PROTOCOL" in message


def test_a_tls_client_at_a_tls_server_that_is_no_kafka_is_not_told_to_set_tls(tmp_path):
    # Its security protocol is SSL already: the advice to set it sent the user round in circles.
    with serving_tls(tmp_path / "tls") as (address, ca):
        admin = build_admin(
            KafkaSettings(bootstrap_servers=address, security_protocol="SSL", ssl_ca_location=ca)
        )
        with pytest.raises(KafkaUnavailableError) as raised:
            describe_cluster_topics(admin, ["a.b"], bootstrap=address, timeout_s=2)

    message = str(raised.value)
    assert f"something listens at {address}: is it a Kafka listener that takes SSL" in message
    assert "set PIPELINE_KAFKA__SECURITY_PROTOCOL" not in message
