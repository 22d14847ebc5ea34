"""The Kafka test backend creates the topics a test's processors use, by Kafka's naming rules."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.kafka.clients import build_admin
from pipeline.testing.kafka_backend import KafkaBackend
from pipeline.topics.admin import describe_cluster_topics


def _backend(settings, tmp_path: Path) -> KafkaBackend:
    return KafkaBackend(
        [], settings=settings, database_url=f"sqlite:///{tmp_path}/t.db", workdir=tmp_path
    )


def test_a_topic_outside_the_catalogue_convention_is_created_as_kafka_names_it(
    pipeline_settings, tmp_path
):
    # One segment, and capitals: Kafka takes them; only the catalogue asks <domain>.<kind>.
    name = f"Readings-{uuid.uuid4().hex[:8]}"
    admin = build_admin(pipeline_settings.kafka)
    try:
        _backend(pipeline_settings, tmp_path)._create_missing([name])

        assert name in describe_cluster_topics(admin, [name])
    finally:
        for future in admin.delete_topics([name]).values():
            with contextlib.suppress(Exception):  # not created: nothing to delete
                future.result(30)


def test_a_name_kafka_refuses_is_one_clear_error(pipeline_settings, tmp_path):
    with pytest.raises(PipelineError, match="is not a Kafka topic name"):
        _backend(pipeline_settings, tmp_path)._create_missing(["no spaces allowed"])
