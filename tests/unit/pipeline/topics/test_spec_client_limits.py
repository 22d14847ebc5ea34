"""A catalogue's numbers are whole numbers the Kafka client takes: no more partitions than
confluent-kafka's NewTopic and NewPartitions accept (more was a ValueError traceback from
``topics apply``), and no TOML boolean taken for a number (``partitions = true`` made a topic of
one partition, ``retention_ms = true`` a retention of 1 ms)."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    NewPartitions,
    NewTopic,
)
from pydantic import ValidationError

from pipeline.topics.catalogue import load_catalogue_file
from pipeline.topics.spec import MAX_PARTITIONS, CatalogueError, TopicSpec

#: Every whole-number field of a topic (the test below checks this is all of them).
INT_FIELDS = ("partitions", "replication_factor", "retention_ms")


def spec(**fields: object) -> TopicSpec:
    return TopicSpec.model_validate({"name": "rv2.t", "partitions": 3, **fields})


def catalogue_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "topics.toml"
    path.write_text(f'[[topic]]\nname = "rv2.x"\n{body}\n', encoding="utf-8")
    return path


def test_max_partitions_is_the_figure_confluent_kafka_refuses_beyond() -> None:
    # The client refuses such a request before it sends anything, naming its range.
    admin = AdminClient({"bootstrap.servers": "127.0.0.1:1"})
    with pytest.raises(ValueError, match=rf"1\.\.{MAX_PARTITIONS}\b"):
        admin.create_topics([NewTopic("rv2.x", num_partitions=MAX_PARTITIONS + 1)])
    with pytest.raises(ValueError, match=rf"1\.\.{MAX_PARTITIONS}\b"):
        admin.create_partitions([NewPartitions("rv2.x", MAX_PARTITIONS + 1)])


def test_a_topic_may_have_as_many_partitions_as_the_client_takes() -> None:
    assert spec(partitions=MAX_PARTITIONS).partitions == MAX_PARTITIONS


@pytest.mark.parametrize("partitions", [MAX_PARTITIONS + 1, 99_999_999])
def test_more_partitions_than_the_client_takes_are_refused(partitions: int) -> None:
    with pytest.raises(ValidationError, match="at most 100,000 partitions"):
        spec(partitions=partitions)


def test_a_catalogue_file_with_too_many_partitions_is_one_line_naming_file_topic_field(
    tmp_path: Path,
) -> None:
    path = catalogue_file(tmp_path, "partitions = 99999999")
    with pytest.raises(CatalogueError) as refused:
        load_catalogue_file(path)
    assert str(refused.value) == (
        f"{path}: topic rv2.x: field partitions: at most 100,000 partitions, the most the Kafka "
        "client creates a topic with or grows one to (got 99,999,999)"
    )


def test_the_int_fields_are_every_whole_number_field_of_a_topic() -> None:
    whole = {name for name, field in TopicSpec.model_fields.items() if field.annotation is int}
    assert whole == set(INT_FIELDS)


@pytest.mark.parametrize("field", INT_FIELDS)
@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_is_no_number_in_any_int_field(field: str, value: bool) -> None:
    with pytest.raises(ValidationError) as refused:
        spec(**{field: value})
    (error,) = refused.value.errors()
    assert error["loc"] == (field,)
    assert f"expected a whole number, got the boolean {str(value).lower()}" in error["msg"]


def test_a_catalogue_file_with_booleans_for_numbers_is_refused_naming_the_field(
    tmp_path: Path,
) -> None:
    path = catalogue_file(tmp_path, "partitions = true\nretention_ms = true")
    with pytest.raises(CatalogueError) as refused:
        load_catalogue_file(path)
    assert str(refused.value) == (
        f"{path}: topic rv2.x: field partitions: expected a whole number, got the boolean true"
    )


def test_a_boolean_retention_alone_is_refused_too(tmp_path: Path) -> None:
    path = catalogue_file(tmp_path, "partitions = 3\nretention_ms = true")
    with pytest.raises(CatalogueError, match="field retention_ms: expected a whole number"):
        load_catalogue_file(path)


def test_a_float_holding_a_whole_number_is_that_number_and_a_fraction_is_refused() -> None:
    # Today's behaviour, kept: 3.0 means 3; 1.5 partitions means nothing.
    assert spec(partitions=3.0).partitions == 3
    with pytest.raises(ValidationError, match="partitions"):
        spec(partitions=1.5)
