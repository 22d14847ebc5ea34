"""Fixtures of the outbox relay's unit tests: the migrated SQLite database of the pipeline's
unit tests, and a stand-in for confluent-kafka's Producer."""

from tests.unit.pipeline.conftest import database  # noqa: F401 (a fixture, used by name)
